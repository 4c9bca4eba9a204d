package replica

// Benchmarks report each figure as a ratio to a physical limit measured in
// the same run, because the machines they run on are shared and noisy:
//
//	x_fdatasync   serial applies per second / raw fdatasyncs per second
//	x_serial      concurrent applies per second / serial applies per second
//	x_bbolt_read  reads per second / raw bbolt reads per second
//	x_rawcopy     snapshot (or restore) bytes per second / raw write+fsync bytes per second

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/storage/boltlog"
	"github.com/labfed/labfed/storage/boltstate"
)

// benchRawFdatasyncNs measures a 4 KiB write plus fdatasync in dir: the
// price of one durable log append.
func benchRawFdatasyncNs(tb testing.TB, dir string, n int) float64 {
	tb.Helper()
	f, err := os.Create(filepath.Join(dir, "fdatasync.raw"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	start := time.Now()
	for i := range n {
		buf[0] = byte(i)
		if _, err := f.WriteAt(buf, 0); err != nil {
			tb.Fatal(err)
		}
		if err := datasync(f); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// benchRawBoltReadNs measures one read transaction with one Get in a bbolt
// file: the floor under any directory read.
func benchRawBoltReadNs(tb testing.TB, dir string, n int) float64 {
	tb.Helper()
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

type benchNode struct {
	r   *Replica
	dir string
}

// benchCluster starts n replicas on real bbolt files and Raft's TCP
// transport on loopback, and waits for a leader.
func benchCluster(tb testing.TB, n int) []*benchNode {
	tb.Helper()
	var servers []raft.Server
	var transports []*raft.NetworkTransport
	for i := range n {
		t, err := raft.NewTCPTransport("127.0.0.1:0", nil, 5, 5*time.Second, io.Discard)
		if err != nil {
			tb.Fatal(err)
		}
		transports = append(transports, t)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i)), Address: t.LocalAddr(), Suffrage: raft.Voter})
	}
	var nodes []*benchNode
	for i := range n {
		dir := tb.TempDir()
		logs, err := boltlog.Open(filepath.Join(dir, "raft.db"), boltlog.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		snaps, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
		if err != nil {
			tb.Fatal(err)
		}
		state, err := boltstate.Create(filepath.Join(dir, "state.db"), directory.Buckets())
		if err != nil {
			tb.Fatal(err)
		}
		r, err := New(Config{
			Node:     directory.Node{ID: string(servers[i].ID), Site: "rutgers", RaftAddr: string(servers[i].Address), APIAddr: "127.0.0.1:1"},
			LogStore: logs, StableStore: logs, SnapshotStore: snaps, State: state, Transport: transports[i],
			Raft: func(c *raft.Config) {
				c.HeartbeatTimeout = 200 * time.Millisecond
				c.ElectionTimeout = 200 * time.Millisecond
				c.LeaderLeaseTimeout = 100 * time.Millisecond
				c.SnapshotThreshold = 1 << 30
			},
		})
		if err != nil {
			tb.Fatal(err)
		}
		if err := r.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			tb.Fatal(err)
		}
		nodes = append(nodes, &benchNode{r: r, dir: dir})
	}
	tb.Cleanup(func() {
		for _, nd := range nodes {
			nd.r.Shutdown()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, nd := range nodes {
			if nd.r.IsLeader() {
				nodes[0], nodes[i] = nodes[i], nodes[0]
				benchSeed(tb, nodes[0].r)
				return nodes
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatal("no leader elected")
	return nil
}

func benchApply(tb testing.TB, r *Replica, c *directory.Command) {
	c.Time = time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	if _, err := r.Apply(context.Background(), c); err != nil {
		tb.Fatal(err)
	}
}

func benchSeed(tb testing.TB, r *Replica) {
	benchApply(tb, r, &directory.Command{AddSite: &directory.AddSite{Name: "rutgers", UIDRange: broker.Range{Lo: 100000, Hi: 999999}, GIDRange: broker.Range{Lo: 100000, Hi: 999999}}})
	benchApply(tb, r, &directory.Command{AddUser: &directory.AddUser{Name: "alice", Email: "alice@x.org", Home: "rutgers"}})
}

// benchEmailUpdate is a small write: change alice's email to a fresh value.
func benchEmailUpdate(i int64) *directory.Command {
	e := fmt.Sprintf("alice-%d@x.org", i)
	return &directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", Email: &e}}
}

// BenchmarkApplySerial: one client, one node; every apply is one durable
// log append. Compared with a raw fdatasync loop in the same directory.
func BenchmarkApplySerial(b *testing.B) {
	nodes := benchCluster(b, 1)
	raw := benchRawFdatasyncNs(b, nodes[0].dir, 500)
	var i int64
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		i++
		benchApply(b, nodes[0].r, benchEmailUpdate(i))
	}
	per := float64(time.Since(start).Nanoseconds()) / float64(i)
	b.StopTimer()
	// Measure the limit again after the run and average, so a change in
	// the machine's load during the run shows in both figures.
	raw = (raw + benchRawFdatasyncNs(b, nodes[0].dir, 500)) / 2
	b.ReportMetric(raw, "raw_fdatasync_ns")
	b.ReportMetric(raw/per, "x_fdatasync")
}

// BenchmarkApplyConcurrent: 64 clients against a 3-node cluster on loopback
// TCP, compared with one client against the same cluster in the same run.
func BenchmarkApplyConcurrent(b *testing.B) {
	nodes := benchCluster(b, 3)
	leader := nodes[0].r
	var seq atomic.Int64
	const serialOps = 100
	start := time.Now()
	for range serialOps {
		benchApply(b, leader, benchEmailUpdate(seq.Add(1)))
	}
	serialPer := float64(time.Since(start).Nanoseconds()) / serialOps

	const clients = 64
	b.ResetTimer()
	start = time.Now()
	var wg sync.WaitGroup
	var done atomic.Int64
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				benchApply(b, leader, benchEmailUpdate(seq.Add(1)))
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	concPer := float64(time.Since(start).Nanoseconds()) / float64(done.Load())
	b.ReportMetric(serialPer, "serial_ns/op")
	b.ReportMetric(serialPer/concPer, "x_serial")
}

// BenchmarkRead: linearizable and stale reads on the leader of a 3-node
// cluster, compared with a raw bbolt read in the same run.
func BenchmarkRead(b *testing.B) {
	nodes := benchCluster(b, 3)
	raw := benchRawBoltReadNs(b, nodes[0].dir, 20000)
	for _, stale := range []bool{false, true} {
		b.Run(fmt.Sprintf("stale=%v", stale), func(b *testing.B) {
			r := nodes[0].r
			ctx := context.Background()
			start := time.Now()
			var n int64
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					err := r.Read(ctx, stale, func(d *directory.Directory) error {
						_, err := d.User("alice")
						return err
					})
					if err != nil {
						b.Error(err)
						return
					}
					atomic.AddInt64(&n, 1)
				}
			})
			per := float64(time.Since(start).Nanoseconds()) / float64(n)
			b.ReportMetric(raw, "raw_bbolt_read_ns")
			b.ReportMetric(raw/per, "x_bbolt_read")
		})
	}
}

// benchRawCopyBps measures sequential write plus fsync of size bytes.
func benchRawCopyBps(tb testing.TB, dir string, size int64) float64 {
	tb.Helper()
	f, err := os.Create(filepath.Join(dir, "copy.raw"))
	if err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for w := int64(0); w < size; w += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	return float64(size) / time.Since(start).Seconds()
}

// benchFileSink is a raft.SnapshotSink writing to a file.
type benchFileSink struct{ *os.File }

func (benchFileSink) ID() string      { return "bench" }
func (s benchFileSink) Cancel() error { return s.File.Close() }
func (s benchFileSink) Close() error {
	if err := s.File.Sync(); err != nil {
		return err
	}
	return s.File.Close()
}

// BenchmarkSnapshotRestore: snapshot and restore a directory of 100k users
// with accounts at 3 sites (300k accounts).
func BenchmarkSnapshotRestore(b *testing.B) {
	users := 100_000
	if testing.Short() {
		users = 5_000
	}
	dir := b.TempDir()
	state, err := boltstate.Create(filepath.Join(dir, "state.db"), directory.Buckets())
	if err != nil {
		b.Fatal(err)
	}
	defer state.Close()
	f := &fsm{dir: directory.New(state), state: state}
	benchPopulate(b, f, users)
	sinkPath := filepath.Join(dir, "snap")

	b.Run("snapshot", func(b *testing.B) {
		var size int64
		for b.Loop() {
			out, err := os.Create(sinkPath)
			if err != nil {
				b.Fatal(err)
			}
			snap, err := f.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			if err := snap.Persist(benchFileSink{out}); err != nil {
				b.Fatal(err)
			}
			snap.Release()
			st, _ := os.Stat(sinkPath)
			size = st.Size()
		}
		raw := benchRawCopyBps(b, dir, size)
		per := b.Elapsed().Seconds() / float64(b.N)
		b.ReportMetric(float64(size)/(1<<20), "MiB")
		b.ReportMetric(per, "s/snapshot")
		b.ReportMetric(float64(size)/per/raw, "x_rawcopy")
	})
	b.Run("restore", func(b *testing.B) {
		st, err := os.Stat(sinkPath)
		if err != nil {
			b.Skip("no snapshot to restore")
		}
		for b.Loop() {
			in, err := os.Open(sinkPath)
			if err != nil {
				b.Fatal(err)
			}
			if err := f.Restore(in); err != nil {
				b.Fatal(err)
			}
		}
		raw := benchRawCopyBps(b, dir, st.Size())
		per := b.Elapsed().Seconds() / float64(b.N)
		b.ReportMetric(per, "s/restore")
		b.ReportMetric(float64(st.Size())/per/raw, "x_rawcopy")
		if a, err := f.dir.Account("u0", "site2"); err != nil || a.UID == 0 {
			b.Errorf("after restore Account(u0, site2) = %v, %v", a, err)
		}
	})
}

// benchPopulate loads users with accounts at three sites: projects of 1000
// members, each granted a resource at every site.
func benchPopulate(tb testing.TB, f *fsm, users int) {
	tb.Helper()
	idx := uint64(0)
	apply := func(c *directory.Command) {
		idx++
		c.Time = time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
		b, _ := c.Encode()
		if res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b}).(directory.Result); res.Err != nil {
			tb.Fatal(res.Err)
		}
	}
	for s := range 3 {
		lo := uint32(1_000_000 * (s + 1))
		apply(&directory.Command{AddSite: &directory.AddSite{Name: fmt.Sprintf("site%d", s), UIDRange: broker.Range{Lo: lo, Hi: lo + 900_000}, GIDRange: broker.Range{Lo: lo, Hi: lo + 900_000}}})
	}
	const perProject = 1000
	for p := 0; p*perProject < users; p++ {
		proj := fmt.Sprintf("p%d", p)
		apply(&directory.Command{AddProject: &directory.AddProject{Name: proj}})
		for u := p * perProject; u < min(users, (p+1)*perProject); u++ {
			name := fmt.Sprintf("u%d", u)
			apply(&directory.Command{AddUser: &directory.AddUser{Name: name, Email: name + "@x.org", Home: "site0"}})
			apply(&directory.Command{AddMember: &directory.ProjectMember{Project: proj, User: name}})
		}
		for s := range 3 {
			apply(&directory.Command{AddGrant: &directory.AddGrant{Subject: "project:" + proj, Resource: fmt.Sprintf("site%d/gpu", s), Actions: []string{"compute.create"}}})
		}
	}
}
