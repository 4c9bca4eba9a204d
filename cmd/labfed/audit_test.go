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
	// Stop a broker and flip one byte of an entry in its state file.
	victim := f.nodes[2]
	state := filepath.Join(f.cfgs[2].DataDir, "state.db")
	seq := flipEntryByte(t, victim, state, `"subject":"bob"`)
	out, err = cli("audit", "verify", "--state", state, "--json")
	if err == nil || !strings.Contains(errorLine(err), fmt.Sprintf("audit chain broken at entry %d", seq)) || !strings.Contains(out, `"intact": false`) {
		t.Fatalf("audit verify --state of a tampered file = %q, %v; want entry %d named", out, errorLine(err), seq)
	}
	t.Logf("tampered entry %d: %s", seq, errorLine(err))
}

// flipEntryByte stops n and changes one byte inside the first audit entry
// of its state file that contains marker, returning that entry's seq.
func flipEntryByte(t *testing.T, n interface{ Close() error }, path, marker string) uint64 {
	t.Helper()
	n.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		t.Fatalf("no %s in %s", marker, path)
	}
	// The entry's seq is the first "seq": before the marker.
	j := bytes.LastIndex(b[:i], []byte(`{"seq":`))
	var seq uint64
	fmt.Sscanf(string(b[j+len(`{"seq":`):]), "%d", &seq)
	b[i+len(marker)-2] ^= 0x01 // "bob" → "bcb"
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return seq
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
