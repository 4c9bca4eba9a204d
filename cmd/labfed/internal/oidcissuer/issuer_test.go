package oidcissuer_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/cmd/labfed/internal/oidcissuer"
)

func TestDiscovery(t *testing.T) {
	is := startIssuer(t, nil)
	resp, err := is.Client().Get(is.URL() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("GET discovery: %v", err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := decodeJSON(resp, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(is.URL(), "https://127.0.0.1:") {
		t.Errorf("URL() = %q, want https://127.0.0.1:PORT", is.URL())
	}
	wantStrings := map[string]string{
		"issuer":                        is.URL(),
		"authorization_endpoint":        is.URL() + "/authorize",
		"token_endpoint":                is.URL() + "/token",
		"jwks_uri":                      is.URL() + "/jwks",
		"device_authorization_endpoint": is.URL() + "/device/code",
	}
	for k, want := range wantStrings {
		if got := doc[k]; got != want {
			t.Errorf("discovery %s = %v, want %q", k, got, want)
		}
	}
	wantLists := map[string][]string{
		"response_types_supported":              {"code"},
		"subject_types_supported":               {"public"},
		"id_token_signing_alg_values_supported": {"RS256"},
		"code_challenge_methods_supported":      {"S256"},
		"grant_types_supported":                 {"authorization_code", "urn:ietf:params:oauth:grant-type:device_code"},
	}
	for k, want := range wantLists {
		if got := strs(doc[k]); !slices.Equal(got, want) {
			t.Errorf("discovery %s = %v, want %v", k, got, want)
		}
	}
}

func TestJWKS(t *testing.T) {
	is := startIssuer(t, nil)
	resp, err := is.Client().Get(is.URL() + "/jwks")
	if err != nil {
		t.Fatalf("GET /jwks: %v", err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := decodeJSON(resp, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("/jwks has %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if k["kty"] != "RSA" || k["alg"] != "RS256" || k["use"] != "sig" || k["kid"] == "" || k["kid"] == nil {
		t.Errorf("/jwks key = %v, want an RSA RS256 signing key with a kid", k)
	}
	if _, private := k["d"]; private {
		t.Errorf("/jwks publishes the private exponent")
	}
	// A token the issuer signs verifies with the published key (by kid).
	claims := verifyWithJWKS(t, is, is.SignIDToken(map[string]any{"sub": "x"}))
	if claims["sub"] != "x" {
		t.Errorf("SignIDToken claims = %v, want sub x", claims)
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(*oidcissuer.Config)
		want string
	}{
		{"wildcard address", func(c *oidcissuer.Config) { c.Addr = "0.0.0.0:0" }, "not a loopback IP"},
		{"host name", func(c *oidcissuer.Config) { c.Addr = "localhost:0" }, "not a loopback IP"},
		{"routable address", func(c *oidcissuer.Config) { c.Addr = "192.0.2.1:0" }, "not a loopback IP"},
		{"client without loopback redirects", func(c *oidcissuer.Config) {
			c.Clients = []oidcissuer.Client{{ID: "web"}}
		}, "RedirectLoopbackOnly"},
		{"duplicate client", func(c *oidcissuer.Config) {
			c.Clients = append(c.Clients, oidcissuer.Client{ID: clientID, RedirectLoopbackOnly: true})
		}, "listed twice"},
		{"user without subject", func(c *oidcissuer.Config) {
			c.Users = []oidcissuer.User{{Username: "bob", Password: "pw"}}
		}, "subject"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			cfg := oidcissuer.Config{
				Clients: []oidcissuer.Client{{ID: clientID, RedirectLoopbackOnly: true}},
				Users:   []oidcissuer.User{{Username: username, Password: password, Subject: subject}},
			}
			test.edit(&cfg)
			is, err := oidcissuer.New(cfg)
			if err == nil {
				is.Close()
				t.Fatalf("New(%s) = nil error, want one mentioning %q", test.name, test.want)
			}
			if !strings.Contains(err.Error(), test.want) {
				t.Errorf("New(%s) = %v, want an error mentioning %q", test.name, err, test.want)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	is := startIssuer(t, nil)
	block, _ := pem.Decode(is.CAPEM())
	if block == nil {
		t.Fatalf("CAPEM() = %q, want a PEM certificate", is.CAPEM())
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("CAPEM certificate: %v", err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate does not name 127.0.0.1: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(is.CAPEM())
	addr := strings.TrimPrefix(is.URL(), "https://")
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS dial trusting CAPEM: %v", err)
	}
	if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("negotiated TLS version %x, want TLS 1.3", v)
	}
	conn.Close()
	if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12}); err == nil {
		conn.Close()
		t.Errorf("TLS 1.2 handshake succeeded, want it refused")
	}
	if conn, err := tls.Dial("tcp", addr, &tls.Config{}); err == nil {
		conn.Close()
		t.Errorf("handshake with system roots succeeded, want the self-signed certificate untrusted")
	}
}

func TestAuthorizeRefuses(t *testing.T) {
	is := startIssuer(t, nil)
	tests := []struct {
		name string
		edit func(url.Values)
		// wantRedirectError is the error the issuer redirects with; empty
		// means it must show an error page and not redirect at all.
		wantRedirectError string
		wantText          string
	}{
		{"unknown client", func(v url.Values) { v.Set("client_id", "mallory") }, "", "unknown client_id"},
		{"missing client", func(v url.Values) { v.Del("client_id") }, "", "unknown client_id"},
		{"non-loopback redirect", func(v url.Values) { v.Set("redirect_uri", "http://attacker.example:8080/cb") }, "", "loopback"},
		{"routable IP redirect", func(v url.Values) { v.Set("redirect_uri", "http://192.0.2.1:8080/cb") }, "", "loopback"},
		{"localhost redirect", func(v url.Values) { v.Set("redirect_uri", "http://localhost:8080/cb") }, "", "loopback"},
		{"https redirect", func(v url.Values) { v.Set("redirect_uri", "https://127.0.0.1:8080/cb") }, "", "redirect_uri must be"},
		{"redirect without port", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1/cb") }, "", "redirect_uri must be"},
		{"missing redirect", func(v url.Values) { v.Del("redirect_uri") }, "", "redirect_uri"},
		{"missing PKCE", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, "invalid_request", "PKCE is required"},
		{"plain PKCE", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "invalid_request", "plain is refused"},
		{"PKCE without method", func(v url.Values) { v.Del("code_challenge_method") }, "invalid_request", "S256"},
		{"malformed challenge", func(v url.Values) { v.Set("code_challenge", "short") }, "invalid_request", "code_challenge"},
		{"implicit flow", func(v url.Values) { v.Set("response_type", "token") }, "unsupported_response_type", "response_type=code"},
		{"no openid scope", func(v url.Values) { v.Set("scope", "email") }, "invalid_scope", "openid"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			params := authParams(newPKCE())
			test.edit(params)
			// The GET that shows the form and the POST that submits it
			// must both refuse: hidden fields come back from the browser.
			resp, body := get(t, is.Client(), is.URL()+"/authorize?"+params.Encode())
			checkRefusal(t, "GET /authorize", resp, body, test.wantRedirectError, test.wantText)
			form := url.Values{"username": {username}, "password": {password}}
			for k, v := range params {
				form[k] = v
			}
			resp, err := is.Client().PostForm(is.URL()+"/authorize", form)
			if err != nil {
				t.Fatalf("POST /authorize: %v", err)
			}
			resp.Body.Close()
			checkRefusal(t, "POST /authorize", resp, "", test.wantRedirectError, "")
		})
	}
}

func checkRefusal(t *testing.T, what string, resp *http.Response, body, wantRedirectError, wantText string) {
	t.Helper()
	loc := resp.Header.Get("Location")
	if wantRedirectError == "" {
		if resp.StatusCode != http.StatusBadRequest || loc != "" {
			t.Errorf("%s: status %s, Location %q; want 400 and no redirect", what, resp.Status, loc)
		}
		if !strings.Contains(body, wantText) {
			t.Errorf("%s: page %q, want it to mention %q", what, body, wantText)
		}
		return
	}
	u, err := url.Parse(loc)
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc, redirectURI) {
		t.Fatalf("%s: status %s, Location %q; want 302 to %s", what, resp.Status, loc, redirectURI)
	}
	q := u.Query()
	if q.Get("error") != wantRedirectError || q.Get("code") != "" || q.Get("state") != "state-123" {
		t.Errorf("%s: redirected with %v, want error=%s, state passed through, no code", what, q, wantRedirectError)
	}
	if !strings.Contains(q.Get("error_description"), wantText) {
		t.Errorf("%s: error_description %q, want it to mention %q", what, q.Get("error_description"), wantText)
	}
}

func TestAuthorizeLogin(t *testing.T) {
	is := startIssuer(t, nil)
	params := authParams(newPKCE())
	params.Set("redirect_uri", "http://[::1]:4242/cb?keep=1")

	resp, page := get(t, is.Client(), is.URL()+"/authorize?"+params.Encode())
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `name="password"`) {
		t.Fatalf("GET /authorize: status %s, page %q; want 200 and a login form", resp.Status, page)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("login page X-Frame-Options = %q, want DENY", resp.Header.Get("X-Frame-Options"))
	}

	form := url.Values{"username": {username}, "password": {"wrong"}}
	for k, v := range params {
		form[k] = v
	}
	resp, err := is.Client().PostForm(is.URL()+"/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" {
		t.Errorf("POST /authorize with a wrong password: status %s, Location %q; want 403 and no redirect",
			resp.Status, resp.Header.Get("Location"))
	}

	form.Set("password", password)
	resp, err = is.Client().PostForm(is.URL()+"/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusSeeOther || err != nil {
		t.Fatalf("POST /authorize: status %s, Location error %v; want 303", resp.Status, err)
	}
	q := loc.Query()
	if loc.Host != "[::1]:4242" || loc.Path != "/cb" || q.Get("keep") != "1" || q.Get("code") == "" ||
		q.Get("state") != "state-123" || q.Get("iss") != is.URL() {
		t.Errorf("POST /authorize redirected to %s, want http://[::1]:4242/cb with keep=1, a code, the state and iss", loc)
	}
}

// exchange is a token request for code with the parameters that go with
// authParams(p).
func exchange(code string, p pkce) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {redirectURI},
		"client_id":     {clientID},
		"code_verifier": {p.verifier},
	}
}

func TestTokenAuthorizationCode(t *testing.T) {
	clk := newClock()
	is := startIssuer(t, func(c *oidcissuer.Config) { c.Now = clk.Now; c.TokenTTL = 3 * time.Minute })
	p := newPKCE()
	code := signIn(t, is, authParams(p))

	resp, err := is.Client().PostForm(is.URL()+"/token", exchange(code, p))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("token response Cache-Control = %q, want no-store", cc)
	}
	var body map[string]any
	if err := decodeJSON(resp, &body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /token: status %s, body %v", resp.Status, body)
	}
	if body["token_type"] != "Bearer" || body["access_token"] == "" || body["expires_in"] != float64(180) {
		t.Errorf("token response = %v, want a Bearer access_token expiring in 180s", body)
	}
	raw, _ := body["id_token"].(string)
	claims := verifyWithJWKS(t, is, raw)
	now := clk.Now().Unix()
	want := map[string]any{
		"iss": is.URL(), "sub": subject, "aud": clientID, "nonce": "nonce-456",
		"email": userEmail, "email_verified": true, "name": userName,
		"iat": float64(now), "exp": float64(now + 180), "auth_time": float64(now),
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("ID token claim %s = %v, want %v", k, claims[k], v)
		}
	}
}

func TestTokenRefuses(t *testing.T) {
	clk := newClock()
	is := startIssuer(t, func(c *oidcissuer.Config) { c.Now = clk.Now })
	tests := []struct {
		name string
		// request returns the token request to send, given a fresh code
		// issued for authParams(p).
		request    func(t *testing.T, code string, p pkce) url.Values
		wantStatus int
		wantError  string
	}{
		{"wrong verifier", func(t *testing.T, code string, p pkce) url.Values {
			return exchange(code, newPKCE())
		}, 400, "invalid_grant"},
		{"missing verifier", func(t *testing.T, code string, p pkce) url.Values {
			v := exchange(code, p)
			v.Del("code_verifier")
			return v
		}, 400, "invalid_grant"},
		{"reused code", func(t *testing.T, code string, p pkce) url.Values {
			if status, body := postJSON(t, is.Client(), is.URL()+"/token", exchange(code, p)); status != 200 {
				t.Fatalf("first exchange: status %d, body %v", status, body)
			}
			return exchange(code, p)
		}, 400, "invalid_grant"},
		{"code spent by a failed attempt", func(t *testing.T, code string, p pkce) url.Values {
			postJSON(t, is.Client(), is.URL()+"/token", exchange(code, newPKCE()))
			return exchange(code, p)
		}, 400, "invalid_grant"},
		{"expired code", func(t *testing.T, code string, p pkce) url.Values {
			clk.Advance(61 * time.Second)
			return exchange(code, p)
		}, 400, "invalid_grant"},
		{"wrong redirect_uri", func(t *testing.T, code string, p pkce) url.Values {
			v := exchange(code, p)
			v.Set("redirect_uri", "http://127.0.0.1:10/callback")
			return v
		}, 400, "invalid_grant"},
		{"another client", func(t *testing.T, code string, p pkce) url.Values {
			v := exchange(code, p)
			v.Set("client_id", otherID)
			return v
		}, 400, "invalid_grant"},
		{"unknown client", func(t *testing.T, code string, p pkce) url.Values {
			v := exchange(code, p)
			v.Set("client_id", "mallory")
			return v
		}, 401, "invalid_client"},
		{"unknown code", func(t *testing.T, code string, p pkce) url.Values {
			return exchange("not-a-code", p)
		}, 400, "invalid_grant"},
		{"unsupported grant", func(t *testing.T, code string, p pkce) url.Values {
			v := exchange(code, p)
			v.Set("grant_type", "password")
			return v
		}, 400, "unsupported_grant_type"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			p := newPKCE()
			code := signIn(t, is, authParams(p))
			status, body := postJSON(t, is.Client(), is.URL()+"/token", test.request(t, code, p))
			if status != test.wantStatus || body["error"] != test.wantError || body["id_token"] != nil {
				t.Errorf("POST /token (%s) = %d %v, want %d error %s and no id_token", test.name, status, body, test.wantStatus, test.wantError)
			}
		})
	}
}

func TestTokenClientInBasicAuth(t *testing.T) {
	is := startIssuer(t, nil)
	p := newPKCE()
	form := exchange(signIn(t, is, authParams(p)), p)
	form.Del("client_id")
	req, err := http.NewRequest("POST", is.URL()+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, "")
	resp, err := is.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("POST /token with the client id in Basic auth: status %s, want 200", resp.Status)
	}
}

// startDevice asks for a device code and returns the response.
func startDevice(t *testing.T, is *oidcissuer.Issuer) map[string]any {
	t.Helper()
	status, body := postJSON(t, is.Client(), is.URL()+"/device/code", url.Values{"client_id": {clientID}, "scope": {"openid email"}})
	if status != http.StatusOK {
		t.Fatalf("POST /device/code: %d %v", status, body)
	}
	return body
}

func pollDevice(t *testing.T, is *oidcissuer.Issuer, deviceCode string) (int, map[string]any) {
	t.Helper()
	return postJSON(t, is.Client(), is.URL()+"/token", url.Values{
		"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {deviceCode},
		"client_id":   {clientID},
	})
}

func TestDeviceApproved(t *testing.T) {
	clk := newClock()
	is := startIssuer(t, func(c *oidcissuer.Config) { c.Now = clk.Now; c.DevicePollInterval = 2 * time.Second })
	da := startDevice(t, is)
	userCode, _ := da["user_code"].(string)
	deviceCode, _ := da["device_code"].(string)
	if len(userCode) != 9 || userCode[4] != '-' || strings.ToUpper(userCode) != userCode {
		t.Errorf("user_code = %q, want the shape ABCD-EFGH", userCode)
	}
	if da["verification_uri"] != is.URL()+"/device" ||
		da["verification_uri_complete"] != is.URL()+"/device?user_code="+url.QueryEscape(userCode) ||
		da["interval"] != float64(2) || da["expires_in"] != float64(600) || deviceCode == "" {
		t.Errorf("device authorization = %v", da)
	}

	steps := []struct {
		name      string
		before    func()
		wantError string
	}{
		{"poll after the interval", func() { clk.Advance(2 * time.Second) }, "authorization_pending"},
		{"poll too soon", func() { clk.Advance(500 * time.Millisecond) }, "slow_down"},
		// Each slow_down widens the interval by 5s: 7s, then 12s.
		{"poll at the old interval", func() { clk.Advance(2 * time.Second) }, "slow_down"},
		{"poll after the widened interval", func() { clk.Advance(12 * time.Second) }, "authorization_pending"},
		{"poll after approval", func() {
			// A person types the code in lower case without the dash.
			typed := strings.ToLower(strings.ReplaceAll(userCode, "-", ""))
			if err := is.ApproveDevice(typed, username, password); err != nil {
				t.Fatalf("ApproveDevice: %v", err)
			}
			clk.Advance(12 * time.Second)
		}, ""},
		{"poll after the token was issued", func() { clk.Advance(12 * time.Second) }, "invalid_grant"},
	}
	for _, step := range steps {
		step.before()
		status, body := pollDevice(t, is, deviceCode)
		if step.wantError == "" {
			if status != http.StatusOK {
				t.Fatalf("%s: %d %v, want tokens", step.name, status, body)
			}
			raw, _ := body["id_token"].(string)
			if claims := verifyWithJWKS(t, is, raw); claims["sub"] != subject || claims["aud"] != clientID {
				t.Errorf("%s: ID token claims %v, want sub %s aud %s", step.name, claims, subject, clientID)
			}
			continue
		}
		if status != http.StatusBadRequest || body["error"] != step.wantError {
			t.Errorf("%s: %d %v, want 400 %s", step.name, status, body, step.wantError)
		}
	}
}

func TestDeviceDeniedAndExpired(t *testing.T) {
	clk := newClock()
	is := startIssuer(t, func(c *oidcissuer.Config) { c.Now = clk.Now; c.DevicePollInterval = time.Second })

	denied := startDevice(t, is)
	if err := denyDevice(is, denied["user_code"].(string)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if status, body := pollDevice(t, is, denied["device_code"].(string)); status != 400 || body["error"] != "access_denied" {
		t.Errorf("poll after denial = %d %v, want 400 access_denied", status, body)
	}
	if err := is.ApproveDevice(denied["user_code"].(string), username, password); err == nil {
		t.Errorf("ApproveDevice after denial = nil, want an error")
	}

	expired := startDevice(t, is)
	clk.Advance(10*time.Minute + time.Second)
	if err := is.ApproveDevice(expired["user_code"].(string), username, password); err == nil {
		t.Errorf("ApproveDevice of an expired code = nil, want an error")
	}
	if status, body := pollDevice(t, is, expired["device_code"].(string)); status != 400 || body["error"] != "expired_token" {
		t.Errorf("poll after expiry = %d %v, want 400 expired_token", status, body)
	}
}

func TestDeviceRefuses(t *testing.T) {
	is := startIssuer(t, nil)
	if status, body := postJSON(t, is.Client(), is.URL()+"/device/code", url.Values{"client_id": {"mallory"}, "scope": {"openid"}}); status != 401 || body["error"] != "invalid_client" {
		t.Errorf("device code for an unknown client = %d %v, want 401 invalid_client", status, body)
	}
	if status, body := postJSON(t, is.Client(), is.URL()+"/device/code", url.Values{"client_id": {clientID}, "scope": {"email"}}); status != 400 || body["error"] != "invalid_scope" {
		t.Errorf("device code without openid = %d %v, want 400 invalid_scope", status, body)
	}
	da := startDevice(t, is)
	userCode := da["user_code"].(string)
	if err := is.ApproveDevice(userCode, username, "wrong"); err == nil || !strings.Contains(err.Error(), "invalid username or password") {
		t.Errorf("ApproveDevice with a wrong password = %v, want invalid username or password", err)
	}
	if err := is.ApproveDevice("BBBB-BBBB", username, password); err == nil || !strings.Contains(err.Error(), "unknown or expired code") {
		t.Errorf("ApproveDevice of an unknown code = %v, want unknown or expired code", err)
	}
	if status, body := postJSON(t, is.Client(), is.URL()+"/token", url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {da["device_code"].(string)}, "client_id": {otherID},
	}); status != 400 || body["error"] != "invalid_grant" {
		t.Errorf("poll by another client = %d %v, want 400 invalid_grant", status, body)
	}
	if err := is.ApproveDevice(userCode, username, password); err != nil {
		t.Fatalf("ApproveDevice: %v", err)
	}
	if err := is.ApproveDevice(userCode, username, password); err == nil {
		t.Errorf("second ApproveDevice of one code = nil, want an error")
	}
}

func TestBrowse(t *testing.T) {
	is := startIssuer(t, nil)
	cb := startCallback(t)
	params := authParams(newPKCE())
	params.Set("redirect_uri", cb.URL)

	if err := oidcissuer.Browse(is.Client(), is.URL()+"/authorize?"+params.Encode(), username, "wrong"); err == nil ||
		!strings.Contains(err.Error(), "invalid username or password") {
		t.Errorf("Browse with a wrong password = %v, want invalid username or password", err)
	}
	if err := oidcissuer.Browse(is.Client(), is.URL()+"/authorize?"+params.Encode(), username, password); err != nil {
		t.Fatalf("Browse: %v", err)
	}
	if q := <-cb.got; q.Get("code") == "" || q.Get("state") != "state-123" {
		t.Errorf("callback got %v, want a code and the state", q)
	}

	// An error redirect still reaches the callback, as in a browser.
	params.Set("code_challenge_method", "plain")
	err := oidcissuer.Browse(is.Client(), is.URL()+"/authorize?"+params.Encode(), username, password)
	if err == nil || !strings.Contains(err.Error(), "invalid_request") {
		t.Errorf("Browse with plain PKCE = %v, want invalid_request", err)
	}
	if q := <-cb.got; q.Get("error") != "invalid_request" || q.Get("code") != "" {
		t.Errorf("callback got %v, want error=invalid_request and no code", q)
	}

	params.Set("client_id", "mallory")
	if err := oidcissuer.Browse(is.Client(), is.URL()+"/authorize?"+params.Encode(), username, password); err == nil ||
		!strings.Contains(err.Error(), "unknown client_id") {
		t.Errorf("Browse with an unknown client = %v, want unknown client_id", err)
	}
	select {
	case q := <-cb.got:
		t.Errorf("callback got %v for an unknown client, want no visit", q)
	default:
	}
}
