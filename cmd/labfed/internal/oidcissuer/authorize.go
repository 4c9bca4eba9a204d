package oidcissuer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// authRequest is a validated authorization request (RFC 6749 section 4.1.1
// with RFC 7636's challenge and OIDC's nonce). The login form carries it in
// hidden fields, and the POST validates it again: the browser is not trusted
// to return what it was given.
type authRequest struct {
	ClientID      string
	RedirectURI   string
	ResponseType  string
	Scope         string
	State         string
	Nonce         string
	Challenge     string
	ChallengeMeth string
}

// authCode is an issued authorization code, bound to everything the token
// request must repeat or prove.
type authCode struct {
	req      authRequest
	user     User
	authTime time.Time
	expires  time.Time
}

// authError is a refusal of an authorization request. Redirect is false when
// the client or redirect URI cannot be trusted (RFC 6749 section 4.1.2.1):
// then the person sees an error page and is never sent anywhere.
type authError struct {
	Redirect    bool
	Code        string
	Description string
}

// pkceChallenge is what an S256 challenge looks like: base64url without
// padding of a SHA-256 digest.
var pkceChallenge = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func readAuthRequest(v url.Values) authRequest {
	return authRequest{
		ClientID:      v.Get("client_id"),
		RedirectURI:   v.Get("redirect_uri"),
		ResponseType:  v.Get("response_type"),
		Scope:         v.Get("scope"),
		State:         v.Get("state"),
		Nonce:         v.Get("nonce"),
		Challenge:     v.Get("code_challenge"),
		ChallengeMeth: v.Get("code_challenge_method"),
	}
}

// validate checks req in the order RFC 6749 requires: the client and the
// redirect URI first, since only then may errors go back by redirect.
func (is *Issuer) validate(req authRequest) *authError {
	if _, ok := is.clients[req.ClientID]; !ok {
		return &authError{Code: "invalid_client", Description: "unknown client_id " + quote(req.ClientID)}
	}
	if problem := checkLoopbackRedirect(req.RedirectURI); problem != "" {
		return &authError{Code: "invalid_request", Description: problem}
	}
	switch {
	case req.ResponseType != "code":
		return &authError{true, "unsupported_response_type", "only response_type=code is supported"}
	case !slices.Contains(strings.Fields(req.Scope), "openid"):
		return &authError{true, "invalid_scope", "the openid scope is required"}
	case req.Challenge == "":
		return &authError{true, "invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256"}
	case req.ChallengeMeth != "S256":
		return &authError{true, "invalid_request", "code_challenge_method must be S256; plain is refused"}
	case !pkceChallenge.MatchString(req.Challenge):
		return &authError{true, "invalid_request", "code_challenge is not a base64url SHA-256 digest"}
	}
	return nil
}

// checkLoopbackRedirect describes what is wrong with a redirect URI, or
// returns "". It accepts only RFC 8252 section 7.3 redirects:
// http to the loopback IP literal with any port. "localhost" is refused
// (section 8.3): a name can resolve off the machine.
func checkLoopbackRedirect(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return "redirect_uri is missing or not a URL"
	}
	host, port, err := net.SplitHostPort(u.Host)
	switch {
	case u.Scheme != "http" || err != nil || port == "":
		return "redirect_uri must be http://127.0.0.1:PORT/... or http://[::1]:PORT/..."
	case host != "127.0.0.1" && host != "::1":
		return "redirect_uri must point at the loopback IP 127.0.0.1 or ::1, not " + quote(host)
	case u.User != nil || u.Fragment != "":
		return "redirect_uri must not carry user information or a fragment"
	}
	return ""
}

func (is *Issuer) handleAuthorizeForm(w http.ResponseWriter, r *http.Request) {
	req := readAuthRequest(r.URL.Query())
	if aerr := is.validate(req); aerr != nil {
		is.refuseAuthorize(w, r, req, aerr)
		return
	}
	renderPage(w, http.StatusOK, loginPage, loginView{Req: req})
}

func (is *Issuer) handleAuthorizeLogin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		renderPage(w, http.StatusBadRequest, errorPage, errorView{Message: "the form could not be read"})
		return
	}
	req := readAuthRequest(r.PostForm)
	if aerr := is.validate(req); aerr != nil {
		is.refuseAuthorize(w, r, req, aerr)
		return
	}
	user, ok := is.authenticate(r.PostForm.Get("username"), r.PostForm.Get("password"))
	if !ok {
		is.log.Info("oidc login refused: bad credentials", "client", req.ClientID, "username", r.PostForm.Get("username"))
		renderPage(w, http.StatusForbidden, loginPage, loginView{Req: req, Error: "invalid username or password"})
		return
	}
	code := is.issueCode(req, user)
	is.log.Info("oidc login", "client", req.ClientID, "sub", user.Subject)
	redirectTo(w, r, req.RedirectURI, url.Values{"code": {code}, "state": {req.State}, "iss": {is.url}}, http.StatusSeeOther)
}

func (is *Issuer) refuseAuthorize(w http.ResponseWriter, r *http.Request, req authRequest, aerr *authError) {
	is.log.Info("oidc authorize refused", "client", req.ClientID, "error", aerr.Code, "reason", aerr.Description)
	if !aerr.Redirect {
		renderPage(w, http.StatusBadRequest, errorPage, errorView{Message: aerr.Description})
		return
	}
	redirectTo(w, r, req.RedirectURI, url.Values{
		"error": {aerr.Code}, "error_description": {aerr.Description}, "state": {req.State}, "iss": {is.url},
	}, http.StatusFound)
}

// redirectTo sends the browser to base with params added to its query.
func redirectTo(w http.ResponseWriter, r *http.Request, base string, params url.Values, status int) {
	u, _ := url.Parse(base) // validated by checkLoopbackRedirect
	q := u.Query()
	for k, vs := range params {
		if vs[0] != "" {
			q[k] = vs
		}
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), status)
}

// authenticate checks a password in constant time. Digests are compared so
// the length of the stored password does not show in the timing either.
func (is *Issuer) authenticate(username, password string) (User, bool) {
	u, ok := is.users[username]
	got, want := sha256.Sum256([]byte(password)), sha256.Sum256([]byte(u.Password))
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	return u, ok && match
}

func (is *Issuer) issueCode(req authRequest, user User) string {
	now := is.cfg.Now()
	code := rand.Text()
	is.mu.Lock()
	defer is.mu.Unlock()
	for c, ac := range is.codes {
		if !now.Before(ac.expires) {
			delete(is.codes, c)
		}
	}
	is.codes[code] = &authCode{req: req, user: user, authTime: now, expires: now.Add(codeTTL)}
	return code
}

// takeCode removes and returns a code: it is spent by the first token
// request that presents it, whether or not that request succeeds, so a
// stolen code cannot be retried against guessed verifiers.
func (is *Issuer) takeCode(code string) (*authCode, bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	ac, ok := is.codes[code]
	delete(is.codes, code)
	return ac, ok
}

// quote quotes a caller-supplied value for a message, cut short so a hostile
// value cannot flood a page or a log.
func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return strconv.Quote(s)
}
