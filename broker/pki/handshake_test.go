package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// TestServerHandshake runs real loopback handshakes of clients presenting
// each kind of certificate against each server configuration.
func TestServerHandshake(t *testing.T) {
	f := newFixture(t, "cryo-em")
	other := newFixture(t, "other")
	revoked := f.issue(t, Identity{"psc", KindBroker, "psc-1"})
	f.revoke(t, revoked)
	server := mustLoad(t, f.issue(t, Identity{"rutgers", KindBroker, "rutgers-1"}))

	anon, err := ClientConfigCAOnly(f.caFile, KindBroker)
	if err != nil {
		t.Fatal(err)
	}
	with := func(files Files) *tls.Config { return presenting(anon, keyPair(t, files)) }
	clients := []struct {
		name   string
		config *tls.Config
	}{
		{"no certificate", anon},
		{"another CA", with(other.issue(t, Identity{"psc", KindBroker, "psc-1"}))},
		{"revoked", with(revoked)},
		{"expired", with(f.issueExpired(t, Identity{"psc", KindBroker, "psc-1"}))},
		{"no identity", with(f.issueTemplate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "x"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}))},
		{"agent", mustLoad(t, f.issue(t, Identity{"psc", KindAgent, "gw"})).ClientConfig(KindBroker)},
		{"broker", mustLoad(t, f.issue(t, Identity{"psc", KindBroker, "psc-2"})).ClientConfig(KindBroker)},
	}
	servers := []struct {
		name   string
		config *tls.Config
		accept map[string]bool // by client name
	}{
		{"optional client certificate", server.ServerConfig(false), map[string]bool{"no certificate": true, "agent": true, "broker": true}},
		{"required client certificate", server.ServerConfig(true), map[string]bool{"agent": true, "broker": true}},
		{"brokers only", server.MutualServerConfig(KindBroker), map[string]bool{"broker": true}},
	}
	for _, s := range servers {
		for _, c := range clients {
			t.Run(s.name+"/"+c.name, func(t *testing.T) {
				serr, cerr := handshake(t, s.config, c.config)
				if got, want := serr == nil && cerr == nil, s.accept[c.name]; got != want {
					t.Errorf("handshake accepted = %v, want %v (server: %v; client: %v)", got, want, serr, cerr)
				}
				if c.name == "revoked" && !errors.Is(serr, ErrRevoked) {
					t.Errorf("server error = %v, want %v", serr, ErrRevoked)
				}
			})
		}
	}
}

// TestClientHandshake checks what a client made by ClientConfig accepts of
// servers presenting each kind of certificate.
func TestClientHandshake(t *testing.T) {
	f := newFixture(t, "cryo-em")
	other := newFixture(t, "other")
	revoked := f.issue(t, Identity{"psc", KindBroker, "psc-1"})
	f.revoke(t, revoked)
	client := mustLoad(t, f.issue(t, Identity{"rutgers", KindBroker, "rutgers-1"}))
	anon, err := ClientConfigCAOnly(f.caFile, KindBroker)
	if err != nil {
		t.Fatal(err)
	}
	serverOnlyEKU := func(eku x509.ExtKeyUsage) Files {
		return f.issueTemplate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "x"},
			ExtKeyUsage: []x509.ExtKeyUsage{eku}, URIs: []*url.URL{Identity{"psc", KindBroker, "psc-9"}.URI()}})
	}
	tests := []struct {
		name   string
		server Files
		want   bool
	}{
		{"broker", f.issue(t, Identity{"psc", KindBroker, "psc-2"}), true},
		{"no host names", f.issueHosts(t, Identity{"psc", KindBroker, "psc-3"}, nil), true},
		{"other host names", f.issueHosts(t, Identity{"psc", KindBroker, "psc-4"}, []string{"192.0.2.1", "psc.example"}), true},
		{"agent", f.issue(t, Identity{"psc", KindAgent, "gw"}), false},
		{"another CA", other.issue(t, Identity{"psc", KindBroker, "psc-2"}), false},
		{"revoked", revoked, false},
		{"expired", f.issueExpired(t, Identity{"psc", KindBroker, "psc-2"}), false},
		{"no identity", f.issueTemplate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "x"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), false},
		{"client use only", serverOnlyEKU(x509.ExtKeyUsageClientAuth), false},
		{"server use only", serverOnlyEKU(x509.ExtKeyUsageServerAuth), true},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			cfg := serving(keyPair(t, test.server))
			serr, cerr := handshake(t, cfg, client.ClientConfig(KindBroker))
			if got := serr == nil && cerr == nil; got != test.want {
				t.Errorf("ClientConfig handshake accepted = %v, want %v (server: %v; client: %v)", got, test.want, serr, cerr)
			}
			if test.name == "revoked" && !errors.Is(cerr, ErrRevoked) {
				t.Errorf("client error = %v, want %v", cerr, ErrRevoked)
			}
			// The CA-only client has no CRL; otherwise it agrees.
			want := test.want || test.name == "revoked"
			serr, cerr = handshake(t, cfg, anon)
			if got := serr == nil && cerr == nil; got != want {
				t.Errorf("ClientConfigCAOnly handshake accepted = %v, want %v (server: %v; client: %v)", got, want, serr, cerr)
			}
		})
	}
	t.Run("any kind", func(t *testing.T) {
		agent := serving(keyPair(t, f.issue(t, Identity{"psc", KindAgent, "gw"})))
		if serr, cerr := handshake(t, agent, client.ClientConfig()); serr != nil || cerr != nil {
			t.Errorf("ClientConfig() against an agent: server %v, client %v; want success", serr, cerr)
		}
	})
}

// TestRevocationWhileRunning revokes a certificate under running bundles,
// on both sides of the handshake, and checks that a broken CRL file does
// not undo it.
func TestRevocationWhileRunning(t *testing.T) {
	f := newFixture(t, "cryo-em")
	server := mustLoad(t, f.issue(t, Identity{"rutgers", KindBroker, "rutgers-1"}))
	client := mustLoad(t, f.issue(t, Identity{"rutgers", KindBroker, "rutgers-2"}))
	victimFiles := f.issue(t, Identity{"psc", KindBroker, "psc-1"})
	victim := mustLoad(t, victimFiles)

	check := func(when string, want bool) {
		t.Helper()
		serr, cerr := handshake(t, server.ServerConfig(true), victim.ClientConfig(KindBroker))
		if got := serr == nil && cerr == nil; got != want {
			t.Errorf("%s: victim as client accepted = %v, want %v (server: %v)", when, got, want, serr)
		}
		if !want && !errors.Is(serr, ErrRevoked) {
			t.Errorf("%s: server error = %v, want %v", when, serr, ErrRevoked)
		}
		serr, cerr = handshake(t, victim.ServerConfig(true), client.ClientConfig(KindBroker))
		if got := serr == nil && cerr == nil; got != want {
			t.Errorf("%s: victim as server accepted = %v, want %v (client: %v)", when, got, want, cerr)
		}
		if !want && !errors.Is(cerr, ErrRevoked) {
			t.Errorf("%s: client error = %v, want %v", when, cerr, ErrRevoked)
		}
	}
	check("before revocation", true)

	// A client that resumes a TLS session skips certificate verification;
	// the revocation check must not be skipped with it.
	resumeServer := server.ServerConfig(true)
	resumeClient := victim.ClientConfig(KindBroker)
	resumeClient.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	resumeClient.ServerName = "rutgers-1" // the cache key; each handshake has a new port
	for i, wantResumed := range []bool{false, true} {
		cs, serr, cerr := handshakeState(t, resumeServer, resumeClient)
		if serr != nil || cerr != nil || cs.DidResume != wantResumed {
			t.Fatalf("handshake %d: server %v, client %v, resumed %v; want success, resumed %v", i, serr, cerr, cs.DidResume, wantResumed)
		}
	}

	f.revoke(t, victimFiles)
	time.Sleep(crlRecheck + 100*time.Millisecond)
	check("after revocation", false)
	if serr, _ := handshake(t, resumeServer, resumeClient); !errors.Is(serr, ErrRevoked) {
		t.Errorf("resuming a session after revocation: server error = %v, want %v", serr, ErrRevoked)
	}

	// A torn or forged CRL must not un-revoke.
	if err := os.WriteFile(f.crlFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(crlRecheck + 100*time.Millisecond)
	check("after garbage CRL", false)
	if server.CRLError() == nil {
		t.Errorf("CRLError() = nil after a garbage CRL, want an error")
	}
}

// TestRefusesOldProtocols checks that a plaintext client and a TLS 1.2
// client are refused.
func TestRefusesOldProtocols(t *testing.T) {
	f := newFixture(t, "cryo-em")
	server := mustLoad(t, f.issue(t, Identity{"rutgers", KindBroker, "rutgers-1"}))

	t.Run("TLS 1.2", func(t *testing.T) {
		cfg := server.ClientConfig(KindBroker)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		serr, cerr := handshake(t, server.ServerConfig(false), cfg)
		if serr == nil || cerr == nil {
			t.Errorf("TLS 1.2 handshake: server %v, client %v; want both to fail", serr, cerr)
		}
	})
	t.Run("plaintext", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		serr := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				serr <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			serr <- tls.Server(c, server.ServerConfig(false)).Handshake()
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := <-serr; err == nil {
			t.Errorf("server handshake with a plaintext client = nil, want an error")
		}
		b, _ := io.ReadAll(c)
		if len(b) > 0 && b[0] != 0x15 { // only a TLS alert record may come back
			t.Errorf("plaintext client read %q, want nothing or an alert", b)
		}
	})
}
