package login

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/labfed/labfed/broker"
)

const (
	// maxTokenAge is how long after its iat an ID token is still accepted:
	// enough for a login to reach a broker, short enough that a captured
	// token is soon worthless.
	maxTokenAge = 10 * time.Minute
	// maxClockSkew is how far in the future an iat may lie, matching
	// go-oidc's leeway for nbf.
	maxClockSkew = 5 * time.Minute
	// httpTimeout bounds every request to an issuer. Keys are fetched in
	// the background, so without it a hung issuer would hold a goroutine
	// forever.
	httpTimeout = 15 * time.Second
)

// Issuer is an OIDC issuer a site accepts ID tokens from.
type Issuer struct {
	// URL is the issuer identifier, exactly as in its tokens' iss claim,
	// e.g. https://cilogon.org.
	URL string `yaml:"url"`
	// ClientIDs are the client ids tokens may be issued to (their aud).
	ClientIDs []string `yaml:"client_ids"`
	// CAFile optionally names PEM certificates to trust for the issuer's
	// HTTPS instead of the system roots.
	CAFile string `yaml:"ca_file"`
}

// Identity is who a verified ID token says the person is.
type Identity struct {
	Issuer  string
	Subject string
	Email   string
	// EmailVerified is the issuer's word that the person controls Email.
	EmailVerified bool
	Name          string
	// Expiry is the ID token's exp.
	Expiry time.Time
}

// Verifier verifies ID tokens from a site's configured issuers. It is safe
// for concurrent use.
type Verifier struct {
	issuers map[string]*issuerState
	now     func() time.Time
}

// Option adjusts a Verifier.
type Option func(*verifierOptions)

type verifierOptions struct {
	now        func() time.Time
	client     *http.Client
	keyRefresh time.Duration
}

// WithNow sets the clock tokens are checked against and fetches of issuers'
// keys are paced by; default time.Now.
func WithNow(now func() time.Time) Option {
	return func(o *verifierOptions) { o.now = now }
}

// WithKeyRefreshInterval sets the least time between two fetches of an
// issuer's keys (JWKS), which must be positive; default 30s. A token signed
// with a key the Verifier has not fetched makes it fetch the issuer's keys
// again at most this often: until then such a token is refused without
// contacting the issuer, so a flood of forged tokens costs the issuer one
// request per interval, and a key the issuer has rotated to is accepted at
// most this long after the Verifier last fetched its keys.
func WithKeyRefreshInterval(d time.Duration) Option {
	return func(o *verifierOptions) { o.keyRefresh = d }
}

// WithHTTPClient sets the HTTP client used for every issuer, in place of the
// ones built from each issuer's CAFile. It should have a timeout.
func WithHTTPClient(c *http.Client) Option {
	return func(o *verifierOptions) { o.client = c }
}

// NewVerifier checks the issuer configuration and returns a Verifier for it.
// It does not contact the issuers.
func NewVerifier(issuers []Issuer, opts ...Option) (*Verifier, error) {
	o := verifierOptions{now: time.Now, keyRefresh: defaultKeyRefreshInterval}
	for _, opt := range opts {
		opt(&o)
	}
	if o.keyRefresh <= 0 {
		return nil, broker.Errorf(broker.ErrInvalid, "the key refresh interval is %s; it must be positive", o.keyRefresh)
	}
	v := &Verifier{issuers: make(map[string]*issuerState), now: o.now}
	for _, is := range issuers {
		if err := checkIssuer(is); err != nil {
			return nil, err
		}
		if _, dup := v.issuers[is.URL]; dup {
			return nil, broker.Errorf(broker.ErrInvalid, "oidc issuer %s is configured twice; list it once with all its client ids", is.URL)
		}
		client := o.client
		if client == nil {
			var err error
			if client, err = httpClient(is); err != nil {
				return nil, err
			}
		}
		v.issuers[is.URL] = newIssuerState(is, client, o)
	}
	return v, nil
}

func checkIssuer(is Issuer) error {
	u, err := url.Parse(is.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return broker.Errorf(broker.ErrInvalid, "oidc issuer %q: the url must be an https URL without query or fragment, exactly as in the tokens' iss claim", is.URL)
	}
	if len(is.ClientIDs) == 0 || slices.Contains(is.ClientIDs, "") {
		return broker.Errorf(broker.ErrInvalid, "oidc issuer %s: client_ids must list the client ids registered with it, none empty", is.URL)
	}
	return nil
}

// httpClient trusts the issuer's CAFile when one is given. The file is read
// now, so a wrong path stops the broker at start rather than at a login.
func httpClient(is Issuer) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if is.CAFile != "" {
		pem, err := os.ReadFile(is.CAFile)
		if err != nil {
			return nil, broker.Errorf(broker.ErrInvalid, "oidc issuer %s: read ca_file: %v", is.URL, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, broker.Errorf(broker.ErrInvalid, "oidc issuer %s: ca_file %s holds no PEM certificate", is.URL, is.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: httpTimeout}, nil
}

// Verify checks rawIDToken and returns the identity it proves.
func (v *Verifier) Verify(ctx context.Context, rawIDToken string) (Identity, error) {
	iss, err := unverifiedIssuer(rawIDToken)
	if err != nil {
		return Identity{}, err
	}
	is, ok := v.issuers[iss]
	if !ok {
		return Identity{}, broker.Errorf(broker.ErrInvalid, "ID token issuer %s is not configured for this site; log in with one of: %s", quote(iss), v.issuerList())
	}
	idv, err := is.verifier(ctx)
	if err != nil {
		return Identity{}, err
	}
	ctx, outcome := withKeyOutcome(ctx)
	tok, err := idv.Verify(ctx, rawIDToken)
	if err != nil {
		return Identity{}, is.explain(err, outcome)
	}
	if err := is.checkAudience(tok.Audience); err != nil {
		return Identity{}, err
	}
	if err := checkIssuedAt(tok.IssuedAt, v.now()); err != nil {
		return Identity{}, err
	}
	return identity(tok)
}

func (v *Verifier) issuerList() string {
	if len(v.issuers) == 0 {
		return "(none: this site accepts no OIDC logins)"
	}
	urls := make([]string, 0, len(v.issuers))
	for u := range v.issuers {
		urls = append(urls, u)
	}
	slices.Sort(urls)
	return strings.Join(urls, ", ")
}

// issuerState is one configured issuer and, once discovery has succeeded,
// its verifier.
type issuerState struct {
	cfg        Issuer
	client     *http.Client
	now        func() time.Time
	keyRefresh time.Duration
	// discovering is a one-slot semaphore held while discovery runs, a
	// channel rather than a mutex so a waiting caller can give up when its
	// context ends.
	discovering chan struct{}
	ready       atomic.Pointer[oidc.IDTokenVerifier]
}

func newIssuerState(cfg Issuer, client *http.Client, o verifierOptions) *issuerState {
	return &issuerState{cfg: cfg, client: client, now: o.now, keyRefresh: o.keyRefresh, discovering: make(chan struct{}, 1)}
}

// verifier returns the issuer's verifier, running discovery if no earlier
// call has succeeded. Failures are not kept: the next call tries again.
func (is *issuerState) verifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	if idv := is.ready.Load(); idv != nil {
		return idv, nil
	}
	select {
	case is.discovering <- struct{}{}:
		defer func() { <-is.discovering }()
	case <-ctx.Done():
		return nil, broker.Errorf(broker.ErrUnavailable, "gave up waiting for discovery of oidc issuer %s: %v", is.cfg.URL, ctx.Err())
	}
	if idv := is.ready.Load(); idv != nil {
		return idv, nil // another caller finished discovery while we waited
	}
	p, err := discover(ctx, is.client, is.cfg.URL)
	if err != nil {
		return nil, err
	}
	jwksURL, err := jwksURI(p, is.cfg.URL)
	if err != nil {
		return nil, err
	}
	keys := &remoteKeys{issuer: is.cfg.URL, url: jwksURL, client: is.client, interval: is.keyRefresh, now: is.now}
	idv := oidc.NewVerifier(is.cfg.URL, keys, &oidc.Config{
		SkipClientIDCheck:    true, // checked against the whole list in checkAudience
		SupportedSigningAlgs: supportedAlgs,
		Now:                  is.now,
	})
	is.ready.Store(idv)
	return idv, nil
}

// explain turns a go-oidc refusal into a message for the person logging in.
func (is *issuerState) explain(err error, outcome *keyOutcome) error {
	var expired *oidc.TokenExpiredError
	switch {
	case errors.As(err, &expired):
		return broker.Errorf(broker.ErrInvalid, "the ID token expired at %s; run labfed login again", expired.Expiry.UTC().Format(time.RFC3339))
	case outcome.err != nil:
		return outcome.err // the key set's refusal, already explained
	}
	return broker.Errorf(broker.ErrInvalid, "the ID token from %s is not valid: %s", is.cfg.URL, oneLine(err))
}

func (is *issuerState) checkAudience(aud []string) error {
	if len(aud) == 0 {
		return broker.Errorf(broker.ErrInvalid, "the ID token has no aud (audience) claim")
	}
	for _, a := range aud {
		if slices.Contains(is.cfg.ClientIDs, a) {
			return nil
		}
	}
	return broker.Errorf(broker.ErrInvalid, "the ID token was issued to client %s, not to one this site accepts from %s (%s); log in with the client id labfed login is configured with",
		strings.Join(aud, ", "), is.cfg.URL, strings.Join(is.cfg.ClientIDs, ", "))
}

// checkIssuedAt bounds the replay window of a token to maxTokenAge, however
// long the issuer made it valid for.
func checkIssuedAt(iat, now time.Time) error {
	switch {
	case iat.IsZero():
		return broker.Errorf(broker.ErrInvalid, "the ID token has no iat (issued-at) claim")
	case now.Sub(iat) > maxTokenAge:
		return broker.Errorf(broker.ErrInvalid, "the ID token is too old (issued %s ago, the limit is %s); run labfed login again", now.Sub(iat).Round(time.Second), maxTokenAge)
	case iat.Sub(now) > maxClockSkew:
		return broker.Errorf(broker.ErrInvalid, "the ID token was issued %s in the future; check the clocks of this broker and the issuer", iat.Sub(now).Round(time.Second))
	}
	return nil
}

func identity(tok *oidc.IDToken) (Identity, error) {
	var c struct {
		Email         string   `json:"email"`
		EmailVerified flexBool `json:"email_verified"`
		Name          string   `json:"name"`
	}
	if err := tok.Claims(&c); err != nil {
		return Identity{}, broker.Errorf(broker.ErrInvalid, "the ID token's claims are malformed: %s", oneLine(err))
	}
	if tok.Subject == "" {
		return Identity{}, broker.Errorf(broker.ErrInvalid, "the ID token has no subject (sub) claim")
	}
	return Identity{
		Issuer:        tok.Issuer,
		Subject:       tok.Subject,
		Email:         c.Email,
		EmailVerified: bool(c.EmailVerified),
		Name:          c.Name,
		Expiry:        tok.Expiry,
	}, nil
}

// flexBool accepts true and "true": some issuers send email_verified as a
// string.
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case bool:
		*b = flexBool(v)
	case string:
		*b = flexBool(v == "true")
	case nil:
		*b = false
	default:
		return fmt.Errorf("email_verified is %s, not a boolean", data)
	}
	return nil
}
