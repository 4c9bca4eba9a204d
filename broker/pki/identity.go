package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Kinds of certificate holder.
const (
	// KindBroker is a site's broker node (labfed serve).
	KindBroker = "broker"
	// KindAgent is a site agent (labfed agent).
	KindAgent = "agent"
	// KindAdmin is a person administering a site or the federation.
	KindAdmin = "admin"
)

// kinds lists the valid kinds, for messages.
func kinds() []string { return []string{KindBroker, KindAgent, KindAdmin} }

const (
	uriScheme = "spiffe"
	uriHost   = "labfed"
)

// Identity names a certificate holder: its site, kind and name. It is
// carried in the certificate as the only URI SAN:
// spiffe://labfed/site/<site>/<kind>/<name>.
type Identity struct{ Site, Kind, Name string }

// URI returns the identity's URI SAN.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: uriScheme, Host: uriHost, Path: "/site/" + id.Site + "/" + id.Kind + "/" + id.Name}
}

// String returns site/kind/name, such as "rutgers/broker/rutgers-1".
func (id Identity) String() string { return id.Site + "/" + id.Kind + "/" + id.Name }

// Validate checks that site and name are lower-case names (a letter, then
// up to 62 letters, digits or '-') and that the kind is one of KindBroker,
// KindAgent and KindAdmin.
func (id Identity) Validate() error {
	if err := validateName("site", id.Site); err != nil {
		return err
	}
	if !slices.Contains(kinds(), id.Kind) {
		return fmt.Errorf("identity kind %q is not one of %s", id.Kind, strings.Join(kinds(), ", "))
	}
	return validateName(id.Kind, id.Name)
}

func validateName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s name is empty", what)
	}
	ok := len(s) <= 63 && s[0] >= 'a' && s[0] <= 'z'
	for i := 1; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%s name %q is not valid; use lower-case letters, digits and '-', starting with a letter, at most 63 characters", what, s)
	}
	return nil
}

// ParseIdentity parses an identity URI, spiffe://labfed/site/<site>/<kind>/<name>.
func ParseIdentity(u *url.URL) (Identity, error) {
	bad := func(why string) (Identity, error) {
		return Identity{}, fmt.Errorf("URI %q is not a labfed identity (spiffe://labfed/site/SITE/KIND/NAME): %s", u.String(), why)
	}
	switch {
	case u.Scheme != uriScheme || u.Host != uriHost:
		return bad("wrong scheme or trust domain")
	case u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "":
		return bad("it has parts beyond the path")
	}
	parts := strings.Split(u.Path, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "site" {
		return bad("wrong path")
	}
	id := Identity{Site: parts[2], Kind: parts[3], Name: parts[4]}
	if err := id.Validate(); err != nil {
		return bad(err.Error())
	}
	return id, nil
}

// IdentityFromCert returns the identity a certificate carries. It is an
// error for the certificate to carry no URI SAN, more than one, or one that
// is not a well-formed identity. It does not verify the certificate.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	switch len(c.URIs) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q carries no labfed identity (no URI SAN); issue one with labfed ca issue", c.Subject.CommonName)
	case 1:
	default:
		return Identity{}, fmt.Errorf("certificate %q carries %d URI SANs; a labfed certificate carries exactly one identity", c.Subject.CommonName, len(c.URIs))
	}
	return ParseIdentity(c.URIs[0])
}

// PeerIdentity returns the identity of the peer of a TLS connection, read
// from the leaf of the chain the handshake verified. It fails when the peer
// presented no certificate, and on the client side of a connection made with
// a ClientConfig: those verify the server in VerifyConnection and the
// connection state records no verified chain.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		if len(cs.PeerCertificates) == 0 {
			return Identity{}, errors.New("the peer presented no certificate")
		}
		return Identity{}, errors.New("the peer's certificate was not verified by the handshake")
	}
	return IdentityFromCert(cs.VerifiedChains[0][0])
}
