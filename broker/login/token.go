package login

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/labfed/labfed/broker"
)

// supportedAlgs are the ID token signature algorithms labfed accepts: the
// asymmetric ones issuers use in practice. HMAC algorithms are refused
// because their key is the client secret, which a native client has none of.
var supportedAlgs = []string{oidc.RS256, oidc.ES256, oidc.EdDSA}

// maxTokenSize bounds what is decoded before any signature check. Real ID
// tokens are a few kilobytes.
const maxTokenSize = 16 << 10

// unverifiedIssuer reads the iss claim of a token without verifying it, to
// choose which issuer's keys will verify it. It also refuses what no issuer
// could make valid, with a precise message: a token that is not a JWS, is
// unsigned, or uses an algorithm labfed does not accept.
func unverifiedIssuer(raw string) (string, error) {
	if len(raw) > maxTokenSize {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token is malformed: %d bytes is too long", len(raw))
	}
	parts := strings.Split(raw, ".")
	switch len(parts) {
	case 3:
	case 5:
		return "", broker.Errorf(broker.ErrInvalid, "the ID token is encrypted (JWE); labfed accepts only signed ID tokens")
	default:
		return "", broker.Errorf(broker.ErrInvalid, "the ID token is malformed: it has %d dot-separated parts, not 3 (header.payload.signature)", len(parts))
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token is malformed: its header %s", err)
	}
	if strings.EqualFold(header.Alg, "none") || parts[2] == "" {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token is unsigned (alg %s); labfed accepts only tokens signed by the issuer", quote(header.Alg))
	}
	if !slices.Contains(supportedAlgs, header.Alg) {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token is signed with %s; labfed accepts only %s", quote(header.Alg), strings.Join(supportedAlgs, ", "))
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token is malformed: its payload %s", err)
	}
	if claims.Iss == "" {
		return "", broker.Errorf(broker.ErrInvalid, "the ID token has no iss (issuer) claim")
	}
	return claims.Iss, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errors.New("is not base64url")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errors.New("is not a JSON object of the expected shape")
	}
	return nil
}

// discover fetches an issuer's discovery document. Every failure is
// ErrUnavailable: the token may be fine, and the issuer or this side's
// configuration has to change before it can be checked.
func discover(ctx context.Context, client *http.Client, issuer string) (*oidc.Provider, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, client), issuer)
	if err == nil {
		return p, nil
	}
	var (
		mismatch    *oidc.IssuerMismatchError
		unknownCA   x509.UnknownAuthorityError
		certInvalid x509.CertificateInvalidError
		hostname    x509.HostnameError
	)
	switch {
	case errors.As(err, &mismatch):
		return nil, broker.Errorf(broker.ErrUnavailable, "oidc issuer %s calls itself %s in its discovery document; configure the url exactly as the issuer names itself", issuer, mismatch.Discovered)
	case errors.As(err, &unknownCA), errors.As(err, &certInvalid), errors.As(err, &hostname):
		return nil, broker.Errorf(broker.ErrUnavailable, "cannot verify the HTTPS certificate of oidc issuer %s: %s; if it uses a private CA, name it in ca_file", issuer, oneLine(err))
	}
	return nil, broker.Errorf(broker.ErrUnavailable, "cannot reach oidc issuer %s: %s; check its url and the network, or try again later", issuer, oneLine(err))
}

// jwksURI returns the issuer's key set URL, which must be https: keys
// fetched in the clear could be swapped by anyone on the path.
func jwksURI(p *oidc.Provider, issuer string) (string, error) {
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		return "", broker.Errorf(broker.ErrUnavailable, "the discovery document of oidc issuer %s is unreadable: %s", issuer, oneLine(err))
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", broker.Errorf(broker.ErrUnavailable, "oidc issuer %s publishes its keys at %q, which is not an https URL", issuer, doc.JWKSURI)
	}
	return doc.JWKSURI, nil
}

// quote quotes a value taken from an unverified token for a message, cut
// short so a hostile token cannot flood a log.
func quote(s string) string {
	if r := []rune(s); len(r) > 100 {
		s = string(r[:100]) + "..."
	}
	return strconv.Quote(s)
}

// oneLine makes an error from another library fit a one-line message: some
// include a whole HTTP response body.
func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "..."
	}
	return s
}
