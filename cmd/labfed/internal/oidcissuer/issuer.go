// Package oidcissuer is a small but real OpenID Connect provider that runs on
// loopback. labfed demo uses it so a newcomer can log in as a sample
// researcher without any outside service, and tests use it as the issuer that
// a site would otherwise trust (CILogon, an institution's IdP).
//
// # Protocol
//
// It speaks the parts of OIDC and OAuth 2.0 that the labfed CLI, a public
// native client, needs: discovery, a JWKS, the authorization code flow with
// loopback redirects (RFC 8252) and mandatory PKCE S256 (RFC 7636), and the
// device authorization grant (RFC 8628). ID tokens are RS256 JWS signed with
// an RSA key generated at start.
//
// # Caveats
//
// Everything lives in memory and is lost on Close: keys, codes, users. The
// server listens on loopback only and presents a self-signed certificate
// generated at start; callers trust it through CAPEM or Client. There is no
// rate limiting of password or user-code guesses, so it must never face a
// network.
package oidcissuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults and fixed lifetimes.
const (
	defaultAddr         = "127.0.0.1:0"
	defaultTokenTTL     = 5 * time.Minute
	defaultPollInterval = 5 * time.Second
	// codeTTL bounds how long an authorization code waits for its exchange;
	// the CLI exchanges it within a second of the redirect.
	codeTTL = 60 * time.Second
	// deviceCodeTTL is how long a person has to approve a device login.
	deviceCodeTTL = 10 * time.Minute
	// certTTL is long enough for a demo left running for weeks; the key
	// never leaves the process.
	certTTL = 90 * 24 * time.Hour
)

// Config describes an issuer. The zero value of every field but Clients and
// Users has a usable default.
type Config struct {
	// Addr is the loopback address to listen on; default 127.0.0.1:0.
	// Anything but a loopback IP literal is refused.
	Addr string
	// Clients are the OAuth clients allowed to log in.
	Clients []Client
	// Users are the people who can log in, with their claims.
	Users []User
	// TokenTTL is the lifetime of the ID and access tokens; default 5m.
	TokenTTL time.Duration
	// DevicePollInterval is the interval the device flow asks clients to
	// poll at (whole seconds, at least 1s); default 5s as RFC 8628 says.
	DevicePollInterval time.Duration
	// Now is the issuer's clock for tokens, codes and device grants;
	// default time.Now. The TLS certificate always uses the real clock.
	Now func() time.Time
	// Logger receives a line per login, token and refusal; default discards.
	Logger *slog.Logger
}

// Client is a registered OAuth client. Only public native clients with
// loopback redirects (RFC 8252 section 7.3) are supported, so
// RedirectLoopbackOnly must be true: without registered redirect URIs any
// other policy would let a page send codes anywhere.
type Client struct {
	ID                   string
	RedirectLoopbackOnly bool
}

// User is a person who can log in with Username and Password; the other
// fields become the ID token's sub, email and name claims.
type User struct {
	Username, Password string
	Subject, Email     string
	Name               string
}

// Issuer is a running OIDC provider. Its methods are safe for concurrent use.
type Issuer struct {
	cfg     Config
	url     string
	clients map[string]Client
	users   map[string]User
	log     *slog.Logger

	srv       *http.Server
	closeOnce sync.Once
	closeErr  error
	certPEM   []byte
	roots     *x509.CertPool
	transport *http.Transport // shared by every Client, closed with the issuer
	jwk       jose.JSONWebKey // private; jwk.Public() is published
	signer    jose.Signer

	mu        sync.Mutex
	codes     map[string]*authCode    // by code
	devices   map[string]*deviceGrant // by device code
	userCodes map[string]string       // user code → device code
}

// New starts an issuer listening on cfg.Addr. Close it when done.
func New(cfg Config) (*Issuer, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	is := &Issuer{
		cfg:       cfg,
		clients:   make(map[string]Client),
		users:     make(map[string]User),
		log:       cfg.Logger,
		codes:     make(map[string]*authCode),
		devices:   make(map[string]*deviceGrant),
		userCodes: make(map[string]string),
	}
	if err := is.register(cfg); err != nil {
		return nil, err
	}
	if err := is.newSigningKey(); err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(cfg.Addr) // checked by withDefaults
	cert, err := is.newCertificate(net.ParseIP(host))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("oidcissuer: listen on %s: %w", cfg.Addr, err)
	}
	is.url = "https://" + ln.Addr().String()
	// HTTP/1.1 is all the issuer needs, and an idle HTTP/2 connection
	// would hold up Shutdown for a second on every Close.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	is.srv = &http.Server{
		Protocols:         &protocols,
		Handler:           is.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := is.srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			is.log.Error("oidc issuer stopped", "err", err)
		}
	}()
	is.log.Info("oidc issuer listening", "url", is.url)
	return is, nil
}

func withDefaults(cfg Config) (Config, error) {
	if cfg.Addr == "" {
		cfg.Addr = defaultAddr
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return cfg, fmt.Errorf("oidcissuer: address %q: %w", cfg.Addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return cfg, fmt.Errorf("oidcissuer: address %q is not a loopback IP; the demo issuer must not face a network", cfg.Addr)
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = defaultTokenTTL
	}
	if cfg.DevicePollInterval <= 0 {
		cfg.DevicePollInterval = defaultPollInterval
	}
	cfg.DevicePollInterval = max(cfg.DevicePollInterval.Round(time.Second), time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

func (is *Issuer) register(cfg Config) error {
	for _, c := range cfg.Clients {
		if c.ID == "" {
			return errors.New("oidcissuer: a client has an empty ID")
		}
		if !c.RedirectLoopbackOnly {
			return fmt.Errorf("oidcissuer: client %q: only native clients with loopback redirects are supported; set RedirectLoopbackOnly", c.ID)
		}
		if _, dup := is.clients[c.ID]; dup {
			return fmt.Errorf("oidcissuer: client %q is listed twice", c.ID)
		}
		is.clients[c.ID] = c
	}
	for _, u := range cfg.Users {
		if u.Username == "" || u.Password == "" || u.Subject == "" {
			return fmt.Errorf("oidcissuer: user %q needs a username, a password and a subject", u.Username)
		}
		if _, dup := is.users[u.Username]; dup {
			return fmt.Errorf("oidcissuer: user %q is listed twice", u.Username)
		}
		is.users[u.Username] = u
	}
	return nil
}

// newSigningKey makes the RSA key ID tokens are signed with. Its kid is the
// RFC 7638 thumbprint, so a different key never shares a kid by accident.
func (is *Issuer) newSigningKey() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("oidcissuer: generate signing key: %w", err)
	}
	jwk := jose.JSONWebKey{Key: key, Algorithm: string(jose.RS256), Use: "sig"}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("oidcissuer: key thumbprint: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return fmt.Errorf("oidcissuer: signer: %w", err)
	}
	is.jwk, is.signer = jwk, signer
	return nil
}

// newCertificate makes the self-signed serving certificate for the loopback
// IP the issuer listens on, and for both usual loopback addresses.
func (is *Issuer) newCertificate(ip net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("oidcissuer: generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("oidcissuer: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "labfed demo OIDC issuer"},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(certTTL),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, ip},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("oidcissuer: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("oidcissuer: certificate: %w", err)
	}
	is.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	is.roots = x509.NewCertPool()
	is.roots.AddCert(leaf)
	is.transport = &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: is.roots, MinVersion: tls.VersionTLS13},
		IdleConnTimeout: 30 * time.Second,
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// URL is the issuer identifier, https://127.0.0.1:PORT, exactly as it appears
// in the iss claim.
func (is *Issuer) URL() string { return is.url }

// CAPEM is the PEM certificate to trust for the issuer's HTTPS, e.g. as a
// broker's ca_file.
func (is *Issuer) CAPEM() []byte { return append([]byte(nil), is.certPEM...) }

// Client returns an HTTP client that trusts the issuer's certificate and
// nothing else, and does not follow redirects (so a caller sees where the
// issuer sends a browser). All clients share one connection pool.
func (is *Issuer) Client() *http.Client {
	return &http.Client{
		Transport:     is.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

// Close stops the server and forgets every code and grant. Calling it again
// does nothing, so a test can stop an issuer early and still close it at
// cleanup.
func (is *Issuer) Close() error {
	is.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		is.transport.CloseIdleConnections()
		if is.closeErr = is.srv.Shutdown(ctx); is.closeErr != nil {
			is.closeErr = is.srv.Close()
		}
	})
	return is.closeErr
}

func (is *Issuer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", is.handleDiscovery)
	mux.HandleFunc("GET /jwks", is.handleJWKS)
	mux.HandleFunc("GET /authorize", is.handleAuthorizeForm)
	mux.HandleFunc("POST /authorize", is.handleAuthorizeLogin)
	mux.HandleFunc("POST /token", is.handleToken)
	mux.HandleFunc("POST /device/code", is.handleDeviceCode)
	mux.HandleFunc("GET /device", is.handleDeviceForm)
	mux.HandleFunc("POST /device", is.handleDeviceApprove)
	return mux
}

func (is *Issuer) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                is.url,
		"authorization_endpoint":                is.url + "/authorize",
		"token_endpoint":                        is.url + "/token",
		"jwks_uri":                              is.url + "/jwks",
		"device_authorization_endpoint":         is.url + "/device/code",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(jose.RS256)},
		"code_challenge_methods_supported":      []string{"S256"},
		"grant_types_supported":                 []string{"authorization_code", grantDeviceCode},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                      []string{"openid", "email", "profile"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "email", "email_verified", "name"},
	})
}

func (is *Issuer) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{is.jwk.Public()}})
}
