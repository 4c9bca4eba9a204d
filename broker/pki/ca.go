package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// clockSkew backdates NotBefore so that a certificate is usable at once on
// a host whose clock is a little behind the CA's.
const clockSkew = 5 * time.Minute

// CA is the federation's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  ed25519.PrivateKey
}

// NewCA creates a self-signed Ed25519 CA for the named federation, valid
// for validity from now. It may sign certificates and CRLs, and its
// certificates may not sign further (no intermediates).
func NewCA(federation string, validity time.Duration) (*CA, error) {
	if strings.TrimSpace(federation) == "" {
		return nil, errors.New("the federation name is empty; give one such as \"cryo-em\"")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("CA validity %v is not positive", validity)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"labfed"}, CommonName: federation + " federation CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	for {
		s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if s.Sign() > 0 {
			return s, nil
		}
	}
}

// LoadCA reads a CA written by Save.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := readCACert(certFile)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	key, err := parseKey(b)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("CA key %s does not belong to CA certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// readCACert reads a file holding exactly one CA certificate.
func readCACert(file string) (*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	certs, err := parseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", file, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("CA certificate %s holds %d certificates; it should hold the federation CA alone", file, len(certs))
	}
	c := certs[0]
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %s (%q) is not a CA certificate", file, c.Subject.CommonName)
	}
	return c, nil
}

// Save writes the CA's certificate and key as PEM, the key readable by its
// owner only. It refuses to overwrite either file: replacing a CA strands
// every certificate it issued.
func (ca *CA) Save(certFile, keyFile string) error {
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite a CA (move it away first if you really mean to replace the federation CA)", f)
		}
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return fmt.Errorf("encode CA key: %w", err)
	}
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(certFile, pemCert(ca.Cert.Raw), 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

// writeNew creates file, failing if it exists, and writes b to it durably.
func writeNew(file string, b []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; refusing to overwrite it", file)
	}
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// Issue makes a certificate for id, valid for validity from now (but not
// past the CA's own expiry), with a new Ed25519 key. The certificate
// carries id as its only URI SAN and each of hosts as a DNS or IP SAN, so
// that ordinary hostname verification can work too; it may act as TLS
// server and client. It returns the certificate and the PKCS #8 key as PEM.
func (ca *CA) Issue(id Identity, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	// Checked here and not only in issue: with NotBefore backdated by
	// clockSkew, a validity a little below zero would still pass there
	// and yield a certificate that is already expired.
	if validity <= 0 {
		return nil, nil, fmt.Errorf("certificate validity %v for %s is not positive", validity, id)
	}
	now := time.Now()
	return ca.issue(id, hosts, now.Add(-clockSkew), now.Add(validity))
}

func (ca *CA) issue(id Identity, hosts []string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if err := id.Validate(); err != nil {
		return nil, nil, err
	}
	if !notAfter.After(notBefore) {
		return nil, nil, fmt.Errorf("certificate validity for %s is not positive", id)
	}
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if h == "" || strings.ContainsAny(h, ":/ ") {
			return nil, nil, fmt.Errorf("host %q is neither an IP address nor a DNS name; give hosts without ports or schemes", h)
		}
		dns = append(dns, h)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"labfed"}, OrganizationalUnit: []string{id.Site}, CommonName: id.String()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{id.URI()},
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// CertSerial returns the serial number of the first certificate in certPEM,
// the number Revoke takes.
func CertSerial(certPEM []byte) (*big.Int, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	return certs[0].SerialNumber, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// parseCerts parses every CERTIFICATE block in b, requiring at least one
// and ignoring other blocks.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var p *pem.Block
		p, b = pem.Decode(b)
		if p == nil {
			break
		}
		if p.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(p.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// parseKey parses a PEM PKCS #8 Ed25519 private key.
func parseKey(b []byte) (ed25519.PrivateKey, error) {
	p, _ := pem.Decode(b)
	if p == nil || p.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM PRIVATE KEY block found")
	}
	k, err := x509.ParsePKCS8PrivateKey(p.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is a %T, not Ed25519", k)
	}
	return ek, nil
}
