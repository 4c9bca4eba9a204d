package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// tlsFed is a federation CA saved in a temporary directory. Its CRL file
// does not exist until something is revoked.
type tlsFed struct {
	dir     string
	ca      *pki.CA
	caFile  string
	crlFile string
	n       int // files written, for unique names
}

func newTLSFed(t testing.TB, name string) *tlsFed {
	t.Helper()
	ca, err := pki.NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA(%q) = %v", name, err)
	}
	dir := t.TempDir()
	f := &tlsFed{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.crt"), crlFile: filepath.Join(dir, "ca.crl")}
	if err := ca.Save(f.caFile, filepath.Join(dir, "ca.key")); err != nil {
		t.Fatalf("Save = %v", err)
	}
	return f
}

// write stores a certificate and key and returns Files naming them with
// the federation's CA and CRL.
func (f *tlsFed) write(t testing.TB, certPEM, keyPEM []byte) pki.Files {
	t.Helper()
	f.n++
	files := pki.Files{
		CA:   f.caFile,
		Cert: filepath.Join(f.dir, fmt.Sprintf("%d.crt", f.n)),
		Key:  filepath.Join(f.dir, fmt.Sprintf("%d.key", f.n)),
		CRL:  f.crlFile,
	}
	if err := os.WriteFile(files.Cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return files
}

// issue issues a certificate for id, valid for an hour, for loopback.
func (f *tlsFed) issue(t testing.TB, id pki.Identity) pki.Files {
	t.Helper()
	c, k, err := f.ca.Issue(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatalf("Issue(%v) = %v", id, err)
	}
	return f.write(t, c, k)
}

// issueExpired signs a certificate for id, otherwise as Issue makes them,
// that expired an hour ago.
func (f *tlsFed) issueExpired(t testing.TB, id pki.Identity) pki.Files {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{Organization: []string{"labfed"}, CommonName: id.String()},
		NotBefore:             now.Add(-2 * time.Hour),
		NotAfter:              now.Add(-time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{id.URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca.Cert, pub, f.ca.Key)
	if err != nil {
		t.Fatalf("CreateCertificate(%v) = %v", id, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return f.write(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// revoke puts the certificate in files on the federation's CRL.
func (f *tlsFed) revoke(t testing.TB, files pki.Files) {
	t.Helper()
	b, err := os.ReadFile(files.Cert)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := pki.CertSerial(b)
	if err != nil {
		t.Fatalf("CertSerial(%s) = %v", files.Cert, err)
	}
	if err := f.ca.Revoke(f.crlFile, serial); err != nil {
		t.Fatalf("Revoke(%s) = %v", serial, err)
	}
}

// clientTLS returns the configuration of a client that verifies the
// server as the CLI does and holds the certificate in files, loaded with
// all of pki.Load's checks.
func clientTLS(t testing.TB, files pki.Files) *tls.Config {
	t.Helper()
	b, err := pki.Load(files)
	if err != nil {
		t.Fatalf("Load(%s) = %v", files.Cert, err)
	}
	return b.ClientConfig(pki.KindBroker)
}

// anonTLS returns the configuration of a client with the CA file alone.
func anonTLS(t testing.TB, caFile string) *tls.Config {
	t.Helper()
	cfg, err := pki.ClientConfigCAOnly(caFile, pki.KindBroker)
	if err != nil {
		t.Fatalf("ClientConfigCAOnly(%s) = %v", caFile, err)
	}
	return cfg
}

// presentingTLS returns a client configuration that verifies the server
// with caFile and presents the certificate in files whatever the server
// asks for and without any check of its own, so that the server alone
// decides whether to accept it.
func presentingTLS(t testing.TB, caFile string, files pki.Files) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatalf("LoadX509KeyPair(%s) = %v", files.Cert, err)
	}
	cfg := anonTLS(t, caFile)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

// dial opens a connection to addr with creds, closed when the test ends.
// It is made lazily: transport errors surface on the first call.
func dial(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s) = %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func dialTLS(t testing.TB, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	return dial(t, addr, credentials.NewTLS(cfg))
}

func callCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tlsTestConfig returns a loopback config for broker node of site, in a
// fresh data_dir, whose tls section names files. Bootstrapping it makes
// alice (of rutgers) the first coordinator.
func tlsTestConfig(t testing.TB, site, node string, files pki.Files) *Config {
	t.Helper()
	text := fmt.Sprintf("site: %s\nnode: %s\ndata_dir: %s\nlisten:\n  api: %s\n  raft: %s\n"+
		"uid_range: 200000-209999\ngid_range: 200000-209999\ntls:\n  ca: %s\n  cert: %s\n  key: %s\n  crl: %s\n"+
		"bootstrap:\n  coordinator: {name: alice, email: alice@rutgers.edu}\n"+
		"gossip: {keyring: %s}\n",
		site, node, filepath.Join(t.TempDir(), node), freePort(t), freePort(t), files.CA, files.Cert, files.Key, files.CRL, gossipKeyring(t, filepath.Dir(files.CA)))
	text = strings.Replace(text, "listen:\n", "listen:\n  gossip: "+freePort(t)+"\n  http: 127.0.0.1:0\n", 1)
	c, err := ParseConfig(node+".yaml", []byte(text))
	if err != nil {
		t.Fatalf("ParseConfig(%q) = %v", text, err)
	}
	return c
}

// startTLS starts a node in TLS mode and closes it when the test ends.
func startTLS(t testing.TB, o Options) *Node {
	t.Helper()
	if o.Raft == nil {
		o.Raft = fastRaft
	}
	n, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("Start(%s) = %v", o.Config.Node, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// peerIDs returns the Raft configuration's server ids as n knows them.
func peerIDs(t testing.TB, n *Node) []string {
	t.Helper()
	peers, err := n.Replica().Peers()
	if err != nil {
		t.Fatalf("Peers() = %v", err)
	}
	var ids []string
	for _, p := range peers {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids
}

// stateHash returns the hash of n's directory, read locally.
func stateHash(t testing.TB, n *Node) string {
	t.Helper()
	var hash string
	err := n.Replica().Read(context.Background(), true, func(d *directory.Directory) (err error) {
		hash, err = d.Hash()
		return err
	})
	if err != nil {
		t.Fatalf("Read(hash) = %v", err)
	}
	return hash
}

// waitUntil retries fn until it succeeds or d passes.
func waitUntil(t testing.TB, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsNode is a bootstrapped single-node federation running over TLS, with
// the CA that issued its certificate.
type tlsNode struct {
	fed *tlsFed
	cfg *Config
	n   *Node
}

func startTLSFederation(t testing.TB) *tlsNode {
	t.Helper()
	fed := newTLSFed(t, "cryo-em")
	cfg := tlsTestConfig(t, "rutgers", "rutgers-1", fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"}))
	n := startTLS(t, Options{Config: cfg, Bootstrap: true})
	waitLeaderWithSite(t, n, "rutgers")
	return &tlsNode{fed: fed, cfg: cfg, n: n}
}

// addSite adds a site; every site it adds has the same ranges, which the
// directory allows.
func addSite(ctx context.Context, conn *grpc.ClientConn, name string) error {
	r := &pb.IDRange{Lo: 700000, Hi: 700999}
	_, err := pb.NewDirectoryServiceClient(conn).AddSite(ctx, &pb.AddSiteRequest{Name: name, UidRange: r, GidRange: r})
	return err
}

func listSites(ctx context.Context, conn *grpc.ClientConn) error {
	_, err := pb.NewDirectoryServiceClient(conn).ListSites(ctx, &pb.ListSitesRequest{})
	return err
}

// TestTLSNodeClients checks whom a TLS node's API serves: only clients
// presenting a valid, unrevoked federation certificate, and it records
// their certificate's identity as the actor of their writes.
func TestTLSNodeClients(t *testing.T) {
	tn := startTLSFederation(t)
	fed, addr := tn.fed, tn.n.Addr()
	other := newTLSFed(t, "other")
	adminID := pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "alice"}
	admin := fed.issue(t, adminID)

	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		want  codes.Code
	}{
		// Plaintext HTTP/2 to a TLS listener fails at the transport.
		{"plaintext", insecure.NewCredentials(), codes.Unavailable},
		{"CA only, no client certificate", credentials.NewTLS(anonTLS(t, fed.caFile)), codes.Unauthenticated},
		// The server refuses the handshake.
		{"certificate of another CA", credentials.NewTLS(presentingTLS(t, fed.caFile, other.issue(t, adminID))), codes.Unavailable},
		{"expired certificate", credentials.NewTLS(presentingTLS(t, fed.caFile, fed.issueExpired(t, adminID))), codes.Unavailable},
		{"valid admin certificate", credentials.NewTLS(clientTLS(t, admin)), codes.OK},
	}
	for i, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			conn := dial(t, addr, test.creds)
			err := listSites(callCtx(t), conn)
			t.Logf("ListSites: %v", err)
			if got := status.Code(err); got != test.want {
				t.Errorf("ListSites(%s) = %v, want code %v", test.name, err, test.want)
			}
			site := fmt.Sprintf("site-%d", i)
			err = addSite(callCtx(t), conn, site)
			if got := status.Code(err); got != test.want {
				t.Errorf("AddSite(%s, %s) = %v, want code %v", test.name, site, err, test.want)
			}
			if test.want != codes.OK {
				err := tn.n.Replica().Read(context.Background(), true, func(d *directory.Directory) error {
					_, err := d.Site(site)
					return err
				})
				if broker.KindOf(err) != broker.ErrNotFound {
					t.Errorf("after a refused AddSite(%s): Site(%s) = %v, want not found", test.name, site, err)
				}
			}
		})
	}

	t.Run("writes are recorded as the certificate's identity", func(t *testing.T) {
		conn := dialTLS(t, addr, clientTLS(t, admin))
		d := pb.NewDirectoryServiceClient(conn)
		ctx := callCtx(t)
		if err := addSite(ctx, conn, "actor-site"); err != nil {
			t.Fatalf("AddSite(actor-site) = %v", err)
		}
		if _, err := d.AddUser(ctx, &pb.AddUserRequest{Name: "ursula", Email: "ursula@example.org", Home: "actor-site"}); err != nil {
			t.Fatalf("AddUser(ursula) = %v", err)
		}
		// An admin may not speak for others: the headers a forwarding
		// broker sets are believed from brokers only.
		forged := metadata.AppendToOutgoingContext(ctx, "labfed-forwarded", "1", "labfed-actor", "psc/admin/mallory")
		for _, c := range []struct {
			name     string
			ctx      context.Context
			resource string
		}{
			{"plain", ctx, "actor-site/scope"},
			{"with forged labfed-forwarded and labfed-actor", forged, "actor-site/scope2"},
		} {
			g, err := d.AddGrant(c.ctx, &pb.AddGrantRequest{Subject: "user:ursula", Resource: c.resource, Actions: []string{broker.ActionInstrumentView}})
			if err != nil {
				t.Fatalf("AddGrant(%s) = %v", c.name, err)
			}
			if got, want := g.GetGrantedBy(), adminID.String(); got != want {
				t.Errorf("AddGrant(%s) as %s: granted_by = %q, want %q", c.name, adminID, got, want)
			}
		}
	})

	t.Run("revoked admin certificate", func(t *testing.T) {
		victimID := pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "victor"}
		victim := fed.issue(t, victimID)
		if _, err := pb.NewDirectoryServiceClient(dialTLS(t, addr, clientTLS(t, admin))).AddUser(callCtx(t),
			&pb.AddUserRequest{Name: "victor", Email: "victor@rutgers.edu", Home: "rutgers"}); err != nil {
			t.Fatalf("AddUser(victor) = %v", err)
		}
		open := dialTLS(t, addr, clientTLS(t, victim))
		if err := listSites(callCtx(t), open); err != nil {
			t.Fatalf("ListSites(%s) before revocation = %v, want success", victimID, err)
		}
		fed.revoke(t, victim)
		time.Sleep(1100 * time.Millisecond) // the node re-reads its CRL at most once a second
		// A connection opened before the revocation is refused at its next
		// call: the revocation list is checked per request, not only at the
		// handshake.
		if err := listSites(callCtx(t), open); status.Code(err) != codes.Unauthenticated {
			t.Errorf("ListSites(revoked %s) on a connection opened before the revocation = %v, want code %v", victimID, err, codes.Unauthenticated)
		}
		// A client holding the certificate loaded before the revocation
		// (Load would now refuse it) opens a new connection.
		cfg := presentingTLS(t, fed.caFile, victim)
		for _, call := range []struct {
			name string
			fn   func(context.Context, *grpc.ClientConn) error
		}{
			{"ListSites", listSites},
			{"AddSite", func(ctx context.Context, c *grpc.ClientConn) error { return addSite(ctx, c, "revoked-site") }},
		} {
			err := call.fn(callCtx(t), dialTLS(t, addr, cfg))
			if got := status.Code(err); got != codes.Unavailable {
				t.Errorf("%s(revoked %s) = %v, want code %v (refused handshake)", call.name, victimID, err, codes.Unavailable)
			}
		}
		// Other certificates are unaffected.
		if err := listSites(callCtx(t), dialTLS(t, addr, clientTLS(t, admin))); err != nil {
			t.Errorf("ListSites(%s) after revoking %s = %v, want success", adminID, victimID, err)
		}
	})
}

// TestTLSNodeJoin checks who may join a TLS federation: a broker under its
// own certificate's site and name, over Raft on mutual TLS, and nobody
// else. Its subtests are steps on one federation and run in order.
func TestTLSNodeJoin(t *testing.T) {
	tn := startTLSFederation(t)
	fed, addr := tn.fed, tn.n.Addr()
	pscID := pki.Identity{Site: "psc", Kind: pki.KindBroker, Name: "psc-1"}
	pscFiles := fed.issue(t, pscID)
	adminID := pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "alice"}
	admin := fed.issue(t, adminID)

	// Before anyone joins, while the single node leads steadily.
	t.Run("plaintext raft", func(t *testing.T) {
		trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer trans.Close()
		st := tn.n.Replica().RaftNode()
		term := st.CurrentTerm()
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(trans.LocalAddr())},
			Term:      term + 100,
		}
		// Control: a plaintext Raft listener answers the same request.
		plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case rpc := <-plain.Consumer():
					rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
				case <-done:
					return
				}
			}
		}()
		var resp raft.AppendEntriesResponse
		if err := trans.AppendEntries("plain", plain.LocalAddr(), req, &resp); err != nil || !resp.Success {
			t.Fatalf("control: plaintext AppendEntries to a plaintext raft port = %+v, %v; want success", resp, err)
		}
		resp = raft.AppendEntriesResponse{}
		err = trans.AppendEntries("rutgers-1", raft.ServerAddress(tn.cfg.Listen.Raft), req, &resp)
		if err == nil {
			t.Errorf("plaintext AppendEntries to the TLS raft port = %+v, want an error", resp)
		}
		t.Logf("plaintext AppendEntries to the TLS raft port: %v", err)
		if got := st.CurrentTerm(); got != term {
			t.Errorf("after a plaintext AppendEntries with term %d: term = %d, want %d", term+100, got, term)
		}
		if st.State() != raft.Leader {
			t.Errorf("after a plaintext AppendEntries: state = %s, want %s", st.State(), raft.Leader)
		}
		if got := peerIDs(t, tn.n); !slices.Equal(got, []string{"rutgers-1"}) {
			t.Errorf("after a plaintext AppendEntries: peers = %v, want [rutgers-1]", got)
		}
	})

	wantPeers := []string{"rutgers-1"}
	before := stateHash(t, tn.n)
	forged := func() context.Context {
		return metadata.AppendToOutgoingContext(callCtx(t), "labfed-forwarded", "1", "labfed-actor", "rutgers/broker/rutgers-1")
	}
	raftAddr := freePort(t)
	tests := []struct {
		name string
		tls  *tls.Config
		ctx  func() context.Context
		req  *pb.JoinRequest
	}{
		{"broker claiming another site", clientTLS(t, pscFiles), func() context.Context { return callCtx(t) },
			&pb.JoinRequest{Id: "psc-1", Site: "rutgers", RaftAddr: raftAddr, ApiAddr: raftAddr}},
		{"broker claiming another name", clientTLS(t, pscFiles), func() context.Context { return callCtx(t) },
			&pb.JoinRequest{Id: "other", Site: "psc", RaftAddr: raftAddr, ApiAddr: raftAddr}},
		{"admin", clientTLS(t, admin), func() context.Context { return callCtx(t) },
			&pb.JoinRequest{Id: "alice", Site: "rutgers", RaftAddr: raftAddr, ApiAddr: raftAddr}},
		{"admin with forged forwarding headers", clientTLS(t, admin), forged,
			&pb.JoinRequest{Id: "alice", Site: "rutgers", RaftAddr: raftAddr, ApiAddr: raftAddr}},
		{"admin joining as a broker with forged forwarding headers", clientTLS(t, admin), forged,
			&pb.JoinRequest{Id: "psc-1", Site: "psc", RaftAddr: raftAddr, ApiAddr: raftAddr}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			c := pb.NewClusterServiceClient(dialTLS(t, addr, test.tls))
			_, err := c.Join(test.ctx(), test.req)
			if got := status.Code(err); got != codes.PermissionDenied {
				t.Errorf("Join(id %s, site %s) as %s = %v, want code %v", test.req.GetId(), test.req.GetSite(), test.name, err, codes.PermissionDenied)
			}
			if got := peerIDs(t, tn.n); !slices.Equal(got, wantPeers) {
				t.Errorf("after a refused Join: peers = %v, want %v", got, wantPeers)
			}
			if got := stateHash(t, tn.n); got != before {
				t.Errorf("after a refused Join: state hash = %s, want %s (unchanged)", got, before)
			}
		})
	}

	t.Run("broker under its own certificate", func(t *testing.T) {
		cfg := tlsTestConfig(t, "psc", "psc-1", pscFiles)
		psc := startTLS(t, Options{Config: cfg, Join: []string{addr}})
		wantPeers = []string{"psc-1", "rutgers-1"}
		waitUntil(t, 10*time.Second, "psc-1 joins", func() error {
			if got := peerIDs(t, tn.n); !slices.Equal(got, wantPeers) {
				return fmt.Errorf("peers = %v, want %v", got, wantPeers)
			}
			return nil
		})
		// psc-1 receives the log over Raft on mutual TLS: its own
		// registration, which the leader applied, reaches it.
		waitUntil(t, 10*time.Second, "psc-1 replicates the directory", func() error {
			return psc.Replica().Read(context.Background(), true, func(d *directory.Directory) error {
				_, err := d.Site("psc")
				return err
			})
		})
	})

	t.Run("development node joining a TLS federation", func(t *testing.T) {
		var logs lockedBuffer
		cfg := testConfig(t, "dev", freePort(t), freePort(t))
		dev, err := Start(context.Background(), Options{Config: cfg, DevInsecure: true, Join: []string{addr}, Raft: fastRaft,
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatalf("Start(dev-insecure) = %v", err)
		}
		defer dev.Close()
		waitUntil(t, 10*time.Second, "the development node fails to join twice", func() error {
			if n := strings.Count(logs.String(), "join failed"); n < 2 {
				return fmt.Errorf("%d failed joins logged:\n%s", n, logs.String())
			}
			return nil
		})
		if got := peerIDs(t, tn.n); !slices.Equal(got, wantPeers) {
			t.Errorf("after a plaintext join attempt: peers = %v, want %v", got, wantPeers)
		}
		if st := dev.Replica().Status(); st.State == raft.Leader.String() || st.LeaderID != "" {
			t.Errorf("development node: state %s, leader %q; want no leader (no working membership)", st.State, st.LeaderID)
		}
	})
}

// lockedBuffer is a bytes.Buffer safe for concurrent use, for logs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStartRefusesWrongCertificate checks that a node cannot claim another
// site's name, another node's name or a broker's role with the
// certificate its config names, and that Start says what to do instead.
func TestStartRefusesWrongCertificate(t *testing.T) {
	fed := newTLSFed(t, "cryo-em")
	other := newTLSFed(t, "other")
	own := pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"}
	revoked := fed.issue(t, own)
	fed.revoke(t, revoked)
	const mismatch = "is not for broker rutgers-1 of site rutgers"
	tests := []struct {
		name  string
		files pki.Files
		want  string
	}{
		{"another site", fed.issue(t, pki.Identity{Site: "psc", Kind: pki.KindBroker, Name: "rutgers-1"}), mismatch},
		{"another node", fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-2"}), mismatch},
		{"admin", fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "rutgers-1"}), mismatch},
		{"agent", fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindAgent, Name: "rutgers-1"}), mismatch},
		{"expired", fed.issueExpired(t, own), "is not valid under the federation CA"},
		{"revoked", revoked, "is revoked"},
	}
	// A certificate of another CA, with this federation's CA file.
	foreign := other.issue(t, own)
	foreign.CA, foreign.CRL = fed.caFile, fed.crlFile
	tests = append(tests, struct {
		name  string
		files pki.Files
		want  string
	}{"another CA", foreign, "is not valid under the federation CA"})

	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			cfg := tlsTestConfig(t, "rutgers", "rutgers-1", test.files)
			checkStartRefused(t, cfg, test.want, test.files.Cert)
		})
	}
}

// TestStartRefusesMissingTLSFiles checks that Start names the missing file
// of a tls section.
func TestStartRefusesMissingTLSFiles(t *testing.T) {
	fed := newTLSFed(t, "cryo-em")
	good := fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"})
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name string
		edit func(*pki.Files)
	}{
		{"ca", func(f *pki.Files) { f.CA = missing + ".crt" }},
		{"cert", func(f *pki.Files) { f.Cert = missing + ".crt" }},
		{"key", func(f *pki.Files) { f.Key = missing + ".key" }},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			files := good
			test.edit(&files)
			cfg := tlsTestConfig(t, "rutgers", "rutgers-1", files)
			want := map[string]string{"ca": files.CA, "cert": files.Cert, "key": files.Key}[test.name]
			checkStartRefused(t, cfg, want)
		})
	}
}

// checkStartRefused checks that Start(cfg) fails with an error containing
// each of wants, on one line, without starting to listen.
func checkStartRefused(t testing.TB, cfg *Config, wants ...string) {
	t.Helper()
	n, err := Start(context.Background(), Options{Config: cfg, Bootstrap: true, Raft: fastRaft})
	if err == nil {
		n.Close()
		t.Fatalf("Start(cert %s) = nil error, want one containing %q", cfg.TLS.Cert, wants)
	}
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start(cert %s) = %q, want it to contain %q", cfg.TLS.Cert, err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("Start(cert %s) = %q, want one line", cfg.TLS.Cert, err)
	}
	for _, a := range []string{cfg.Listen.API, cfg.Listen.Raft} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("after a refused Start, listen on %s = %v, want it free", a, err)
			continue
		}
		l.Close()
	}
}

// gossipKeyring returns the federation's gossip keyring in dir, creating it
// on first use so every node of a test federation shares it.
func gossipKeyring(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "gossip.keys")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := NewGossipKeyring(path); err != nil {
		t.Fatal(err)
	}
	return path
}
