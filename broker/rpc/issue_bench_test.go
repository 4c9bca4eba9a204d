package rpc

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// BenchmarkIssue measures TokenService.Issue behind the interceptor's
// authentication: the directory reads (signing key, user, locks, the
// grants of the user and their projects, the account), the authorization
// decision, a fresh jti and the go-jose signature, and then the commit of
// its audit entry. Two figures, each against its physical limit measured
// in the same run:
//
//   - decide-and-sign (the audit entry accepted without a write): against
//     a raw ed25519.Sign of the same payload; the aim is at least 0.4x.
//   - with its audit commit: against a raw Sign plus one raw bbolt write
//     transaction of an entry's size (NoSync, as the directory's state).
//
// The Raft round trip and gRPC are not included: they depend on the
// network and the disk, not on the code.
func BenchmarkIssue(b *testing.B) {
	now := time.Now().UTC()
	extra := []*directory.Command{
		{AddProject: &directory.AddProject{Name: "cryo-lab"}},
		{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: "alice"}},
		{AddGrant: &directory.AddGrant{Subject: "project:cryo-lab", Resource: "rutgers/krios-g4", Actions: []string{broker.ActionInstrumentView}, From: now.Add(-time.Hour)}},
	}
	for i := range 10 { // other people's grants and locks, which Issue must skip
		u := fmt.Sprintf("user%d", i)
		extra = append(extra,
			&directory.Command{AddUser: &directory.AddUser{Name: u, Email: u + "@rutgers.edu", Home: "rutgers"}},
			&directory.Command{AddGrant: &directory.AddGrant{Subject: "user:" + u, Resource: "rutgers/krios-g4", Actions: []string{broker.ActionInstrumentView}, From: now.Add(-time.Hour)}},
			&directory.Command{AddLock: &directory.AddLock{Kind: directory.LockJTI, Value: fmt.Sprintf("jti-%d", i)}})
	}
	d, signer, alice, priv := issueFixture(b, extra...)
	ctx := withPrincipal(context.Background(), &Principal{Method: "session", User: alice})
	req := &pb.IssueTokenRequest{Scope: "instrument.operate:rutgers/krios-g4"}

	resp, err := NewServer(Config{Replica: localReplica{d}, Signer: signer}).Issue(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	msg := []byte(resp.GetToken()[:len(resp.GetToken())-87])
	rawSign := func() float64 {
		const n = 2000
		start := time.Now()
		for range n {
			ed25519.Sign(priv, msg)
		}
		return float64(time.Since(start).Nanoseconds()) / n
	}
	for _, bc := range []struct {
		name    string
		replica Replica
		limit   func() float64
		metric  string
	}{
		{"decide-and-sign", auditAccepted{localReplica{d}}, rawSign, "x_raw_sign"},
		{"with-audit-commit", localReplica{d}, func() float64 { return rawSign() + rawBoltCommitNs(b, b.TempDir(), 500) }, "x_raw_sign_and_commit"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := NewServer(Config{Replica: bc.replica, Signer: signer})
			limit := bc.limit()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := s.Issue(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			per := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			b.StopTimer()
			limit = (limit + bc.limit()) / 2 // before and after, against drift on a shared machine
			b.ReportMetric(limit, "limit_ns")
			b.ReportMetric(limit/per, bc.metric)
		})
	}
}

// auditAccepted takes audit entries without writing them, to measure what
// Issue costs before its audit commit.
type auditAccepted struct{ localReplica }

func (r auditAccepted) Apply(ctx context.Context, c *directory.Command) (any, error) {
	if c.AppendAudit != nil {
		return len(c.AppendAudit.Entries), nil
	}
	return r.localReplica.Apply(ctx, c)
}

// rawBoltCommitNs is one bbolt write transaction putting an audit entry's
// worth of bytes, with the directory state's options (no fsync).
func rawBoltCommitNs(tb testing.TB, dir string, n int) float64 {
	db, err := bolt.Open(filepath.Join(dir, "commit.raw"), 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		tb.Fatal(err)
	}
	v := make([]byte, 400)
	start := time.Now()
	for i := range n {
		_ = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "%020d", i), v) })
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}
