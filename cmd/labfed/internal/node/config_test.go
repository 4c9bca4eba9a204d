package node

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/labfed/labfed/broker"
)

// repoRoot is the repository root relative to this package's directory,
// where go test runs.
const repoRoot = "../../../.."

// TestLoadConfigExamples loads every example config in testdata/config:
// the examples are documentation, so they must stay loadable.
func TestLoadConfigExamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(repoRoot, "testdata", "config", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob(filepath.Join(repoRoot, "testdata", "config", "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, more...)
	if len(paths) == 0 {
		t.Fatalf("no example configs under %s/testdata/config", repoRoot)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			c, err := LoadConfig(path)
			if err != nil {
				t.Fatalf("LoadConfig(%q) = %v, want no error", path, err)
			}
			checkConfigInvariants(t, path, c)
		})
	}
}

// checkConfigInvariants checks what validate promises of every config it
// accepts: a node name, a data_dir, HOST:PORT listeners, filled-in
// advertise addresses and both ranges parsed or neither.
func checkConfigInvariants(t testing.TB, name string, c *Config) {
	t.Helper()
	if err := broker.ValidateName("node", c.Node); err != nil {
		t.Errorf("LoadConfig(%q).Node = %q, want a valid node name: %v", name, c.Node, err)
	}
	if c.DataDir == "" {
		t.Errorf("LoadConfig(%q).DataDir = \"\", want a directory", name)
	}
	for _, a := range []struct{ field, got string }{
		{"Listen.API", c.Listen.API}, {"Listen.Raft", c.Listen.Raft},
		{"Advertise.API", c.Advertise.API}, {"Advertise.Raft", c.Advertise.Raft},
	} {
		if !regexp.MustCompile(`^[^\s]*:[0-9]+$`).MatchString(a.got) {
			t.Errorf("LoadConfig(%q).%s = %q, want HOST:PORT", name, a.field, a.got)
		}
	}
	if (c.uidRange == nil) != (c.gidRange == nil) {
		t.Errorf("LoadConfig(%q): uid range %v, gid range %v, want both or neither", name, c.uidRange, c.gidRange)
	}
	if c.UIDRange != "" && c.uidRange == nil {
		t.Errorf("LoadConfig(%q): uid_range %q was not parsed", name, c.UIDRange)
	}
}

func TestLoadConfigRutgers(t *testing.T) {
	path := filepath.Join(repoRoot, "testdata", "config", "rutgers.yaml")
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig(%q) = %v, want no error", path, err)
	}
	for _, f := range []struct{ field, got, want string }{
		{"Site", c.Site, "rutgers"},
		{"Node", c.Node, "rutgers-1"},
		{"DataDir", c.DataDir, ".demo/rutgers-1"},
		{"Listen.API", c.Listen.API, "127.0.0.1:7100"},
		{"Listen.Raft", c.Listen.Raft, "127.0.0.1:7101"},
		// advertise is commented out, so it defaults to listen.
		{"Advertise.API", c.Advertise.API, "127.0.0.1:7100"},
		{"Advertise.Raft", c.Advertise.Raft, "127.0.0.1:7101"},
		{"UIDRange", c.UIDRange, "200000-209999"},
		{"uidRange", fmt.Sprint(c.uidRange), "200000-209999"},
		{"gidRange", fmt.Sprint(c.gidRange), "200000-209999"},
		{"Raft.SnapshotThreshold", fmt.Sprint(c.Raft.SnapshotThreshold), "8192"},
		{"Raft.TrailingLogs", fmt.Sprint(c.Raft.TrailingLogs), "10240"},
	} {
		if f.got != f.want {
			t.Errorf("LoadConfig(%q).%s = %q, want %q", path, f.field, f.got, f.want)
		}
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("min.yaml", []byte("site: psc\ndata_dir: /var/lib/labfed\nlisten: {api: '127.0.0.1:7200', raft: '127.0.0.1:7201'}\n"))
	if err != nil {
		t.Fatalf("ParseConfig(minimal) = %v, want no error", err)
	}
	checkConfigInvariants(t, "min.yaml", c)
	for _, f := range []struct{ field, got, want string }{
		{"Node", c.Node, "psc"},
		{"Advertise.API", c.Advertise.API, "127.0.0.1:7200"},
		{"Advertise.Raft", c.Advertise.Raft, "127.0.0.1:7201"},
		{"uidRange", fmt.Sprint(c.uidRange), "<nil>"},
		{"Raft.SnapshotThreshold", fmt.Sprint(c.Raft.SnapshotThreshold), "0"},
	} {
		if f.got != f.want {
			t.Errorf("ParseConfig(minimal).%s = %q, want %q", f.field, f.got, f.want)
		}
	}

	c, err = ParseConfig("adv.yaml", []byte("site: psc\nnode: psc-2\ndata_dir: d\nlisten: {api: '127.0.0.1:7200', raft: '127.0.0.1:7201'}\nadvertise: {api: 'broker.psc.edu:7200', raft: 'broker.psc.edu:7201'}\n"))
	if err != nil {
		t.Fatalf("ParseConfig(with advertise) = %v, want no error", err)
	}
	if c.Advertise.API != "broker.psc.edu:7200" || c.Advertise.Raft != "broker.psc.edu:7201" {
		t.Errorf("ParseConfig(with advertise).Advertise = %+v, want the given addresses", c.Advertise)
	}
}

// TestReadmeConfigReference decodes the configuration reference in
// README.md, so the documented fields cannot drift from the strict decoder.
func TestReadmeConfigReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "### Configuration reference")
	if !ok {
		t.Skip("README.md has no configuration reference section")
	}
	_, block, ok := strings.Cut(after, "```yaml\n")
	if !ok {
		t.Fatal("README.md configuration reference has no ```yaml block")
	}
	block, _, _ = strings.Cut(block, "```")
	c, err := ParseConfig("README.md", []byte(block))
	if err != nil {
		t.Fatalf("ParseConfig(README configuration reference) = %v, want no error", err)
	}
	checkConfigInvariants(t, "README.md", c)
}

func TestLoadConfigErrors(t *testing.T) {
	const (
		site    = "site: rutgers\n"
		dataDir = "data_dir: /var/lib/labfed\n"
		listen  = "listen:\n  api: 127.0.0.1:7100\n  raft: 127.0.0.1:7101\n"
		good    = site + dataDir + listen // lines 1-5
	)
	tests := []struct {
		name string
		yaml string
		// want are substrings of the error, after the file name.
		want []string
		// line, when not zero, must be named as "line N": the error
		// comes from YAML decoding and points at the offending line.
		line int
	}{
		{name: "unknown field", yaml: good + "sitee: rutgers\n", want: []string{"field sitee not found"}, line: 6},
		{name: "unknown nested field", yaml: good + "raft:\n  snapshot_treshold: 64\n", want: []string{"field snapshot_treshold not found"}, line: 7},
		{name: "wrong type", yaml: good + "raft:\n  snapshot_threshold: lots\n", want: []string{"cannot unmarshal", "lots", "uint64"}, line: 7},
		{name: "scalar for a section", yaml: good + "raft: 64\n", want: []string{"cannot unmarshal"}, line: 6},
		{name: "list for the file", yaml: "- site: rutgers\n", want: []string{"cannot unmarshal !!seq"}, line: 1},
		{name: "duplicate key", yaml: good + "site: psc\n", want: []string{`mapping key "site" already defined at line 1`}, line: 6},
		{name: "syntax error", yaml: site + dataDir + "  listen: {}\n", want: []string{"mapping values are not allowed"}, line: 3},
		{name: "tab indentation", yaml: site + "listen:\n\tapi: 127.0.0.1:7100\n", want: []string{"tab"}, line: 3},
		{name: "empty file", yaml: "", want: []string{"the file is empty"}},
		{name: "only comments", yaml: "# site: rutgers\n", want: []string{"the file is empty"}},
		{name: "missing site", yaml: dataDir + listen, want: []string{"site name is empty"}},
		{name: "bad site name", yaml: "site: Rutgers\n" + dataDir + listen, want: []string{`site name "Rutgers" is not valid`}},
		{name: "bad node name", yaml: good + "node: rutgers_1\n", want: []string{`node name "rutgers_1" is not valid`}},
		{name: "missing data_dir", yaml: site + listen, want: []string{"data_dir is required"}},
		{name: "missing listen section", yaml: site + dataDir, want: []string{`listen.api "" is not HOST:PORT`}},
		{name: "missing listen.raft", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:7100\n", want: []string{`listen.raft "" is not HOST:PORT`}},
		{name: "listen address without port", yaml: site + dataDir + "listen:\n  api: 127.0.0.1\n  raft: 127.0.0.1:7101\n", want: []string{`listen.api "127.0.0.1" is not HOST:PORT`}},
		{name: "listen address with a path", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:7100\n  raft: http://127.0.0.1:7101/\n", want: []string{`listen.raft "http://127.0.0.1:7101/" is not HOST:PORT`}},
		{name: "bad uid_range", yaml: good + "uid_range: 200000\ngid_range: 200000-209999\n", want: []string{"uid_range:", `uid range "200000" is not LO-HI`}},
		{name: "non-numeric gid_range", yaml: good + "uid_range: 200000-209999\ngid_range: lo-hi\n", want: []string{"gid_range:", `gid range "lo-hi" is not LO-HI`}},
		{name: "inverted uid_range", yaml: good + "uid_range: 209999-200000\ngid_range: 200000-209999\n", want: []string{"uid_range:", "uid range 209999-200000 is inverted"}},
		{name: "uid_range of system ids", yaml: good + "uid_range: 1-999\ngid_range: 200000-209999\n", want: []string{"uid_range:", "outside 1000-"}},
		{name: "uid_range without gid_range", yaml: good + "uid_range: 200000-209999\n", want: []string{"gid_range:", `gid range "" is not LO-HI`}},
		{name: "gid_range without uid_range", yaml: good + "gid_range: 200000-209999\n", want: []string{"uid_range:", `uid range "" is not LO-HI`}},
		{name: "oidc issuer over http", yaml: good + "oidc:\n  issuers:\n    - {url: http://cilogon.org, client_ids: [x]}\n", want: []string{`oidc.issuers[0].url "http://cilogon.org" must be an https URL`}},
		{name: "oidc issuer without client ids", yaml: good + "oidc:\n  issuers:\n    - {url: https://cilogon.org}\n", want: []string{"oidc.issuers[0] (https://cilogon.org) needs client_ids"}},
		{name: "oidc unknown field", yaml: good + "oidc:\n  issuers:\n    - {url: https://cilogon.org, client_id: x}\n", want: []string{"field client_id not found"}, line: 8},
		{name: "session_ttl too long", yaml: good + "oidc:\n  session_ttl: 72h\n", want: []string{"oidc.session_ttl 72h0m0s is out of range"}},
		{name: "session_ttl not a duration", yaml: good + "oidc:\n  session_ttl: forever\n", want: []string{"cannot unmarshal", "forever"}, line: 7},
		{name: "bootstrap coordinator without email", yaml: good + "bootstrap:\n  coordinator: {name: rhea}\n", want: []string{"bootstrap.coordinator.email"}},
		{name: "bootstrap coordinator bad name", yaml: good + "bootstrap:\n  coordinator: {name: Rhea!, email: rhea@rutgers.edu}\n", want: []string{"bootstrap.coordinator.name"}},
		{name: "bootstrap coordinator bad identity", yaml: good + "bootstrap:\n  coordinator: {name: rhea, email: rhea@rutgers.edu, identities: [nonsense]}\n", want: []string{"bootstrap.coordinator.identities"}},
		{name: "bootstrap credential_ttl too short", yaml: good + "bootstrap:\n  credential_ttl: 1s\n", want: []string{"bootstrap.credential_ttl 1s is out of range"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), strings.ReplaceAll(test.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(test.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig(%q) = %+v, nil; want an error containing %q", test.yaml, c, test.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path+": ") {
				t.Errorf("LoadConfig(%q) = %q, want it to start with the file name %q", test.yaml, msg, path+": ")
			}
			for _, w := range test.want {
				if !strings.Contains(msg, w) {
					t.Errorf("LoadConfig(%q) = %q, want it to contain %q", test.yaml, msg, w)
				}
			}
			if test.line != 0 {
				if w := fmt.Sprintf("line %d", test.line); !strings.Contains(msg, w) {
					t.Errorf("LoadConfig(%q) = %q, want it to name %q", test.yaml, msg, w)
				}
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadConfig(%q) = %v, want an error naming the file", path, err)
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:7100", true},
		{"127.8.9.10:7100", true},
		{"localhost:7100", true},
		{"[::1]:7100", true},
		{"0.0.0.0:7100", false},
		{":7100", false},
		{"[::]:7100", false},
		{"10.0.0.1:7100", false},
		{"broker.rutgers.edu:7100", false},
		{"127.0.0.1", false},
		{"", false},
	}
	for _, test := range tests {
		if got := IsLoopback(test.addr); got != test.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", test.addr, got, test.want)
		}
	}
}
