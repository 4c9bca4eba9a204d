package capability

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/labfed/labfed/broker"
)

// Signer mints capability tokens with one broker's signing key. It is safe
// for concurrent use.
type Signer struct {
	kid, issuer string
	priv        ed25519.PrivateKey
	// jws signs with the protected header {"alg":"EdDSA","kid":…,"typ":…};
	// nil when NewSigner was given no usable key, and then Sign says why.
	jws    jose.Signer
	jwsErr error
}

// NewSigner returns a Signer for the key kid held by the broker issuer.
// It never fails: a key Sign cannot use is reported by every Sign.
func NewSigner(kid, issuer string, priv ed25519.PrivateKey) *Signer {
	s := &Signer{kid: kid, issuer: issuer, priv: priv}
	if len(priv) != ed25519.PrivateKeySize || kid == "" {
		return s
	}
	// A bare ed25519 key, not a JSONWebKey: go-jose then writes neither
	// jwk nor a kid of its own, and the header holds exactly alg, kid and
	// typ, all the Verifier accepts.
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(Typ)).WithHeader(jose.HeaderKey("kid"), kid)
	s.jws, s.jwsErr = jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, opts)
	return s
}

// KID returns the key id the Signer puts in every header.
func (s *Signer) KID() string { return s.kid }

// Sign returns c as a compact JWS. It fills iss from the Signer and ver with
// "1"; a zero IssuedAt becomes now, a zero NotBefore becomes IssuedAt and a
// zero Expiry becomes NotBefore+DefaultLifetime. It refuses claims no
// Verifier would accept: a missing sub, aud, jti or scope, a scope at a
// site other than aud, exp not after nbf, or a lifetime above MaxLifetime.
func (s *Signer) Sign(c Claims) (string, error) {
	if len(s.priv) != ed25519.PrivateKeySize {
		return "", broker.Errorf(broker.ErrInvalid, "signing key %s is %d bytes, want an Ed25519 private key of %d", s.kid, len(s.priv), ed25519.PrivateKeySize)
	}
	if s.kid == "" || s.issuer == "" {
		return "", broker.Errorf(broker.ErrInvalid, "signer has no kid or issuer; build it with NewSigner(kid, issuer, key)")
	}
	if s.jwsErr != nil {
		return "", broker.Errorf(broker.ErrInvalid, "signing key %s cannot sign EdDSA tokens: %v", s.kid, oneLine(s.jwsErr))
	}
	if c.Issuer != "" && c.Issuer != s.issuer {
		return "", broker.Errorf(broker.ErrInvalid, "claims name issuer %q but the signer is %q; leave Issuer empty", c.Issuer, s.issuer)
	}
	if c.Version != "" && c.Version != Version {
		return "", broker.Errorf(broker.ErrInvalid, "token version %q is not supported; leave Version empty for %q", c.Version, Version)
	}
	if c.Subject == "" {
		return "", broker.Errorf(broker.ErrInvalid, "token has no subject; set Claims.Subject to the user id")
	}
	if err := broker.ValidateName("site", c.Audience); err != nil {
		return "", broker.Errorf(broker.ErrInvalid, "token audience: %v", err)
	}
	if c.ID == "" {
		return "", broker.Errorf(broker.ErrInvalid, "token has no id; set Claims.ID to a unique jti")
	}
	if len(c.Scope) == 0 {
		return "", broker.Errorf(broker.ErrInvalid, "token has no scope; give at least one action:resource")
	}
	scopes := make([]string, len(c.Scope))
	for i, sc := range c.Scope {
		str := sc.String()
		// Round-trip, so a hand-built Scope cannot smuggle a space or an
		// unknown action into the claim.
		if p, err := ParseScope(str); err != nil || p.String() != str {
			return "", broker.Errorf(broker.ErrInvalid, "token scope %q is not a valid action:resource", str)
		}
		if site := sc.Resource.Site; site != c.Audience {
			return "", broker.Errorf(broker.ErrInvalid, "token scope %q names site %s, but the token is for %s; set Audience to the resource's site", str, site, c.Audience)
		}
		scopes[i] = str
	}
	if c.POSIX != nil {
		if err := broker.ValidateUsername(c.POSIX.User); err != nil {
			return "", err
		}
	}
	for _, g := range c.Grants {
		if g == "" {
			return "", broker.Errorf(broker.ErrInvalid, "token names an empty grant id")
		}
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = c.IssuedAt
	}
	if c.Expiry.IsZero() {
		c.Expiry = c.NotBefore.Add(DefaultLifetime)
	}
	iat, nbf, exp := c.IssuedAt.Unix(), c.NotBefore.Unix(), c.Expiry.Unix()
	if iat <= 0 || nbf <= 0 {
		return "", broker.Errorf(broker.ErrInvalid, "token times must be after 1970")
	}
	if exp <= nbf {
		return "", broker.Errorf(broker.ErrInvalid, "token expiry %s is not after its start %s", c.Expiry.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339))
	}
	if time.Duration(exp-nbf)*time.Second > MaxLifetime {
		return "", broker.Errorf(broker.ErrInvalid, "token lifetime %s exceeds the maximum %s; shorten it", time.Duration(exp-nbf)*time.Second, MaxLifetime)
	}
	payload, err := json.Marshal(wireClaims{
		Iss: s.issuer, Sub: c.Subject, Aud: c.Audience,
		Exp: exp, Nbf: nbf, Iat: iat, Jti: c.ID, Ver: Version,
		Scope: strings.Join(scopes, " "), Posix: c.POSIX, Grant: c.Grants,
	})
	if err != nil {
		return "", err
	}
	jws, err := s.jws.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign token %s with key %s: %w", c.ID, s.kid, err)
	}
	return jws.CompactSerialize()
}
