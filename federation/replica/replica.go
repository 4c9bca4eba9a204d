// Package replica runs the federated directory on hashicorp/raft.
//
// # Writes
//
// Apply proposes a directory command on the leader and returns what applying
// it produced. On a follower it returns a *NotLeaderError naming the leader's
// API address; the RPC layer forwards the request there, so a client may
// send writes to any node.
//
// # Reads
//
// Read runs a query against the local directory. A linearizable read (the
// default) runs only on the leader and follows the read-index protocol: the
// leader notes its commit index, confirms with a quorum that it is still the
// leader, waits until its state machine has applied that index, then reads.
// A stale read runs on whichever node answers, against its local state.
//
// # Membership
//
// Join adds a node as a voter or non-voter through the leader and records the
// node's addresses in the directory, which is how every node can find the
// leader's API address from its Raft id.
package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
)

// Config describes one replica. The caller wires in concrete stores and the
// transport; the replica owns them after New and closes what implements
// io.Closer on Shutdown.
type Config struct {
	// Node is this node's id, site and addresses as recorded in the
	// directory.
	Node directory.Node
	// UIDRange and GIDRange, when set, register the node's site with these
	// ranges if the directory does not have it yet.
	UIDRange, GIDRange *broker.Range

	LogStore      raft.LogStore
	StableStore   raft.StableStore
	SnapshotStore raft.SnapshotStore
	State         directory.SnapshotStore
	Transport     raft.Transport

	// Bootstrap starts a new federation with this node as its only voter,
	// unless Raft state already exists.
	Bootstrap bool

	// Raft tunes the Raft configuration before it is used; tests shorten
	// timeouts with it. May be nil.
	Raft   func(*raft.Config)
	Logger *slog.Logger
}

// Replica is one node's copy of the directory.
type Replica struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm
	dir   *directory.Directory
	close []io.Closer

	// readyTerm is the term in which this node, as leader, has seen a
	// barrier applied: from then on its state includes every entry
	// committed by earlier leaders, and read-index reads are safe.
	readyTerm atomic.Uint64
	barrierMu sync.Mutex

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New starts a replica.
func New(cfg Config) (*Replica, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("node", cfg.Node.ID)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Node.ID)
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.SnapshotThreshold = 8192
	rc.TrailingLogs = 10240
	rc.Logger = HCLog(log)
	if cfg.Raft != nil {
		cfg.Raft(rc)
	}
	f := &fsm{dir: directory.New(cfg.State), state: cfg.State}
	r := &Replica{cfg: cfg, log: log, fsm: f, dir: f.dir, stop: make(chan struct{})}
	for _, c := range []any{cfg.Transport, cfg.LogStore, cfg.StableStore, cfg.State} {
		if cl, ok := c.(io.Closer); ok {
			r.close = append(r.close, cl)
		}
	}
	hasState, err := raft.HasExistingState(cfg.LogStore, cfg.StableStore, cfg.SnapshotStore)
	if err != nil {
		return nil, fmt.Errorf("replica: inspect raft state: %w", err)
	}
	ra, err := raft.NewRaft(rc, f, cfg.LogStore, cfg.StableStore, cfg.SnapshotStore, cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("replica: start raft: %w", err)
	}
	r.raft = ra
	if cfg.Bootstrap && !hasState {
		conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: cfg.Transport.LocalAddr(), Suffrage: raft.Voter}}}
		if err := ra.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			ra.Shutdown()
			return nil, fmt.Errorf("replica: bootstrap: %w", err)
		}
	}
	r.wg.Add(1)
	go r.watchLeadership()
	return r, nil
}

// HasState reports whether the stores hold Raft state from an earlier run.
func HasState(logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) (bool, error) {
	return raft.HasExistingState(logs, stable, snaps)
}

// watchLeadership registers this node in the directory each time it becomes
// leader, so followers can always find the leader's API address.
func (r *Replica) watchLeadership() {
	defer r.wg.Done()
	obs := make(chan raft.Observation, 16)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.raft.RegisterObserver(o)
	defer r.raft.DeregisterObserver(o)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-obs:
		case <-tick.C:
		}
		if r.raft.State() != raft.Leader {
			continue
		}
		if n, err := r.dir.Node(r.cfg.Node.ID); err == nil && *n == r.cfg.Node {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := r.Apply(ctx, &directory.Command{
			Time: time.Now().UTC(), Actor: "node:" + r.cfg.Node.ID,
			RegisterNode: &directory.RegisterNode{Node: r.cfg.Node, UIDRange: r.cfg.UIDRange, GIDRange: r.cfg.GIDRange},
		})
		cancel()
		if err != nil {
			r.log.Warn("could not register this node in the directory; will retry", "err", err)
		}
	}
}

// Changed returns a channel that is closed once the directory next
// changes: a command applied or a snapshot restored. Read the directory
// after it fires, then call Changed again.
func (r *Replica) Changed() <-chan struct{} { return r.fsm.changedCh() }

// LeaderContact reports whether this node is in touch with a Raft leader
// within max: it is the leader, or heard from one that recently. A node
// cut off from the majority answers false, so what it serves may be stale.
func (r *Replica) LeaderContact(max time.Duration) bool {
	if r.raft.State() == raft.Leader {
		return true
	}
	lid, _ := r.raft.LeaderWithID()
	return lid != "" && time.Since(r.raft.LastContact()) <= max
}

// AppliedIndex is the index of the last log entry the directory holds.
func (r *Replica) AppliedIndex() uint64 { return r.fsm.applied.Load() }

// Directory returns the local directory for stale reads and tests.
func (r *Replica) Directory() *directory.Directory { return r.dir }

// RaftNode returns the underlying Raft node.
func (r *Replica) RaftNode() *raft.Raft { return r.raft }

// ID returns this node's id.
func (r *Replica) ID() string { return r.cfg.Node.ID }

// IsLeader reports whether this node believes it is the leader.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

// Leader returns the current leader's id and API address, as far as this
// node knows.
func (r *Replica) Leader() (id, api string) {
	_, lid := r.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	if string(lid) == r.cfg.Node.ID {
		return r.cfg.Node.ID, r.cfg.Node.APIAddr
	}
	if n, err := r.dir.Node(string(lid)); err == nil {
		return n.ID, n.APIAddr
	}
	return string(lid), ""
}

func (r *Replica) notLeader() error {
	id, api := r.Leader()
	return &broker.NotLeaderError{LeaderID: id, LeaderAPI: api}
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return def
}

// Apply proposes cmd and waits until it is applied on this node (the
// leader). It returns the applied command's value, or the error that made it
// change nothing.
func (r *Replica) Apply(ctx context.Context, cmd *directory.Command) (any, error) {
	if r.raft.State() != raft.Leader {
		return nil, r.notLeader()
	}
	b, err := cmd.Encode()
	if err != nil {
		return nil, err
	}
	fut := r.raft.Apply(b, timeoutOf(ctx, 10*time.Second))
	if err := r.wait(ctx, fut); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// The entry never entered the log.
			return nil, r.notLeader()
		}
		// Anything else, ErrRaftShutdown included, may come after the
		// entry was replicated or even committed.
		return nil, fmt.Errorf("%w: %v; check with a read before retrying", broker.ErrAmbiguous, err)
	}
	res, ok := fut.Response().(directory.Result)
	if !ok {
		return nil, fmt.Errorf("replica: unexpected apply response %T", fut.Response())
	}
	return res.Value, res.Err
}

// wait waits for f, but only as long as ctx and this replica last: Raft
// never answers a future still queued when it shuts down
// (hashicorp/raft#498). Giving up leaves the operation's outcome unknown.
func (r *Replica) wait(ctx context.Context, f raft.Future) error {
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stop:
		return raft.ErrRaftShutdown
	}
}

// Read runs fn against the directory. Unless stale, it runs only on the
// leader after the read-index protocol, so it observes every write
// acknowledged before Read was called.
func (r *Replica) Read(ctx context.Context, stale bool, fn func(*directory.Directory) error) error {
	if !stale {
		if err := r.readBarrier(ctx); err != nil {
			return err
		}
	}
	return fn(r.dir)
}

func (r *Replica) readBarrier(ctx context.Context) error {
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	term := r.raft.CurrentTerm()
	if r.readyTerm.Load() != term {
		// First read of this term: make sure entries committed by earlier
		// leaders are applied here before trusting the commit index.
		r.barrierMu.Lock()
		if r.readyTerm.Load() != term {
			if err := r.wait(ctx, r.raft.Barrier(timeoutOf(ctx, 5*time.Second))); err != nil {
				r.barrierMu.Unlock()
				return r.readFailed(err)
			}
			r.readyTerm.Store(term)
		}
		r.barrierMu.Unlock()
	}
	readIndex := r.raft.CommitIndex()
	if err := r.wait(ctx, r.raft.VerifyLeader()); err != nil {
		return r.readFailed(err)
	}
	if r.raft.CurrentTerm() != term {
		return r.notLeader()
	}
	return r.waitApplied(ctx, readIndex)
}

// readFailed explains why a linearizable read could not be confirmed. A
// node that lost leadership names the new leader; one that is still leader
// but could not reach a quorum in time says so rather than naming itself,
// which would send a forwarded request back to where it came from.
func (r *Replica) readFailed(err error) error {
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	return broker.Errorf(broker.ErrUnavailable, "this node could not confirm its leadership with a quorum (%v); retry", err)
}

// waitApplied waits until the FSM has processed every command up to index.
// Entries the FSM never sees (no-ops, barriers, configuration changes) need
// no waiting, so a gap made only of those counts as applied.
func (r *Replica) waitApplied(ctx context.Context, index uint64) error {
	for {
		a := r.fsm.applied.Load()
		if a >= index || r.onlyNonCommands(a+1, index) {
			return nil
		}
		select {
		case <-ctx.Done():
			return broker.Errorf(broker.ErrUnavailable, "timed out waiting for this node to apply index %d (applied %d); retry", index, a)
		case <-r.stop:
			return broker.Errorf(broker.ErrUnavailable, "this node is shutting down; send the request to another node")
		case <-time.After(200 * time.Microsecond):
		}
	}
}

func (r *Replica) onlyNonCommands(from, to uint64) bool {
	if to-from > 64 {
		return false
	}
	var l raft.Log
	snap := uint64(0)
	for i := from; i <= to; i++ {
		err := r.cfg.LogStore.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			// A snapshot can end past the last command, on a barrier:
			// a node that installed it has those entries in neither its
			// log nor applied. Everything up to the last snapshot is in
			// the state, whether this node took the snapshot or
			// restored it.
			if snap == 0 {
				snap = r.Status().LastSnapshotIndex
			}
			if i <= snap {
				continue
			}
		}
		if err != nil || l.Type == raft.LogCommand {
			return false
		}
	}
	return true
}

// Peers returns the Raft configuration as this node knows it.
func (r *Replica) Peers() ([]broker.Peer, error) {
	fut := r.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil, fmt.Errorf("replica: get configuration: %w", err)
	}
	_, lid := r.raft.LeaderWithID()
	var out []broker.Peer
	for _, s := range fut.Configuration().Servers {
		suf := "voter"
		if s.Suffrage != raft.Voter {
			suf = "nonvoter"
		}
		out = append(out, broker.Peer{ID: string(s.ID), Addr: string(s.Address), Suffrage: suf, Leader: s.ID == lid})
	}
	return out, nil
}

// Join adds a node to the federation. It runs on the leader: the node's
// addresses are recorded in the directory first, then the node is added to
// the Raft configuration. Joining again with the same id and address is
// harmless, so a restarting node may always ask.
func (r *Replica) Join(ctx context.Context, reg *directory.RegisterNode, voter bool, actor string) error {
	if err := broker.ValidateName("node", reg.Node.ID); err != nil {
		return err
	}
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	cfut := r.raft.GetConfiguration()
	if err := cfut.Error(); err != nil {
		return r.notLeader()
	}
	for _, s := range cfut.Configuration().Servers {
		if string(s.Address) == reg.Node.RaftAddr && string(s.ID) != reg.Node.ID {
			return broker.Errorf(broker.ErrExists, "raft address %s is already used by node %s; remove that node first with labfed raft remove-peer %s", s.Address, s.ID, s.ID)
		}
	}
	if _, err := r.Apply(ctx, &directory.Command{Time: time.Now().UTC(), Actor: actor, RegisterNode: reg}); err != nil {
		return err
	}
	id, addr := raft.ServerID(reg.Node.ID), raft.ServerAddress(reg.Node.RaftAddr)
	var fut raft.IndexFuture
	if voter {
		fut = r.raft.AddVoter(id, addr, 0, timeoutOf(ctx, 10*time.Second))
	} else {
		fut = r.raft.AddNonvoter(id, addr, 0, timeoutOf(ctx, 10*time.Second))
	}
	if err := fut.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return r.notLeader()
		}
		return fmt.Errorf("replica: add %s to raft: %w", reg.Node.ID, err)
	}
	return nil
}

// RemovePeer removes a node from the Raft configuration and the directory.
func (r *Replica) RemovePeer(ctx context.Context, id, actor string) error {
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	cfut := r.raft.GetConfiguration()
	if err := cfut.Error(); err != nil {
		return r.notLeader()
	}
	found := false
	for _, s := range cfut.Configuration().Servers {
		found = found || string(s.ID) == id
	}
	if !found {
		return broker.Errorf(broker.ErrNotFound, "node %s is not a raft peer; list peers with labfed raft peers", id)
	}
	if err := r.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx, 10*time.Second)).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return r.notLeader()
		}
		return fmt.Errorf("replica: remove %s: %w", id, err)
	}
	if id == r.cfg.Node.ID {
		return nil // we are no longer in the configuration to apply anything
	}
	_, err := r.Apply(ctx, &directory.Command{Time: time.Now().UTC(), Actor: actor, DeregisterNode: &directory.DeregisterNode{ID: id}})
	if errors.Is(err, broker.ErrNotFound) {
		err = nil
	}
	return err
}

// Status describes this node's view of replication.
func (r *Replica) Status() broker.NodeStatus {
	lid, _ := r.Leader()
	st := broker.NodeStatus{
		ID: r.cfg.Node.ID, Site: r.cfg.Node.Site, State: r.raft.State().String(), LeaderID: lid,
		AppliedIndex: r.fsm.applied.Load(), CommitIndex: r.raft.CommitIndex(),
	}
	if n, err := strconv.ParseUint(r.raft.Stats()["last_snapshot_index"], 10, 64); err == nil {
		st.LastSnapshotIndex = n
	}
	return st
}

// Snapshot takes a Raft snapshot now.
func (r *Replica) Snapshot() error { return r.raft.Snapshot().Error() }

// Shutdown stops Raft and closes the stores.
func (r *Replica) Shutdown() error {
	var err error
	r.stopOnce.Do(func() {
		close(r.stop)
		r.wg.Wait()
		err = r.raft.Shutdown().Error()
		for _, c := range r.close {
			if cerr := c.Close(); err == nil {
				err = cerr
			}
		}
	})
	return err
}

// HCLog sends Raft's warnings and errors to slog; Raft's info lines are
// too chatty for an operator's log and are dropped.
func HCLog(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Warn,
		Output: slogWriter{l},
	})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(string(trimNL(p)), "component", "raft")
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
