package rpc

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/metadata"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/storage/boltstate"
)

// localReplica serves a directory on a bbolt file without Raft: enough to
// measure what authentication costs on top of the reads it makes.
type localReplica struct{ d *directory.Directory }

func (r localReplica) Apply(_ context.Context, c *directory.Command) (any, error) {
	res := r.d.Apply(c)
	return res.Value, res.Err
}
func (r localReplica) Read(_ context.Context, _ bool, fn func(*directory.Directory) error) error {
	return fn(r.d)
}
func (localReplica) Join(context.Context, *directory.RegisterNode, bool, string) error { return nil }
func (localReplica) RemovePeer(context.Context, string, string) error                  { return nil }
func (localReplica) Peers() ([]broker.Peer, error)                                     { return nil, nil }
func (localReplica) Leader() (string, string)                                          { return "n1", "" }
func (localReplica) IsLeader() bool                                                    { return true }
func (localReplica) Status() broker.NodeStatus                                         { return broker.NodeStatus{} }
func (localReplica) Snapshot() error                                                   { return nil }

// BenchmarkAuthenticateSession measures authenticating a request by its
// session credential (hash, session lookup, user lookup, expiry and status
// checks) against the physical limit: one raw bbolt read, measured in the
// same run. A session costs two directory reads, so 0.5x is the ceiling.
func BenchmarkAuthenticateSession(b *testing.B) {
	dir := b.TempDir()
	st, err := boltstate.Create(filepath.Join(dir, "state.db"), directory.Buckets())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d := directory.New(st)
	now := time.Now().UTC()
	tok, _ := NewSessionToken()
	for _, c := range []*directory.Command{
		{AddSite: &directory.AddSite{Name: "rutgers", UIDRange: broker.Range{Lo: 200000, Hi: 209999}, GIDRange: broker.Range{Lo: 200000, Hi: 209999}}},
		{AddUser: &directory.AddUser{Name: "alice", Email: "alice@rutgers.edu", Home: "rutgers"}},
		{CreateSession: &directory.CreateSession{Session: directory.Session{ID: SessionDigest(tok), User: "alice", Expires: now.Add(time.Hour)}}},
	} {
		c.Time = now
		if res := d.Apply(c); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	raw := rawBoltReadNs(b, dir, 20000)
	s := NewServer(Config{Replica: localReplica{d}, Peer: nil})
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		p, err := s.authenticate(ctx)
		if err != nil || p.User.Name != "alice" {
			b.Fatal(p, err)
		}
	}
	per := float64(time.Since(start).Nanoseconds()) / float64(b.N)
	b.ReportMetric(raw, "raw_bbolt_read_ns")
	b.ReportMetric(raw/per, "x_bbolt_read")
}

func rawBoltReadNs(tb testing.TB, dir string, n int) float64 {
	db, err := bolt.Open(filepath.Join(dir, "read.raw"), 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		return b.Put([]byte("alice"), make([]byte, 256))
	}); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	for range n {
		_ = db.View(func(tx *bolt.Tx) error {
			if tx.Bucket([]byte("b")).Get([]byte("alice")) == nil {
				tb.Error("missing key")
			}
			return nil
		})
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}
