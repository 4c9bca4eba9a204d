package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// testEdKey returns a fresh Ed25519 public key.
func testEdKey(t testing.TB) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestJWKSDocument(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Hour), now.Add(-time.Hour)
	a, b, c := testEdKey(t), testEdKey(t), testEdKey(t)
	keys := []*directory.SigningKey{
		{KID: "psc-1-b", Issuer: "psc-1", Public: b, Status: directory.KeyRetiring, NotAfter: &later},
		{KID: "rutgers-1-a", Issuer: "rutgers-1", Public: a, Status: directory.KeyActive},
		{KID: "psc-1-a", Issuer: "psc-1", Public: c, Status: directory.KeyActive},
		// Retiring past its end: the directory marks it expired only at
		// the next publication, but it no longer verifies.
		{KID: "psc-1-0", Issuer: "psc-1", Public: testEdKey(t), Status: directory.KeyRetiring, NotAfter: &earlier},
		{KID: "psc-1-1", Issuer: "psc-1", Public: testEdKey(t), Status: directory.KeyExpired, NotAfter: &earlier},
		{KID: "rutgers-1-0", Issuer: "rutgers-1", Public: testEdKey(t), Status: directory.KeyRevoked, NotAfter: &earlier},
		{KID: "rutgers-1-low", Issuer: "rutgers-1", Public: make([]byte, ed25519.PublicKeySize), Status: directory.KeyActive},
		{KID: "rutgers-1-short", Issuer: "rutgers-1", Public: []byte{1, 2, 3}, Status: directory.KeyActive},
	}
	before := fmt.Sprint(keys)
	doc, skipped := jwksDocument(keys, now)
	jwk := func(kid string, pub ed25519.PublicKey) string {
		return fmt.Sprintf(`{"use":"sig","kty":"OKP","kid":%q,"crv":"Ed25519","alg":"EdDSA","x":%q}`, kid, base64.RawURLEncoding.EncodeToString(pub))
	}
	want := `{"keys":[` + jwk("psc-1-a", c) + "," + jwk("psc-1-b", b) + "," + jwk("rutgers-1-a", a) + `]}`
	if string(doc) != want {
		t.Errorf("jwksDocument(keys) = %s, want %s", doc, want)
	}
	if want := []string{"rutgers-1-low", "rutgers-1-short"}; !slices.Equal(skipped, want) {
		t.Errorf("jwksDocument(keys) skipped %v, want %v", skipped, want)
	}
	if fmt.Sprint(keys) != before {
		t.Errorf("jwksDocument changed its argument")
	}
	// go-jose reads back what it wrote.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatalf("Unmarshal(%s) = %v", doc, err)
	}
	for i, wantKey := range []ed25519.PublicKey{c, b, a} {
		if got, ok := set.Keys[i].Key.(ed25519.PublicKey); !ok || !got.Equal(wantKey) || set.Keys[i].Algorithm != "EdDSA" || set.Keys[i].Use != "sig" {
			t.Errorf("key %d = %+v, want the Ed25519 EdDSA signing key %x", i, set.Keys[i], wantKey)
		}
	}

	if doc, _ := jwksDocument(nil, now); string(doc) != `{"keys":[]}` {
		t.Errorf("jwksDocument(nil) = %s, want {\"keys\":[]}", doc)
	}
}

func TestJWKSHandler(t *testing.T) {
	pub := testEdKey(t)
	keys := []*directory.SigningKey{{KID: "rutgers-1-a", Issuer: "rutgers-1", Public: pub, Status: directory.KeyActive}}
	var logs lockedBuffer
	h := &jwksHandler{
		keys: func(context.Context) ([]*directory.SigningKey, error) { return keys, nil },
		now:  time.Now,
		log:  slog.New(slog.NewTextHandler(&logs, nil)),
	}
	doc, _ := jwksDocument(keys, time.Now())
	tests := []struct {
		method, target string
		code           int
		body           string
		header         map[string]string
	}{
		{"GET", jwksPath, http.StatusOK, string(doc), map[string]string{"Content-Type": "application/jwk-set+json", "Cache-Control": "max-age=60"}},
		{"GET", jwksPath + "?x=1", http.StatusOK, string(doc), nil},
		{"HEAD", jwksPath, http.StatusOK, "", map[string]string{"Content-Type": "application/jwk-set+json", "Content-Length": fmt.Sprint(len(doc))}},
		{"POST", jwksPath, http.StatusMethodNotAllowed, "the key set is read with GET\n", map[string]string{"Allow": "GET, HEAD"}},
		{"PUT", jwksPath, http.StatusMethodNotAllowed, "the key set is read with GET\n", map[string]string{"Allow": "GET, HEAD"}},
		{"DELETE", jwksPath, http.StatusMethodNotAllowed, "the key set is read with GET\n", map[string]string{"Allow": "GET, HEAD"}},
		{"GET", "/", http.StatusNotFound, "404 page not found\n", nil},
		{"GET", "/.well-known/openid-configuration", http.StatusNotFound, "404 page not found\n", nil},
		{"GET", jwksPath + "/", http.StatusNotFound, "404 page not found\n", nil},
		{"POST", "/elsewhere", http.StatusNotFound, "404 page not found\n", nil},
	}
	for _, test := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(test.method, test.target, nil))
		if w.Code != test.code || w.Body.String() != test.body {
			t.Errorf("%s %s = %d %q, want %d %q", test.method, test.target, w.Code, w.Body, test.code, test.body)
		}
		for _, k := range slices.Sorted(maps.Keys(test.header)) {
			if got := w.Header().Get(k); got != test.header[k] {
				t.Errorf("%s %s: %s = %q, want %q", test.method, test.target, k, got, test.header[k])
			}
		}
	}

	// A key go-jose refuses is left out of the document and logged once,
	// not on every request.
	keys = append(keys, &directory.SigningKey{KID: "rutgers-1-low", Issuer: "rutgers-1", Public: make([]byte, 32), Status: directory.KeyActive})
	for range 3 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", jwksPath, nil))
		if w.Code != http.StatusOK || w.Body.String() != string(doc) {
			t.Errorf("GET with a low-order key in the directory = %d %s, want 200 %s", w.Code, w.Body, doc)
		}
	}
	if n := strings.Count(logs.String(), "kid=rutgers-1-low"); n != 1 {
		t.Errorf("the low-order key was logged %d times, want once:\n%s", n, logs.String())
	}

	h.keys = func(context.Context) ([]*directory.SigningKey, error) { return nil, errors.New("store closed") }
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", jwksPath, nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET while the directory fails = %d %q, want %d", w.Code, w.Body, http.StatusServiceUnavailable)
	}
}

// jwksClient returns an HTTPS client as an outside verifier would have:
// the federation CA among its roots, standard verification (host name
// included), no client certificate. gotCertRequest is set if a server
// asks it for a certificate.
func jwksClient(t testing.TB, caFile string, gotCertRequest *bool) *http.Client {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("no certificate in %s", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		*gotCertRequest = true
		return &tls.Certificate{}, nil
	}}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// fetchJWKS GETs url and returns the key set with the raw members of each
// key.
func fetchJWKS(c *http.Client, url string) (*http.Response, *jose.JSONWebKeySet, []map[string]any, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp, nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp, nil, nil, fmt.Errorf("GET %s = %s: %s", url, resp.Status, b)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return resp, nil, nil, fmt.Errorf("decode %s: %v", b, err)
	}
	var raw struct{ Keys []map[string]any }
	if err := json.Unmarshal(b, &raw); err != nil {
		return resp, nil, nil, err
	}
	return resp, &set, raw.Keys, nil
}

func kids(set *jose.JSONWebKeySet) []string {
	var ks []string
	for _, k := range set.Keys {
		ks = append(ks, k.KeyID)
	}
	return ks
}

// ownPublicKey returns the public half of the signing key in n's data_dir.
func ownPublicKey(t testing.TB, n *Node) ed25519.PublicKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, signingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		t.Fatalf("signing key file of %s: %v (%d bytes)", n.cfg.Node, err, len(seed))
	}
	return ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
}

// TestJWKSEndpoint fetches a TLS broker's trust bundle over HTTPS as an
// outside verifier does. Its subtests are steps on one node and run in
// order.
func TestJWKSEndpoint(t *testing.T) {
	fed := newTLSFed(t, "cryo-em")
	brokerFiles := fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"})
	cfg := tlsTestConfig(t, "rutgers", "rutgers-1", brokerFiles)
	cfg.Listen.HTTP, cfg.Advertise.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	n := startTLS(t, Options{Config: cfg, Bootstrap: true})
	waitLeaderWithSite(t, n, "rutgers")
	var certRequested bool
	client := jwksClient(t, fed.caFile, &certRequested)
	url := "https://" + n.JWKSAddr() + jwksPath
	own := ownPublicKey(t, n)

	var ownKID string
	t.Run("own key", func(t *testing.T) {
		var resp *http.Response
		var set *jose.JSONWebKeySet
		var raw []map[string]any
		waitUntil(t, 10*time.Second, "the node's signing key is served", func() (err error) {
			resp, set, raw, err = fetchJWKS(client, url)
			if err != nil {
				return err
			}
			for _, k := range set.Keys {
				if pub, ok := k.Key.(ed25519.PublicKey); ok && pub.Equal(own) {
					ownKID = k.KeyID
					return nil
				}
			}
			return fmt.Errorf("keys %v, none of them %x", kids(set), own)
		})
		dk, err := n.Replica().Directory().SigningKey(ownKID)
		if err != nil || dk.Issuer != "rutgers-1" || dk.Status != directory.KeyActive || !ed25519.PublicKey(dk.Public).Equal(own) {
			t.Errorf("served kid %s; directory has %+v, %v; want the active key of rutgers-1", ownKID, dk, err)
		}
		if len(raw) != 1 {
			t.Fatalf("served %d keys, want 1: %v", len(raw), raw)
		}
		wantRaw := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(own), "kid": ownKID, "alg": "EdDSA", "use": "sig"}
		if !maps.Equal(raw[0], wantRaw) {
			t.Errorf("served key %v, want %v", raw[0], wantRaw)
		}
		for k, want := range map[string]string{"Content-Type": "application/jwk-set+json", "Cache-Control": "max-age=60"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
			t.Errorf("connection state %+v, want TLS 1.3", resp.TLS)
		}
		if certRequested {
			t.Errorf("the JWKS endpoint asked the client for a certificate; outside verifiers have none")
		}
	})

	// Keys published after the node's own: a real one and a low-order one
	// that go-jose refuses to encode. Each publication retires the
	// broker's previous key, which stays in the set while it verifies.
	extraPub := testEdKey(t)
	asBroker := dir(dialTLS(t, n.Addr(), clientTLS(t, brokerFiles)))
	for _, k := range []struct {
		kid string
		pub []byte
	}{{"rutgers-1-extra", extraPub}, {"rutgers-1-low", make([]byte, ed25519.PublicKeySize)}} {
		if _, err := asBroker.PublishKey(callCtx(t), &pb.PublishKeyRequest{Kid: k.kid, Public: k.pub}); err != nil {
			t.Fatalf("PublishKey(%s) = %v", k.kid, err)
		}
	}
	t.Run("retiring keys stay, a key go-jose refuses is left out", func(t *testing.T) {
		want := []string{ownKID, "rutgers-1-extra"}
		slices.Sort(want)
		_, set, _, err := fetchJWKS(client, url)
		if err != nil {
			t.Fatal(err)
		}
		if got := kids(set); !slices.Equal(got, want) {
			t.Errorf("kids %v, want %v (sorted, without rutgers-1-low)", got, want)
		}
	})

	t.Run("a revoked key disappears", func(t *testing.T) {
		coord := dir(dialTLS(t, n.Addr(), clientTLS(t, fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "alice"}))))
		if _, err := coord.RevokeKey(callCtx(t), &pb.RevokeKeyRequest{Kid: "rutgers-1-extra", Reason: "test"}); err != nil {
			t.Fatalf("RevokeKey(rutgers-1-extra) = %v", err)
		}
		waitUntil(t, 5*time.Second, "rutgers-1-extra leaves the set", func() error {
			_, set, _, err := fetchJWKS(client, url)
			if err != nil {
				return err
			}
			if got := kids(set); !slices.Equal(got, []string{ownKID}) {
				return fmt.Errorf("kids %v, want [%s]", got, ownKID)
			}
			return nil
		})
	})

	t.Run("methods and paths", func(t *testing.T) {
		for _, test := range []struct {
			method, target string
			code           int
			allow          string
		}{
			{"HEAD", jwksPath, http.StatusOK, ""},
			{"POST", jwksPath, http.StatusMethodNotAllowed, "GET, HEAD"},
			{"GET", "/.well-known/openid-configuration", http.StatusNotFound, ""},
			{"GET", "/", http.StatusNotFound, ""},
		} {
			req, err := http.NewRequest(test.method, "https://"+n.JWKSAddr()+test.target, strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("%s %s = %v", test.method, test.target, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != test.code || resp.Header.Get("Allow") != test.allow {
				t.Errorf("%s %s = %s, Allow %q, want %d, Allow %q", test.method, test.target, resp.Status, resp.Header.Get("Allow"), test.code, test.allow)
			}
			if test.method == "HEAD" && len(b) != 0 {
				t.Errorf("HEAD %s has a body: %q", test.target, b)
			}
		}
	})

	t.Run("plain HTTP to the HTTPS port", func(t *testing.T) {
		plain := &http.Client{Timeout: 5 * time.Second}
		resp, err := plain.Get("http://" + n.JWKSAddr() + jwksPath)
		if err != nil {
			t.Logf("plain GET: %v", err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("plain GET: %s %q", resp.Status, b)
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "keys") {
			t.Errorf("plain GET %s = %s %q, want a refusal", jwksPath, resp.Status, b)
		}
	})

	t.Run("close releases the port", func(t *testing.T) {
		addr := n.JWKSAddr()
		if err := n.Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("after Close, listen on %s = %v, want it free", addr, err)
		}
		l.Close()
	})
}

// TestJWKSPortTaken checks that Start fails, naming the address, when the
// JWKS port is taken, and releases everything it had opened: the same
// data_dir then starts.
func TestJWKSPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	fed := newTLSFed(t, "cryo-em")
	cfg := tlsTestConfig(t, "rutgers", "rutgers-1", fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"}))
	cfg.Listen.HTTP = taken.Addr().String()
	checkStartRefused(t, cfg, "listen.http", taken.Addr().String())

	cfg.Listen.HTTP = "127.0.0.1:0"
	started := make(chan error, 1)
	go func() {
		n, err := Start(context.Background(), Options{Config: cfg, Bootstrap: true, Raft: fastRaft})
		if err == nil {
			n.Close()
		}
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Start after a refused Start on the same data_dir = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Start after a refused Start on the same data_dir did not return within 20s: the refused Start kept the stores open")
	}
}

// TestJWKSDevInsecure checks that a development node serves the bundle
// over plain HTTP, and only on loopback.
func TestJWKSDevInsecure(t *testing.T) {
	cfg := testConfig(t, "rutgers", freePort(t), freePort(t))
	cfg.Listen.HTTP = "0.0.0.0:0"
	if n, err := Start(context.Background(), Options{Config: cfg, DevInsecure: true, Bootstrap: true, Raft: fastRaft}); err == nil {
		n.Close()
		t.Fatalf("Start(dev-insecure, listen.http 0.0.0.0:0) = nil error, want a refusal")
	} else if !strings.Contains(err.Error(), "refuses to listen on 0.0.0.0:0") {
		t.Errorf("Start(dev-insecure, listen.http 0.0.0.0:0) = %q, want it to contain %q", err, "refuses to listen on 0.0.0.0:0")
	}

	cfg.Listen.HTTP = "127.0.0.1:0"
	n, err := Start(context.Background(), Options{Config: cfg, DevInsecure: true, Bootstrap: true, Raft: fastRaft})
	if err != nil {
		t.Fatalf("Start(dev-insecure) = %v", err)
	}
	defer n.Close()
	waitLeaderWithSite(t, n, "rutgers")
	// A development caller publishes as "dev-insecure", which is no node
	// of the directory; put a key for this node in directly.
	pub := testEdKey(t)
	cmd := &directory.Command{Time: time.Now().UTC(), Actor: "test", PublishKey: &directory.PublishKey{KID: "rutgers-test", Issuer: "rutgers", Public: pub}}
	if _, err := n.Replica().Apply(context.Background(), cmd); err != nil {
		t.Fatalf("apply PublishKey(rutgers-test) = %v", err)
	}
	_, set, _, err := fetchJWKS(&http.Client{Timeout: 5 * time.Second}, "http://"+n.JWKSAddr()+jwksPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].KeyID != "rutgers-test" {
		t.Fatalf("keys %v, want [rutgers-test]", kids(set))
	}
	if got, ok := set.Keys[0].Key.(ed25519.PublicKey); !ok || !got.Equal(pub) {
		t.Errorf("key rutgers-test is %v, want %x", set.Keys[0].Key, pub)
	}
}
