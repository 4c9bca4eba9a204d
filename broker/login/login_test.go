package login_test

// These tests need no real issuer: they cover what the Verifier and the
// flows refuse before a token could be checked, and how they explain a
// broken issuer, with a loopback HTTPS server that serves fixed documents.
// The tests against a real issuer are in cmd/labfed/internal/oidcissuer,
// which packages under broker/ may not import.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/login"
)

// docServer is a loopback HTTPS server with a self-signed certificate.
type docServer struct {
	URL      string
	Client   *http.Client
	CAFile   string
	requests atomic.Int64
}

// startDocServer serves the handler that route builds for the server's
// base URL, and counts requests.
func startDocServer(t *testing.T, route func(base string) http.Handler) *docServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ds := &docServer{
		URL:    "https://" + ln.Addr().String(),
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second},
		CAFile: caFile,
	}
	h := route(ds.URL)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ds.requests.Add(1)
			h.ServeHTTP(w, r)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ds
}

// discovery serves a discovery document for base, changed by edit, and a
// JWKS handler.
func discovery(edit func(doc map[string]any), jwks http.HandlerFunc) func(string) http.Handler {
	return func(base string) http.Handler {
		doc := map[string]any{
			"issuer":                                base,
			"authorization_endpoint":                base + "/authorize",
			"token_endpoint":                        base + "/token",
			"jwks_uri":                              base + "/jwks",
			"device_authorization_endpoint":         base + "/device/code",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		}
		if edit != nil {
			edit(doc)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(doc)
		})
		if jwks != nil {
			mux.HandleFunc("GET /jwks", jwks)
		}
		mux.HandleFunc("POST /device/code", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"invalid_client","error_description":"client is not registered"}`))
		})
		return mux
	}
}

func emptyJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"keys":[]}`))
}

// deadURL is an https URL on a loopback port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "https://" + ln.Addr().String()
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// token hand-makes a compact JWS with a junk signature.
func token(header, payload string) string { return b64(header) + "." + b64(payload) + "." + b64("sig") }

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

func TestNewVerifierRefuses(t *testing.T) {
	noPEM := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(noPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := login.Issuer{URL: "https://cilogon.org", ClientIDs: []string{"cli"}}
	tests := []struct {
		name    string
		issuers []login.Issuer
		want    string
	}{
		{"plain http", []login.Issuer{{URL: "http://cilogon.org", ClientIDs: []string{"cli"}}}, "https URL"},
		{"not a URL", []login.Issuer{{URL: "cilogon.org", ClientIDs: []string{"cli"}}}, "https URL"},
		{"query", []login.Issuer{{URL: "https://cilogon.org?x=1", ClientIDs: []string{"cli"}}}, "without query"},
		{"no client ids", []login.Issuer{{URL: "https://cilogon.org"}}, "client_ids"},
		{"empty client id", []login.Issuer{{URL: "https://cilogon.org", ClientIDs: []string{"cli", ""}}}, "none empty"},
		{"twice", []login.Issuer{ok, ok}, "configured twice"},
		{"missing ca_file", []login.Issuer{{URL: ok.URL, ClientIDs: ok.ClientIDs, CAFile: "/nonexistent/ca.pem"}}, "read ca_file"},
		{"ca_file without PEM", []login.Issuer{{URL: ok.URL, ClientIDs: ok.ClientIDs, CAFile: noPEM}}, "holds no PEM certificate"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			v, err := login.NewVerifier(test.issuers)
			checkRefused(t, "NewVerifier("+test.name+")", err, broker.ErrInvalid, test.want)
			if v != nil {
				t.Errorf("NewVerifier(%s) returned a verifier with its error", test.name)
			}
		})
	}
}

func TestVerifyRefusesBeforeContactingIssuer(t *testing.T) {
	ds := startDocServer(t, discovery(nil, emptyJWKS))
	v, err := login.NewVerifier([]login.Issuer{{URL: ds.URL, ClientIDs: []string{"cli"}, CAFile: ds.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	iss := `{"iss":"` + ds.URL + `"}`
	tests := []struct {
		name, token, want string
	}{
		{"empty", "", "malformed"},
		{"two parts", b64(`{"alg":"RS256"}`) + "." + b64(iss), "2 dot-separated parts"},
		{"header not base64", "%%%." + b64(iss) + ".sig", "header is not base64url"},
		{"header not JSON", b64("nope") + "." + b64(iss) + ".sig", "header is not a JSON object"},
		{"payload not JSON", b64(`{"alg":"RS256"}`) + "." + b64("[1,2]") + ".sig", "payload is not a JSON object"},
		{"iss not a string", token(`{"alg":"RS256"}`, `{"iss":42}`), "payload is not a JSON object"},
		{"no iss", token(`{"alg":"RS256"}`, `{"sub":"x"}`), "no iss"},
		{"alg none", b64(`{"alg":"none"}`) + "." + b64(iss) + ".", "unsigned"},
		{"alg None", b64(`{"alg":"None"}`) + "." + b64(iss) + ".", "unsigned"},
		{"no signature", b64(`{"alg":"RS256"}`) + "." + b64(iss) + ".", "unsigned"},
		{"HMAC", token(`{"alg":"HS256"}`, iss), `signed with "HS256"`},
		{"RS512", token(`{"alg":"RS512"}`, iss), "RS256, ES256, EdDSA"},
		{"encrypted", "a.b.c.d.e", "encrypted (JWE)"},
		{"huge", token(`{"alg":"RS256"}`, `{"iss":"`+ds.URL+`","x":"`+strings.Repeat("x", 20000)+`"}`), "too long"},
		{"unknown issuer", token(`{"alg":"RS256"}`, `{"iss":"https://evil.example"}`), `issuer "https://evil.example" is not configured for this site; log in with one of: ` + ds.URL},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := v.Verify(t.Context(), test.token)
			checkRefused(t, "Verify("+test.name+")", err, broker.ErrInvalid, test.want)
		})
	}
	if n := ds.requests.Load(); n != 0 {
		t.Errorf("the issuer received %d requests, want none: these tokens are refused on sight", n)
	}
}

func TestVerifyWithNoIssuers(t *testing.T) {
	v, err := login.NewVerifier(nil)
	if err != nil {
		t.Fatalf("NewVerifier(nil): %v", err)
	}
	_, err = v.Verify(t.Context(), token(`{"alg":"RS256"}`, `{"iss":"https://cilogon.org"}`))
	checkRefused(t, "Verify with no issuers", err, broker.ErrInvalid, "accepts no OIDC logins")
}

func TestVerifyIssuerProblems(t *testing.T) {
	tests := []struct {
		name  string
		route func(string) http.Handler
		kind  error
		want  string
	}{
		{"discovery not found", func(string) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "<html>\n<body>\nno such page\n</body>\n</html>", http.StatusNotFound)
			})
		}, broker.ErrUnavailable, "404 Not Found"},
		{"issuer names itself differently", discovery(func(d map[string]any) { d["issuer"] = "https://other.example" }, emptyJWKS),
			broker.ErrUnavailable, "calls itself https://other.example"},
		{"jwks over http", discovery(func(d map[string]any) { d["jwks_uri"] = "http://127.0.0.1:1/jwks" }, emptyJWKS),
			broker.ErrUnavailable, "not an https URL"},
		{"jwks unavailable", discovery(nil, func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		}), broker.ErrUnavailable, "cannot fetch the signing keys"},
		{"jwks not JSON", discovery(nil, func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte("<html>\n<body>keys</body>\n</html>"))
		}), broker.ErrUnavailable, "not a JSON Web Key Set"},
		{"jwks too large", discovery(nil, func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"keys":[],"x":"` + strings.Repeat("x", 2<<20) + `"}`))
		}), broker.ErrUnavailable, "larger than"},
		{"key not published", discovery(nil, emptyJWKS), broker.ErrInvalid, `signed by a key issuer https://127.0.0.1:`},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			ds := startDocServer(t, test.route)
			v, err := login.NewVerifier([]login.Issuer{{URL: ds.URL, ClientIDs: []string{"cli"}, CAFile: ds.CAFile}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(t.Context(), token(`{"alg":"RS256","kid":"k"}`, `{"iss":"`+ds.URL+`"}`))
			checkRefused(t, "Verify("+test.name+")", err, test.kind, test.want)
		})
	}
}

func TestVerifyIssuerDown(t *testing.T) {
	u := deadURL(t)
	v, err := login.NewVerifier([]login.Issuer{{URL: u, ClientIDs: []string{"cli"}}})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(`{"alg":"RS256"}`, `{"iss":"`+u+`"}`)
	// Failed discovery is not kept: each call tries again.
	for range 2 {
		_, err = v.Verify(t.Context(), tok)
		checkRefused(t, "Verify with the issuer down", err, broker.ErrUnavailable, "cannot reach oidc issuer "+u)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = v.Verify(ctx, tok)
	checkRefused(t, "Verify with a cancelled context", err, broker.ErrUnavailable, u)
}

func TestVerifyHTTPClientOption(t *testing.T) {
	ds := startDocServer(t, discovery(nil, emptyJWKS))
	tok := token(`{"alg":"RS256","kid":"k"}`, `{"iss":"`+ds.URL+`"}`)
	// Without the issuer's CA the certificate is not trusted...
	v, err := login.NewVerifier([]login.Issuer{{URL: ds.URL, ClientIDs: []string{"cli"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), tok)
	checkRefused(t, "Verify without ca_file", err, broker.ErrUnavailable, "name it in ca_file")
	// ...and a client that trusts it gets as far as the signature.
	v, err = login.NewVerifier([]login.Issuer{{URL: ds.URL, ClientIDs: []string{"cli"}}}, login.WithHTTPClient(ds.Client))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), tok)
	checkRefused(t, "Verify with WithHTTPClient", err, broker.ErrInvalid, `does not publish (kid "k")`)
}

func TestClientConfigRefused(t *testing.T) {
	tests := []struct {
		name string
		cfg  login.ClientConfig
		kind error
		want string
	}{
		{"http issuer", login.ClientConfig{Issuer: "http://cilogon.org", ClientID: "cli"}, broker.ErrInvalid, "not an https URL"},
		{"no client id", login.ClientConfig{Issuer: "https://cilogon.org"}, broker.ErrInvalid, "no client id"},
		{"issuer down", login.ClientConfig{Issuer: deadURL(t), ClientID: "cli"}, broker.ErrUnavailable, "cannot reach"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := login.AuthCode(t.Context(), test.cfg, func(string) error {
				t.Errorf("AuthCode opened a browser")
				return nil
			})
			checkRefused(t, "AuthCode("+test.name+")", err, test.kind, test.want)
			_, err = login.Device(t.Context(), test.cfg, func(string, string, string) {
				t.Errorf("Device prompted")
			})
			checkRefused(t, "Device("+test.name+")", err, test.kind, test.want)
		})
	}
}

func TestDeviceIssuerProblems(t *testing.T) {
	noDevice := startDocServer(t, discovery(func(d map[string]any) { delete(d, "device_authorization_endpoint") }, emptyJWKS))
	refusing := startDocServer(t, discovery(nil, emptyJWKS))
	tests := []struct {
		name string
		ds   *docServer
		kind error
		want string
	}{
		{"no device endpoint", noDevice, broker.ErrPrecondition, "offers no device login"},
		{"client refused", refusing, broker.ErrInvalid, "invalid_client: client is not registered"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			cfg := login.ClientConfig{Issuer: test.ds.URL, ClientID: "cli", HTTPClient: test.ds.Client}
			_, err := login.Device(t.Context(), cfg, func(string, string, string) { t.Errorf("Device prompted") })
			checkRefused(t, "Device("+test.name+")", err, test.kind, test.want)
		})
	}
}
