package login

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/labfed/labfed/broker"
)

const (
	// defaultKeyRefreshInterval is the least time between two fetches of
	// an issuer's JWKS. Every token that names a key the broker has not
	// seen could be an issuer's new key, or a forgery made up to make the
	// broker hammer the issuer; pacing the fetches makes a flood of
	// forgeries cost the issuer one request per interval, and a real
	// rotation is picked up within one interval.
	defaultKeyRefreshInterval = 30 * time.Second
	// maxJWKSSize bounds a key set read from an issuer. Real ones are a few
	// kilobytes.
	maxJWKSSize = 1 << 20
)

// keyOutcomeKey carries a *keyOutcome through go-oidc to the key set:
// go-oidc flattens the key set's error into a string, and the person
// logging in needs its kind (retry later, or the token is at fault) and its
// precise message. One key set serves concurrent calls, hence the context.
type keyOutcomeKey struct{}

type keyOutcome struct {
	err error
}

func withKeyOutcome(ctx context.Context) (context.Context, *keyOutcome) {
	o := &keyOutcome{}
	return context.WithValue(ctx, keyOutcomeKey{}, o), o
}

// keySnapshot is the outcome of the last fetch of an issuer's JWKS.
type keySnapshot struct {
	// keys are the keys the issuer published at the last successful
	// fetch; a failed fetch keeps the previous ones.
	keys []jose.JSONWebKey
	// err is why the last fetch failed; nil when it succeeded.
	err error
	// at is when the last fetch ended.
	at time.Time
}

// keyFetch is a fetch in progress, which every caller that needs it waits
// for.
type keyFetch struct {
	done chan struct{}
	snap *keySnapshot // set before done is closed
}

// remoteKeys is an issuer's JWKS, fetched lazily and cached. It replaces
// go-oidc's RemoteKeySet, which fetches the JWKS again for every token
// whose signature the cached keys do not verify: a flood of tokens naming
// made-up kids would turn into a flood of requests to the issuer.
//
// Here a token whose kid is cached is checked against the cache and never
// causes a fetch, whether its signature verifies or not. A token whose kid
// is not cached (or that has no kid and verifies with no cached key) may
// cause one fetch, shared by every caller that needs it, and only when the
// last fetch ended at least interval ago. Until then the last fetch's
// result stands for every kid: one it did not return is refused at once
// (or, if it failed, reported as the issuer being unavailable), so an
// issuer that rotates its keys is followed within one interval.
type remoteKeys struct {
	issuer   string
	url      string
	client   *http.Client
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	snap     *keySnapshot // nil until the first fetch ends
	inflight *keyFetch    // nil when no fetch runs
}

var _ oidc.KeySet = (*remoteKeys)(nil)

// allowedAlgs are supportedAlgs for go-jose.
var allowedAlgs = func() []jose.SignatureAlgorithm {
	algs := make([]jose.SignatureAlgorithm, len(supportedAlgs))
	for i, a := range supportedAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	return algs
}()

// VerifySignature implements oidc.KeySet. The IDTokenVerifier has already
// checked the algorithm; the token is parsed again with the same allowlist
// because go-oidc keeps its parsed form to itself.
func (k *remoteKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.verify(ctx, jwt)
	if err != nil {
		if o, ok := ctx.Value(keyOutcomeKey{}).(*keyOutcome); ok {
			o.err = err
		}
		return nil, err
	}
	return payload, nil
}

func (k *remoteKeys) verify(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, allowedAlgs)
	if err != nil {
		return nil, broker.Errorf(broker.ErrInvalid, "the ID token is malformed: %s", oneLine(err))
	}
	if len(jws.Signatures) != 1 {
		return nil, broker.Errorf(broker.ErrInvalid, "the ID token has %d signatures, not 1", len(jws.Signatures))
	}
	kid := jws.Signatures[0].Header.KeyID

	seen := k.cached()
	if seen != nil {
		payload, ok, published := verifyWith(jws, seen.keys)
		if ok {
			return payload, nil
		}
		if published {
			// The issuer publishes this kid and its key says no: the
			// token is at fault, and fetching again cannot change that.
			return nil, k.badSignature()
		}
	}
	snap, err := k.refreshed(ctx, seen)
	if err != nil {
		return nil, err
	}
	payload, ok, published := verifyWith(jws, snap.keys)
	switch {
	case ok:
		return payload, nil
	case published:
		return nil, k.badSignature()
	case snap.err != nil:
		return nil, broker.Errorf(broker.ErrUnavailable, "cannot fetch the signing keys of oidc issuer %s: %s; try again later", k.issuer, oneLine(snap.err))
	case kid == "":
		return nil, k.badSignature()
	}
	return nil, broker.Errorf(broker.ErrInvalid, "the ID token is signed by a key issuer %s does not publish (kid %s); it was not issued by that issuer, or the issuer has just rotated its keys: try again in %s",
		k.issuer, quote(kid), k.interval)
}

func (k *remoteKeys) badSignature() error {
	return broker.Errorf(broker.ErrInvalid, "the ID token's signature does not verify with any key oidc issuer %s publishes; the token was altered or not issued by it", k.issuer)
}

// verifyWith verifies jws with the keys its header selects: those with its
// kid, or all of them when it names none. ok reports whether one verified
// it, published whether the token's kid is among keys (always false for a
// token without a kid).
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey) (payload []byte, ok, published bool) {
	h := jws.Signatures[0].Header
	for i := range keys {
		key := &keys[i]
		if h.KeyID != "" && key.KeyID != h.KeyID {
			continue
		}
		published = h.KeyID != ""
		if key.Algorithm != "" && key.Algorithm != h.Algorithm {
			continue // RFC 7517 section 4.4: the key is for another algorithm
		}
		if p, err := jws.Verify(key); err == nil {
			return p, true, published
		}
	}
	return nil, false, published
}

func (k *remoteKeys) cached() *keySnapshot {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.snap
}

// refreshed returns a snapshot at least as recent as seen, the one the
// caller found wanting. It fetches only when no caller has fetched since
// seen and the last fetch ended at least interval ago; a fetch already
// running is waited for, not repeated. The fetch itself does not depend on
// ctx, so a caller giving up does not fail it for the others.
func (k *remoteKeys) refreshed(ctx context.Context, seen *keySnapshot) (*keySnapshot, error) {
	k.mu.Lock()
	f := k.inflight
	if f == nil {
		if k.snap != seen || (k.snap != nil && k.now().Sub(k.snap.at) < k.interval) {
			snap := k.snap
			k.mu.Unlock()
			return snap, nil
		}
		f = &keyFetch{done: make(chan struct{})}
		k.inflight = f
		go k.fetch(f, k.snap)
	}
	k.mu.Unlock()
	select {
	case <-f.done:
		return f.snap, nil
	case <-ctx.Done():
		return nil, broker.Errorf(broker.ErrUnavailable, "gave up waiting for the signing keys of oidc issuer %s: %v", k.issuer, ctx.Err())
	}
}

// fetch runs f and publishes its result.
func (k *remoteKeys) fetch(f *keyFetch, prev *keySnapshot) {
	ctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
	defer cancel()
	keys, err := k.get(ctx)
	snap := &keySnapshot{keys: keys, err: err}
	if err != nil && prev != nil {
		snap.keys = prev.keys
	}
	k.mu.Lock()
	snap.at = k.now()
	k.snap, k.inflight = snap, nil
	f.snap = snap
	k.mu.Unlock()
	close(f.done)
}

// get fetches and decodes the issuer's JWKS.
func (k *remoteKeys) get(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", k.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", k.url, err)
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("GET %s: the key set is larger than %d bytes", k.url, maxJWKSSize)
	}
	return parseJWKS(body)
}

// parseJWKS decodes a JWKS and keeps the public signature keys of the kinds
// supportedAlgs use. Other keys are skipped rather than refused, as RFC 7517
// section 5 asks: an issuer may publish keys for algorithms labfed does not
// accept alongside the ones it signs ID tokens with.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, errors.New("the key set is not a JSON Web Key Set")
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) != nil || !key.Valid() || (key.Use != "" && key.Use != "sig") {
			continue
		}
		key = key.Public()
		switch key.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, key)
		}
	}
	return keys, nil
}
