package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labfed/labfed/cmd/labfed/internal/node"
)

// TestAuditCommands: the audit trail through the CLI: listing with
// filters, following, export, usage, and verify, including a byte flipped
// in a stopped broker's state file.
func TestAuditCommands(t *testing.T) {
	f, dir, cl := bootFederation(t, false)
	loadDemoSeed(t, cl)
	cli := adminCLI(f, dir, 1)

	// Follow from now while a grant and a refused grant happen.
	var followOut lockedBuf
	fctx, stopFollow := context.WithCancel(context.Background())
	followDone := make(chan error, 1)
	go func() {
		caCert, _, _ := caFiles(filepath.Join(dir, "ca"))
		admin := filepath.Join(dir, "ca", "coord")
		app := newApp(&followOut, new(bytes.Buffer))
		followDone <- app.RunContext(fctx, interspersed(app, []string{"labfed", "--addr", f.nodes[2].Addr(), "--ca", caCert, "--cert", admin + ".crt", "--key", admin + ".key", "audit", "--follow", "--json", "--action", "grant.add"}))
	}()
	time.Sleep(300 * time.Millisecond) // the stream is open
	if _, err := cli("grant", "add", "--user", "bob", "--resource", "psc/bridges2-gpu", "--actions", "compute.create"); err != nil {
		t.Fatal(errorLine(err))
	}
	if _, err := cli("grant", "add", "--user", "bob", "--resource", "psc/bridges2-gpu", "--actions", "compute.create"); err == nil {
		t.Fatal("an overlapping grant was added")
	}
	// The follower streamed from its own head, which may lag the seed's
	// last grants: look at bob's.
	bobs := func() (lines []string) {
		for _, l := range strings.Split(strings.TrimSpace(followOut.String()), "\n") {
			if strings.Contains(l, `"subject":"bob"`) {
				lines = append(lines, l)
			}
		}
		return lines
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(bobs()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stopFollow()
	<-followDone
	lines := bobs()
	if len(lines) != 2 || !strings.Contains(lines[0], `"decision":"allow"`) || !strings.Contains(lines[1], `"decision":"deny"`) {
		t.Fatalf("audit --follow printed %q, want the grant and its refusal", followOut.String())
	}

	// Listing with filters; cli.md's fields.
	out, err := cli("audit", "--user", "bob", "--action", "grant.add", "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var es []map[string]any
	if err := json.Unmarshal([]byte(out), &es); err != nil || len(es) != 2 {
		t.Fatalf("audit --json = %s (%v)", out, err)
	}
	for _, k := range []string{"seq", "time", "actor", "action", "resource", "site", "decision", "reason", "hash", "prev_hash"} {
		if _, ok := es[1][k]; !ok {
			t.Errorf("audit --json entry has no %q: %v", k, es[1])
		}
	}
	if es[1]["decision"] != "deny" || !strings.Contains(es[1]["reason"].(string), "overlapping") || es[1]["site"] != "psc" || es[1]["prev_hash"] == es[0]["prev_hash"] {
		t.Errorf("refused grant entry %v", es[1])
	}
	if out, err := cli("audit", "--limit", "3"); err != nil || strings.Count(out, "\n") != 4 {
		t.Errorf("audit --limit 3 = %q, %v; want a header and 3 rows", out, err)
	}
	for _, bad := range []struct{ args, want string }{
		{"audit --decision maybe", "give allow or deny"},
		{"audit --since yesterday", "is not an RFC 3339 time"},
		{"audit --limit 0", "--limit must be a positive number"},
		{"usage --by moon", "give site, user or project"},
	} {
		if _, err := cli(strings.Fields(bad.args)...); err == nil || !strings.Contains(errorLine(err), bad.want) {
			t.Errorf("labfed %s = %v, want %q", bad.args, err, bad.want)
		}
	}

	// Export: every entry once, oldest first, as JSON lines.
	exp := filepath.Join(t.TempDir(), "audit.jsonl")
	if _, err := cli("audit", "export", "--out", exp); err != nil {
		t.Fatal(errorLine(err))
	}
	b, _ := os.ReadFile(exp)
	var prev float64
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		if seq := e["seq"].(float64); seq != prev+1 {
			t.Fatalf("export jumps from %v to %v", prev, seq)
		}
		prev = e["seq"].(float64)
		n++
	}
	if n < 20 {
		t.Errorf("export wrote %d entries", n)
	}

	// Usage, as JSON and CSV.
	if _, err := cli("token", "issue", "--scope", "instrument.view:rutgers/krios-g4", "--user", "bob"); err != nil {
		t.Fatal(errorLine(err))
	}
	out, err = cli("usage", "--by", "user", "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r["key"] == "bob" && r["tokens"] == float64(1) {
			found = true
		}
		for _, k := range []string{"key", "instrument_hours", "gpu_hours", "sessions", "jobs", "tokens"} {
			if _, ok := r[k]; !ok {
				t.Errorf("usage row without %q: %v", k, r)
			}
		}
	}
	if !found {
		t.Errorf("usage --by user = %s, want bob with 1 token", out)
	}
	out, err = cli("usage", "--by", "site", "--csv")
	recs, cerr := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || cerr != nil || len(recs) < 2 || strings.Join(recs[0], ",") != "key,instrument_hours,gpu_hours,sessions,jobs,tokens" {
		t.Errorf("usage --csv = %q, %v %v", out, err, cerr)
	}

	// verify: intact through every node.
	for i := range f.nodes {
		if out, err := adminCLI(f, dir, i)("audit", "verify"); err != nil || !strings.HasPrefix(out, "intact: ") {
			t.Errorf("audit verify on node %d = %q, %v", i, out, err)
		}
	}
	// Archive everything before now: the file verifies on its own, ends at
	// the log's checkpoint, and the log verifies from there.
	arch := filepath.Join(t.TempDir(), "audit-archive.jsonl")
	time.Sleep(1100 * time.Millisecond) // --before is in whole seconds
	cut := time.Now().UTC().Format(time.RFC3339)
	if out, err := cli("audit", "archive", "--before", cut, "--out", arch); err != nil || !strings.Contains(out, "entries archived") {
		t.Fatalf("audit archive = %q, %v", out, errorLine(err))
	}
	out, err = cli("audit", "verify", "--archive", arch, "--json")
	var av map[string]any
	if err != nil || json.Unmarshal([]byte(out), &av) != nil || av["intact"] != true || av["first"] != float64(1) {
		t.Fatalf("audit verify --archive = %s, %v", out, err)
	}
	// verify reads the contacted node's own copy: let it apply the archive.
	var lv map[string]any
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, err = cli("audit", "verify", "--json")
		if err != nil || json.Unmarshal([]byte(out), &lv) != nil || lv["checkpoint_seq"] != float64(0) {
			break
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &lv) != nil || lv["intact"] != true || lv["checkpoint_seq"] != av["last"] || lv["checkpoint_hash"] != av["hash"] {
		t.Fatalf("audit verify after archiving = %q, %v; want the checkpoint %v %v", out, err, av["last"], av["hash"])
	}
	if out, err := cli("audit", "archive", "--before", cut, "--out", arch+".2"); err != nil || !strings.HasPrefix(out, "nothing older") {
		t.Errorf("archiving again = %q, %v; want nothing to archive", out, err)
	}

	// Every broker's log, compared at the same entry.
	if out, err := cli("audit", "verify", "--all"); err != nil || !strings.HasPrefix(out, "intact on all 3 brokers") {
		t.Fatalf("audit verify --all = %q, %v", out, err)
	}
	// A broker whose Raft log was changed while it was down replays the
	// changed command into a chain that is intact on its own but differs
	// from the others'.
	f.nodes[2].Close()
	raftDB := filepath.Join(f.cfgs[2].DataDir, "raft.db")
	rb, err := os.ReadFile(raftDB)
	if err != nil || !bytes.Contains(rb, []byte(`"subject":"user:bob"`)) {
		t.Fatalf("raft.db: %v", err)
	}
	if err := os.WriteFile(raftDB, bytes.ReplaceAll(rb, []byte(`"subject":"user:bob"`), []byte(`"subject":"user:bcb"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	restarted, err := node.Start(context.Background(), node.Options{Config: f.cfgs[2], Logger: f.log})
	if err != nil {
		t.Fatal(err)
	}
	f.nodes[2] = restarted
	waitHead(t, adminCLI(f, dir, 0), adminCLI(f, dir, 2))
	out, err = cli("audit", "verify", "--all")
	if err == nil || !strings.Contains(errorLine(err), "the brokers' logs differ at entry") || !strings.Contains(errorLine(err), f.cfgs[2].Node) {
		t.Fatalf("audit verify --all with a changed replica = %q, %v", out, err)
	}
	t.Logf("changed replica: %s", errorLine(err))

	// Stop a broker (not the changed one) and flip one byte of an entry in
	// its state file.
	victim := f.nodes[1]
	state := filepath.Join(f.cfgs[1].DataDir, "state.db")
	if _, err := cli("token", "issue", "--scope", "instrument.view:rutgers/krios-g4", "--user", "bob"); err != nil {
		t.Fatal(errorLine(err))
	}
	waitHead(t, adminCLI(f, dir, 0), adminCLI(f, dir, 1))
	out, err = cli("audit", "--user", "bob", "--action", "token.issue", "--limit", "1", "--json")
	var last []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &last) != nil || len(last) != 1 {
		t.Fatalf("bob's last token entry: %q, %v", out, err)
	}
	seq := uint64(last[0]["seq"].(float64))
	flipEntryByte(t, victim, state, `"subject":"bob","action":"token.issue"`)
	out, err = cli("audit", "verify", "--state", state, "--json")
	if err == nil || !strings.Contains(errorLine(err), fmt.Sprintf("audit chain broken at entry %d", seq)) || !strings.Contains(out, `"intact": false`) {
		t.Fatalf("audit verify --state of a tampered file = %q, %v; want entry %d named", out, err, seq)
	}
	t.Logf("tampered entry %d: %s", seq, errorLine(err))
}

// flipEntryByte stops n and changes one byte in every copy of marker in
// its state file (bbolt leaves old copies of pages in free space, so the
// live entry is among them).
func flipEntryByte(t *testing.T, n interface{ Close() error }, path, marker string) {
	t.Helper()
	n.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(marker)) {
		t.Fatalf("no %s in %s", marker, path)
	}
	flipped := []byte(marker)
	flipped[len(flipped)-2] ^= 0x01
	if err := os.WriteFile(path, bytes.ReplaceAll(b, []byte(marker), flipped), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitHead waits until the node of nodeCLI holds the leader's audit head
// (a node that just restarted refuses until it has caught up).
func waitHead(t *testing.T, leaderCLI, nodeCLI func(...string) (string, error)) {
	t.Helper()
	head := func(cli func(...string) (string, error)) (float64, error) {
		out, err := cli("audit", "verify", "--json")
		var v map[string]any
		if err != nil {
			return 0, err
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return 0, err
		}
		return v["head_seq"].(float64), nil
	}
	want, err := head(leaderCLI)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := head(nodeCLI)
		if err == nil && got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node did not reach audit entry %v: %v, %v", want, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
