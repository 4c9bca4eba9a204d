package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Files locate a holder's TLS material. CRL may be empty (no revocations).
type Files struct{ CA, Cert, Key, CRL string }

// Bundle is a holder's loaded TLS material: the federation CA, its own
// certificate and key, and the CRL. The CRL file is re-read when it changes
// (checked at most once a second), so a revocation takes effect without
// restarts. A Bundle is safe for concurrent use, and so are the
// configurations it returns.
type Bundle struct {
	v    *verifier
	cert tls.Certificate
	id   Identity
}

// Load reads a holder's TLS material and checks it: the certificate must
// chain to the CA, be valid now for both server and client use, carry a
// valid Identity, match the key (an Ed25519 key in PKCS #8 PEM, as Issue
// writes) and not be revoked. Errors name the file at fault.
func Load(f Files) (*Bundle, error) {
	ca, err := readCACert(f.CA)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	chain, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", f.Cert, err)
	}
	leaf := chain[0]
	if _, err := parseKey(keyPEM); err != nil {
		return nil, fmt.Errorf("key %s: %w", f.Key, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key %s does not belong to certificate %s: %w", f.Key, f.Cert, err)
	}
	cert.Leaf = leaf
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", f.Cert, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: intermediates(chain[1:]), KeyUsages: []x509.ExtKeyUsage{u}})
		if err != nil {
			return nil, fmt.Errorf("certificate %s (%s) is not valid under the federation CA %s (%q): %w", f.Cert, id, f.CA, ca.Subject.CommonName, err)
		}
	}
	v := &verifier{ca: ca, pool: pool}
	if f.CRL != "" {
		if v.crl, err = newCRLWatcher(f.CRL, ca); err != nil {
			return nil, err
		}
	}
	if v.crl.isRevoked(leaf.SerialNumber) {
		return nil, fmt.Errorf("certificate %s (%s, serial %s) is revoked by CRL %s; issue a new one with labfed ca issue", f.Cert, id, leaf.SerialNumber, f.CRL)
	}
	return &Bundle{v: v, cert: cert, id: id}, nil
}

func intermediates(certs []*x509.Certificate) *x509.CertPool {
	if len(certs) == 0 {
		return nil
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// Identity returns the holder's identity.
func (b *Bundle) Identity() Identity { return b.id }

// CheckPeer re-checks a peer certificate verified at handshake time against
// the current revocation list, so a revocation also ends connections that
// were open before it (TLS checks certificates only when connecting).
func (b *Bundle) CheckPeer(leaf *x509.Certificate) (Identity, error) {
	return b.v.check(leaf, "peer", nil)
}

// Pool returns a new pool holding the federation CA alone.
func (b *Bundle) Pool() *x509.CertPool { return b.v.pool.Clone() }

// Certificate returns the holder's certificate and key.
func (b *Bundle) Certificate() tls.Certificate { return b.cert }

// CRLError returns why the last re-read of the CRL file failed (the
// previous list then stays in force), or nil. A missing file is an error
// here once a list has been read, and not before.
func (b *Bundle) CRLError() error {
	w := b.v.crl
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(w.err, os.ErrNotExist) && w.info == nil {
		return nil
	}
	return w.err
}

// ServerConfig returns the configuration of a TLS 1.3 server presenting the
// holder's certificate. With requireClientCert a client must present a
// federation certificate; without it, a client may connect anonymously
// (with the CA alone), and a certificate it does present is verified all
// the same. A client certificate is refused if it does not chain to the
// CA, is expired, is not for client use, is revoked or lacks a valid
// Identity. The server accepts any kind of holder; read the kind with
// PeerIdentity, or use MutualServerConfig to restrict it.
func (b *Bundle) ServerConfig(requireClientCert bool) *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if requireClientCert {
		auth = tls.RequireAndVerifyClientCert
	}
	return b.serverConfig(auth, nil)
}

// MutualServerConfig is ServerConfig(true) further restricted to clients
// whose Identity has one of clientKinds; Raft's transport uses it to admit
// brokers alone.
func (b *Bundle) MutualServerConfig(clientKinds ...string) *tls.Config {
	return b.serverConfig(tls.RequireAndVerifyClientCert, clientKinds)
}

func (b *Bundle) serverConfig(auth tls.ClientAuthType, kinds []string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.cert},
		ClientAuth:   auth,
		ClientCAs:    b.v.pool,
		// VerifyConnection rather than VerifyPeerCertificate: it also
		// runs when a client resumes a session, which skips chain
		// verification but must not skip the revocation check.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // allowed: ClientAuth refuses it when a certificate is required
			}
			if len(cs.VerifiedChains) == 0 {
				return errors.New("labfed: client certificate was not verified")
			}
			_, err := b.v.check(cs.VerifiedChains[0][0], "client", kinds)
			return err
		},
	}
}

// ClientConfig returns the configuration of a TLS 1.3 client presenting the
// holder's certificate. It accepts a server whose certificate chains to the
// federation CA, is valid now, is for server use, is not revoked and
// carries a valid Identity of one of wantKinds (any kind when wantKinds is
// empty).
//
// The server's host name is deliberately not checked: brokers are dialed by
// IP address, by advertise addresses that change, and through names their
// certificates do not list, and what identifies a labfed server is the
// Identity its certificate carries, not a DNS name. The standard library
// offers no way to verify a chain without a host name, so the configuration
// sets InsecureSkipVerify, which disables the built-in verification only,
// and VerifyConnection repeats the full verification (chain to the
// federation CA alone, validity period, ExtKeyUsageServerAuth) and adds the
// CRL and Identity checks. Callers must not replace VerifyConnection.
func (b *Bundle) ClientConfig(wantKinds ...string) *tls.Config {
	cfg := b.v.clientConfig(wantKinds)
	cfg.Certificates = []tls.Certificate{b.cert}
	return cfg
}

// ClientConfigCAOnly returns a client configuration for a caller that has
// only the CA file and no certificate of its own, such as the CLI before
// its user authenticates. It verifies the server as ClientConfig does, but
// without a CRL.
func ClientConfigCAOnly(caFile string, wantKinds ...string) (*tls.Config, error) {
	ca, err := readCACert(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return (&verifier{ca: ca, pool: pool}).clientConfig(wantKinds), nil
}

// verifier checks peer certificates against the federation CA and CRL.
type verifier struct {
	ca   *x509.Certificate
	pool *x509.CertPool
	crl  *crlWatcher // nil: no revocations known
}

func (v *verifier) clientConfig(wantKinds []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// See ClientConfig: the verification is in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("labfed: server presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			_, err := leaf.Verify(x509.VerifyOptions{
				Roots:         v.pool,
				Intermediates: intermediates(cs.PeerCertificates[1:]),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("labfed: server certificate %q is not valid under the federation CA: %w", leaf.Subject.CommonName, err)
			}
			_, err = v.check(leaf, "server", wantKinds)
			return err
		},
	}
}

// check applies the checks beyond chain verification to a verified leaf:
// revocation, a valid Identity, and (when kinds is not empty) its kind.
func (v *verifier) check(leaf *x509.Certificate, role string, kinds []string) (Identity, error) {
	if v.crl.isRevoked(leaf.SerialNumber) {
		return Identity{}, fmt.Errorf("labfed: %s certificate %q (serial %s): %w", role, leaf.Subject.CommonName, leaf.SerialNumber, ErrRevoked)
	}
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return Identity{}, fmt.Errorf("labfed: %s: %w", role, err)
	}
	if len(kinds) > 0 && !slices.Contains(kinds, id.Kind) {
		return Identity{}, fmt.Errorf("labfed: %s %s is of kind %s, want %s", role, id, id.Kind, strings.Join(kinds, " or "))
	}
	return id, nil
}
