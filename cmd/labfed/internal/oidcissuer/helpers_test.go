package oidcissuer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/labfed/labfed/cmd/labfed/internal/oidcissuer"
)

const (
	clientID  = "labfed-cli"
	otherID   = "other-cli"
	username  = "ada"
	password  = "correct horse battery staple"
	subject   = "http://cilogon.org/serverA/users/1234"
	userEmail = "ada@example.edu"
	userName  = "Ada Lovelace"
	// redirectURI is never contacted: issuer tests read the Location the
	// issuer answers with instead of following it.
	redirectURI = "http://127.0.0.1:9/callback"
)

// clock is a settable clock for the issuer's Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

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

// startIssuer starts an issuer with one client, a second client and one user;
// edit may change the configuration first. The issuer is closed at cleanup.
func startIssuer(t testing.TB, edit func(*oidcissuer.Config)) *oidcissuer.Issuer {
	t.Helper()
	cfg := oidcissuer.Config{
		Clients: []oidcissuer.Client{{ID: clientID, RedirectLoopbackOnly: true}, {ID: otherID, RedirectLoopbackOnly: true}},
		Users: []oidcissuer.User{{
			Username: username, Password: password, Subject: subject, Email: userEmail, Name: userName,
		}},
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if edit != nil {
		edit(&cfg)
	}
	is, err := oidcissuer.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := is.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return is
}

// pkce is a verifier and its S256 challenge.
type pkce struct{ verifier, challenge string }

func newPKCE() pkce {
	v := oauth2.GenerateVerifier()
	return pkce{v, oauth2.S256ChallengeFromVerifier(v)}
}

// authParams are the parameters of a valid authorization request.
func authParams(p pkce) url.Values {
	return url.Values{
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"response_type":         {"code"},
		"scope":                 {"openid email profile"},
		"state":                 {"state-123"},
		"nonce":                 {"nonce-456"},
		"code_challenge":        {p.challenge},
		"code_challenge_method": {"S256"},
	}
}

// signIn submits the login form for params directly, as Browse would, and
// returns the code from the redirect.
func signIn(t testing.TB, is *oidcissuer.Issuer, params url.Values) string {
	t.Helper()
	form := url.Values{"username": {username}, "password": {password}}
	for k, v := range params {
		form[k] = v
	}
	resp, err := is.Client().PostForm(is.URL()+"/authorize", form)
	if err != nil {
		t.Fatalf("POST /authorize: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /authorize: status %s, want 303", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("POST /authorize: %v", err)
	}
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("POST /authorize redirected to %s, want a code", loc)
	}
	return code
}

// postJSON posts a form and decodes the JSON answer.
func postJSON(t testing.TB, c *http.Client, u string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("POST %s: decode: %v", u, err)
	}
	return resp.StatusCode, body
}

func get(t testing.TB, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, string(b)
}

// verifyWithJWKS checks an ID token's signature against the issuer's
// published keys and returns its claims.
func verifyWithJWKS(t testing.TB, is *oidcissuer.Issuer, raw string) map[string]any {
	t.Helper()
	resp, err := is.Client().Get(is.URL() + "/jwks")
	if err != nil {
		t.Fatalf("GET /jwks: %v", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("decode /jwks: %v", err)
	}
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parse ID token: %v", err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("ID token kid %q matches %d published keys, want 1", jws.Signatures[0].Header.KeyID, len(keys))
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("verify ID token with the published key: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("decode claims: %v", err)
	}
	return claims
}

// callbackServer is a loopback HTTP server standing in for a client's
// redirect URI; it records the queries it receives.
type callbackServer struct {
	URL string
	got chan url.Values
}

func startCallback(t testing.TB) *callbackServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cs := &callbackServer{URL: "http://" + ln.Addr().String() + "/callback", got: make(chan url.Values, 10)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.got <- r.URL.Query()
		io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return cs
}

// denyDevice denies a device login through the /device form. It returns
// an error rather than failing the test so it can run in a goroutine.
func denyDevice(is *oidcissuer.Issuer, userCode string) error {
	resp, err := is.Client().PostForm(is.URL()+"/device", url.Values{
		"user_code": {userCode}, "username": {username}, "password": {password}, "action": {"deny"},
	})
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /device deny: status %s, want 200", resp.Status)
	}
	return nil
}

func decodeJSON(resp *http.Response, v any) error {
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode the answer of %s: %w", resp.Request.URL, err)
	}
	return nil
}

// strs converts a decoded JSON array of strings.
func strs(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// issuerTap is a broker's HTTP transport to a real issuer: it counts the
// requests for each path, and can add keys to the JWKS the issuer answers
// with, as the issuer would when it rotates its keys. It taps the client
// side because a reverse proxy would have another URL than the issuer's,
// and the issuer's URL is its identity (its discovery document's issuer and
// its tokens' iss).
type issuerTap struct {
	base http.RoundTripper

	mu     sync.Mutex
	counts map[string]int
	extra  []jose.JSONWebKey
}

func newIssuerTap(is *oidcissuer.Issuer) *issuerTap {
	return &issuerTap{base: is.Client().Transport, counts: make(map[string]int)}
}

// client is an HTTP client for login.WithHTTPClient.
func (tap *issuerTap) client() *http.Client {
	return &http.Client{Transport: tap, Timeout: 10 * time.Second}
}

// count is how many requests for path went to the issuer.
func (tap *issuerTap) count(path string) int {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return tap.counts[path]
}

// publish adds keys to those the issuer publishes.
func (tap *issuerTap) publish(keys ...jose.JSONWebKey) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	tap.extra = append(tap.extra, keys...)
}

func (tap *issuerTap) RoundTrip(r *http.Request) (*http.Response, error) {
	tap.mu.Lock()
	tap.counts[r.URL.Path]++
	extra := tap.extra
	tap.mu.Unlock()
	resp, err := tap.base.RoundTrip(r)
	if err != nil || r.URL.Path != "/jwks" || len(extra) == 0 || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("issuerTap: decode the issuer's JWKS: %w", err)
	}
	set.Keys = append(set.Keys, extra...)
	body, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}
