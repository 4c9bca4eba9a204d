package pki

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCARoundTrip(t *testing.T) {
	ca, err := NewCA("cryo-em", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if !c.IsCA || !c.MaxPathLenZero || c.MaxPathLen != 0 || c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA certificate: IsCA=%v MaxPathLenZero=%v MaxPathLen=%d KeyUsage=%v", c.IsCA, c.MaxPathLenZero, c.MaxPathLen, c.KeyUsage)
	}
	if c.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("SignatureAlgorithm = %v, want Ed25519", c.SignatureAlgorithm)
	}
	if c.SerialNumber.BitLen() < 64 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial has %d bits, want a random 128-bit number", c.SerialNumber.BitLen())
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := ca.Save(certFile, keyFile); err != nil {
		t.Fatalf("Save: %v", err)
	}
	got, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !got.Cert.Equal(ca.Cert) || !got.Key.Equal(ca.Key) {
		t.Errorf("LoadCA returned a different CA")
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("key file mode = %v, want 0600", m)
	}

	// Save refuses to overwrite either file, and leaves them alone.
	other, err := NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, files := range [][2]string{{certFile, filepath.Join(dir, "new.key")}, {filepath.Join(dir, "new.crt"), keyFile}} {
		if err := other.Save(files[0], files[1]); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("Save(%q, %q) over an existing file = %v, want an 'already exists' error", files[0], files[1], err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new.key")); err == nil {
		t.Errorf("a refused Save left a new key file behind")
	}
	if again, err := LoadCA(certFile, keyFile); err != nil || !again.Cert.Equal(ca.Cert) {
		t.Errorf("after refused overwrites LoadCA = %v; want the original CA", err)
	}

	// A key that is not the certificate's.
	otherKey := filepath.Join(dir, "other.key")
	if err := other.Save(filepath.Join(dir, "other.crt"), otherKey); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(certFile, otherKey); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("LoadCA with another CA's key = %v, want 'does not belong'", err)
	}
}

func TestIssueLoad(t *testing.T) {
	f := newFixture(t, "cryo-em")
	id := Identity{"rutgers", KindBroker, "rutgers-1"}
	certPEM, keyPEM, err := f.ca.Issue(id, []string{"127.0.0.1", "::1", "broker.rutgers.edu"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := f.write(t, certPEM, keyPEM)
	b := mustLoad(t, files)
	if got := b.Identity(); got != id {
		t.Errorf("Identity() = %v, want %v", got, id)
	}
	leaf := b.Certificate().Leaf
	if got := leaf.URIs; len(got) != 1 || got[0].String() != id.URI().String() {
		t.Errorf("URIs = %v, want [%v]", got, id.URI())
	}
	if len(leaf.IPAddresses) != 2 || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "broker.rutgers.edu" {
		t.Errorf("IPs = %v, DNS names = %v; want 2 IPs and broker.rutgers.edu", leaf.IPAddresses, leaf.DNSNames)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname(127.0.0.1) = %v, want nil", err)
	}
	if leaf.IsCA || leaf.PublicKeyAlgorithm != x509.Ed25519 {
		t.Errorf("leaf IsCA=%v algorithm=%v", leaf.IsCA, leaf.PublicKeyAlgorithm)
	}
	serial, err := CertSerial(certPEM)
	if err != nil || serial.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("CertSerial = %v, %v; want %v", serial, err, leaf.SerialNumber)
	}
	if !b.Pool().Equal(f.pool()) {
		t.Errorf("Pool() is not the CA alone")
	}

	// Validity never outlasts the CA.
	long, _, err := f.ca.Issue(id, nil, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCerts(long)
	if err != nil {
		t.Fatal(err)
	}
	if c[0].NotAfter.After(f.ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %v, after the CA's %v", c[0].NotAfter, f.ca.Cert.NotAfter)
	}
}

func (f *fixture) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.ca.Cert)
	return p
}

func TestIssueRejects(t *testing.T) {
	f := newFixture(t, "cryo-em")
	tests := []struct {
		name  string
		id    Identity
		hosts []string
	}{
		{"bad identity", Identity{"Rutgers", KindBroker, "n"}, nil},
		{"host with port", Identity{"s", KindBroker, "n"}, []string{"host:7000"}},
		{"url", Identity{"s", KindBroker, "n"}, []string{"https://host"}},
		{"empty host", Identity{"s", KindBroker, "n"}, []string{""}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			if _, _, err := f.ca.Issue(test.id, test.hosts, time.Hour); err == nil {
				t.Errorf("Issue(%v, %q) = nil error, want an error", test.id, test.hosts)
			}
		})
	}
}

func TestLoadRejects(t *testing.T) {
	f := newFixture(t, "cryo-em")
	other := newFixture(t, "other")
	id := Identity{"s", KindBroker, "b"}
	good := f.issue(t, id)
	revoked := f.issue(t, Identity{"s", KindBroker, "gone"})
	f.revoke(t, revoked)
	mismatched := good
	mismatched.Key = f.issue(t, id).Key
	fromOther := other.issue(t, id)
	fromOther.CA, fromOther.CRL = f.caFile, f.crlFile
	noURI := f.issueTemplate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "no-uri"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	twoURIs := f.issueTemplate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "two-uris"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{id.URI(), Identity{"s", KindAdmin, "root"}.URI()}})
	serverOnly := f.issueTemplate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "server-only"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, URIs: []*url.URL{id.URI()}})
	expired := f.issueExpired(t, id)
	leafAsCA := good
	leafAsCA.CA = good.Cert
	badCRL := good
	badCRL.CRL = filepath.Join(f.dir, "garbage.crl")
	if err := os.WriteFile(badCRL.CRL, []byte("not a CRL"), 0o644); err != nil {
		t.Fatal(err)
	}
	otherCRL := good
	otherCRL.CRL = other.crlFile
	if err := other.ca.Revoke(other.crlFile); err != nil {
		t.Fatal(err)
	}
	missing := good
	missing.Cert = filepath.Join(f.dir, "missing.crt")

	tests := []struct {
		name    string
		files   Files
		wantErr []string // substrings
	}{
		{"another CA", fromOther, []string{fromOther.Cert, "not valid under the federation CA"}},
		{"no URI SAN", noURI, []string{noURI.Cert, "no URI SAN"}},
		{"two URI SANs", twoURIs, []string{twoURIs.Cert, "2 URI SANs"}},
		{"mismatched key", mismatched, []string{mismatched.Key, "does not belong", mismatched.Cert}},
		{"server use only", serverOnly, []string{serverOnly.Cert, "not valid"}},
		{"expired", expired, []string{expired.Cert, "expired"}},
		{"revoked", revoked, []string{revoked.Cert, "revoked"}},
		{"CA file is a leaf", leafAsCA, []string{good.Cert, "not a CA certificate"}},
		{"garbage CRL", badCRL, []string{badCRL.CRL, "parse CRL"}},
		{"CRL of another CA", otherCRL, []string{other.crlFile, "not signed by the federation CA"}},
		{"missing certificate", missing, []string{missing.Cert}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			b, err := Load(test.files)
			if err == nil {
				t.Fatalf("Load(%+v) = %v, nil; want error", test.files, b.Identity())
			}
			for _, s := range test.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Load(%+v) = %v; want it to mention %q", test.files, err, s)
				}
			}
		})
	}
	// The good files do load, and a missing CRL file means no revocations.
	good.CRL = filepath.Join(f.dir, "none-yet.crl")
	mustLoad(t, good)
}

func TestRevoke(t *testing.T) {
	f := newFixture(t, "cryo-em")
	read := func() *x509.RevocationList {
		t.Helper()
		b, err := os.ReadFile(f.crlFile)
		if err != nil {
			t.Fatal(err)
		}
		rl, err := parseCRL(b, f.ca.Cert)
		if err != nil {
			t.Fatalf("parseCRL: %v", err)
		}
		return rl
	}
	serials := func(rl *x509.RevocationList) []string {
		var s []string
		for _, e := range rl.RevokedCertificateEntries {
			s = append(s, e.SerialNumber.String())
		}
		return s
	}
	steps := []struct {
		name   string
		revoke []int64
		want   []string
	}{
		{"create", []int64{7}, []string{"7"}},
		{"add", []int64{9, 11}, []string{"7", "9", "11"}},
		{"again", []int64{7, 9}, []string{"7", "9", "11"}},
		{"nothing", nil, []string{"7", "9", "11"}},
	}
	var last *big.Int
	for _, step := range steps {
		var ss []*big.Int
		for _, n := range step.revoke {
			ss = append(ss, big.NewInt(n))
		}
		if err := f.ca.Revoke(f.crlFile, ss...); err != nil {
			t.Fatalf("%s: Revoke(%v) = %v", step.name, step.revoke, err)
		}
		rl := read()
		if got := serials(rl); strings.Join(got, ",") != strings.Join(step.want, ",") {
			t.Errorf("%s: revoked = %v, want %v", step.name, got, step.want)
		}
		if last != nil && rl.Number.Cmp(last) <= 0 {
			t.Errorf("%s: CRL number %v, want more than %v", step.name, rl.Number, last)
		}
		last = rl.Number
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("Revoke left %s behind", e.Name())
		}
	}
	if err := f.ca.Revoke(f.crlFile, big.NewInt(0)); err == nil {
		t.Errorf("Revoke(0) = nil, want an error")
	}
	// A CRL signed by another CA is refused, and left alone.
	other := newFixture(t, "other")
	before, _ := os.ReadFile(f.crlFile)
	if err := other.ca.Revoke(f.crlFile, big.NewInt(1)); err == nil || !strings.Contains(err.Error(), "not signed by the federation CA") {
		t.Errorf("Revoke into another CA's CRL = %v, want 'not signed by the federation CA'", err)
	}
	if after, _ := os.ReadFile(f.crlFile); !bytes.Equal(before, after) {
		t.Errorf("a refused Revoke changed the CRL file")
	}
}
