package login

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/labfed/labfed/broker"
)

// ClientConfig describes the CLI as an OIDC client of one issuer.
type ClientConfig struct {
	// Issuer is the issuer URL, as the broker's login configuration names it.
	Issuer string
	// ClientID is the CLI's client id registered with the issuer. Native
	// clients are public: there is no secret.
	ClientID string
	// Scopes default to openid email profile; openid is added if missing.
	Scopes []string
	// HTTPClient is used for every request to the issuer; default a client
	// with the system roots and a 30 second timeout.
	HTTPClient *http.Client
}

// flow is one login in progress against a discovered issuer.
type flow struct {
	issuer   string
	provider *oidc.Provider
	oauth    oauth2.Config
}

// newFlow discovers the issuer. The returned context carries the HTTP
// client, which is how both oauth2 and go-oidc take one.
func newFlow(ctx context.Context, cfg ClientConfig) (context.Context, *flow, error) {
	if u, err := url.Parse(cfg.Issuer); err != nil || u.Scheme != "https" || u.Host == "" {
		return ctx, nil, broker.Errorf(broker.ErrInvalid, "oidc issuer %q is not an https URL", cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return ctx, nil, broker.Errorf(broker.ErrInvalid, "no client id is configured for oidc issuer %s", cfg.Issuer)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	ctx = oidc.ClientContext(ctx, client)
	p, err := discover(ctx, client, cfg.Issuer)
	if err != nil {
		return ctx, nil, err
	}
	ep := p.Endpoint()
	// A public client sends its id in the form (RFC 6749 section 2.3.1);
	// saying so spares oauth2 a probe with an empty Basic password.
	ep.AuthStyle = oauth2.AuthStyleInParams
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	} else if !slices.Contains(scopes, oidc.ScopeOpenID) {
		scopes = append([]string{oidc.ScopeOpenID}, scopes...)
	}
	return ctx, &flow{
		issuer:   cfg.Issuer,
		provider: p,
		oauth:    oauth2.Config{ClientID: cfg.ClientID, Endpoint: ep, Scopes: scopes},
	}, nil
}

// idToken takes the ID token out of a token response and verifies it for
// this client, and its nonce when the flow sent one.
func (f *flow) idToken(ctx context.Context, tok *oauth2.Token, nonce string) (string, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", broker.Errorf(broker.ErrInvalid, "oidc issuer %s returned no ID token; check that client %s may use the openid scope", f.issuer, f.oauth.ClientID)
	}
	idv := f.provider.Verifier(&oidc.Config{ClientID: f.oauth.ClientID, SupportedSigningAlgs: supportedAlgs})
	t, err := idv.Verify(ctx, raw)
	if err != nil {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token from %s does not verify: %s", f.issuer, oneLine(err))
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(t.Nonce), []byte(nonce)) != 1 {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token from %s does not carry this login's nonce; it was replayed from another login, start again", f.issuer)
	}
	return raw, nil
}

// AuthCode logs in with the authorization code flow for native apps. It
// calls open with the issuer's login page URL, for the caller to launch a
// browser or print it; the browser comes back to a loopback listener with a
// code, which AuthCode exchanges. It returns the verified raw ID token, and
// waits for the browser until ctx ends.
func AuthCode(ctx context.Context, cfg ClientConfig, open func(url string) error) (string, error) {
	ctx, f, err := newFlow(ctx, cfg)
	if err != nil {
		return "", err
	}
	// RFC 8252 section 8.3: listen on the loopback IP, not "localhost",
	// which might resolve elsewhere or be served by another program.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for the login callback on 127.0.0.1: %w", err)
	}
	cb := &callback{state: rand.Text(), result: make(chan callbackResult, 1)}
	srv := &http.Server{Handler: cb, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with ErrServerClosed at shutdown
	defer shutdown(srv)

	f.oauth.RedirectURL = "http://" + ln.Addr().String() + "/callback"
	nonce, verifier := rand.Text(), oauth2.GenerateVerifier()
	authURL := f.oauth.AuthCodeURL(cb.state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))
	if err := open(authURL); err != nil {
		return "", fmt.Errorf("open the login page %s: %w", authURL, err)
	}
	var res callbackResult
	select {
	case res = <-cb.result:
	case <-ctx.Done():
		return "", fmt.Errorf("gave up waiting for the browser to return to %s: %w", f.oauth.RedirectURL, ctx.Err())
	}
	if res.err != nil {
		return "", res.err
	}
	tok, err := f.oauth.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", tokenRequestError(ctx, f.issuer, err)
	}
	return f.idToken(ctx, tok, nonce)
}

// shutdown lets a callback page that is being written finish, briefly.
func shutdown(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		_ = srv.Close()
	}
}

// callback receives the browser's redirect from the issuer.
type callback struct {
	state  string
	done   atomic.Bool
	result chan callbackResult
}

type callbackResult struct {
	code string
	err  error
}

func (c *callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/callback" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(c.state)) != 1 {
		// Not the redirect of this login: a stale tab, or another page
		// poking the port. It must not end the login that is waiting.
		callbackPage(w, http.StatusBadRequest, "This link does not belong to the labfed login that is running (the state does not match). If the login does not complete, start it again.")
		return
	}
	if !c.done.CompareAndSwap(false, true) {
		callbackPage(w, http.StatusConflict, "This login has already completed. You may close this window.")
		return
	}
	res := callbackResult{code: q.Get("code")}
	switch {
	case q.Get("error") != "":
		res.err = broker.Errorf(broker.ErrInvalid, "the issuer refused the login: %s", describeOAuthError(q.Get("error"), q.Get("error_description")))
	case res.code == "":
		res.err = broker.Errorf(broker.ErrInvalid, "the issuer came back without a code or an error")
	}
	c.result <- res
	if res.err != nil {
		callbackPage(w, http.StatusBadRequest, "Login failed: "+res.err.Error()+". You may close this window.")
		return
	}
	callbackPage(w, http.StatusOK, "Login received. Return to your terminal; you may close this window.")
}

func callbackPage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><html><head><meta charset=\"utf-8\"><title>labfed login</title></head><body><p>%s</p></body></html>\n", html.EscapeString(msg))
}

func describeOAuthError(code, description string) string {
	if description == "" {
		return code
	}
	return code + ": " + description
}

// tokenRequestError explains a failed request to the issuer's device or
// token endpoint.
func tokenRequestError(ctx context.Context, issuer string, err error) error {
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode != "":
		return broker.Errorf(broker.ErrInvalid, "oidc issuer %s refused the login: %s", issuer, describeOAuthError(re.ErrorCode, re.ErrorDescription))
	case errors.As(err, &re):
		return broker.Errorf(broker.ErrUnavailable, "oidc issuer %s answered %s: %s", issuer, re.Response.Status, oneLine(errors.New(string(re.Body))))
	case ctx.Err() != nil:
		return fmt.Errorf("login to %s interrupted: %w", issuer, ctx.Err())
	}
	return broker.Errorf(broker.ErrUnavailable, "cannot reach oidc issuer %s: %s; try again later", issuer, oneLine(err))
}
