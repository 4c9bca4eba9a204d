package replica

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
)

// The linearizability test treats each user's email as a register: clients
// set it with UpdateUser and read it with a linearizable Read, against
// random nodes, while a nemesis kills and partitions nodes. Porcupine then
// checks that the history has a linearization.

// regInput is one register operation: a write of value, or a read.
type regInput struct {
	write bool
	user  string
	value string
}

// registerModel is a set of registers partitioned by user. A partition's
// state is the user's email; the first operation of each partition is the
// AddUser that created the user.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byUser := map[string][]porcupine.Operation{}
		for _, op := range history {
			u := op.Input.(regInput).user
			byUser[u] = append(byUser[u], op)
		}
		var out [][]porcupine.Operation
		for _, u := range slices.Sorted(maps.Keys(byUser)) {
			out = append(out, byUser[u])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("set(%s, %s)", in.user, in.value)
		}
		return fmt.Sprintf("get(%s) -> %v", in.user, output)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// outcome is what a client can conclude from a write's error.
type outcome int

const (
	outcomeApplied outcome = iota // the write took effect
	outcomeFailed                 // the write certainly did not take effect
	outcomeUnknown                // the write may or may not have taken effect
)

// writeOutcome classifies a write's error the way the broker documents it:
// NotLeaderError and ErrUnavailable promise nothing was applied,
// ErrAmbiguous says the outcome is unknown, and anything else (a timeout)
// leaves it unknown too.
func writeOutcome(err error) outcome {
	var nl *broker.NotLeaderError
	switch {
	case err == nil:
		return outcomeApplied
	case errors.As(err, &nl):
		return outcomeFailed
	case errors.Is(err, broker.ErrAmbiguous):
		return outcomeUnknown
	case errors.Is(err, broker.ErrUnavailable):
		return outcomeFailed
	}
	return outcomeUnknown
}

// opHistory records operations with times relative to its start.
type opHistory struct {
	start time.Time

	mu  sync.Mutex
	ops []porcupine.Operation
}

func newHistory() *opHistory { return &opHistory{start: time.Now()} }

func (h *opHistory) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *opHistory) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

func (h *opHistory) snapshot() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// linConfig sizes a linearizability run.
type linConfig struct {
	name     string
	nodes    int
	clients  int
	users    int
	ops      int           // total operations, across clients
	duration time.Duration // the run stops at whichever limit comes first
	integ    bool          // only with LABFED_INTEG=1
}

func TestLinearizability(t *testing.T) {
	tests := []linConfig{
		{name: "short", nodes: 3, clients: 6, users: 5, ops: 400, duration: 8 * time.Second},
		{name: "long 3 nodes", nodes: 3, clients: 8, users: 5, ops: 4000, duration: 60 * time.Second, integ: true},
		{name: "long 5 nodes", nodes: 5, clients: 8, users: 5, ops: 4000, duration: 60 * time.Second, integ: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.integ && os.Getenv("LABFED_INTEG") != "1" {
				t.Skip("long run; set LABFED_INTEG=1")
			}
			runLinearizability(t, tt)
		})
	}
}

func runLinearizability(t *testing.T, cfg linConfig) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	c := newCluster(t, cfg.nodes)
	c.Leader(t)
	c.MustApply(t, 0, addSite(testSite, 100000, 100999, 100000, 101999))

	h := newHistory()
	users := make([]string, cfg.users)
	for k := range users {
		users[k] = fmt.Sprintf("u%d", k)
		email := users[k] + "-0@x.org"
		call := h.now()
		c.MustApply(t, k%cfg.nodes, addUser(users[k], email))
		h.add(porcupine.Operation{ClientId: 0, Input: regInput{write: true, user: users[k], value: email}, Call: call, Return: h.now()})
	}

	var (
		budget   atomic.Int64
		seq      atomic.Int64
		clientID atomic.Int64
		stats    struct{ applied, failed, unknown, reads, readErrs atomic.Int64 }
		errsMu   sync.Mutex
		errs     = map[string]int{}
	)
	budget.Store(int64(cfg.ops))
	clientID.Store(1)
	client := func(ctx context.Context, rnd *rand.Rand) {
		id := int(clientID.Add(1) - 1)
		for ctx.Err() == nil && budget.Add(-1) >= 0 {
			user := users[rnd.IntN(len(users))]
			node := rnd.IntN(cfg.nodes)
			opCtx, opCancel := context.WithTimeout(context.Background(), 5*time.Second)
			if rnd.IntN(2) == 0 {
				value := fmt.Sprintf("%s-%d@x.org", user, seq.Add(1))
				call := h.now()
				_, err := c.Apply(opCtx, node, setEmail(user, value))
				ret := h.now()
				if err != nil {
					errsMu.Lock()
					errs[err.Error()]++
					errsMu.Unlock()
				}
				op := porcupine.Operation{ClientId: id, Input: regInput{write: true, user: user, value: value}, Call: call, Return: ret}
				switch writeOutcome(err) {
				case outcomeApplied:
					stats.applied.Add(1)
					h.add(op)
				case outcomeFailed:
					stats.failed.Add(1)
				case outcomeUnknown:
					// It may take effect at any time from now on: it
					// never returns, and this client carries on as a
					// new one.
					stats.unknown.Add(1)
					op.Return = math.MaxInt64
					op.Metadata = err.Error()
					h.add(op)
					id = int(clientID.Add(1) - 1)
				}
			} else {
				var got string
				call := h.now()
				err := c.Read(opCtx, node, func(d *directory.Directory) error {
					u, err := d.User(user)
					if err == nil {
						got = u.Email
					}
					return err
				})
				ret := h.now()
				if err != nil {
					// A failed read constrains nothing.
					stats.readErrs.Add(1)
				} else {
					stats.reads.Add(1)
					h.add(porcupine.Operation{ClientId: id, Input: regInput{user: user}, Call: call, Output: got, Return: ret})
				}
			}
			opCancel()
			time.Sleep(time.Duration(20+rnd.IntN(60)) * time.Millisecond)
		}
	}

	// The clients stop when the budget or the time runs out; then the
	// network is healed, every node is back, and all replicas agree.
	hash := c.UnderFaults(t, rand.New(rand.NewPCG(seed, 0)), func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
		defer cancel()
		var wg sync.WaitGroup
		for w := range cfg.clients {
			rnd := rand.New(rand.NewPCG(seed, uint64(w)+1))
			wg.Go(func() { client(ctx, rnd) })
		}
		wg.Wait()
	})
	t.Logf("writes: %d applied, %d failed, %d unknown; reads: %d, %d failed", stats.applied.Load(), stats.failed.Load(), stats.unknown.Load(), stats.reads.Load(), stats.readErrs.Load())
	t.Logf("write errors: %v", errs)

	// A final read of every register joins the history.
	final := map[string]string{}
	for k, user := range users {
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		call := h.now()
		err := c.Read(rctx, k%cfg.nodes, func(d *directory.Directory) error {
			u, err := d.User(user)
			if err == nil {
				final[user] = u.Email
			}
			return err
		})
		rcancel()
		if err != nil {
			t.Fatalf("final read of %s = %v", user, err)
		}
		h.add(porcupine.Operation{ClientId: 0, Input: regInput{user: user}, Call: call, Output: final[user], Return: h.now()})
	}
	for i := range c.N() {
		r := c.Replica(i)
		if got, err := r.Directory().Hash(); err != nil || got != hash {
			t.Errorf("Hash() on %s = %s, %v; want %s", r.ID(), got, err, hash)
		}
		for _, user := range users {
			if got, err := emailOf(r, user); err != nil || got != final[user] {
				t.Errorf("email of %s on %s = %q, %v; want %q", user, r.ID(), got, err, final[user])
			}
		}
	}

	ops := h.snapshot()
	checkAcknowledged(t, ops, final)

	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(registerModel, ops, time.Minute)
	t.Logf("checked %d operations in %v: %s", len(ops), time.Since(start).Round(time.Millisecond), res)
	if res != porcupine.Ok {
		// go test -artifacts keeps the file.
		path := filepath.Join(t.ArtifactDir(), "linearizability.html")
		if err := porcupine.VisualizePath(registerModel, info, path); err != nil {
			t.Errorf("write visualization: %v", err)
		}
		t.Errorf("CheckOperationsVerbose(%d operations) = %s, want %s; visualization in %s", len(ops), res, porcupine.Ok, path)
	}
}

// checkAcknowledged checks that no acknowledged write was lost: each
// register's final value was written by some write, and no acknowledged
// write to that register began after that write returned.
func checkAcknowledged(tb testing.TB, ops []porcupine.Operation, final map[string]string) {
	tb.Helper()
	for user, v := range final {
		var last *porcupine.Operation
		for i, op := range ops {
			if in := op.Input.(regInput); in.write && in.user == user && in.value == v {
				last = &ops[i]
			}
		}
		if last == nil {
			tb.Errorf("final email of %s is %q, which no client wrote", user, v)
			continue
		}
		for _, op := range ops {
			in := op.Input.(regInput)
			if in.write && in.user == user && op.Return != math.MaxInt64 && op.Call > last.Return {
				tb.Errorf("acknowledged write set(%s, %s) is lost: the final value %s was written before it began", user, in.value, v)
			}
		}
	}
}
