package login_test

// These tests hold the Verifier to its bound on requests for an issuer's
// keys: a token naming a kid the broker has not cached may make it fetch
// the issuer's JWKS at most once per refresh interval, however many such
// tokens arrive, and a cached kid never does. The issuer is a loopback
// HTTPS server whose JWKS the tests change, as an issuer rotating its keys
// would, and whose JWKS requests they count.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/login"
)

// clock is a settable clock for login.WithNow.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// signingKey is an ES256 key with its kid.
type signingKey struct {
	kid string
	key *ecdsa.PrivateKey
}

func newSigningKey(t *testing.T, kid string) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid, k}
}

func (k signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.key.PublicKey, KeyID: k.kid, Algorithm: string(jose.ES256), Use: "sig"}
}

// sign makes an ID token for iss signed by k, with kid in its header (none
// when kid is empty).
func (k signingKey) sign(t *testing.T, kid, iss string) string {
	t.Helper()
	now := time.Now()
	payload, err := json.Marshal(map[string]any{
		"iss": iss, "sub": "ada", "aud": "cli", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keyHost is an issuer's JWKS endpoint: it serves the keys last published,
// or fails while fail is set, and counts the requests it receives.
type keyHost struct {
	body    atomic.Pointer[[]byte]
	fail    atomic.Bool
	fetches atomic.Int64
	// hold, when not nil, delays every answer until it is closed.
	hold chan struct{}
}

func (h *keyHost) publish(t *testing.T, keys ...jose.JSONWebKey) {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	h.body.Store(&b)
}

func (h *keyHost) serve(w http.ResponseWriter, r *http.Request) {
	h.fetches.Add(1)
	if h.hold != nil {
		select {
		case <-h.hold:
		case <-r.Context().Done():
			return
		}
	}
	if h.fail.Load() {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(*h.body.Load())
}

// keyFixture is a verifier trusting one issuer whose JWKS is a keyHost,
// with a settable clock.
type keyFixture struct {
	ds   *docServer
	host *keyHost
	clk  *clock
	v    *login.Verifier
}

func newKeyFixture(t *testing.T, host *keyHost, opts ...login.Option) *keyFixture {
	t.Helper()
	if host.body.Load() == nil {
		host.publish(t)
	}
	f := &keyFixture{host: host, clk: &clock{t: time.Now()}}
	f.ds = startDocServer(t, discovery(nil, host.serve))
	v, err := login.NewVerifier([]login.Issuer{{URL: f.ds.URL, ClientIDs: []string{"cli"}, CAFile: f.ds.CAFile}},
		append([]login.Option{login.WithNow(f.clk.Now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.v = v
	return f
}

func (f *keyFixture) accept(t *testing.T, what, token string) {
	t.Helper()
	if id, err := f.v.Verify(t.Context(), token); err != nil || id.Subject != "ada" {
		t.Fatalf("Verify(%s) = %+v, %v; want ada", what, id, err)
	}
}

func (f *keyFixture) wantFetches(t *testing.T, when string, n int64) {
	t.Helper()
	if got := f.host.fetches.Load(); got != n {
		t.Fatalf("%s: the issuer served its JWKS %d times, want %d", when, got, n)
	}
}

// unpublished is what a refusal of a token whose kid the issuer does not
// publish says.
func (f *keyFixture) unpublished(kid string) string {
	return "signed by a key issuer " + f.ds.URL + ` does not publish (kid "` + kid + `")`
}

// forge verifies n tokens signed by an attacker's key, each with a new
// random kid (or none when kidless), n at once when concurrent, and checks
// that each is refused.
func (f *keyFixture) forge(t *testing.T, n int, concurrent, kidless bool) {
	t.Helper()
	attacker := newSigningKey(t, "")
	tokens, kids := make([]string, n), make([]string, n)
	for i := range tokens {
		if !kidless {
			kids[i] = rand.Text()
		}
		tokens[i] = attacker.sign(t, kids[i], f.ds.URL)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range tokens {
		if !concurrent {
			_, errs[i] = f.v.Verify(t.Context(), tokens[i])
			continue
		}
		wg.Go(func() { _, errs[i] = f.v.Verify(t.Context(), tokens[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if kidless {
			checkRefused(t, "Verify(forged token without a kid)", err, broker.ErrInvalid, "signature does not verify with any key")
		} else {
			checkRefused(t, "Verify(forged token with a random kid)", err, broker.ErrInvalid, f.unpublished(kids[i]))
		}
	}
}

func TestVerifyUnknownKidsFetchKeysOncePerInterval(t *testing.T) {
	issuer := newSigningKey(t, "issuer-key")
	host := &keyHost{}
	host.publish(t, issuer.public())
	f := newKeyFixture(t, host)
	good := issuer.sign(t, issuer.kid, f.ds.URL)

	f.accept(t, "good token", good)
	f.wantFetches(t, "after the first token", 1)

	// Right after a fetch, a kid it did not return is refused without
	// asking the issuer again.
	f.forge(t, 100, false, false)
	f.wantFetches(t, "after 100 random kids within the interval", 1)

	// Once the interval has passed, 100 random kids at once cost one fetch
	// between them, and those that come after it none.
	f.clk.Advance(31 * time.Second)
	f.forge(t, 100, true, false)
	f.wantFetches(t, "after 100 concurrent random kids past the interval", 2)
	f.forge(t, 100, false, false)
	f.forge(t, 100, false, true)
	f.wantFetches(t, "after 200 more forged tokens within the interval", 2)

	// A cached kid never causes a fetch, whether its signature verifies or
	// not, even when the interval has passed.
	tampered := newSigningKey(t, "").sign(t, issuer.kid, f.ds.URL)
	for range 2 {
		f.accept(t, "good token", good)
		_, err := f.v.Verify(t.Context(), tampered)
		checkRefused(t, "Verify(token signed by another key with the issuer's kid)", err, broker.ErrInvalid, "signature does not verify with any key")
		f.clk.Advance(31 * time.Second)
	}
	f.accept(t, "good token without a kid", issuer.sign(t, "", f.ds.URL))
	f.wantFetches(t, "after tokens signed with or naming the cached key", 2)

	// A token without a kid that no cached key verifies is paced like an
	// unknown kid.
	f.forge(t, 100, true, true)
	f.wantFetches(t, "after 100 concurrent forged tokens without a kid past the interval", 3)
}

func TestVerifyFollowsKeyRotation(t *testing.T) {
	old, rotated := newSigningKey(t, "2025"), newSigningKey(t, "2026")
	host := &keyHost{}
	host.publish(t, old.public())
	f := newKeyFixture(t, host)
	oldToken, newToken := old.sign(t, old.kid, f.ds.URL), rotated.sign(t, rotated.kid, f.ds.URL)
	f.accept(t, "token signed with the first key", oldToken)

	// The issuer rotates to a new key. Within the interval the broker
	// does not look, and says why it refuses.
	host.publish(t, rotated.public())
	f.clk.Advance(10 * time.Second)
	_, err := f.v.Verify(t.Context(), newToken)
	checkRefused(t, "Verify(token signed with the new key within the interval)", err, broker.ErrInvalid, f.unpublished(rotated.kid)+"; it was not issued by that issuer, or the issuer has just rotated its keys: try again in 30s")
	f.accept(t, "token signed with the cached first key", oldToken)
	f.wantFetches(t, "within the interval", 1)

	// At the next allowed fetch the new key is found and accepted, and the
	// key the issuer no longer publishes is not.
	f.clk.Advance(21 * time.Second)
	f.accept(t, "token signed with the new key past the interval", newToken)
	f.accept(t, "token signed with the new key again", newToken)
	f.wantFetches(t, "after the rotation", 2)
	_, err = f.v.Verify(t.Context(), oldToken)
	checkRefused(t, "Verify(token signed with the withdrawn key)", err, broker.ErrInvalid, f.unpublished(old.kid))
	f.wantFetches(t, "after the withdrawn key", 2)
}

func TestVerifyKeyRefreshIntervalOption(t *testing.T) {
	first, second := newSigningKey(t, "first"), newSigningKey(t, "second")
	host := &keyHost{}
	host.publish(t, first.public())
	f := newKeyFixture(t, host, login.WithKeyRefreshInterval(2*time.Minute))
	f.accept(t, "token signed with the first key", first.sign(t, first.kid, f.ds.URL))
	host.publish(t, first.public(), second.public())

	f.clk.Advance(90 * time.Second)
	token := second.sign(t, second.kid, f.ds.URL)
	_, err := f.v.Verify(t.Context(), token)
	checkRefused(t, "Verify(new key 90s after the fetch)", err, broker.ErrInvalid, "try again in 2m0s")
	f.wantFetches(t, "90s after the fetch", 1)
	f.clk.Advance(31 * time.Second)
	f.accept(t, "token signed with the second key 121s after the fetch", token)
	f.wantFetches(t, "121s after the fetch", 2)

	for _, d := range []time.Duration{0, -time.Second} {
		v, err := login.NewVerifier([]login.Issuer{{URL: "https://cilogon.org", ClientIDs: []string{"cli"}}}, login.WithKeyRefreshInterval(d))
		checkRefused(t, "NewVerifier(WithKeyRefreshInterval("+d.String()+"))", err, broker.ErrInvalid, "must be positive")
		if v != nil {
			t.Errorf("NewVerifier(WithKeyRefreshInterval(%s)) returned a verifier with its error", d)
		}
	}
}

func TestVerifyKeysUnavailablePaced(t *testing.T) {
	key, rotated := newSigningKey(t, "key"), newSigningKey(t, "rotated")
	host := &keyHost{}
	host.publish(t, key.public())
	host.fail.Store(true)
	f := newKeyFixture(t, host)
	good := key.sign(t, key.kid, f.ds.URL)

	// A failed fetch is not repeated within the interval either: a flood
	// must not reach an issuer that is already struggling.
	for range 50 {
		_, err := f.v.Verify(t.Context(), good)
		checkRefused(t, "Verify while the JWKS fails", err, broker.ErrUnavailable, "cannot fetch the signing keys of oidc issuer "+f.ds.URL+": GET "+f.ds.URL+"/jwks: 503 Service Unavailable; try again later")
	}
	f.wantFetches(t, "after 50 tokens while the JWKS fails", 1)

	host.fail.Store(false)
	f.clk.Advance(31 * time.Second)
	f.accept(t, "good token once the JWKS is back", good)
	f.wantFetches(t, "once the JWKS is back", 2)

	// A failed refetch keeps the cached keys, and an unknown kid is then
	// the issuer's outage, not the token's fault.
	host.fail.Store(true)
	host.publish(t, key.public(), rotated.public())
	f.clk.Advance(31 * time.Second)
	for range 50 {
		_, err := f.v.Verify(t.Context(), rotated.sign(t, rotated.kid, f.ds.URL))
		checkRefused(t, "Verify(unknown kid) while the JWKS fails", err, broker.ErrUnavailable, "cannot fetch the signing keys")
		f.accept(t, "good token while the JWKS fails", good)
	}
	f.wantFetches(t, "after 50 unknown kids while the JWKS fails", 3)

	host.fail.Store(false)
	f.clk.Advance(31 * time.Second)
	f.accept(t, "token signed with the rotated key once the JWKS is back", rotated.sign(t, rotated.kid, f.ds.URL))
	f.wantFetches(t, "once the JWKS is back again", 4)
}

func TestVerifyConcurrentFirstUseFetchesKeysOnce(t *testing.T) {
	key := newSigningKey(t, "key")
	host := &keyHost{}
	host.publish(t, key.public())
	f := newKeyFixture(t, host)
	attacker := newSigningKey(t, "")

	const n = 32
	tokens, kids := make([]string, n), make([]string, n)
	for i := range tokens {
		if i%2 == 0 {
			tokens[i] = key.sign(t, key.kid, f.ds.URL)
		} else {
			kids[i] = rand.Text()
			tokens[i] = attacker.sign(t, kids[i], f.ds.URL)
		}
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range tokens {
		wg.Go(func() {
			<-start
			_, errs[i] = f.v.Verify(t.Context(), tokens[i])
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if kids[i] == "" {
			if err != nil {
				t.Errorf("concurrent Verify(good token): %v", err)
			}
		} else {
			checkRefused(t, "concurrent Verify(random kid)", err, broker.ErrInvalid, f.unpublished(kids[i]))
		}
	}
	f.wantFetches(t, "after concurrent first use", 1)
	if discoveries := f.ds.requests.Load() - f.host.fetches.Load(); discoveries != 1 {
		t.Errorf("the issuer served its discovery document %d times, want 1", discoveries)
	}
}

func TestVerifyGivesUpWaitingForKeys(t *testing.T) {
	key := newSigningKey(t, "key")
	host := &keyHost{hold: make(chan struct{})}
	host.publish(t, key.public())
	f := newKeyFixture(t, host)
	released := false
	release := func() {
		if !released {
			close(host.hold)
			released = true
		}
	}
	t.Cleanup(release)
	good := key.sign(t, key.kid, f.ds.URL)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := f.v.Verify(ctx, good)
	checkRefused(t, "Verify while the JWKS hangs", err, broker.ErrUnavailable, "gave up waiting for the signing keys of oidc issuer "+f.ds.URL)

	// The fetch went on without the caller that gave up, and the next
	// caller uses it rather than starting another.
	release()
	f.accept(t, "good token once the JWKS answers", good)
	f.wantFetches(t, "after the hung fetch", 1)
}

func TestVerifySkipsUnusableKeys(t *testing.T) {
	key, enc, wrongAlg := newSigningKey(t, "key"), newSigningKey(t, "enc"), newSigningKey(t, "rsa-only")
	encKey := enc.public()
	encKey.Use = "enc"
	rsaOnly := wrongAlg.public()
	rsaOnly.Algorithm = string(jose.RS256)
	good, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{encKey, rsaOnly, key.public()}})
	if err != nil {
		t.Fatal(err)
	}
	// An HMAC key, a key of a type nobody knows and a broken one must not
	// stop the others from being used.
	body := []byte(strings.Replace(string(good), `"keys":[`,
		`"keys":[{"kty":"oct","kid":"hmac","k":"c2VjcmV0"},{"kty":"ML-KEM","kid":"pq"},{"kty":"RSA","kid":"broken","n":"!","e":"AQAB"},`, 1))
	host := &keyHost{}
	host.body.Store(&body)
	f := newKeyFixture(t, host)

	f.accept(t, "token signed with the usable key", key.sign(t, key.kid, f.ds.URL))
	_, err = f.v.Verify(t.Context(), enc.sign(t, enc.kid, f.ds.URL))
	checkRefused(t, "Verify(token signed with an encryption key)", err, broker.ErrInvalid, f.unpublished(enc.kid))
	_, err = f.v.Verify(t.Context(), wrongAlg.sign(t, wrongAlg.kid, f.ds.URL))
	checkRefused(t, "Verify(ES256 token signed with a key published for RS256)", err, broker.ErrInvalid, "signature does not verify")
	f.wantFetches(t, "after the unusable keys", 1)
}
