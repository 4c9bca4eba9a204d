package oidcissuer_test

// The end-to-end tests of package broker/login live here, beside the
// issuer they run against: Go's internal-package rule lets only code under
// cmd/labfed import this package, and broker/ must not import cmd/ anyway.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/login"
	"github.com/labfed/labfed/cmd/labfed/internal/oidcissuer"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func clientConfig(is *oidcissuer.Issuer) login.ClientConfig {
	return login.ClientConfig{Issuer: is.URL(), ClientID: clientID, HTTPClient: is.Client()}
}

// writeCA writes the issuer's certificate where a broker's ca_file would
// name it.
func writeCA(t *testing.T, is *oidcissuer.Issuer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "issuer-ca.pem")
	if err := os.WriteFile(path, is.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newVerifier returns a broker's verifier that trusts is, through its
// ca_file, for clientID.
func newVerifier(t *testing.T, is *oidcissuer.Issuer, opts ...login.Option) *login.Verifier {
	t.Helper()
	v, err := login.NewVerifier([]login.Issuer{{URL: is.URL(), ClientIDs: []string{"some-other-app", clientID}, CAFile: writeCA(t, is)}}, opts...)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// claims are those of a fresh, valid ID token from is; edit changes them.
func claims(is *oidcissuer.Issuer, edit func(map[string]any)) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": is.URL(), "sub": subject, "aud": clientID,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "auth_time": now.Unix(),
		"email": userEmail, "email_verified": true, "name": userName,
	}
	if edit != nil {
		edit(c)
	}
	return c
}

// checkRefused fails unless err is a *broker.Error of kind whose message
// contains want.
func checkRefused(t *testing.T, what string, err, kind error, want string) {
	t.Helper()
	var be *broker.Error
	if !errors.As(err, &be) || !errors.Is(err, kind) || !strings.Contains(err.Error(), want) {
		t.Errorf("%s = %v, want a *broker.Error of kind %v mentioning %q", what, err, kind, want)
	}
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: message %q spans several lines, want one", what, err)
	}
}

func TestAuthCodeEndToEnd(t *testing.T) {
	is := startIssuer(t, nil)
	ctx := testContext(t)
	browsed := make(chan error, 1)
	var authURL *url.URL
	raw, err := login.AuthCode(ctx, clientConfig(is), func(u string) error {
		authURL, _ = url.Parse(u)
		go func() { browsed <- oidcissuer.Browse(is.Client(), u, username, password) }()
		return nil
	})
	if err != nil {
		t.Fatalf("AuthCode: %v", err)
	}
	if err := <-browsed; err != nil {
		t.Fatalf("Browse: %v", err)
	}
	q := authURL.Query()
	if !strings.HasPrefix(q.Get("redirect_uri"), "http://127.0.0.1:") || !strings.HasSuffix(q.Get("redirect_uri"), "/callback") ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" ||
		q.Get("nonce") == "" || q.Get("scope") != "openid email profile" || q.Get("client_id") != clientID {
		t.Errorf("authorization URL %s, want a loopback redirect, PKCE S256, state, nonce and the default scopes", authURL)
	}

	id, err := newVerifier(t, is).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("Verify(token from AuthCode): %v", err)
	}
	want := login.Identity{Issuer: is.URL(), Subject: subject, Email: userEmail, EmailVerified: true, Name: userName, Expiry: id.Expiry}
	if id != want || time.Until(id.Expiry) < 4*time.Minute {
		t.Errorf("Verify = %+v, want %+v expiring in about 5m", id, want)
	}
}

func TestAuthCodeIssuerError(t *testing.T) {
	is := startIssuer(t, nil)
	callback := make(chan int, 1)
	_, err := login.AuthCode(testContext(t), clientConfig(is), func(u string) error {
		q := mustQuery(u)
		// The issuer sends the browser back with an error instead of a code.
		back := q.Get("redirect_uri") + "?" + url.Values{
			"error": {"access_denied"}, "error_description": {"the user declined"}, "state": {q.Get("state")},
		}.Encode()
		go func() { callback <- getStatus(back) }()
		return nil
	})
	checkRefused(t, "AuthCode after an error redirect", err, broker.ErrInvalid, "access_denied: the user declined")
	if status := <-callback; status != http.StatusBadRequest {
		t.Errorf("callback page status = %d, want 400", status)
	}
}

func TestAuthCodeIgnoresForeignState(t *testing.T) {
	is := startIssuer(t, nil)
	foreign := make(chan int, 1)
	browsed := make(chan error, 1)
	raw, err := login.AuthCode(testContext(t), clientConfig(is), func(u string) error {
		q := mustQuery(u)
		go func() {
			// Another page hits the callback first, with a code of its
			// own. It must be refused and must not end the login.
			foreign <- getStatus(q.Get("redirect_uri") + "?code=planted&state=guessed")
			browsed <- oidcissuer.Browse(is.Client(), u, username, password)
		}()
		return nil
	})
	if err != nil {
		t.Fatalf("AuthCode: %v", err)
	}
	if status := <-foreign; status != http.StatusBadRequest {
		t.Errorf("callback with a foreign state: status %d, want 400", status)
	}
	if err := <-browsed; err != nil {
		t.Errorf("Browse: %v", err)
	}
	if raw == "" {
		t.Errorf("AuthCode returned an empty token")
	}
}

func TestAuthCodeRefusesOtherNonce(t *testing.T) {
	is := startIssuer(t, nil)
	browsed := make(chan error, 1)
	_, err := login.AuthCode(testContext(t), clientConfig(is), func(u string) error {
		// A code minted for another login's nonce (an injected code) must
		// not yield a token, even with the right PKCE verifier.
		pu, _ := url.Parse(u)
		q := pu.Query()
		q.Set("nonce", "someone-elses-nonce")
		pu.RawQuery = q.Encode()
		go func() { browsed <- oidcissuer.Browse(is.Client(), pu.String(), username, password) }()
		return nil
	})
	checkRefused(t, "AuthCode with a token for another nonce", err, broker.ErrInvalid, "nonce")
	if err := <-browsed; err != nil {
		t.Errorf("Browse: %v", err)
	}
}

func TestAuthCodeGivesUp(t *testing.T) {
	is := startIssuer(t, nil)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	cfg := clientConfig(is)
	cfg.ClientID = "unregistered"
	browsed := make(chan error, 1)
	_, err := login.AuthCode(ctx, cfg, func(u string) error {
		go func() { browsed <- oidcissuer.Browse(is.Client(), u, username, password) }()
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AuthCode when the browser never returns = %v, want a deadline error", err)
	}
	if err := <-browsed; err == nil || !strings.Contains(err.Error(), "unknown client_id") {
		t.Errorf("Browse for an unregistered client = %v, want unknown client_id", err)
	}

	ctx, cancel = context.WithCancel(t.Context())
	_, err = login.AuthCode(ctx, clientConfig(is), func(string) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("AuthCode after cancel = %v, want context.Canceled", err)
	}

	openErr := errors.New("no browser")
	_, err = login.AuthCode(t.Context(), clientConfig(is), func(string) error { return openErr })
	if !errors.Is(err, openErr) {
		t.Errorf("AuthCode when open fails = %v, want that error", err)
	}
}

func TestDeviceEndToEnd(t *testing.T) {
	is := startIssuer(t, func(c *oidcissuer.Config) { c.DevicePollInterval = time.Second })
	ctx := testContext(t)
	approved := make(chan error, 1)
	var gotURI, gotCode, gotComplete string
	raw, err := login.Device(ctx, clientConfig(is), func(uri, code, complete string) {
		gotURI, gotCode, gotComplete = uri, code, complete
		go func() { approved <- is.ApproveDevice(code, username, password) }()
	})
	if err != nil {
		t.Fatalf("Device: %v", err)
	}
	if err := <-approved; err != nil {
		t.Fatalf("ApproveDevice: %v", err)
	}
	if gotURI != is.URL()+"/device" || !strings.Contains(gotComplete, url.QueryEscape(gotCode)) {
		t.Errorf("prompt(%q, %q, %q), want the /device page and a complete URI with the code", gotURI, gotCode, gotComplete)
	}
	id, err := newVerifier(t, is).Verify(ctx, raw)
	if err != nil || id.Subject != subject {
		t.Errorf("Verify(token from Device) = %+v, %v; want subject %s", id, err, subject)
	}
}

func TestDeviceDenied(t *testing.T) {
	is := startIssuer(t, func(c *oidcissuer.Config) { c.DevicePollInterval = time.Second })
	denied := make(chan error, 1)
	_, err := login.Device(testContext(t), clientConfig(is), func(_, code, _ string) {
		go func() { denied <- denyDevice(is, code) }()
	})
	checkRefused(t, "Device after denial", err, broker.ErrPrecondition, "denied")
	if err := <-denied; err != nil {
		t.Fatal(err)
	}
}

func TestVerifierAccepts(t *testing.T) {
	is := startIssuer(t, nil)
	v := newVerifier(t, is)
	tests := []struct {
		name string
		edit func(map[string]any)
	}{
		{"plain", nil},
		{"second client id", func(c map[string]any) { c["aud"] = "some-other-app" }},
		{"several audiences", func(c map[string]any) { c["aud"] = []string{"unrelated", clientID} }},
		{"email_verified as a string", func(c map[string]any) { c["email_verified"] = "true" }},
		{"iat nine minutes ago", func(c map[string]any) { c["iat"] = time.Now().Add(-9 * time.Minute).Unix() }},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), is.SignIDToken(claims(is, test.edit)))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Issuer != is.URL() || id.Subject != subject || id.Email != userEmail || !id.EmailVerified || id.Name != userName {
				t.Errorf("Verify = %+v, want the test user", id)
			}
		})
	}
}

func TestVerifierRefuses(t *testing.T) {
	is := startIssuer(t, nil)
	other := startIssuer(t, nil) // a real issuer this site does not trust
	v := newVerifier(t, is)
	good := is.SignIDToken(claims(is, nil))
	kid := headerOf(t, good)["kid"].(string)
	foreign := other.SignIDToken(claims(is, nil))
	otherKid := headerOf(t, foreign)["kid"].(string)

	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"wrong issuer", other.SignIDToken(claims(other, nil)), "is not configured for this site"},
		{"wrong audience", is.SignIDToken(claims(is, func(c map[string]any) { c["aud"] = "mallory-app" })), "issued to client mallory-app"},
		{"no audience", is.SignIDToken(claims(is, func(c map[string]any) { delete(c, "aud") })), "no aud"},
		{"expired", is.SignIDToken(claims(is, func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-3*time.Minute).Unix(), time.Now().Add(-time.Minute).Unix()
		})), "expired"},
		{"iat too old", is.SignIDToken(claims(is, func(c map[string]any) { c["iat"] = time.Now().Add(-11 * time.Minute).Unix() })), "too old"},
		{"no iat", is.SignIDToken(claims(is, func(c map[string]any) { delete(c, "iat") })), "no iat"},
		{"iat in the future", is.SignIDToken(claims(is, func(c map[string]any) { c["iat"] = time.Now().Add(time.Hour).Unix() })), "in the future"},
		{"no subject", is.SignIDToken(claims(is, func(c map[string]any) { delete(c, "sub") })), "no subject"},
		{"unsigned", unsigned(claims(is, nil)), "unsigned"},
		{"HMAC signed", sign(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), kid, claims(is, nil)), `signed with "HS256"`},
		{"another issuer's key", foreign, "signed by a key issuer " + is.URL() + ` does not publish (kid "` + otherKid + `")`},
		{"fresh key with the issuer's kid", sign(t, jose.RS256, newRSAKey(t), kid, claims(is, nil)), "signature does not verify"},
		{"tampered payload", tamper(t, good, func(c map[string]any) { c["sub"] = "root" }), "signature does not verify"},
		{"malformed", "not-a-token", "malformed"},
		{"garbage segments", "!!!.@@@.###", "malformed"},
		{"empty", "", "malformed"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), test.token)
			checkRefused(t, "Verify("+test.name+")", err, broker.ErrInvalid, test.want)
			if id != (login.Identity{}) {
				t.Errorf("Verify(%s) returned identity %+v with its error, want none", test.name, id)
			}
		})
	}
	// The good token still verifies: the refusals above are not caused by
	// a broken verifier.
	if _, err := v.Verify(t.Context(), good); err != nil {
		t.Errorf("Verify(good token) = %v", err)
	}
}

func TestVerifierClock(t *testing.T) {
	is := startIssuer(t, nil)
	clk := newClock()
	v := newVerifier(t, is, login.WithNow(clk.Now))
	token := is.SignIDToken(claims(is, nil))
	if _, err := v.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	clk.Advance(6 * time.Minute)
	_, err := v.Verify(t.Context(), token)
	checkRefused(t, "Verify after the clock passed exp", err, broker.ErrInvalid, "expired")
}

// newTappedVerifier returns a broker's verifier that reaches is through a
// new issuerTap, on clock clk.
func newTappedVerifier(t *testing.T, is *oidcissuer.Issuer, clk *clock, opts ...login.Option) (*login.Verifier, *issuerTap) {
	t.Helper()
	tap := newIssuerTap(is)
	opts = append([]login.Option{login.WithHTTPClient(tap.client()), login.WithNow(clk.Now)}, opts...)
	return newVerifier(t, is, opts...), tap
}

// forged are n tokens with the claims of a valid token from is, signed by
// another key under random kids.
func forged(t *testing.T, is *oidcissuer.Issuer, n int) (tokens, kids []string) {
	t.Helper()
	key := newRSAKey(t)
	for range n {
		kid := rand.Text()
		tokens, kids = append(tokens, sign(t, jose.RS256, key, kid, claims(is, nil))), append(kids, kid)
	}
	return tokens, kids
}

// verifyAll verifies tokens, all at once when concurrent, and returns the
// errors.
func verifyAll(t *testing.T, v *login.Verifier, tokens []string, concurrent bool) []error {
	t.Helper()
	errs := make([]error, len(tokens))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, tok := range tokens {
		if !concurrent {
			_, errs[i] = v.Verify(t.Context(), tok)
			continue
		}
		wg.Go(func() {
			<-start
			_, errs[i] = v.Verify(t.Context(), tok)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func checkUnpublished(t *testing.T, is *oidcissuer.Issuer, errs []error, kids []string) {
	t.Helper()
	for i, err := range errs {
		checkRefused(t, "Verify(token with a random kid)", err, broker.ErrInvalid, "signed by a key issuer "+is.URL()+` does not publish (kid "`+kids[i]+`")`)
	}
}

func checkJWKSFetches(t *testing.T, tap *issuerTap, when string, want int) {
	t.Helper()
	if n := tap.count("/jwks"); n != want {
		t.Fatalf("%s: the verifier fetched the issuer's JWKS %d times, want %d", when, n, want)
	}
}

func TestVerifierConcurrentFirstUse(t *testing.T) {
	is := startIssuer(t, nil)
	v, tap := newTappedVerifier(t, is, newClock())
	bad, kids := forged(t, is, 16)
	var tokens []string
	for _, b := range bad {
		tokens = append(tokens, is.SignIDToken(claims(is, nil)), b)
	}
	errs := verifyAll(t, v, tokens, true)
	for i := 0; i < len(errs); i += 2 {
		if errs[i] != nil {
			t.Errorf("concurrent Verify(good token): %v", errs[i])
		}
		checkUnpublished(t, is, errs[i+1:i+2], kids[i/2:i/2+1])
	}
	if n := tap.count("/.well-known/openid-configuration"); n != 1 {
		t.Errorf("the verifier fetched the issuer's discovery document %d times, want 1", n)
	}
	checkJWKSFetches(t, tap, "after concurrent first use", 1)
}

func TestVerifierBoundsKeyRefetches(t *testing.T) {
	is := startIssuer(t, nil)
	clk := newClock()
	v, tap := newTappedVerifier(t, is, clk)
	good := is.SignIDToken(claims(is, nil))
	if _, err := v.Verify(t.Context(), good); err != nil {
		t.Fatalf("Verify(good token): %v", err)
	}
	checkJWKSFetches(t, tap, "after the first token", 1)

	// A flood of tokens naming keys the issuer never had: within the
	// interval after a fetch, not one more request reaches the issuer.
	tokens, kids := forged(t, is, 100)
	checkUnpublished(t, is, verifyAll(t, v, tokens, false), kids)
	checkJWKSFetches(t, tap, "after 100 random kids right after a fetch", 1)

	// Past the interval, 100 at once share a single refetch.
	clk.Advance(31 * time.Second)
	tokens, kids = forged(t, is, 100)
	checkUnpublished(t, is, verifyAll(t, v, tokens, true), kids)
	checkJWKSFetches(t, tap, "after 100 concurrent random kids past the interval", 2)

	// A good token still verifies, from the cache, now and after the
	// interval.
	for range 2 {
		if _, err := v.Verify(t.Context(), is.SignIDToken(claims(is, nil))); err != nil {
			t.Fatalf("Verify(good token after the flood): %v", err)
		}
		clk.Advance(31 * time.Second)
	}
	checkJWKSFetches(t, tap, "after good tokens", 2)
	if n := tap.count("/.well-known/openid-configuration"); n != 1 {
		t.Errorf("the verifier fetched the issuer's discovery document %d times, want 1", n)
	}
}

func TestVerifierFollowsKeyRotation(t *testing.T) {
	is := startIssuer(t, nil)
	clk := newClock()
	v, tap := newTappedVerifier(t, is, clk)
	if _, err := v.Verify(t.Context(), is.SignIDToken(claims(is, nil))); err != nil {
		t.Fatalf("Verify(good token): %v", err)
	}

	// The issuer starts publishing a new key and signs with it. Within the
	// interval the verifier does not look; the token is refused, and says
	// when to try again.
	key := newRSAKey(t)
	const kid = "rotated-2026"
	tap.publish(jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"})
	rotated := sign(t, jose.RS256, key, kid, claims(is, nil))
	clk.Advance(5 * time.Second)
	_, err := v.Verify(t.Context(), rotated)
	checkRefused(t, "Verify(token signed with the new key within the interval)", err, broker.ErrInvalid, "signed by a key issuer "+is.URL()+` does not publish (kid "`+kid+`"); it was not issued by that issuer, or the issuer has just rotated its keys: try again in 30s`)
	checkJWKSFetches(t, tap, "within the interval", 1)

	// At the next allowed fetch the new key is found; both keys then
	// verify from the cache.
	clk.Advance(26 * time.Second)
	for range 3 {
		if _, err := v.Verify(t.Context(), rotated); err != nil {
			t.Fatalf("Verify(token signed with the new key past the interval): %v", err)
		}
		if _, err := v.Verify(t.Context(), is.SignIDToken(claims(is, nil))); err != nil {
			t.Fatalf("Verify(token signed with the first key): %v", err)
		}
	}
	checkJWKSFetches(t, tap, "after the rotation", 2)
}

// lateTransport lets a test give the verifier's HTTP client the issuer's
// trust root after the verifier was built, as an operator would by starting
// the issuer later.
type lateTransport struct {
	rt atomic.Pointer[http.Transport]
}

func (l *lateTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return l.rt.Load().RoundTrip(r)
}

func TestVerifierLazyDiscovery(t *testing.T) {
	// Reserve a port, then leave it closed: the issuer is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	issuerURL := "https://" + addr

	lt := &lateTransport{}
	lt.rt.Store(&http.Transport{})
	v, err := login.NewVerifier([]login.Issuer{{URL: issuerURL, ClientIDs: []string{clientID}}},
		login.WithHTTPClient(&http.Client{Transport: lt, Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatalf("NewVerifier with the issuer down: %v", err)
	}
	early := unsignedRS256(map[string]any{"iss": issuerURL})
	_, err = v.Verify(t.Context(), early)
	checkRefused(t, "Verify while the issuer is down", err, broker.ErrUnavailable, "cannot reach oidc issuer")

	is := startIssuer(t, func(c *oidcissuer.Config) { c.Addr = addr })
	lt.rt.Store(is.Client().Transport.(*http.Transport))
	if _, err := v.Verify(t.Context(), is.SignIDToken(claims(is, nil))); err != nil {
		t.Fatalf("Verify once the issuer is up: %v", err)
	}
}

func TestVerifierKeepsDiscovery(t *testing.T) {
	is := startIssuer(t, nil)
	clk := newClock()
	v := newVerifier(t, is, login.WithNow(clk.Now))
	first, second := is.SignIDToken(claims(is, nil)), is.SignIDToken(claims(is, nil))
	rotated := sign(t, jose.RS256, newRSAKey(t), "rotated-key", claims(is, nil))
	if _, err := v.Verify(t.Context(), first); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := is.Close(); err != nil {
		t.Fatal(err)
	}
	// Discovery and keys are kept: a token signed with a known key needs
	// no request to the issuer.
	if _, err := v.Verify(t.Context(), second); err != nil {
		t.Errorf("Verify with the issuer down after discovery: %v", err)
	}
	// Right after a fetch, an unknown kid is refused without a request:
	// one would have failed.
	_, err := v.Verify(t.Context(), rotated)
	checkRefused(t, "Verify of an unknown kid right after a fetch", err, broker.ErrInvalid, `does not publish (kid "rotated-key")`)
	// Past the interval, an unknown kid makes the verifier fetch the keys
	// again, which fails: that is the issuer's outage, not the token's
	// fault. The failure stands for the interval, and the cached key still
	// works.
	clk.Advance(31 * time.Second)
	for range 2 {
		_, err = v.Verify(t.Context(), rotated)
		checkRefused(t, "Verify of an unknown kid with the issuer down", err, broker.ErrUnavailable, "cannot fetch the signing keys")
	}
	if _, err := v.Verify(t.Context(), second); err != nil {
		t.Errorf("Verify with the issuer down after a failed refetch: %v", err)
	}
}

func TestVerifierUntrustedCertificate(t *testing.T) {
	is := startIssuer(t, nil)
	other := startIssuer(t, nil)
	v, err := login.NewVerifier([]login.Issuer{{URL: is.URL(), ClientIDs: []string{clientID}, CAFile: writeCA(t, other)}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), is.SignIDToken(claims(is, nil)))
	checkRefused(t, "Verify when ca_file does not hold the issuer's CA", err, broker.ErrUnavailable, "ca_file")
}

func mustQuery(u string) url.Values {
	pu, err := url.Parse(u)
	if err != nil {
		panic(err)
	}
	return pu.Query()
}

// getStatus GETs a loopback URL as a browser would and returns the status,
// or 0 when the request failed.
func getStatus(u string) int {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func b64JSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// unsigned hand-makes an alg none token.
func unsigned(claims map[string]any) string {
	return b64JSON(map[string]string{"alg": "none", "typ": "JWT"}) + "." + b64JSON(claims) + "."
}

// unsignedRS256 claims RS256 but carries a junk signature: enough to reach
// discovery.
func unsignedRS256(claims map[string]any) string {
	return b64JSON(map[string]string{"alg": "RS256"}) + "." + b64JSON(claims) + ".c2ln"
}

func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
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

func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func segment(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func headerOf(t *testing.T, token string) map[string]any { return segment(t, token, 0) }

// tamper rewrites a signed token's claims and keeps its signature.
func tamper(t *testing.T, token string, edit func(map[string]any)) string {
	t.Helper()
	c := segment(t, token, 1)
	edit(c)
	parts := strings.Split(token, ".")
	parts[1] = b64JSON(c)
	return strings.Join(parts, ".")
}
