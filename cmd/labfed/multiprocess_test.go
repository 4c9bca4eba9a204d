package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/cmd/labfed/internal/node"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// labfedBinary is the labfed command built once for the multi-process
// tests; TestMain removes it.
var labfedBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if labfedBinary.dir != "" {
		os.RemoveAll(labfedBinary.dir)
	}
	os.Exit(code)
}

// raceEnabled reports whether this test binary runs with the race
// detector; the labfed binary is then built with it too, so the brokers'
// own races show up in their logs.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// buildLabfed builds this package's command once and returns its path.
func buildLabfed(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command to build labfed with: %v", err)
	}
	b := &labfedBinary
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "labfed-bin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "labfed")
		args := []string{"build", "-o", b.path}
		if raceEnabled() {
			args = append(args, "-race")
		}
		args = append(args, ".")
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// freeAddrs returns n distinct free loopback addresses.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // held until all are chosen, so they differ
		out = append(out, l.Addr().String())
	}
	return out
}

// cleanEnv is the environment without LABFED_* variables. A binary built
// with the race detector sleeps a second on exit by default
// (atexit_sleep_ms); every CLI call would pay it.
func cleanEnv() []string {
	var env []string
	gorace := "atexit_sleep_ms=0"
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "LABFED_"):
		case strings.HasPrefix(kv, "GORACE="):
			if v := strings.TrimPrefix(kv, "GORACE="); v != "" {
				gorace = v + " " + gorace
			}
		default:
			env = append(env, kv)
		}
	}
	return append(env, "GORACE="+gorace)
}

// proc is one labfed serve process.
type proc struct {
	id, site  string
	api, raft string
	config    string // path of its YAML config
	log       string // path of its stdout and stderr, across restarts
	cmd       *exec.Cmd
	exited    chan struct{}
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// procCluster runs labfed serve processes and talks to them with the
// labfed command line, over mutual TLS as in production.
type procCluster struct {
	t        testing.TB
	bin, dir string
	procs    []*proc
	deadline time.Time // the whole test's
	// The federation CA and the administrator's certificate the CLI uses:
	// the processes run over mutual TLS, as in production.
	caCert, adminPrefix string
	clientTLS           client.Options
}

const (
	mpSnapshotThreshold = 64
	mpTrailingLogs      = 32
)

func newProcCluster(t testing.TB, sites []string, budget time.Duration) *procCluster {
	t.Helper()
	c := &procCluster{t: t, bin: buildLabfed(t), dir: t.TempDir(), deadline: time.Now().Add(budget)}
	addrs := freeAddrs(t, 3*len(sites))
	gossipAddrs := addrs[2*len(sites):]
	caDir := filepath.Join(c.dir, "ca")
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("labfed-test", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey, caCRL := caFiles(caDir)
	if err := ca.Save(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	c.caCert, c.adminPrefix = caCert, filepath.Join(caDir, "admin")
	if err := issue(ca, pki.Identity{Site: sites[0], Kind: pki.KindAdmin, Name: "coord"}, nil, 24*time.Hour, c.adminPrefix); err != nil {
		t.Fatal(err)
	}
	b, err := pki.Load(pki.Files{CA: caCert, Cert: c.adminPrefix + ".crt", Key: c.adminPrefix + ".key"})
	if err != nil {
		t.Fatal(err)
	}
	c.clientTLS = client.Options{TLS: b.ClientConfig(pki.KindBroker)}
	keyring := filepath.Join(caDir, "gossip.keys")
	if err := node.NewGossipKeyring(keyring); err != nil {
		t.Fatal(err)
	}
	for i, site := range sites {
		p := &proc{id: site + "-1", site: site, api: addrs[2*i], raft: addrs[2*i+1]}
		p.config = filepath.Join(c.dir, site+".yaml")
		p.log = filepath.Join(c.dir, site+".log")
		lo := 200000 + 100000*i
		cfg := fmt.Sprintf("site: %s\nnode: %s\ndata_dir: %s\nlisten:\n  api: %s\n  raft: %s\nuid_range: %d-%d\ngid_range: %d-%d\nraft:\n  snapshot_threshold: %d\n  trailing_logs: %d\n",
			p.site, p.id, filepath.Join(c.dir, p.id), p.api, p.raft, lo, lo+9999, lo, lo+9999, mpSnapshotThreshold, mpTrailingLogs)
		prefix := filepath.Join(caDir, p.id)
		if err := issue(ca, pki.Identity{Site: site, Kind: pki.KindBroker, Name: p.id}, []string{"127.0.0.1"}, 24*time.Hour, prefix); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("tls:\n  ca: %s\n  cert: %s.crt\n  key: %s.key\n  crl: %s\n", caCert, prefix, prefix, caCRL)
		cfg += "bootstrap:\n  coordinator: {name: coord, email: coord@rutgers.edu}\n"
		cfg += fmt.Sprintf("gossip: {keyring: %s}\n", keyring)
		cfg = strings.Replace(cfg, "listen:\n", "listen:\n  gossip: "+gossipAddrs[i]+"\n  http: 127.0.0.1:0\n", 1)
		if err := os.WriteFile(p.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c.procs = append(c.procs, p)
	}
	t.Cleanup(c.cleanup)
	return c
}

// cleanup kills every process, fails the test if a broker reported a data
// race, and dumps the brokers' logs when the test failed.
func (c *procCluster) cleanup() {
	for _, p := range c.procs {
		c.kill(p)
	}
	for _, p := range c.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			c.t.Errorf("node %s reported a data race", p.id)
		}
		if c.t.Failed() {
			const max = 32 << 10
			if len(b) > max {
				b = append([]byte("…\n"), b[len(b)-max:]...)
			}
			c.t.Logf("==== stderr of node %s (%s):\n%s", p.id, p.log, b)
		}
	}
}

// start starts p's labfed serve process with extra flags.
func (c *procCluster) start(p *proc, extra ...string) {
	c.t.Helper()
	if p.running() {
		c.t.Fatalf("start %s: already running", p.id)
	}
	args := append([]string{"serve", "--config", p.config, "--log-level", "info"}, extra...)
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "==== %s labfed %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = logf, logf, cleanEnv()
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", p.id, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(p.exited)
}

// kill kills p's process with SIGKILL and waits for it to exit.
func (c *procCluster) kill(p *proc) {
	c.t.Helper()
	if !p.running() {
		return
	}
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		c.t.Errorf("node %s (pid %d) did not exit 10s after SIGKILL", p.id, p.cmd.Process.Pid)
	}
}

// remaining bounds d by what is left of the test's budget.
func (c *procCluster) remaining(d time.Duration) time.Duration {
	return max(min(d, time.Until(c.deadline)), 0)
}

// run runs the labfed binary against the broker at p.
func (c *procCluster) run(p *proc, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.remaining(20*time.Second)+time.Second)
	defer cancel()
	full := append([]string{"--addr", p.api, "--ca", c.caCert, "--cert", c.adminPrefix + ".crt", "--key", c.adminPrefix + ".key", "--timeout", "5s"}, args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Env = &out, &errOut, cleanEnv()
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// cli runs the labfed binary against the broker at p and returns its
// stdout; on failure the error holds its stderr.
func (c *procCluster) cli(p *proc, args ...string) (string, error) {
	stdout, stderr, err := c.run(p, args...)
	if err != nil {
		return stdout, fmt.Errorf("labfed %s (node %s): %v: %s", strings.Join(args, " "), p.id, err, strings.TrimSpace(stderr))
	}
	return stdout, nil
}

// json runs a --json command against p and decodes its output into v.
func (c *procCluster) json(p *proc, v any, args ...string) error {
	out, err := c.cli(p, args...)
	if err != nil {
		return err
	}
	if err := decodeOne(out, v); err != nil {
		return fmt.Errorf("labfed %s (node %s) printed %q: %v", strings.Join(args, " "), p.id, out, err)
	}
	return nil
}

func (c *procCluster) mustJSON(p *proc, v any, args ...string) {
	c.t.Helper()
	if err := c.json(p, v, args...); err != nil {
		c.t.Fatal(err)
	}
}

// waitFor retries fn until it succeeds, for at most d (and the test's
// budget).
func (c *procCluster) waitFor(what string, d time.Duration, fn func() error) time.Duration {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(c.remaining(d))
	for {
		err := fn()
		if err == nil {
			return time.Since(start)
		}
		for _, p := range c.procs {
			if p.cmd != nil && !p.running() && !p.killed() {
				c.t.Fatalf("%s: node %s exited unexpectedly (%v); last error: %v", what, p.id, p.cmd.ProcessState, err)
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %v: %v", what, time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killed reports whether p's last process was ended by a signal (ours).
func (p *proc) killed() bool {
	return p.cmd != nil && p.cmd.ProcessState != nil && !p.cmd.ProcessState.Exited()
}

func (c *procCluster) status(p *proc) (nodeStatus, error) {
	var st nodeStatus
	err := c.json(p, &st, "raft", "status", "--json")
	return st, err
}

// leader returns the process the federation names leader, asking p.
func (c *procCluster) leader(p *proc) (*proc, error) {
	var peers []peerJSON
	if err := c.json(p, &peers, "raft", "peers", "--json"); err != nil {
		return nil, err
	}
	for _, pe := range peers {
		if !pe.Leader {
			continue
		}
		for _, q := range c.procs {
			if q.id == pe.ID {
				return q, nil
			}
		}
		return nil, fmt.Errorf("raft peers names leader %q, which is none of ours", pe.ID)
	}
	return nil, fmt.Errorf("raft peers = %+v, no leader", peers)
}

// sameState checks that every process in ps reports the same state hash
// and applied index, and returns one status.
func (c *procCluster) sameState(ps ...*proc) (nodeStatus, error) {
	var first nodeStatus
	for i, p := range ps {
		st, err := c.status(p)
		if err != nil {
			return first, err
		}
		if i == 0 {
			first = st
			continue
		}
		if st.StateHash != first.StateHash || st.AppliedIndex != first.AppliedIndex {
			return first, fmt.Errorf("node %s has applied %d, hash %.12s; node %s has applied %d, hash %.12s",
				ps[0].id, first.AppliedIndex, first.StateHash, p.id, st.AppliedIndex, st.StateHash)
		}
	}
	return first, nil
}

// TestMultiProcessKillLeader runs three labfed serve processes, kill -9s
// the leader, checks that the survivors elect a new one and keep taking
// writes, makes them snapshot and compact their logs past everything the
// dead node has, restarts it on its data_dir and checks that it catches up
// through a snapshot to the same directory.
func TestMultiProcessKillLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	start := time.Now()
	c := newProcCluster(t, []string{"rutgers", "psc", "fabric-dc"}, 55*time.Second)
	n1, n2, n3 := c.procs[0], c.procs[1], c.procs[2]
	c.start(n1, "--bootstrap")
	c.start(n2, "--join", n1.api)
	c.start(n3, "--join", n1.api)

	took := c.waitFor("three raft peers", 20*time.Second, func() error {
		var peers []peerJSON
		if err := c.json(n3, &peers, "raft", "peers", "--json"); err != nil {
			return err
		}
		if len(peers) != 3 {
			return fmt.Errorf("raft peers = %+v, want 3", peers)
		}
		return nil
	})
	t.Logf("federation of 3 processes up in %v", took.Round(time.Millisecond))

	// Writes through a follower, and the account they allocate.
	var u userJSON
	c.mustJSON(n2, &u, "user", "add", "alice", "--email", "alice@rutgers.edu", "--home", "rutgers", "--json")
	var g grantJSON
	c.mustJSON(n3, &g, "grant", "add", "--user", "alice", "--resource", "rutgers/krios-g4", "--actions", "instrument.view", "--json")
	var acc accountJSON
	c.mustJSON(n2, &acc, "account", "show", "--user", "alice", "--site", "rutgers", "--json")
	if acc.UID < 200000 || acc.UID > 209999 {
		t.Errorf("account show --user alice --site rutgers = %+v, want a uid in 200000-209999", acc)
	}

	// main itself: a refused write exits 1 with one line on stderr and
	// nothing on stdout.
	stdout, stderr, err := c.run(n3, "user", "add", "alice", "--email", "alice2@rutgers.edu", "--home", "rutgers", "--json")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || stdout != "" {
		t.Errorf("labfed user add alice (again) = stdout %q, err %v; want exit status 1 and no output", stdout, err)
	}
	if !strings.HasPrefix(stderr, `labfed: user "alice" already exists`) || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("labfed user add alice (again): stderr %q, want one line `labfed: user \"alice\" already exists…`", stderr)
	}

	var old *proc
	c.waitFor("a leader", 10*time.Second, func() (err error) {
		old, err = c.leader(n1)
		return err
	})
	var survivors []*proc
	for _, p := range c.procs {
		if p != old {
			survivors = append(survivors, p)
		}
	}
	var before nodeStatus
	c.waitFor("the three nodes agree before the kill", 10*time.Second, func() (err error) {
		before, err = c.sameState(old, survivors[0], survivors[1])
		return err
	})
	oldSt, err := c.status(old)
	if err != nil {
		t.Fatal(err)
	}
	if oldSt.State != "Leader" || oldSt.LastSnapshotIndex != 0 {
		t.Fatalf("status of %s before the kill = %+v, want the leader, without a snapshot yet", old.id, oldSt)
	}
	// Everything the old leader holds: it is idle, so its log ends at its
	// commit index.
	oldLast := max(oldSt.CommitIndex, oldSt.AppliedIndex)

	c.kill(old)
	killedAt := time.Now()
	t.Logf("killed leader %s (pid %d) at commit index %d", old.id, old.cmd.Process.Pid, oldLast)

	// Writes to the survivors succeed again once they elect a leader.
	// A write whose outcome was unknown may have applied: "already
	// exists" then means it did.
	var failures int
	c.waitFor("a write to a survivor after the kill", 15*time.Second, func() error {
		_, err := c.cli(survivors[0], "user", "add", "bob", "--email", "bob@cmu.edu", "--home", "psc", "--json")
		if err != nil && failures > 0 && strings.Contains(err.Error(), `user "bob" already exists`) {
			return nil
		}
		if err != nil {
			failures++
		}
		return err
	})
	t.Logf("writes succeed again %v after the kill (%d failed attempts)", time.Since(killedAt).Round(time.Millisecond), failures)
	c.waitFor("a write to the other survivor", 10*time.Second, func() error {
		_, err := c.cli(survivors[1], "grant", "add", "--user", "bob", "--resource", "psc/bridges2-gpu", "--actions", "compute.create", "--json")
		if err != nil && strings.Contains(err.Error(), "overlapping window") {
			return nil
		}
		return err
	})
	newLeader, err := c.leader(survivors[1])
	if err != nil {
		t.Fatal(err)
	}
	if newLeader == old {
		t.Fatalf("raft peers still names the killed %s leader", old.id)
	}

	// Many writes, so that the survivors' snapshots leave the dead node's
	// log far behind their compacted logs.
	const workers, perWorker = 4, 60
	bulkStart := time.Now()
	cl, err := client.Dial(newLeader.api, c.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), c.remaining(20*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				name := fmt.Sprintf("bulk-%d-%03d", w, i)
				if _, err := cl.Directory.AddUser(ctx, &pb.AddUserRequest{Name: name, Email: name + "@example.org", Home: "psc"}); err != nil {
					errs <- fmt.Errorf("AddUser(%s) = %v", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d bulk writes in %v", workers*perWorker, time.Since(bulkStart).Round(time.Millisecond))

	// Raft checks snapshot_threshold only every SnapshotInterval (two
	// minutes and more), so ask for the snapshots the threshold calls for.
	var leaderSt nodeStatus
	for _, p := range survivors {
		if _, err := c.cli(p, "raft", "snapshot"); err != nil {
			t.Fatal(err)
		}
		st, err := c.status(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastSnapshotIndex == 0 {
			t.Errorf("raft status of %s after raft snapshot = %+v, want a snapshot", p.id, st)
		}
		if p == newLeader {
			leaderSt = st
		}
	}
	// After a snapshot at index S the leader keeps entries from
	// S-trailing_logs+1 on; the dead node needs oldLast+1, so it can only
	// catch up from the snapshot.
	if first := leaderSt.LastSnapshotIndex - mpTrailingLogs + 1; first <= oldLast+1 {
		t.Fatalf("leader %s snapshot at %d keeps its log from %d, want past %d (the killed node's next index)",
			newLeader.id, leaderSt.LastSnapshotIndex, first, oldLast+1)
	}

	c.start(old)
	restartedAt := time.Now()
	var caught nodeStatus
	took = c.waitFor("the restarted node catches up", 30*time.Second, func() error {
		ls, err := c.status(newLeader)
		if err != nil {
			return err
		}
		st, err := c.status(old)
		if err != nil {
			return err
		}
		if st.StateHash != ls.StateHash || st.AppliedIndex < ls.AppliedIndex {
			return fmt.Errorf("restarted %s: applied %d, hash %.12s; leader %s: applied %d, hash %.12s",
				old.id, st.AppliedIndex, st.StateHash, newLeader.id, ls.AppliedIndex, ls.StateHash)
		}
		caught = st
		return nil
	})
	t.Logf("restarted %s caught up %v after its restart: %+v", old.id, took.Round(time.Millisecond), caught)
	// The restarted node had no snapshot of its own and took none: a
	// snapshot index at or past the leader's came from the leader.
	if caught.LastSnapshotIndex < leaderSt.LastSnapshotIndex || caught.LastSnapshotIndex <= oldLast {
		t.Errorf("restarted %s has last_snapshot_index %d, want at least the leader's %d (it had %d entries before the kill)",
			old.id, caught.LastSnapshotIndex, leaderSt.LastSnapshotIndex, oldLast)
	}
	if caught.AppliedIndex <= before.AppliedIndex {
		t.Errorf("restarted %s applied index %d, want past %d (its index before the kill)", old.id, caught.AppliedIndex, before.AppliedIndex)
	}

	// The latest write, sent to a survivor, reaches the restarted node's
	// local state, and linearizable reads through it see it at once.
	c.mustJSON(survivors[0], &u, "user", "add", "last-write", "--email", "last@example.org", "--home", "fabric-dc", "--json")
	c.mustJSON(old, &u, "user", "show", "last-write", "--json")
	c.waitFor("a --stale read on the restarted node sees the latest write", 10*time.Second, func() error {
		var got userJSON
		if err := c.json(old, &got, "user", "show", "last-write", "--stale", "--json"); err != nil {
			return err
		}
		if got.Email != "last@example.org" {
			return fmt.Errorf("user show last-write --stale = %+v", got)
		}
		return nil
	})
	var all, stale []userJSON
	c.mustJSON(newLeader, &all, "user", "list", "--json")
	c.mustJSON(old, &stale, "user", "list", "--stale", "--json")
	// The coordinator registered at bootstrap is one of the users.
	if want := 1 + 2 + workers*perWorker + 1; len(all) != want || len(stale) != want {
		t.Errorf("user list: %d users on the leader, %d in a --stale read on the restarted node; want %d on both", len(all), len(stale), want)
	}
	c.waitFor("the three nodes agree after the restart", 10*time.Second, func() error {
		_, err := c.sameState(newLeader, survivors[0], survivors[1], old)
		return err
	})
	var peers []peerJSON
	c.mustJSON(old, &peers, "raft", "peers", "--json")
	if len(peers) != 3 {
		t.Errorf("raft peers on the restarted node = %+v, want 3", peers)
	}
	for _, p := range c.procs {
		if !p.running() {
			t.Errorf("node %s is not running at the end (%v)", p.id, p.cmd.ProcessState)
		}
	}
	// labfed serve shuts down cleanly on SIGTERM, even as the leader.
	newLeader.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-newLeader.exited:
		if code := newLeader.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("labfed serve (%s) exited with status %d after SIGTERM, want 0", newLeader.id, code)
		}
	case <-time.After(c.remaining(15 * time.Second)):
		t.Errorf("labfed serve (%s) still running 15s after SIGTERM", newLeader.id)
	}
	t.Logf("restart to agreement %v; whole test %v", time.Since(restartedAt).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
