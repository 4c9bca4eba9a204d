package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/storage/boltlog"
	"github.com/labfed/labfed/storage/boltstate"
)

// The cluster harness follows hashicorp/raft's MakeCluster: n replicas in
// one process, each with real bbolt files under t.TempDir(), talking over
// raft.InmemTransport. Tests cut the network with Partition and Heal, and
// crash nodes with Kill and Restart; a node restarts from its log, stable
// store and snapshots with a fresh state file, as labfed does.

// clusterOptions tunes a cluster; see the with* functions.
type clusterOptions struct {
	// snapshotThreshold, trailingLogs and snapshotInterval override Raft's
	// defaults when non-zero.
	snapshotThreshold uint64
	trailingLogs      uint64
	snapshotInterval  time.Duration
}

type clusterOption func(*clusterOptions)

// withSnapshots makes Raft snapshot after threshold new entries and keep
// only trailing entries behind a snapshot, so a follower that falls behind
// has to catch up through InstallSnapshot.
func withSnapshots(threshold, trailing uint64) clusterOption {
	return func(o *clusterOptions) {
		o.snapshotThreshold = threshold
		o.trailingLogs = trailing
		o.snapshotInterval = 100 * time.Millisecond
	}
}

// Timeouts of the test clusters. They are short so that elections take a
// fraction of a second, but not so short that a busy race-enabled build on
// two cores keeps deposing healthy leaders.
const (
	heartbeatTimeout   = 150 * time.Millisecond
	electionTimeout    = 150 * time.Millisecond
	leaderLeaseTimeout = 100 * time.Millisecond
	commitTimeout      = 5 * time.Millisecond

	// leaderWait bounds how long Leader waits for an election.
	leaderWait = 10 * time.Second
	// convergeWait bounds WaitConverged. It is long because a leader
	// retries a peer it could not reach with exponential backoff (up to
	// about ten seconds in hashicorp/raft), so a node back from a long
	// partition may wait that long for its first append.
	convergeWait = 30 * time.Second
)

// testSite is the site every test node belongs to.
const testSite = "lab"

// cluster is a set of replicas of one federation.
type cluster struct {
	tb   testing.TB
	opts clusterOptions
	log  *slog.Logger

	mu    sync.Mutex
	nodes []*clusterNode
	// far is the side of the current partition Partition cut off; nil
	// when the network is whole.
	far map[int]bool
}

// clusterNode is one slot of the cluster: its files live across restarts,
// its replica and transport do not.
type clusterNode struct {
	id   string
	addr raft.ServerAddress
	dir  string

	r     *Replica // nil while killed
	trans *raft.InmemTransport
	logs  *boltlog.Store
}

// newCluster starts n replicas that form one federation from the start.
// Every node is bootstrapped with the full configuration, as raft's
// MakeCluster does. The cluster is shut down when the test ends.
func newCluster(tb testing.TB, n int, opts ...clusterOption) *cluster {
	tb.Helper()
	c := &cluster{tb: tb, log: testLogger()}
	for _, o := range opts {
		o(&c.opts)
	}
	root := tb.TempDir()
	var conf raft.Configuration
	for i := range n {
		nd := &clusterNode{
			id:   fmt.Sprintf("n%d", i),
			addr: raft.ServerAddress(fmt.Sprintf("raft-n%d", i)),
			dir:  filepath.Join(root, fmt.Sprintf("n%d", i)),
		}
		if err := os.MkdirAll(nd.dir, 0o700); err != nil {
			tb.Fatal(err)
		}
		c.nodes = append(c.nodes, nd)
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(nd.id), Address: nd.addr, Suffrage: raft.Voter})
	}
	tb.Cleanup(c.shutdown)

	c.mu.Lock()
	defer c.mu.Unlock()
	for i, nd := range c.nodes {
		cfg, err := c.openLocked(i)
		if err != nil {
			tb.Fatalf("open node %s: %v", nd.id, err)
		}
		rc := raft.DefaultConfig()
		rc.LocalID = raft.ServerID(nd.id)
		c.tuneRaft(rc)
		if err := raft.BootstrapCluster(rc, cfg.LogStore, cfg.StableStore, cfg.SnapshotStore, cfg.Transport, conf); err != nil {
			tb.Fatalf("bootstrap node %s: %v", nd.id, err)
		}
		if err := c.startLocked(i, cfg); err != nil {
			tb.Fatalf("start node %s: %v", nd.id, err)
		}
	}
	c.rewireLocked()
	return c
}

// testLogger returns a logger for the replicas: silent unless
// LABFED_TEST_LOG is set, since Raft's warnings about unreachable peers are
// the point of these tests.
func testLogger() *slog.Logger {
	if os.Getenv("LABFED_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (c *cluster) tuneRaft(rc *raft.Config) {
	rc.HeartbeatTimeout = heartbeatTimeout
	rc.ElectionTimeout = electionTimeout
	rc.LeaderLeaseTimeout = leaderLeaseTimeout
	rc.CommitTimeout = commitTimeout
	if c.opts.snapshotThreshold != 0 {
		rc.SnapshotThreshold = c.opts.snapshotThreshold
	}
	if c.opts.trailingLogs != 0 {
		rc.TrailingLogs = c.opts.trailingLogs
	}
	if c.opts.snapshotInterval != 0 {
		rc.SnapshotInterval = c.opts.snapshotInterval
	}
}

// openLocked opens node i's files and a new transport. The state file is
// always created afresh: Raft rebuilds it from the snapshot and the log.
func (c *cluster) openLocked(i int) (Config, error) {
	nd := c.nodes[i]
	logs, err := boltlog.Open(filepath.Join(nd.dir, "raft.db"), boltlog.Options{Timeout: 5 * time.Second, NoSync: true})
	if err != nil {
		return Config{}, err
	}
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(nd.dir, "snapshots"), 2, io.Discard)
	if err != nil {
		logs.Close()
		return Config{}, err
	}
	state, err := boltstate.Create(filepath.Join(nd.dir, "state.db"), directory.Buckets())
	if err != nil {
		logs.Close()
		return Config{}, err
	}
	_, trans := raft.NewInmemTransport(nd.addr)
	nd.logs, nd.trans = logs, trans
	return Config{
		Node:          directory.Node{ID: nd.id, Site: testSite, RaftAddr: string(nd.addr), APIAddr: "api-" + nd.id},
		LogStore:      logs,
		StableStore:   logs,
		SnapshotStore: snaps,
		State:         state,
		Transport:     trans,
		Raft:          c.tuneRaft,
		Logger:        c.log,
	}, nil
}

func (c *cluster) startLocked(i int, cfg Config) error {
	r, err := New(cfg)
	if err != nil {
		for _, cl := range []io.Closer{cfg.Transport.(io.Closer), cfg.LogStore.(io.Closer), cfg.State.(io.Closer)} {
			cl.Close()
		}
		return err
	}
	c.nodes[i].r = r
	return nil
}

// rewireLocked connects every pair of live nodes on the same side of the
// partition and disconnects every other pair, in both directions.
func (c *cluster) rewireLocked() {
	for i, a := range c.nodes {
		if a.r == nil {
			continue
		}
		for j, b := range c.nodes {
			if i == j {
				continue
			}
			if b.r != nil && c.far[i] == c.far[j] {
				a.trans.Connect(b.addr, b.trans)
			} else {
				a.trans.Disconnect(b.addr)
			}
		}
	}
}

// shutdown stops every live replica; it runs at cleanup.
func (c *cluster) shutdown() {
	c.mu.Lock()
	var rs []*Replica
	for _, nd := range c.nodes {
		if nd.r != nil {
			rs = append(rs, nd.r)
			nd.r = nil
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			if err := r.Shutdown(); err != nil {
				c.tb.Errorf("Shutdown(%s) = %v, want nil", r.ID(), err)
			}
		})
	}
	wg.Wait()
}

// N returns the number of nodes, live or not.
func (c *cluster) N() int { return len(c.nodes) }

// Replica returns node i's replica, or nil while it is killed.
func (c *cluster) Replica(i int) *Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].r
}

// Live returns the indexes of the nodes that are running.
func (c *cluster) Live() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, nd := range c.nodes {
		if nd.r != nil {
			out = append(out, i)
		}
	}
	return out
}

// Index returns the slot of the node with Raft id id.
func (c *cluster) Index(id string) (int, bool) {
	i, err := strconv.Atoi(strings.TrimPrefix(id, "n"))
	if err != nil || !strings.HasPrefix(id, "n") || i < 0 || i >= len(c.nodes) {
		return 0, false
	}
	return i, true
}

// leaders returns the live nodes that believe they lead.
func (c *cluster) leaders() []int {
	var out []int
	for _, i := range c.Live() {
		if r := c.Replica(i); r != nil && r.IsLeader() {
			out = append(out, i)
		}
	}
	return out
}

// LeaderIndex waits until exactly one live node believes it leads and
// returns its slot.
func (c *cluster) LeaderIndex(tb testing.TB) int {
	tb.Helper()
	deadline := time.Now().Add(leaderWait)
	var got []int
	for time.Now().Before(deadline) {
		if got = c.leaders(); len(got) == 1 {
			return got[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("no single leader after %v: leaders %v, nodes %s", leaderWait, got, c.describe())
	return -1
}

// Leader waits until exactly one live node believes it leads and returns it.
func (c *cluster) Leader(tb testing.TB) *Replica {
	tb.Helper()
	for {
		i := c.LeaderIndex(tb)
		if r := c.Replica(i); r != nil {
			return r
		}
	}
}

// Followers returns the live nodes other than i.
func (c *cluster) Followers(i int) []int {
	return slices.DeleteFunc(c.Live(), func(j int) bool { return j == i })
}

// Partition cuts the given nodes off from the rest. Nodes on the same side
// still reach each other. A second Partition replaces the first.
func (c *cluster) Partition(ids ...int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.far = map[int]bool{}
	for _, i := range ids {
		c.far[i] = true
	}
	c.rewireLocked()
}

// Heal undoes Partition.
func (c *cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.far = nil
	c.rewireLocked()
}

// Kill shuts node i down, keeping its files. Killing a dead node does
// nothing.
func (c *cluster) Kill(tb testing.TB, i int) {
	tb.Helper()
	c.mu.Lock()
	r := c.nodes[i].r
	c.nodes[i].r = nil
	c.rewireLocked()
	c.mu.Unlock()
	if r == nil {
		return
	}
	if err := r.Shutdown(); err != nil {
		tb.Errorf("Shutdown(%s) = %v, want nil", r.ID(), err)
	}
}

// Restart starts node i again from its files with a fresh state file and a
// new transport, wired the way the current partition says. Restarting a
// live node does nothing.
func (c *cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	if err := c.restart(i); err != nil {
		tb.Fatal(err)
	}
}

// restart is Restart for goroutines other than the test's, which must not
// call Fatal.
func (c *cluster) restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i].r != nil {
		return nil
	}
	cfg, err := c.openLocked(i)
	if err != nil {
		return fmt.Errorf("reopen node %s: %w", c.nodes[i].id, err)
	}
	if err := c.startLocked(i, cfg); err != nil {
		return fmt.Errorf("restart node %s: %w", c.nodes[i].id, err)
	}
	c.rewireLocked()
	return nil
}

// LogStore returns node i's current log store.
func (c *cluster) LogStore(i int) *boltlog.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].logs
}

// nodeState is what WaitConverged compares.
type nodeState struct {
	hash    string
	applied uint64
}

func (c *cluster) states() (map[int]nodeState, error) {
	out := map[int]nodeState{}
	for _, i := range c.Live() {
		r := c.Replica(i)
		if r == nil {
			continue
		}
		h, err := r.Directory().Hash()
		if err != nil {
			return nil, fmt.Errorf("Hash() on %s: %w", r.ID(), err)
		}
		out[i] = nodeState{hash: h, applied: r.Status().AppliedIndex}
	}
	return out, nil
}

// WaitConverged waits until every live replica has applied the same index
// and holds the same directory, and returns that directory's hash.
func (c *cluster) WaitConverged(tb testing.TB) string {
	tb.Helper()
	deadline := time.Now().Add(convergeWait)
	var last map[int]nodeState
	for {
		st, err := c.states()
		if err != nil {
			tb.Fatal(err)
		}
		last = st
		var first *nodeState
		same := len(st) > 0
		for _, s := range st {
			if first == nil {
				first = &s
			} else if s != *first {
				same = false
			}
		}
		// The leader's commit index must be applied too, or replicas that
		// have all not yet heard of the latest entries would count as
		// converged.
		if same && !c.leaderApplied(first.applied) {
			same = false
		}
		if same {
			return first.hash
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("replicas did not converge within %v: %v; nodes %s", convergeWait, last, c.describe())
	return ""
}

// leaderApplied reports whether there is one leader and every command it
// has committed is at or below applied.
func (c *cluster) leaderApplied(applied uint64) bool {
	l := c.leaders()
	if len(l) != 1 {
		return false
	}
	r := c.Replica(l[0])
	if r == nil {
		return false
	}
	commit := r.Status().CommitIndex
	return commit <= applied || r.onlyNonCommands(applied+1, commit)
}

func (c *cluster) describe() string {
	var b strings.Builder
	for i, nd := range c.nodes {
		r := c.Replica(i)
		if r == nil {
			fmt.Fprintf(&b, "[%s dead] ", nd.id)
			continue
		}
		st := r.Status()
		fmt.Fprintf(&b, "[%s %s leader=%s applied=%d commit=%d snap=%d] ", st.ID, st.State, st.LeaderID, st.AppliedIndex, st.CommitIndex, st.LastSnapshotIndex)
	}
	return b.String()
}

// errNodeDown is what a client gets from a node that is killed; like a
// refused connection, nothing was sent.
var errNodeDown = broker.Errorf(broker.ErrUnavailable, "node is down")

// call runs fn against node i and, while the answer is "not the leader" or
// the node is down, against the leader that answer names or another live
// node, the way the RPC layer forwards a request. It gives up when ctx ends
// and returns the last error.
func (c *cluster) call(ctx context.Context, i int, fn func(*Replica) error) error {
	target := i
	for {
		var err error
		if r := c.Replica(target); r == nil {
			err = errNodeDown
		} else {
			err = fn(r)
		}
		var nl *broker.NotLeaderError
		switch {
		case errors.As(err, &nl):
		case errors.Is(err, errNodeDown):
		default:
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if j, ok := c.Index(leaderOf(nl)); ok && j != target && c.Replica(j) != nil {
			target = j
		} else if live := c.Live(); len(live) > 0 {
			target = live[rand.IntN(len(live))]
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Apply sends a write to node i as a client would; see call.
func (c *cluster) Apply(ctx context.Context, i int, cmd *directory.Command) (any, error) {
	var v any
	err := c.call(ctx, i, func(r *Replica) (err error) {
		v, err = r.Apply(ctx, cmd)
		return err
	})
	return v, err
}

// Read runs a linearizable read through node i as a client would; see call.
func (c *cluster) Read(ctx context.Context, i int, fn func(*directory.Directory) error) error {
	return c.call(ctx, i, func(r *Replica) error { return r.Read(ctx, false, fn) })
}

// MustApply applies cmd through node i and fails the test on error.
func (c *cluster) MustApply(tb testing.TB, i int, cmd *directory.Command) any {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cmd.Time.IsZero() {
		cmd.Time = time.Now().UTC()
	}
	v, err := c.Apply(ctx, i, cmd)
	if err != nil {
		b, _ := cmd.Encode()
		tb.Fatalf("Apply(%s) through n%d = %v; nodes %s", b, i, err, c.describe())
	}
	return v
}

// leaderOf returns the leader id a NotLeaderError names; nl may be nil.
func leaderOf(nl *broker.NotLeaderError) string {
	if nl == nil {
		return ""
	}
	return nl.LeaderID
}

// Nemesis injects faults until ctx ends, one at a time and each repaired
// before the next, so a majority is back between faults: it kills the leader
// and restarts it, cuts the leader off, or cuts off a random minority. When
// ctx ends it heals the network and restarts every killed node. It returns
// what it did, for the test log. It may run in its own goroutine.
func (c *cluster) Nemesis(ctx context.Context, tb testing.TB, rnd *rand.Rand) []string {
	var events []string
	sleep := func(lo, hi time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(lo + time.Duration(rnd.Int64N(int64(hi-lo)))):
			return true
		}
	}
	defer func() {
		c.Heal()
		for i := range c.N() {
			if err := c.restart(i); err != nil {
				tb.Errorf("nemesis: %v", err)
			}
		}
	}()
	for sleep(100*time.Millisecond, 400*time.Millisecond) {
		switch rnd.IntN(3) {
		case 0:
			l := c.leaders()
			if len(l) != 1 {
				continue
			}
			events = append(events, fmt.Sprintf("kill n%d", l[0]))
			c.Kill(tb, l[0])
			sleep(200*time.Millisecond, time.Second)
			if err := c.restart(l[0]); err != nil {
				tb.Errorf("nemesis: %v", err)
				return events
			}
		case 1:
			l := c.leaders()
			if len(l) != 1 {
				continue
			}
			events = append(events, fmt.Sprintf("isolate leader n%d", l[0]))
			c.Partition(l[0])
			sleep(200*time.Millisecond, time.Second)
			c.Heal()
		case 2:
			k := 1 + rnd.IntN((c.N()-1)/2)
			ids := rnd.Perm(c.N())[:k]
			events = append(events, fmt.Sprintf("partition %v", ids))
			c.Partition(ids...)
			sleep(200*time.Millisecond, time.Second)
			c.Heal()
		}
	}
	return events
}

// UnderFaults runs fn while Nemesis injects faults, then repairs the
// cluster, waits for it to converge and returns the directory's hash.
func (c *cluster) UnderFaults(tb testing.TB, rnd *rand.Rand, fn func()) string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []string)
	go func() { done <- c.Nemesis(ctx, tb, rnd) }()
	fn()
	cancel()
	tb.Logf("nemesis: %v", <-done)
	return c.WaitConverged(tb)
}

// Commands the tests use.

func addSite(name string, uidLo, uidHi, gidLo, gidHi uint32) *directory.Command {
	return &directory.Command{Actor: "test", AddSite: &directory.AddSite{
		Name: name, UIDRange: broker.Range{Lo: uidLo, Hi: uidHi}, GIDRange: broker.Range{Lo: gidLo, Hi: gidHi},
	}}
}

func addUser(name, email string) *directory.Command {
	return &directory.Command{Actor: "test", AddUser: &directory.AddUser{Name: name, Email: email, Home: testSite}}
}

func setEmail(user, email string) *directory.Command {
	return &directory.Command{Actor: "test", UpdateUser: &directory.UpdateUser{Name: user, Email: &email}}
}

// emailOf reads user's email on replica r without going through the leader.
func emailOf(r *Replica, user string) (string, error) {
	var email string
	err := r.Read(context.Background(), true, func(d *directory.Directory) error {
		u, err := d.User(user)
		if err != nil {
			return err
		}
		email = u.Email
		return nil
	})
	return email, err
}

// setup adds the test site and users u0…u(n-1) with emails uK-0@x.org.
func setup(tb testing.TB, c *cluster, users int) {
	tb.Helper()
	c.MustApply(tb, 0, addSite(testSite, 100000, 100999, 100000, 101999))
	for k := range users {
		u := fmt.Sprintf("u%d", k)
		c.MustApply(tb, k%c.N(), addUser(u, u+"-0@x.org"))
	}
}

func TestReplication(t *testing.T) {
	tests := []struct {
		name  string
		nodes int
	}{
		{"3 nodes", 3},
		{"5 nodes", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, tt.nodes)
			c.Leader(t)
			// Every node takes writes: followers forward them.
			setup(t, c, tt.nodes)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range c.N() {
				for k := range tt.nodes {
					u := fmt.Sprintf("u%d", k)
					var got string
					err := c.Read(ctx, i, func(d *directory.Directory) error {
						usr, err := d.User(u)
						if err == nil {
							got = usr.Email
						}
						return err
					})
					if want := u + "-0@x.org"; err != nil || got != want {
						t.Errorf("linearizable read of %s through n%d = %q, %v; want %q", u, i, got, err, want)
					}
				}
			}
			hash := c.WaitConverged(t)
			for i := range c.N() {
				r := c.Replica(i)
				if got, err := r.Directory().Hash(); err != nil || got != hash {
					t.Errorf("Hash() on %s = %s, %v; want %s", r.ID(), got, err, hash)
				}
				for k := range tt.nodes {
					u := fmt.Sprintf("u%d", k)
					if got, err := emailOf(r, u); err != nil || got != u+"-0@x.org" {
						t.Errorf("stale read of %s on %s = %q, %v; want %q", u, r.ID(), got, err, u+"-0@x.org")
					}
				}
			}
		})
	}
}

func TestLeaderKill(t *testing.T) {
	c := newCluster(t, 3)
	old := c.LeaderIndex(t)
	setup(t, c, 1)
	c.MustApply(t, old, setEmail("u0", "u0-1@x.org"))

	c.Kill(t, old)
	now := c.LeaderIndex(t)
	if now == old {
		t.Fatalf("leader after killing n%d is n%d, want another node", old, now)
	}
	// A client still pointed at the dead node finds the new leader.
	c.MustApply(t, old, setEmail("u0", "u0-2@x.org"))
	c.MustApply(t, now, addUser("late", "late@x.org"))

	c.Restart(t, old)
	c.WaitConverged(t)
	r := c.Replica(old)
	for _, tt := range []struct{ user, want string }{
		{"u0", "u0-2@x.org"},
		{"late", "late@x.org"},
	} {
		if got, err := emailOf(r, tt.user); err != nil || got != tt.want {
			t.Errorf("email of %s on restarted %s = %q, %v; want %q", tt.user, r.ID(), got, err, tt.want)
		}
	}
}

func TestPartitionedFollowerCatchesUpBySnapshot(t *testing.T) {
	c := newCluster(t, 3, withSnapshots(16, 4))
	l := c.LeaderIndex(t)
	setup(t, c, 1)
	c.WaitConverged(t)

	f := c.Followers(l)[0]
	c.Partition(f)
	fLast, err := c.LogStore(f).LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	const writes = 100
	for k := 1; k <= writes; k++ {
		c.MustApply(t, l, setEmail("u0", fmt.Sprintf("u0-%d@x.org", k)))
	}
	majority := c.Followers(f)
	for _, i := range majority {
		if err := c.Replica(i).Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			t.Fatalf("Snapshot() on n%d = %v", i, err)
		}
		// The entries the partitioned node lacks must be gone from the
		// log, so the only way to catch up is a snapshot.
		first, err := c.LogStore(i).FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		if first <= fLast+1 {
			t.Fatalf("FirstIndex() on n%d = %d after snapshot, want > %d (n%d's next entry)", i, first, fLast+1, f)
		}
		if st := c.Replica(i).Status(); st.LastSnapshotIndex == 0 {
			t.Errorf("Status().LastSnapshotIndex on n%d = 0, want a snapshot", i)
		}
	}

	c.Heal()
	c.WaitConverged(t)
	r := c.Replica(f)
	if st := r.Status(); st.LastSnapshotIndex <= fLast {
		t.Errorf("Status().LastSnapshotIndex on n%d = %d, want > %d: it should have installed the leader's snapshot", f, st.LastSnapshotIndex, fLast)
	}
	want := fmt.Sprintf("u0-%d@x.org", writes)
	if got, err := emailOf(r, "u0"); err != nil || got != want {
		t.Errorf("email of u0 on n%d = %q, %v; want %q", f, got, err, want)
	}

	// The caught-up node keeps up with entries after the snapshot.
	c.MustApply(t, f, setEmail("u0", "u0-final@x.org"))
	c.WaitConverged(t)
	if got, err := emailOf(r, "u0"); err != nil || got != "u0-final@x.org" {
		t.Errorf("email of u0 on n%d = %q, %v; want %q", f, got, err, "u0-final@x.org")
	}
}

func TestFollowerReads(t *testing.T) {
	c := newCluster(t, 3)
	l := c.LeaderIndex(t)
	setup(t, c, 1)
	c.WaitConverged(t)
	leader := c.Replica(l)
	f := c.Replica(c.Followers(l)[0])

	tests := []struct {
		name          string
		r             *Replica
		stale         bool
		wantNotLeader bool
	}{
		{"linearizable on follower", f, false, true},
		{"stale on follower", f, true, false},
		{"linearizable on leader", leader, false, false},
		{"stale on leader", leader, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			err := tt.r.Read(context.Background(), tt.stale, func(d *directory.Directory) error {
				u, err := d.User("u0")
				if err == nil {
					got = u.Email
				}
				return err
			})
			var nl *broker.NotLeaderError
			if tt.wantNotLeader {
				if !errors.As(err, &nl) {
					t.Fatalf("Read(stale=%v) on %s = %v, want *broker.NotLeaderError", tt.stale, tt.r.ID(), err)
				}
				if nl.LeaderID != leader.ID() {
					t.Errorf("NotLeaderError.LeaderID = %q, want %q", nl.LeaderID, leader.ID())
				}
				if got != "" {
					t.Errorf("Read(stale=%v) on %s ran the query, want it refused", tt.stale, tt.r.ID())
				}
				return
			}
			if err != nil || got != "u0-0@x.org" {
				t.Errorf("Read(stale=%v) on %s = %q, %v; want %q", tt.stale, tt.r.ID(), got, err, "u0-0@x.org")
			}
		})
	}

	t.Run("follower names the leader's API address", func(t *testing.T) {
		want := "api-" + leader.ID()
		var nl *broker.NotLeaderError
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := f.Apply(context.Background(), setEmail("u0", "u0-1@x.org"))
			if !errors.As(err, &nl) {
				t.Fatalf("Apply on follower %s = %v, want *broker.NotLeaderError", f.ID(), err)
			}
			if nl.LeaderAPI == want || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if nl.LeaderID != leader.ID() || nl.LeaderAPI != want {
			t.Errorf("Apply on follower = %v (leader %q at %q), want leader %q at %q", nl, nl.LeaderID, nl.LeaderAPI, leader.ID(), want)
		}
	})
}

// Killing a leader with requests queued must answer every one of them
// promptly, and a write may claim it did not take effect only if it never
// entered the log. Raft leaves a queued future unanswered when it shuts
// down (hashicorp/raft#498); Apply and Read used to wait on it forever.
func TestLeaderShutdownAnswersPending(t *testing.T) {
	tests := []struct {
		name string
		// do sends request k of worker w in round round to r.
		do func(ctx context.Context, r *Replica, round, w, k int) error
		// ok reports whether err is a permitted answer from a node that
		// shut down.
		ok func(err error) bool
	}{
		{
			name: "Apply",
			do: func(ctx context.Context, r *Replica, round, w, k int) error {
				_, err := r.Apply(ctx, setEmail("u0", fmt.Sprintf("u0-%d-%d-%d@x.org", round, w, k)))
				return err
			},
			ok: func(err error) bool {
				var nl *broker.NotLeaderError
				return errors.As(err, &nl) || errors.Is(err, broker.ErrAmbiguous)
			},
		},
		{
			name: "linearizable Read",
			do: func(ctx context.Context, r *Replica, _, _, _ int) error {
				return r.Read(ctx, false, func(d *directory.Directory) error {
					_, err := d.User("u0")
					return err
				})
			},
			// A read changes nothing, so any error will do; the stores
			// may already be closed under it.
			ok: func(error) bool { return true },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 3)
			setup(t, c, 1)
			const rounds, workers = 6, 16
			for round := range rounds {
				l := c.LeaderIndex(t)
				r := c.Replica(l)
				var wg sync.WaitGroup
				errs := make(chan error, workers)
				for w := range workers {
					wg.Go(func() {
						for k := 0; ; k++ {
							ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
							err := tt.do(ctx, r, round, w, k)
							cancel()
							if err != nil {
								errs <- err
								return
							}
						}
					})
				}
				time.Sleep(50 * time.Millisecond)
				c.Kill(t, l)
				done := make(chan struct{})
				go func() { wg.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: %s on n%d still blocked 10s after it shut down", round, tt.name, l)
				}
				close(errs)
				for err := range errs {
					if !tt.ok(err) {
						t.Errorf("round %d: %s on a leader that shut down = %v", round, tt.name, err)
					}
				}
				c.Restart(t, l)
			}
			c.WaitConverged(t)
		})
	}
}

// A snapshot can end on a barrier rather than a command. A node that
// installs it has the barrier in neither its log nor its applied index, and
// once it leads, a linearizable read must still not wait for an entry it
// will never apply. Reads used to time out until the next write.
func TestReadOnLeaderThatInstalledSnapshotEndingInBarrier(t *testing.T) {
	c := newCluster(t, 3, withSnapshots(1<<20, 2))
	f := c.LeaderIndex(t)
	setup(t, c, 1)
	// f leads once, so it is registered in the directory and will not
	// write anything when it leads again.
	if err := c.Replica(f).RaftNode().LeadershipTransfer().Error(); err != nil {
		t.Fatalf("LeadershipTransfer() = %v", err)
	}
	l := c.LeaderIndex(t)
	for l == f {
		time.Sleep(10 * time.Millisecond)
		l = c.LeaderIndex(t)
	}
	c.MustApply(t, l, setEmail("u0", "u0-1@x.org"))
	c.WaitConverged(t)

	c.Partition(f)
	for k := 2; k <= 20; k++ {
		c.MustApply(t, l, setEmail("u0", fmt.Sprintf("u0-%d@x.org", k)))
	}
	read := func(r *Replica) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return r.Read(ctx, false, func(d *directory.Directory) error {
			_, err := d.User("u0")
			return err
		})
	}
	// The first linearizable read of l's term appends a barrier; the
	// snapshots taken now end on it.
	if err := read(c.Replica(l)); err != nil {
		t.Fatalf("Read on leader n%d = %v", l, err)
	}
	for _, i := range c.Followers(f) {
		if err := c.Replica(i).Snapshot(); err != nil {
			t.Fatalf("Snapshot() on n%d = %v", i, err)
		}
	}
	if st := c.Replica(l).Status(); st.LastSnapshotIndex <= st.AppliedIndex {
		t.Fatalf("leader's snapshot index %d is not past its applied index %d: the snapshot does not end on a barrier", st.LastSnapshotIndex, st.AppliedIndex)
	}
	c.Heal()
	c.WaitConverged(t)

	fr := c.Replica(f)
	if err := c.Replica(l).RaftNode().LeadershipTransferToServer(raft.ServerID(fr.ID()), raft.ServerAddress("raft-"+fr.ID())).Error(); err != nil {
		t.Fatalf("LeadershipTransferToServer(%s) = %v", fr.ID(), err)
	}
	if got := c.LeaderIndex(t); got != f {
		t.Fatalf("leader after transfer = n%d, want n%d", got, f)
	}
	if err := read(fr); err != nil {
		t.Errorf("Read on new leader %s = %v, want nil; nodes %s", fr.ID(), err, c.describe())
	}
}
