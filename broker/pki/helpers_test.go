package pki

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fixture is a federation CA saved in a temporary directory, with a CRL
// path that does not exist until something is revoked.
type fixture struct {
	dir     string
	ca      *CA
	caFile  string
	crlFile string
	n       int // files issued, for unique names
}

func newFixture(t testing.TB, federation string) *fixture {
	t.Helper()
	ca, err := NewCA(federation, 24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	dir := t.TempDir()
	f := &fixture{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.crt"), crlFile: filepath.Join(dir, "crl.pem")}
	if err := ca.Save(f.caFile, filepath.Join(dir, "ca.key")); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return f
}

// write stores a certificate and key and returns Files naming them with
// the fixture's CA and CRL.
func (f *fixture) write(t testing.TB, certPEM, keyPEM []byte) Files {
	t.Helper()
	f.n++
	fs := Files{
		CA:   f.caFile,
		Cert: filepath.Join(f.dir, fmt.Sprintf("%d.crt", f.n)),
		Key:  filepath.Join(f.dir, fmt.Sprintf("%d.key", f.n)),
		CRL:  f.crlFile,
	}
	if err := os.WriteFile(fs.Cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fs.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return fs
}

// issue issues a certificate for id valid for an hour, with loopback SANs.
func (f *fixture) issue(t testing.TB, id Identity) Files {
	t.Helper()
	return f.issueHosts(t, id, []string{"127.0.0.1", "localhost"})
}

// issueHosts issues a certificate for id valid for an hour, with hosts.
func (f *fixture) issueHosts(t testing.TB, id Identity, hosts []string) Files {
	t.Helper()
	c, k, err := f.ca.Issue(id, hosts, time.Hour)
	if err != nil {
		t.Fatalf("Issue(%v): %v", id, err)
	}
	return f.write(t, c, k)
}

// issueExpired issues a certificate for id that expired an hour ago.
func (f *fixture) issueExpired(t testing.TB, id Identity) Files {
	t.Helper()
	now := time.Now()
	c, k, err := f.ca.issue(id, nil, now.Add(-2*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatalf("issue(%v): %v", id, err)
	}
	return f.write(t, c, k)
}

// issueTemplate signs tmpl as is (for certificates Issue would not make).
func (f *fixture) issueTemplate(t testing.TB, tmpl *x509.Certificate) Files {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		if tmpl.SerialNumber, err = newSerial(); err != nil {
			t.Fatal(err)
		}
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca.Cert, pub, f.ca.Key)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return f.write(t, pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// revoke revokes the certificate in files.
func (f *fixture) revoke(t testing.TB, files Files) {
	t.Helper()
	b, err := os.ReadFile(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	s, err := CertSerial(b)
	if err != nil {
		t.Fatalf("CertSerial: %v", err)
	}
	if err := f.ca.Revoke(f.crlFile, s); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
}

func mustLoad(t testing.TB, f Files) *Bundle {
	t.Helper()
	b, err := Load(f)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return b
}

// keyPair reads files without any of Load's checks.
func keyPair(t testing.TB, f Files) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	return c
}

// presenting returns cfg changed to present cert whatever the server asks
// for, so that the server, not the client's certificate selection, decides.
func presenting(cfg *tls.Config, cert tls.Certificate) *tls.Config {
	cfg = cfg.Clone()
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

// serving returns a server configuration presenting cert with no checks of
// its own, for testing what clients accept.
func serving(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
}

// handshake connects a client with client to a server with server over
// loopback TCP. After its handshake the server writes "ok", which the
// client reads: in TLS 1.3 the client learns that the server refused its
// certificate only then. It returns each side's error.
func handshake(t testing.TB, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	_, serverErr, clientErr = handshakeState(t, server, client)
	return serverErr, clientErr
}

// handshakeState is handshake, also returning the client's view of the
// connection.
func handshakeState(t testing.TB, server, client *tls.Config) (cs tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	serr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serr <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		if err := tc.HandshakeContext(ctx); err != nil {
			serr <- err
			return
		}
		_, err = tc.Write([]byte("ok"))
		serr <- err
	}()
	clientErr = func() error {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(c, client)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		buf := make([]byte, 2)
		if _, err := io.ReadFull(tc, buf); err != nil {
			return err
		}
		if string(buf) != "ok" {
			return errors.New("server did not say ok")
		}
		cs = tc.ConnectionState()
		return nil
	}()
	serverErr = <-serr
	return cs, serverErr, clientErr
}
