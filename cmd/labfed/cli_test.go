package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker/client"
)

// isolateEnv keeps the caller's LABFED_* variables (say, from a sourced
// demo env.sh) out of the CLI under test.
func isolateEnv(t testing.TB) {
	t.Helper()
	for _, v := range []string{"LABFED_ADDR", "LABFED_DEV_INSECURE", "LABFED_TIMEOUT", "LABFED_CA", "LABFED_CERT", "LABFED_KEY", "LABFED_OIDC_CA"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	// Never pick up the developer's own login.
	t.Setenv("LABFED_SESSION", filepath.Join(t.TempDir(), "session.json"))
}

// runCLI runs the labfed command line in this process, as main does, and
// returns what it printed and the error main would report.
func runCLI(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	app := newApp(&out, &errOut)
	err = app.Run(interspersed(app, append([]string{"labfed"}, args...)))
	return out.String(), errOut.String(), err
}

// testFed is an in-process three-site federation started the way the demo
// starts one, loaded with the demo's sample directory.
type testFed struct {
	f *federation
}

// bootFederation starts a three-site federation in t.TempDir() the way the
// demo does (over mutual TLS unless insecure), waits until it answers, and
// returns it with its directory and a client of the first node.
func bootFederation(t testing.TB, insecure bool) (*federation, string, *client.Client) {
	t.Helper()
	isolateEnv(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	f, err := startFederation(ctx, dir, 3, slog.New(slog.DiscardHandler), insecure)
	t.Cleanup(func() {
		f.close()
		cancel()
	})
	if err != nil {
		t.Fatalf("startFederation(insecure=%v) = %v", insecure, err)
	}
	cl, err := client.Dial(f.nodes[0].Addr(), f.client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := f.waitReady(rctx, cl); err != nil {
		t.Fatal(err)
	}
	return f, dir, cl
}

// loadDemoSeed loads the demo's sample directory through cl.
func loadDemoSeed(t testing.TB, cl *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seedPath := filepath.Join("..", "..", "testdata", "demo", "directory.yaml")
	sd, err := loadSeed(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.apply(ctx, cl.Directory); err != nil {
		t.Fatalf("apply %s: %v", seedPath, err)
	}
}

// adminCLI runs the command line against node i of a TLS test federation
// as the demo's coordinator (its administrator certificate).
func adminCLI(f *federation, dir string, i int) func(args ...string) (string, error) {
	caCert, _, _ := caFiles(filepath.Join(dir, "ca"))
	admin := filepath.Join(dir, "ca", "coord")
	base := []string{"--addr", f.nodes[i].Addr(), "--ca", caCert, "--cert", admin + ".crt", "--key", admin + ".key", "--timeout", "10s"}
	return func(args ...string) (string, error) {
		out, _, err := runCLI(append(append([]string{}, base...), args...)...)
		return out, err
	}
}

func startTestFederation(t testing.TB) *testFed {
	t.Helper()
	f, _, cl := bootFederation(t, true)
	loadDemoSeed(t, cl)
	return &testFed{f: f}
}

// cli runs the command line against node i.
func (tf *testFed) cli(i int, args ...string) (stdout, stderr string, err error) {
	return runCLI(append([]string{"--addr", tf.f.nodes[i].Addr(), "--dev-insecure", "--timeout", "10s"}, args...)...)
}

// mustCLI runs the command line against node i and fails the test if it
// fails.
func (tf *testFed) mustCLI(t testing.TB, i int, args ...string) string {
	t.Helper()
	out, _, err := tf.cli(i, args...)
	if err != nil {
		t.Fatalf("labfed %s (node %d) = %s, want success", strings.Join(args, " "), i, errorLine(err))
	}
	return out
}

// mustJSON runs a --json command against node i and decodes its one JSON
// value into v.
func (tf *testFed) mustJSON(t testing.TB, i int, v any, args ...string) {
	t.Helper()
	out := tf.mustCLI(t, i, args...)
	if err := decodeOne(out, v); err != nil {
		t.Fatalf("labfed %s printed %q: %v", strings.Join(args, " "), out, err)
	}
}

// decodeOne decodes s, which must hold exactly one JSON value, into v.
func decodeOne(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("more than one JSON value (next: %.40q, err %v)", extra, err)
	}
	return nil
}

// nodeStatus is raft status --json.
type nodeStatus struct {
	ID                string `json:"id"`
	Site              string `json:"site"`
	State             string `json:"state"`
	LeaderID          string `json:"leader_id"`
	AppliedIndex      uint64 `json:"applied_index"`
	CommitIndex       uint64 `json:"commit_index"`
	LastSnapshotIndex uint64 `json:"last_snapshot_index"`
	StateHash         string `json:"state_hash"`
}

func (tf *testFed) status(t testing.TB, i int) nodeStatus {
	t.Helper()
	var st nodeStatus
	tf.mustJSON(t, i, &st, "raft", "status", "--json")
	return st
}

// leader returns the index of the node that reports itself leader.
func (tf *testFed) leader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i := range tf.f.nodes {
			if tf.status(t, i).State == "Leader" {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no node reports itself leader after 10s")
	return -1
}

// followers returns the indexes of the nodes other than leader.
func (tf *testFed) followers(leader int) []int {
	var out []int
	for i := range tf.f.nodes {
		if i != leader {
			out = append(out, i)
		}
	}
	return out
}

// JSON value kinds a contract field may have.
const (
	kString     = "string"
	kNumber     = "number"
	kBool       = "bool"
	kArray      = "array"
	kTime       = "RFC 3339 time"
	kTimeOrNull = "RFC 3339 time or null"
)

func checkKind(v any, kind string) bool {
	switch kind {
	case kString:
		_, ok := v.(string)
		return ok
	case kNumber:
		_, ok := v.(float64)
		return ok
	case kBool:
		_, ok := v.(bool)
		return ok
	case kArray:
		_, ok := v.([]any)
		return ok
	case kTimeOrNull:
		if v == nil {
			return true
		}
		fallthrough
	case kTime:
		s, ok := v.(string)
		if !ok {
			return false
		}
		_, err := time.Parse(time.RFC3339, s)
		return err == nil
	}
	return false
}

// checkFields checks that obj has every contract field with its kind.
func checkFields(t testing.TB, what string, obj any, fields map[string]string) {
	t.Helper()
	m, ok := obj.(map[string]any)
	if !ok {
		t.Errorf("%s = %v, want a JSON object", what, obj)
		return
	}
	for f, kind := range fields {
		v, ok := m[f]
		if !ok {
			t.Errorf("%s has no field %q (fields %v), want one", what, f, keys(m))
			continue
		}
		if !checkKind(v, kind) {
			t.Errorf("%s.%s = %#v, want a %s", what, f, v, kind)
		}
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// The JSON fields of ../../../shared/design/cli.md.
var (
	siteFields    = map[string]string{"name": kString, "uid_range": kString, "gid_range": kString}
	userFields    = map[string]string{"name": kString, "email": kString, "home": kString, "identities": kArray, "roles": kArray, "status": kString}
	projectFields = map[string]string{"name": kString, "members": kArray}
	grantFields   = map[string]string{"id": kString, "subject": kString, "resource": kString, "actions": kArray, "from": kTime, "until": kTimeOrNull}
	accountFields = map[string]string{"user": kString, "site": kString, "username": kString, "uid": kNumber, "gid": kNumber, "groups": kArray}
	peerFields    = map[string]string{"id": kString, "addr": kString, "suffrage": kString, "leader": kBool}
	statusFields  = map[string]string{"id": kString, "site": kString, "state": kString, "leader_id": kString,
		"applied_index": kNumber, "commit_index": kNumber, "last_snapshot_index": kNumber, "state_hash": kString}
)

func TestCLIJSONOutput(t *testing.T) {
	tf := startTestFederation(t)
	leader := tf.leader(t)
	follower := tf.followers(leader)[0]
	// A site without accounts, so an empty listing can be checked.
	tf.mustCLI(t, leader, strings.Fields("site add empty-site --uid-range 900000-900999 --gid-range 900000-900999")...)

	lists := []struct {
		args   string
		fields map[string]string
		min    int // at least this many elements
	}{
		{"site list", siteFields, 4},
		{"user list", userFields, 5},
		{"user list --all", userFields, 5},
		{"project list", projectFields, 1},
		{"grant list", grantFields, 5},
		{"grant list --user alice", grantFields, 1},
		{"grant list --resource rutgers/krios-g4", grantFields, 2},
		{"account list", accountFields, 4},
		{"account list --site psc", accountFields, 2},
		{"raft peers", peerFields, 3},
	}
	for _, l := range lists {
		for _, stale := range []string{"", " --stale"} {
			for _, node := range []int{leader, follower} {
				args := strings.Fields(l.args + stale + " --json")
				name := fmt.Sprintf("labfed %s (node %d)", strings.Join(args, " "), node)
				var v any
				tf.mustJSON(t, node, &v, args...)
				arr, ok := v.([]any)
				if !ok {
					t.Errorf("%s = %s, want a JSON array", name, v)
					continue
				}
				if stale == "" && len(arr) < l.min {
					t.Errorf("%s has %d elements, want at least %d", name, len(arr), l.min)
				}
				for i, e := range arr {
					checkFields(t, fmt.Sprintf("%s[%d]", name, i), e, l.fields)
				}
			}
		}
		// Without --json the same command prints a table.
		if out := tf.mustCLI(t, leader, strings.Fields(l.args)...); decodeOne(out, new(any)) == nil || !strings.Contains(out, "\n") {
			t.Errorf("labfed %s = %q, want a table, not JSON", l.args, out)
		}
	}

	t.Run("empty listings are arrays", func(t *testing.T) {
		for _, args := range []string{"account list --site empty-site --json", "grant list --user nobody --json"} {
			out := tf.mustCLI(t, follower, strings.Fields(args)...)
			if got := strings.TrimSpace(out); got != "[]" {
				t.Errorf("labfed %s = %q, want []", args, got)
			}
		}
	})

	t.Run("raft peers has one leader of three voters", func(t *testing.T) {
		var peers []peerJSON
		tf.mustJSON(t, follower, &peers, "raft", "peers", "--json")
		leaders := 0
		for _, p := range peers {
			if p.Leader {
				leaders++
			}
			if p.Suffrage != "voter" {
				t.Errorf("raft peers: %s has suffrage %q, want voter", p.ID, p.Suffrage)
			}
		}
		if len(peers) != 3 || leaders != 1 {
			t.Errorf("raft peers = %+v, want 3 voters and exactly one leader", peers)
		}
	})

	t.Run("shows", func(t *testing.T) {
		for _, s := range []struct {
			args   string
			fields map[string]string
		}{
			{"user show alice --json", userFields},
			{"user show alice --stale --json", userFields},
			{"account show --user alice --site rutgers --json", accountFields},
			{"account show --user bob --site psc --stale --json", accountFields},
			{"raft status --json", statusFields},
		} {
			var v any
			tf.mustJSON(t, follower, &v, strings.Fields(s.args)...)
			checkFields(t, "labfed "+s.args, v, s.fields)
		}
		var acc accountJSON
		tf.mustJSON(t, follower, &acc, "account", "show", "--user", "bob", "--site", "psc", "--json")
		if acc.UID != 300500 || !acc.Pinned {
			t.Errorf("account show --user bob --site psc = %+v, want the pinned uid 300500", acc)
		}
	})

	t.Run("writes print one JSON value", func(t *testing.T) {
		for _, w := range []struct {
			args   string
			fields map[string]string
		}{
			{"site add json-site --uid-range 910000-910999 --gid-range 910000-910999 --json", siteFields},
			{"site update json-site --uid-range 910000-911999 --json", siteFields},
			{"user add dora --email dora@psu.edu --home psc --identity https://cilogon.org=http://cilogon.org/serverA/users/77 --json", userFields},
			{"user update dora --role coordinator --json", userFields},
			{"project add json-lab --json", projectFields},
			{"project add-member json-lab dora --json", projectFields},
			{"grant add --project json-lab --resource rutgers/krios-g4 --actions instrument.view,storage.read --json", grantFields},
			{"account pin --user rhea --site psc --uid 301234 --username rsmith --json", accountFields},
		} {
			var v any
			tf.mustJSON(t, follower, &v, strings.Fields(w.args)...)
			checkFields(t, "labfed "+w.args, v, w.fields)
		}
	})
}

// TestCLIBadInput sends bad requests through the command line, to the
// leader and to a follower (which forwards writes), and checks each fails
// with a one-line message and leaves the directory as it was.
func TestCLIBadInput(t *testing.T) {
	tf := startTestFederation(t)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name string
		args string
		want string
		// insecureOff leaves out --dev-insecure.
		insecureOff bool
	}{
		{name: "bad site name", args: "site add Bad --uid-range 500000-500999 --gid-range 500000-500999", want: `site name "Bad" is not valid`},
		{name: "inverted uid range", args: "site add newsite --uid-range 500999-500000 --gid-range 500000-500999", want: "uid range 500999-500000 is inverted"},
		{name: "uid range of system ids", args: "site add newsite --uid-range 1-999 --gid-range 500000-500999", want: "uid range 1-999 is outside"},
		{name: "malformed gid range", args: "site add newsite --uid-range 500000-500999 --gid-range 500000", want: `gid range "500000" is not LO-HI`},
		{name: "duplicate site", args: "site add psc --uid-range 500000-500999 --gid-range 500000-500999", want: `site "psc" already exists`},
		{name: "shrinking a site range", args: "site update psc --uid-range 300000-300010", want: "ranges only grow"},
		{name: "update unknown site", args: "site update nowhere --uid-range 300000-310000", want: `site "nowhere" is not in the directory`},
		{name: "update site with nothing", args: "site update psc", want: "nothing to update for site psc"},
		{name: "unknown home site", args: "user add zed --email zed@example.org --home nowhere", want: `home site "nowhere" of user zed is not in the directory`},
		{name: "duplicate user", args: "user add alice --email alice2@example.org --home rutgers", want: `user "alice" already exists`},
		{name: "bad user name", args: "user add Zed --email zed@example.org --home rutgers", want: `user name "Zed" is not valid`},
		{name: "bad email", args: "user add zed --email not-an-email --home rutgers", want: `email "not-an-email" is not a plain address`},
		{name: "email of another user", args: "user add zed --email alice@rutgers.edu --home rutgers", want: "email alice@rutgers.edu already belongs to user alice"},
		{name: "bad identity", args: "user add zed --email zed@example.org --home rutgers --identity cilogon", want: `identity "cilogon" is not ISSUER=SUBJECT`},
		{name: "identity of another user", args: "user add zed --email zed@example.org --home rutgers --identity https://cilogon.org=http://cilogon.org/serverA/users/1001", want: "already belongs to user alice"},
		{name: "unknown role", args: "user add zed --email zed@example.org --home rutgers --role admin", want: `role "admin" is unknown`},
		{name: "show unknown user", args: "user show nobody --json", want: `user "nobody" is not in the directory`},
		{name: "remove unknown user", args: "user remove nobody", want: `user "nobody" is not in the directory`},
		{name: "unknown action", args: "grant add --user alice --resource rutgers/krios-g4 --actions instrument.fly", want: `action "instrument.fly" is unknown`},
		{name: "grant to unknown user", args: "grant add --user nobody --resource rutgers/krios-g4 --actions instrument.view", want: `user "nobody" is not in the directory`},
		{name: "grant to unknown project", args: "grant add --project nolab --resource rutgers/krios-g4 --actions instrument.view", want: `project "nolab" is not in the directory`},
		{name: "grant on unknown site", args: "grant add --user alice --resource nowhere/krios --actions instrument.view", want: `site "nowhere" is not in the directory`},
		{name: "grant with until in the past", args: "grant add --user alice --resource rutgers/krios-g4 --actions instrument.view --until " + past, want: "which has already passed"},
		{name: "grant with inverted window", args: "grant add --user bob --resource rutgers/krios-g4 --actions instrument.view --from 2099-02-01T00:00:00Z --until 2099-01-01T00:00:00Z", want: "grant window is inverted"},
		{name: "grant with both user and project", args: "grant add --user alice --project cryo-lab --resource rutgers/krios-g4 --actions instrument.view", want: "give either --user or --project, not both"},
		{name: "grant to nobody", args: "grant add --resource rutgers/krios-g4 --actions instrument.view", want: "give --user USER or --project PROJECT"},
		{name: "overlapping grant", args: "grant add --user alice --resource rutgers/krios-g4 --actions instrument.operate", want: "already gives user:alice instrument.operate on rutgers/krios-g4 in an overlapping window"},
		{name: "revoke unknown grant", args: "grant revoke g-999", want: "grant g-999 does not exist"},
		{name: "revoke malformed grant id", args: "grant revoke 42", want: `grant id "42" is not of the form g-N`},
		{name: "pin a uid already held", args: "account pin --user rhea --site psc --uid 300500", want: "uid 300500 at site psc is already held by user:bob"},
		{name: "pin a system uid", args: "account pin --user rhea --site psc --uid 500", want: "uid 500 cannot be pinned"},
		{name: "pin over an allocated account", args: "account pin --user alice --site rutgers --uid 205000", want: "user alice already has account"},
		// 2^32+305000 must not wrap around to the free uid 305000.
		{name: "pin a uid beyond 32 bits", args: "account pin --user rhea --site psc --uid 4295272296", want: "--uid 4295272296 cannot be pinned"},
		{name: "pin a gid beyond 32 bits", args: "account pin --user rhea --site psc --uid 305000 --gid 4295272296", want: "--gid 4295272296 cannot be pinned"},
		{name: "pin a non-numeric uid", args: "account pin --user rhea --site psc --uid lots", want: `invalid value "lots" for flag -uid`},
		{name: "bad RFC3339 time", args: "grant add --user bob --resource rutgers/krios-g4 --actions instrument.view --from yesterday", want: `--from "yesterday" is not an RFC 3339 time`},
		{name: "bad RFC3339 until", args: "grant add --user bob --resource rutgers/krios-g4 --actions instrument.view --until 2099-01-01", want: `--until "2099-01-01" is not an RFC 3339 time`},
		{name: "missing positional arg", args: "site add --uid-range 500000-500999 --gid-range 500000-500999", want: "missing site NAME; usage: labfed site add NAME"},
		{name: "missing user name", args: "user show --json", want: "missing user NAME; usage: labfed user show NAME"},
		{name: "too many positional args", args: "site add a b --uid-range 500000-500999 --gid-range 500000-500999", want: "too many arguments; usage: labfed site add NAME"},
		{name: "unexpected positional arg", args: "user list extra --json", want: `unexpected argument "extra"; see labfed user list --help`},
		{name: "project member usage", args: "project add-member cryo-lab", want: "usage: labfed project add-member PROJECT USER"},
		// A flag missing its value must not take the "--" that
		// interspersed puts before the positional arguments.
		{name: "flag without its value", args: "grant revoke g-1 --reason", want: "flag needs an argument: -reason"},
		{name: "range flag without its value", args: "site add newsite --gid-range 500000-500999 --uid-range", want: "flag needs an argument: -uid-range"},
		{name: "unknown flag", args: "site list --bogus --json", want: "flag provided but not defined: -bogus"},
		{name: "missing required flag", args: "account show --user alice --json", want: `Required flag "site" not set`},
		{name: "unknown command", args: "sites list", want: "sites"},
		{name: "no --dev-insecure", args: "user list --json", want: "no federation CA given", insecureOff: true},
	}
	leader := tf.leader(t)
	for _, target := range []string{"leader", "follower"} {
		for _, test := range tests {
			t.Run(target+"/"+test.name, func(t *testing.T) {
				node := leader
				if target == "follower" {
					node = tf.followers(leader)[0]
				}
				// Ask whichever node leads now: a failed command changes
				// no replica, so a change of leader does not matter.
				before := tf.status(t, tf.leader(t))
				args := []string{"--addr", tf.f.nodes[node].Addr(), "--timeout", "10s"}
				if !test.insecureOff {
					args = append(args, "--dev-insecure")
				}
				args = append(args, strings.Fields(test.args)...)
				stdout, _, err := runCLI(args...)
				if err == nil {
					t.Fatalf("labfed %s = success (stdout %q), want an error containing %q", test.args, stdout, test.want)
				}
				line := errorLine(err)
				if !strings.Contains(line, test.want) {
					t.Errorf("errorLine(labfed %s) = %q, want it to contain %q", test.args, line, test.want)
				}
				if strings.ContainsAny(line, "\r\n") || strings.TrimSpace(line) == "" {
					t.Errorf("errorLine(labfed %s) = %q, want one non-empty line", test.args, line)
				}
				if s := strings.TrimSpace(stdout); strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[") {
					t.Errorf("labfed %s failed but printed JSON %q on stdout, want none", test.args, stdout)
				}
				after := tf.status(t, tf.leader(t))
				if after.StateHash != before.StateHash {
					t.Errorf("labfed %s: leader state_hash = %s, want %s (unchanged)", test.args, after.StateHash, before.StateHash)
				}
			})
		}
	}
}

func TestErrorLine(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("site name \"Bad\" is not valid"), "site name \"Bad\" is not valid"},
		{"multi-line", errors.New("c.yaml: unmarshal errors:\n  line 6: field x not found"), "c.yaml: unmarshal errors:   line 6: field x not found"},
		{"status", status.Error(codes.NotFound, "user \"x\" is not in the directory"), "user \"x\" is not in the directory"},
		{"multi-line status", status.Error(codes.Internal, "first\nsecond"), "first second"},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), "connection refused; is the broker running? check --addr or LABFED_ADDR"},
		{"unavailable, retry", status.Error(codes.Unavailable, "no leader is elected right now; retry in a few seconds"), "no leader is elected right now; retry in a few seconds"},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "the broker did not answer in time; check that it is running and has a leader (labfed raft peers)"},
	}
	for _, test := range tests {
		if got := errorLine(test.err); got != test.want {
			t.Errorf("errorLine(%s: %q) = %q, want %q", test.name, test.err, got, test.want)
		}
	}
}

// TestCLIUnreachableBroker checks that a client pointed at no broker fails
// in time with one line telling the user what to check.
func TestCLIUnreachableBroker(t *testing.T) {
	isolateEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, args := range []string{"user list --json", "user add zed --email zed@example.org --home rutgers"} {
		start := time.Now()
		_, _, err := runCLI(append([]string{"--addr", addr, "--dev-insecure", "--timeout", "1s"}, strings.Fields(args)...)...)
		if err == nil {
			t.Fatalf("labfed --addr %s %s = success, want an error", addr, args)
		}
		line := errorLine(err)
		if !strings.Contains(line, "broker") || strings.Contains(line, "\n") {
			t.Errorf("errorLine(labfed --addr %s %s) = %q, want one line about the broker", addr, args, line)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("labfed --addr %s --timeout 1s %s took %v, want about 1s", addr, args, d)
		}
	}
}

// TestCLIForwarding checks that any node takes writes and linearizable
// reads (a follower forwards them to the leader) and that --stale reads are
// answered by the contacted node from its own state.
func TestCLIForwarding(t *testing.T) {
	tf := startTestFederation(t)
	leader := tf.leader(t)
	fs := tf.followers(leader)
	f1, f2 := fs[0], fs[1]

	var u userJSON
	tf.mustJSON(t, f1, &u, "user", "add", "fwd", "--email", "fwd@example.org", "--home", "psc", "--json")
	if u.Name != "fwd" || u.Home != "psc" || u.Status != "active" {
		t.Errorf("user add fwd through follower %d = %+v, want an active user fwd at psc", f1, u)
	}
	// Linearizable reads through either follower see the write at once.
	for _, n := range []int{f1, f2} {
		var got userJSON
		tf.mustJSON(t, n, &got, "user", "show", "fwd", "--json")
		if got.Email != "fwd@example.org" {
			t.Errorf("user show fwd (node %d) = %+v, want fwd@example.org", n, got)
		}
	}
	var g grantJSON
	tf.mustJSON(t, f2, &g, "grant", "add", "--user", "fwd", "--resource", "psc/bridges2-gpu", "--actions", "compute.create", "--json")
	var acc accountJSON
	tf.mustJSON(t, f1, &acc, "account", "show", "--user", "fwd", "--site", "psc", "--json")
	if acc.UID < 300000 || acc.UID > 309999 || acc.Username != "fwd" {
		t.Errorf("account show --user fwd --site psc (node %d) = %+v, want a uid in psc's range 300000-309999", f1, acc)
	}

	// Stale reads on the followers catch up with the writes soon.
	for _, n := range []int{f1, f2} {
		waitFor(t, 5*time.Second, fmt.Sprintf("a --stale read on follower %d sees grant %s", n, g.ID), func() error {
			var gs []grantJSON
			out, _, err := tf.cli(n, "grant", "list", "--user", "fwd", "--stale", "--json")
			if err != nil {
				return err
			}
			if err := decodeOne(out, &gs); err != nil {
				return err
			}
			if len(gs) != 1 || gs[0].ID != g.ID {
				return fmt.Errorf("grant list --user fwd --stale = %+v, want [%s]", gs, g.ID)
			}
			return nil
		})
	}

	// With the leader and the other follower gone, f1 has no quorum: it
	// still answers --stale reads from its own state, but not linearizable
	// ones.
	for _, n := range []int{leader, f2} {
		if err := tf.f.nodes[n].Close(); err != nil {
			t.Logf("close node %d: %v", n, err)
		}
	}
	var stale userJSON
	tf.mustJSON(t, f1, &stale, "user", "show", "fwd", "--stale", "--json")
	if stale.Name != "fwd" {
		t.Errorf("user show fwd --stale on the last node = %+v, want user fwd", stale)
	}
	var grants []grantJSON
	tf.mustJSON(t, f1, &grants, "grant", "list", "--user", "fwd", "--stale", "--json")
	if len(grants) != 1 || grants[0].ID != g.ID {
		t.Errorf("grant list --user fwd --stale on the last node = %+v, want [%s]", grants, g.ID)
	}
	_, _, err := runCLI("--addr", tf.f.nodes[f1].Addr(), "--dev-insecure", "--timeout", "2s", "user", "show", "fwd", "--json")
	if err == nil {
		t.Errorf("user show fwd (linearizable) on a node without quorum = success, want an error")
	} else if line := errorLine(err); strings.Contains(line, "\n") {
		t.Errorf("errorLine(user show fwd without quorum) = %q, want one line", line)
	}
}

// waitFor retries fn until it succeeds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, d, errorLine(err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestInterspersed checks that flags may follow positional arguments, as
// the documentation writes them.
func TestInterspersed(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"labfed site add psc --uid-range 1-2 --gid-range 3-4", "labfed site add --uid-range 1-2 --gid-range 3-4 -- psc"},
		{"labfed site add --uid-range 1-2 psc --gid-range 3-4", "labfed site add --uid-range 1-2 --gid-range 3-4 -- psc"},
		{"labfed --addr 127.0.0.1:1 --dev-insecure site add psc --uid-range 1-2", "labfed --addr 127.0.0.1:1 --dev-insecure site add --uid-range 1-2 -- psc"},
		{"labfed site add psc --uid-range=1-2 --json", "labfed site add --uid-range=1-2 --json -- psc"},
		{"labfed user show alice --json", "labfed user show --json -- alice"},
		{"labfed user show --json alice", "labfed user show --json -- alice"},
		{"labfed project add-member cryo-lab dora --json", "labfed project add-member --json -- cryo-lab dora"},
		{"labfed grant revoke g-1 --reason -x", "labfed grant revoke --reason -x -- g-1"},
		{"labfed user add dora --identity a=b --role researcher --email d@e.f --home psc", "labfed user add --identity a=b --role researcher --email d@e.f --home psc -- dora"},
		{"labfed user list --json", "labfed user list --json"},
		// Global flags after the command move to the front.
		{"labfed user list --addr 127.0.0.1:9 --json", "labfed --addr 127.0.0.1:9 user list --json"},
		{"labfed user show alice --dev-insecure --timeout=2s", "labfed --dev-insecure --timeout=2s user show -- alice"},
		{"labfed site list", "labfed site list"},
		{"labfed site add psc --help", "labfed site add psc --help"},
		{"labfed site add psc -h", "labfed site add psc -h"},
		{"labfed site add --uid-range 1-2 -- psc", "labfed site add --uid-range 1-2 -- psc"},
		{"labfed", "labfed"},
		// A flag missing its value stays last, for the parser to report.
		{"labfed grant revoke g-1 --reason", "labfed grant revoke --reason"},
		{"labfed site add psc --gid-range 1-2 --uid-range", "labfed site add --gid-range 1-2 --uid-range"},
	}
	app := newApp(io.Discard, io.Discard)
	for _, test := range tests {
		got := strings.Join(interspersed(app, strings.Fields(test.in)), " ")
		if got != test.want {
			t.Errorf("interspersed(%q) = %q, want %q", test.in, got, test.want)
		}
	}
}

// TestCLIFlagsAfterArguments runs documented command lines whose flags
// follow the positional arguments against a federation.
func TestCLIFlagsAfterArguments(t *testing.T) {
	tf := startTestFederation(t)
	leader := tf.leader(t)
	follower := tf.followers(leader)[0]

	var s siteJSON
	tf.mustJSON(t, follower, &s, "site", "add", "lab-x", "--uid-range", "800000-800999", "--gid-range", "810000-810999", "--json")
	if s.Name != "lab-x" || s.UIDRange != "800000-800999" || s.GIDRange != "810000-810999" {
		t.Errorf("site add lab-x --uid-range 800000-800999 --gid-range 810000-810999 = %+v, want those ranges", s)
	}
	var u userJSON
	tf.mustJSON(t, follower, &u, "user", "add", "dora", "--email", "dora@psu.edu", "--home", "lab-x",
		"--identity", "https://cilogon.org=http://cilogon.org/serverA/users/77", "--role", "researcher", "--json")
	if u.Home != "lab-x" || len(u.Identities) != 1 || u.Identities[0].Subject != "http://cilogon.org/serverA/users/77" {
		t.Errorf("user add dora ... = %+v, want home lab-x and one identity", u)
	}
	var p projectJSON
	tf.mustJSON(t, follower, &p, "project", "add-member", "cryo-lab", "dora", "--json")
	if !slices.Contains(p.Members, "dora") {
		t.Errorf("project add-member cryo-lab dora --json = %+v, want dora among the members", p)
	}
	var g grantJSON
	tf.mustJSON(t, follower, &g, "grant", "add", "--user", "dora", "--resource", "lab-x/scope", "--actions", "instrument.view", "--json")
	var r grantJSON
	tf.mustJSON(t, follower, &r, "grant", "revoke", g.ID, "--reason", "session over", "--json")
	if r.ID != g.ID || r.Status != "revoked" || r.Reason != "session over" {
		t.Errorf("grant revoke %s --reason %q = %+v, want it revoked with that reason", g.ID, "session over", r)
	}
	var got userJSON
	tf.mustJSON(t, follower, &got, "user", "show", "dora", "--stale", "--json")
	if got.Name != "dora" {
		t.Errorf("user show dora --stale --json = %+v, want dora", got)
	}
}

func TestUnknownCommand(t *testing.T) {
	tests := []struct{ args, want string }{
		{"labfed foo", `unknown command "foo"; see labfed --help`},
		{"labfed site foo", `unknown command "foo" for labfed site`},
	}
	for _, test := range tests {
		app := newApp(io.Discard, io.Discard)
		err := app.Run(interspersed(app, strings.Fields(test.args)))
		if err == nil || !strings.Contains(errorLine(err), test.want) {
			t.Errorf("run %q = %v, want an error containing %q", test.args, err, test.want)
		}
	}
}
