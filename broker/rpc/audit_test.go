package rpc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
	"github.com/labfed/labfed/storage/boltstate"
)

// failingAudit is a replica whose audit log cannot be written: every
// AppendAudit fails, as when the log's store or quorum is gone.
type failingAudit struct{ localReplica }

func (r failingAudit) Apply(ctx context.Context, c *directory.Command) (any, error) {
	if c.AppendAudit != nil {
		return nil, errors.New("audit store: input/output error")
	}
	return r.localReplica.Apply(ctx, c)
}

// issueFixture is a directory with site rutgers, its broker's signing key
// and alice holding a grant to operate the Krios, plus the extra commands
// (applied at the same time), and the broker's signer and key.
func issueFixture(tb testing.TB, extra ...*directory.Command) (*directory.Directory, *capability.Signer, *directory.User, ed25519.PrivateKey) {
	tb.Helper()
	st, err := boltstate.Create(filepath.Join(tb.TempDir(), "state.db"), directory.Buckets())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	d := directory.New(st)
	now := time.Now().UTC()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	rng := broker.Range{Lo: 200000, Hi: 209999}
	for _, c := range append([]*directory.Command{
		{AddSite: &directory.AddSite{Name: "rutgers", UIDRange: rng, GIDRange: rng}},
		{AddUser: &directory.AddUser{Name: "alice", Email: "alice@rutgers.edu", Home: "rutgers"}},
		{RegisterNode: &directory.RegisterNode{Node: directory.Node{ID: "rutgers-1", Site: "rutgers", RaftAddr: "127.0.0.1:7001", APIAddr: "127.0.0.1:7000"}}},
		{PublishKey: &directory.PublishKey{KID: "rutgers-1-aa", Issuer: "rutgers-1", Public: pub}},
		{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "rutgers/krios-g4", Actions: []string{broker.ActionInstrumentOperate}, From: now.Add(-time.Hour)}},
	}, extra...) {
		c.Time, c.Actor = now, "coord"
		if res := d.Apply(c); res.Err != nil {
			tb.Fatal(res.Err)
		}
	}
	alice, err := d.User("alice")
	if err != nil {
		tb.Fatal(err)
	}
	return d, capability.NewSigner("rutgers-1-aa", "rutgers-1", priv), alice, priv
}

// TestIssueFailsClosed: when its audit entry cannot be written, a token is
// not issued, and nothing else changes.
func TestIssueFailsClosed(t *testing.T) {
	d, signer, alice, _ := issueFixture(t)
	ctx := withPrincipal(context.Background(), &Principal{Method: "session", User: alice})
	req := &pb.IssueTokenRequest{Scope: "instrument.operate:rutgers/krios-g4"}

	before, _ := d.Hash()
	seq, _, _ := d.AuditHead()
	s := NewServer(Config{Replica: failingAudit{localReplica{d}}, Signer: signer})
	resp, err := s.Issue(ctx, req)
	if err == nil || resp != nil || status.Code(err) != codes.Unavailable {
		t.Fatalf("Issue with the audit log down = %v, %v; want Unavailable and no token", resp, err)
	}
	t.Logf("refusal: %v", err)
	after, _ := d.Hash()
	if seq2, _, _ := d.AuditHead(); before != after || seq2 != seq {
		t.Errorf("a refused issue changed the directory (hash %v, audit %d → %d)", before != after, seq, seq2)
	}

	// With the log working: issued, and recorded with its jti and grant.
	s = NewServer(Config{Replica: localReplica{d}, Signer: signer})
	resp, err = s.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	es, err := d.AuditEntries(directory.AuditQuery{Filter: audit.Filter{Action: audit.ActionTokenIssue}})
	if err != nil || len(es) != 1 {
		t.Fatalf("token.issue entries %v, %v", es, err)
	}
	if e := es[0]; e.Token != resp.GetJti() || e.Subject != "alice" || e.Decision != audit.Allow || len(e.Grants) != 1 || e.Resource != "rutgers/krios-g4" {
		t.Errorf("entry %+v", e)
	}
	// A refusal is recorded with its reason.
	if _, err := s.Issue(ctx, &pb.IssueTokenRequest{Scope: "instrument.operate:rutgers/aquilos"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("issue without a grant = %v", err)
	}
	es, _ = d.AuditEntries(directory.AuditQuery{Filter: audit.Filter{Action: audit.ActionTokenIssue, Decision: audit.Deny}})
	if len(es) != 1 || es[0].Reason != "no grant for instrument.operate on rutgers/aquilos" {
		t.Errorf("refusal entries %+v", es)
	}
}

// TestAppendFromAgents: an agent records its own site's sessions, mounts
// and jobs, numbered; the source is its certificate whatever it claims.
func TestAppendFromAgents(t *testing.T) {
	d, _, _, _ := issueFixture(t)
	s := NewServer(Config{Replica: localReplica{d}})
	agent := withPrincipal(context.Background(), &Principal{Method: "certificate", Cert: &pki.Identity{Site: "rutgers", Kind: pki.KindAgent, Name: "agent-1"}})
	entry := func(site, action string, seq uint64) *pb.AuditEntry {
		return &pb.AuditEntry{Time: timestamppb.Now(), Actor: "alice", Action: action, Site: site, Resource: "rutgers/krios-g4", Decision: "allow", SourceSeq: seq, Source: "psc/agent/other"}
	}
	for _, bad := range []struct {
		e    *pb.AuditEntry
		code codes.Code
	}{
		{entry("psc", audit.ActionSessionOpen, 1), codes.PermissionDenied},
		{entry("", audit.ActionSessionOpen, 1), codes.PermissionDenied},
		{entry("rutgers", "grant.add", 1), codes.PermissionDenied},
		{entry("rutgers", audit.ActionSessionOpen, 0), codes.InvalidArgument},
	} {
		_, err := s.Append(agent, &pb.AppendAuditRequest{Entries: []*pb.AuditEntry{bad.e}})
		if got := status.Code(toStatus(err)); got != bad.code {
			t.Errorf("Append(%v) = %v, want %v", bad.e, err, bad.code)
		}
	}
	resp, err := s.Append(agent, &pb.AppendAuditRequest{Entries: []*pb.AuditEntry{entry("rutgers", audit.ActionSessionOpen, 1), entry("rutgers", audit.ActionSessionClose, 2)}})
	if err != nil || resp.GetRecorded() != 2 {
		t.Fatalf("Append = %v, %v", resp, err)
	}
	if resp, err := s.Append(agent, &pb.AppendAuditRequest{Entries: []*pb.AuditEntry{entry("rutgers", audit.ActionSessionClose, 2)}}); err != nil || resp.GetRecorded() != 0 {
		t.Errorf("redelivery = %v, %v; want 0 recorded", resp, err)
	}
	es, _ := d.AuditEntries(directory.AuditQuery{Filter: audit.Filter{Action: audit.ActionSessionOpen}})
	if len(es) != 1 || es[0].Source != "rutgers/agent/agent-1" {
		t.Errorf("entries %+v, want one from the agent's certificate", es)
	}
	// A new queue file (another generation) numbers from 1 again: recorded.
	fresh := entry("rutgers", audit.ActionSessionOpen, 1)
	fresh.Source = "whatever#0a1b2c3d"
	if resp, err := s.Append(agent, &pb.AppendAuditRequest{Entries: []*pb.AuditEntry{fresh}}); err != nil || resp.GetRecorded() != 1 {
		t.Errorf("entry 1 of a new queue = %v, %v; want recorded", resp, err)
	}
	es, _ = d.AuditEntries(directory.AuditQuery{Filter: audit.Filter{Action: audit.ActionSessionOpen}})
	if len(es) != 2 || es[1].Source != "rutgers/agent/agent-1#0a1b2c3d" {
		t.Errorf("entries %+v", es)
	}
}

// TestStreamsPerCallerBounded: a caller may keep MaxStreamsPerCaller
// streams open; one more is refused until one closes.
func TestStreamsPerCallerBounded(t *testing.T) {
	s := NewServer(Config{})
	var releases []func()
	for range MaxStreamsPerCaller {
		r, err := s.openStream("alice")
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	if _, err := s.openStream("alice"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream %d = %v, want ResourceExhausted", MaxStreamsPerCaller+1, err)
	}
	if r, err := s.openStream("bob"); err != nil {
		t.Fatalf("another caller refused: %v", err)
	} else {
		r()
	}
	releases[0]()
	if _, err := s.openStream("alice"); err != nil {
		t.Errorf("after closing one: %v", err)
	}
}
