package node

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

var hostPortRE = regexp.MustCompile(`^[^\s]*:[0-9]+$`)

// checkConfigInvariants checks what validate promises of every config it
// accepts: a node name, a display name, a data_dir, HOST:PORT listeners,
// filled-in advertise addresses, a gossip label, both ranges parsed or
// neither, and offers with valid, distinct names and the required fields.
func checkConfigInvariants(t testing.TB, name string, c *Config) {
	t.Helper()
	if err := broker.ValidateName("node", c.Node); err != nil {
		t.Errorf("LoadConfig(%q).Node = %q, want a valid node name: %v", name, c.Node, err)
	}
	if c.DisplayName == "" {
		t.Errorf("LoadConfig(%q).DisplayName = \"\", want the site name at least", name)
	}
	if c.DataDir == "" {
		t.Errorf("LoadConfig(%q).DataDir = \"\", want a directory", name)
	}
	for _, a := range []struct{ field, got string }{
		{"Listen.API", c.Listen.API}, {"Listen.Raft", c.Listen.Raft}, {"Listen.Gossip", c.Listen.Gossip}, {"Listen.HTTP", c.Listen.HTTP},
		{"Advertise.API", c.Advertise.API}, {"Advertise.Raft", c.Advertise.Raft}, {"Advertise.Gossip", c.Advertise.Gossip}, {"Advertise.HTTP", c.Advertise.HTTP},
	} {
		if !hostPortRE.MatchString(a.got) {
			t.Errorf("LoadConfig(%q).%s = %q, want HOST:PORT", name, a.field, a.got)
		}
	}
	if c.Gossip.Label == "" {
		t.Errorf("LoadConfig(%q).Gossip.Label = \"\", want %q by default", name, DefaultGossipLabel)
	}
	if (c.uidRange == nil) != (c.gidRange == nil) {
		t.Errorf("LoadConfig(%q): uid range %v, gid range %v, want both or neither", name, c.uidRange, c.gidRange)
	}
	if c.UIDRange != "" && c.uidRange == nil {
		t.Errorf("LoadConfig(%q): uid_range %q was not parsed", name, c.UIDRange)
	}
	seen := map[string]bool{}
	checkName := func(what, n string) {
		if err := broker.ValidateName(what, n); err != nil || seen[n] {
			t.Errorf("LoadConfig(%q): %s name %q is invalid (%v) or taken twice", name, what, n, err)
		}
		seen[n] = true
	}
	for _, in := range c.Instruments {
		checkName("instrument", in.Name)
		if in.Type == "" || in.Model == "" || in.Controller == "" || !filepath.IsAbs(in.RawData) {
			t.Errorf("LoadConfig(%q): instrument %+v lacks a required field", name, in)
		}
		if in.Status != StatusAvailable && in.Status != StatusMaintenance && in.Status != StatusOffline {
			t.Errorf("LoadConfig(%q): instrument %s status %q, want a config status", name, in.Name, in.Status)
		}
	}
	for _, ct := range c.Compute {
		checkName("compute", ct.Name)
		if ct.GPUs < 0 || (ct.Kind == KindSlurm) != (ct.Slurm != nil) || (ct.Slurm != nil && ct.Slurm.Partition == "") {
			t.Errorf("LoadConfig(%q): compute target %+v is inconsistent", name, ct)
		}
	}
	for _, st := range c.Storage {
		checkName("storage", st.Name)
		if !filepath.IsAbs(st.Path) {
			t.Errorf("LoadConfig(%q): storage %s path %q is not absolute", name, st.Name, st.Path)
		}
	}
}

// TestExampleConfigFacts checks what each example config says, so that the
// examples other documents and demos lean on keep saying it.
func TestExampleConfigFacts(t *testing.T) {
	type fact struct{ field, got, want string }
	tests := map[string]func(c *Config) []fact{
		"rutgers.yaml": func(c *Config) []fact {
			return []fact{
				{"Site", c.Site, "rutgers"},
				{"DisplayName", c.DisplayName, "Rutgers University"},
				{"Node", c.Node, "rutgers-1"},
				{"DataDir", c.DataDir, ".demo/rutgers-1"},
				{"Listen.API", c.Listen.API, "127.0.0.1:7100"},
				{"Listen.Raft", c.Listen.Raft, "127.0.0.1:7101"},
				{"Listen.Gossip", c.Listen.Gossip, "127.0.0.1:7102"},
				// listen.http is commented out: the api port + 3.
				{"Listen.HTTP", c.Listen.HTTP, "127.0.0.1:7103"},
				// advertise is commented out, so it defaults to listen.
				{"Advertise.API", c.Advertise.API, "127.0.0.1:7100"},
				{"Advertise.Raft", c.Advertise.Raft, "127.0.0.1:7101"},
				{"Advertise.Gossip", c.Advertise.Gossip, "127.0.0.1:7102"},
				{"Advertise.HTTP", c.Advertise.HTTP, "127.0.0.1:7103"},
				{"UIDRange", c.UIDRange, "200000-209999"},
				{"uidRange", fmt.Sprint(c.uidRange), "200000-209999"},
				{"gidRange", fmt.Sprint(c.gidRange), "200000-209999"},
				{"Raft.SnapshotThreshold", fmt.Sprint(c.Raft.SnapshotThreshold), "8192"},
				{"Raft.TrailingLogs", fmt.Sprint(c.Raft.TrailingLogs), "10240"},
				{"Bootstrap.Coordinator.Name", c.Bootstrap.Coordinator.Name, "rhea"},
				{"coordIDs", fmt.Sprint(len(c.coordIDs)), "1"},
				{"Gossip", fmt.Sprintf("%+v", c.Gossip), "{Keyring: Label:labfed Join:[]}"},
				{"Instruments", fmt.Sprintf("%+v", c.Instruments), "[" +
					"{Name:krios-g4 Type:TEM Model:Titan Krios G4 Controller:10.20.0.5:5900 RawData:/data/krios-g4/raw Status:available} " +
					"{Name:aquilos Type:cryo-FIB Model:Aquilos 2 Controller:10.20.0.6:5900 RawData:/data/aquilos/raw Status:available}]"},
				{"Compute", fmt.Sprintf("%+v", c.Compute), "[{Name:gpu-ws1 Kind:local GPUs:4 Software:map[cryosparc:4.6.2] Slurm:<nil>}]"},
				{"Storage", fmt.Sprintf("%+v", c.Storage), "[{Name:raw Path:/data/krios-g4/raw ReadOnly:false}]"},
			}
		},
		"psc.yaml": func(c *Config) []fact {
			f := []fact{
				{"Site", c.Site, "psc"},
				{"DisplayName", c.DisplayName, "Pittsburgh Supercomputing Center"},
				{"Node", c.Node, "psc"},
				{"Listen.API", c.Listen.API, "127.0.0.1:7200"},
				{"Listen.Raft", c.Listen.Raft, "127.0.0.1:7201"},
				// listen.gossip is not given: the api port + 2.
				{"Listen.Gossip", c.Listen.Gossip, "127.0.0.1:7202"},
				{"Advertise.Gossip", c.Advertise.Gossip, "127.0.0.1:7202"},
				// Nor is listen.http: the api port + 3.
				{"Listen.HTTP", c.Listen.HTTP, "127.0.0.1:7203"},
				{"Advertise.HTTP", c.Advertise.HTTP, "127.0.0.1:7203"},
				{"uidRange", fmt.Sprint(c.uidRange), "300000-309999"},
				{"Gossip.Join", fmt.Sprint(c.Gossip.Join), "[127.0.0.1:7102]"},
				{"Gossip.Label", c.Gossip.Label, "labfed"},
				{"len(Instruments)", fmt.Sprint(len(c.Instruments)), "0"},
				{"len(Compute)", fmt.Sprint(len(c.Compute)), "1"},
				{"Storage", fmt.Sprintf("%+v", c.Storage), "[{Name:ocean Path:/ocean/projects/labfed/shared ReadOnly:false}]"},
			}
			if len(c.Compute) == 1 {
				ct := c.Compute[0]
				f = append(f,
					fact{"Compute[0].Name", ct.Name, "bridges2-gpu"},
					fact{"Compute[0].Kind", ct.Kind, "slurm"},
					fact{"Compute[0].GPUs", fmt.Sprint(ct.GPUs), "64"},
					// relion is quoted so that YAML keeps "5.0", not 5.
					fact{"Compute[0].Software", fmt.Sprint(ct.Software), "map[cryosparc:4.6.2 relion:5.0]"},
					fact{"Compute[0].Slurm", fmt.Sprintf("%+v", ct.Slurm), "&{Partition:GPU-shared Account:chm000000p}"},
				)
			}
			return f
		},
		"fabric-dc.yaml": func(c *Config) []fact {
			return []fact{
				{"Site", c.Site, "fabric-dc"},
				{"Listen.Gossip", c.Listen.Gossip, "127.0.0.1:7302"},
				{"Listen.HTTP", c.Listen.HTTP, "127.0.0.1:7303"},
				{"uidRange", fmt.Sprint(c.uidRange), "400000-409999"},
				{"Gossip.Join", fmt.Sprint(c.Gossip.Join), "[127.0.0.1:7102 127.0.0.1:7202]"},
				{"len(Instruments)", fmt.Sprint(len(c.Instruments)), "0"},
				// An older CryoSPARC than the others: placement must
				// tell versions apart.
				{"Compute", fmt.Sprintf("%+v", c.Compute), "[{Name:cloudlet-gpu Kind:local GPUs:2 Software:map[cryosparc:4.5.3] Slurm:<nil>}]"},
			}
		},
	}
	for _, file := range slices.Sorted(maps.Keys(tests)) {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join(repoRoot, "testdata", "config", file)
			c, err := LoadConfig(path)
			if err != nil {
				t.Fatalf("LoadConfig(%q) = %v, want no error", path, err)
			}
			for _, f := range tests[file](c) {
				if f.got != f.want {
					t.Errorf("LoadConfig(%q).%s = %q, want %q", path, f.field, f.got, f.want)
				}
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("min.yaml", []byte("site: psc\ndata_dir: /var/lib/labfed\nlisten: {api: '127.0.0.1:7200', raft: '127.0.0.1:7201'}\n"+
		"instruments: [{name: krios, type: TEM, model: Krios, controller: '10.0.0.5:5900', raw_data: /raw}]\n"))
	if err != nil {
		t.Fatalf("ParseConfig(minimal) = %v, want no error", err)
	}
	checkConfigInvariants(t, "min.yaml", c)
	for _, f := range []struct{ field, got, want string }{
		{"Node", c.Node, "psc"},
		{"DisplayName", c.DisplayName, "psc"},
		{"Listen.Gossip", c.Listen.Gossip, "127.0.0.1:7202"},
		{"Listen.HTTP", c.Listen.HTTP, "127.0.0.1:7203"},
		{"Advertise.API", c.Advertise.API, "127.0.0.1:7200"},
		{"Advertise.Raft", c.Advertise.Raft, "127.0.0.1:7201"},
		{"Advertise.Gossip", c.Advertise.Gossip, "127.0.0.1:7202"},
		{"Advertise.HTTP", c.Advertise.HTTP, "127.0.0.1:7203"},
		{"Gossip.Label", c.Gossip.Label, "labfed"},
		{"Gossip.Keyring", c.Gossip.Keyring, ""},
		{"Instruments[0].Status", c.Instruments[0].Status, "available"},
		{"uidRange", fmt.Sprint(c.uidRange), "<nil>"},
		{"Raft.SnapshotThreshold", fmt.Sprint(c.Raft.SnapshotThreshold), "0"},
	} {
		if f.got != f.want {
			t.Errorf("ParseConfig(minimal).%s = %q, want %q", f.field, f.got, f.want)
		}
	}

	c, err = ParseConfig("adv.yaml", []byte("site: psc\nnode: psc-2\ndata_dir: d\nlisten: {api: '127.0.0.1:7200', raft: '127.0.0.1:7201'}\nadvertise: {api: 'broker.psc.edu:7200', raft: 'broker.psc.edu:7201', gossip: 'broker.psc.edu:7202', http: 'broker.psc.edu:443'}\n"))
	if err != nil {
		t.Fatalf("ParseConfig(with advertise) = %v, want no error", err)
	}
	if c.Advertise.API != "broker.psc.edu:7200" || c.Advertise.Raft != "broker.psc.edu:7201" || c.Advertise.Gossip != "broker.psc.edu:7202" || c.Advertise.HTTP != "broker.psc.edu:443" {
		t.Errorf("ParseConfig(with advertise).Advertise = %+v, want the given addresses", c.Advertise)
	}

	// The gossip and http defaults keep the API's host, IPv6 included,
	// and a port of 0 (pick a free one) stays 0.
	for _, test := range []struct{ api, raft, gossip, http string }{
		{"[::1]:7100", "[::1]:7101", "[::1]:7102", "[::1]:7103"},
		{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		{":7100", ":7101", ":7102", ":7103"},
	} {
		text := fmt.Sprintf("site: psc\ndata_dir: d\nlisten: {api: '%s', raft: '%s'}\n", test.api, test.raft)
		c, err := ParseConfig("v6.yaml", []byte(text))
		if err != nil {
			t.Errorf("ParseConfig(%q) = %v, want no error", text, err)
			continue
		}
		if c.Listen.Gossip != test.gossip || c.Advertise.Gossip != test.gossip {
			t.Errorf("ParseConfig(%q): listen.gossip %q, advertise.gossip %q, want %q", text, c.Listen.Gossip, c.Advertise.Gossip, test.gossip)
		}
		if c.Listen.HTTP != test.http || c.Advertise.HTTP != test.http {
			t.Errorf("ParseConfig(%q): listen.http %q, advertise.http %q, want %q", text, c.Listen.HTTP, c.Advertise.HTTP, test.http)
		}
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

// TestLoadConfigErrors loads broken configs; each must fail with exactly
// the problems listed, each at its line, and the message must be the
// "FILE:LINE: problem" lines of those problems.
func TestLoadConfigErrors(t *testing.T) {
	const (
		site    = "site: rutgers\n"
		dataDir = "data_dir: /var/lib/labfed\n"
		listen  = "listen:\n  api: 127.0.0.1:7100\n  raft: 127.0.0.1:7101\n"
		good    = site + dataDir + listen // lines 1-5
		// krios is a valid instruments list at lines 6-11.
		krios = "instruments:\n" +
			"  - name: krios-g4\n" +
			"    type: TEM\n" +
			"    model: Titan Krios G4\n" +
			"    controller: 10.20.0.5:5900\n" +
			"    raw_data: /data/krios-g4/raw\n"
		// compute starts a compute list at line 6, its first item at 7.
		compute = "compute:\n"
		gpuWS   = "  - name: gpu-ws1\n    kind: local\n    gpus: 4\n" // lines 7-9
	)
	tests := []struct {
		name string
		yaml string
		want []Problem
	}{
		// YAML decoding.
		{name: "unknown field", yaml: good + "sitee: rutgers\n",
			want: []Problem{{6, "field sitee not found at the top level; did you mean site?"}}},
		{name: "unknown field, nothing close", yaml: good + "microscopes: []\n",
			want: []Problem{{6, "field microscopes not found at the top level; the fields there are site, display_name, node, data_dir, listen, advertise, uid_range, gid_range, tls, oidc, gossip, instruments, compute, storage, bootstrap, audit, raft"}}},
		{name: "unknown nested field", yaml: good + "raft:\n  snapshot_treshold: 64\n",
			want: []Problem{{7, "field snapshot_treshold not found in raft; did you mean snapshot_threshold?"}}},
		{name: "unknown fields everywhere", yaml: "sitee: rutgers\n" + dataDir + listen + "raft: {trailing: 1}\n",
			want: []Problem{
				{1, "field sitee not found at the top level; did you mean site?"},
				{6, "field trailing not found in raft; the fields there are snapshot_threshold, snapshot_interval, trailing_logs"},
			}},
		{name: "wrong type", yaml: good + "raft:\n  snapshot_threshold: lots\n",
			want: []Problem{{7, "raft.snapshot_threshold: cannot unmarshal !!str `lots` into uint64; give a whole number"}}},
		{name: "scalar for a section", yaml: good + "raft: 64\n",
			want: []Problem{{6, "raft: cannot unmarshal !!int `64` into a section; give its fields as KEY: VALUE lines, indented below it"}}},
		{name: "list for the file", yaml: "- site: rutgers\n",
			want: []Problem{{1, "cannot unmarshal !!seq into node.Config; the file is a mapping of fields such as site: rutgers; see testdata/config/rutgers.yaml"}}},
		{name: "duplicate key", yaml: good + "site: psc\n",
			want: []Problem{{6, `mapping key "site" already defined at line 1`}}},
		{name: "syntax error", yaml: site + dataDir + "  listen: {}\n",
			want: []Problem{{3, `mapping values are not allowed in this context; this is not valid YAML: indent with spaces, never tabs, and quote values that contain ": " or " #"`}}},
		{name: "tab indentation", yaml: site + "listen:\n\tapi: 127.0.0.1:7100\n",
			want: []Problem{{3, "found character that cannot start any token; the line is indented with a tab: YAML indents with spaces only"}}},
		{name: "second document", yaml: good + "---\nsite: psc\n",
			want: []Problem{{6, "a second YAML document starts here; a config file holds one"}}},
		{name: "alias of itself", yaml: good + "gossip: &g {join: *g}\n",
			want: []Problem{{6, "cannot unmarshal !!map into []string; give a list: [a, b], or one \"- item\" line each"}}},
		{name: "empty file", yaml: "",
			want: []Problem{{0, "the file is empty; see testdata/config/rutgers.yaml for an example"}}},
		{name: "only comments", yaml: "# site: rutgers\n",
			want: []Problem{{0, "the file is empty; see testdata/config/rutgers.yaml for an example"}}},

		// The top level.
		{name: "missing site", yaml: dataDir + listen,
			want: []Problem{{1, `site: site name is empty; give a lower-case name such as "rutgers"`}}},
		{name: "bad site name", yaml: "site: Rutgers\n" + dataDir + listen,
			want: []Problem{{1, `site: site name "Rutgers" is not valid; use lower-case letters, digits and '-', starting with a letter, at most 63 characters`}}},
		{name: "bad node name", yaml: good + "node: rutgers_1\n",
			want: []Problem{{6, `node: node name "rutgers_1" is not valid; use lower-case letters, digits and '-', starting with a letter, at most 63 characters`}}},
		{name: "display name with a newline", yaml: good + "display_name: \"Rutgers\\nUniversity\"\n",
			want: []Problem{{6, `display_name "Rutgers\nUniversity" has a control character or more than 256 bytes; give the institution's name as people read it, such as Rutgers University`}}},
		{name: "missing data_dir", yaml: site + listen,
			want: []Problem{{1, "data_dir is required: the directory where this node keeps its Raft log, snapshots and state"}}},
		{name: "missing listen section", yaml: "# comment\n" + site + dataDir,
			want: []Problem{
				{2, `listen.api "" is not HOST:PORT (for example 127.0.0.1:7100)`},
				{2, `listen.raft "" is not HOST:PORT (for example 127.0.0.1:7101)`},
			}},
		{name: "missing listen.raft", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:7100\n",
			want: []Problem{{3, `listen.raft "" is not HOST:PORT (for example 127.0.0.1:7101)`}}},
		{name: "listen address without port", yaml: site + dataDir + "listen:\n  api: 127.0.0.1\n  raft: 127.0.0.1:7101\n",
			want: []Problem{{4, `listen.api "127.0.0.1" is not HOST:PORT (for example 127.0.0.1:7100)`}}},
		{name: "listen address with a path", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:7100\n  raft: http://127.0.0.1:7101/\n",
			want: []Problem{{5, `listen.raft "http://127.0.0.1:7101/" is not HOST:PORT (for example 127.0.0.1:7101)`}}},
		{name: "listen port out of range", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:71000\n  raft: 127.0.0.1:7101\n",
			want: []Problem{{4, `listen.api "127.0.0.1:71000" has port "71000"; give a number from 1 to 65535 (for example 127.0.0.1:7100)`}}},
		{name: "bad listen.gossip", yaml: good + "  gossip: 7102\n",
			want: []Problem{{6, `listen.gossip "7102" is not HOST:PORT (for example 127.0.0.1:7102)`}}},
		{name: "listen.gossip on the api port", yaml: good + "  gossip: 0.0.0.0:7100\n",
			want: []Problem{{6, `listen.api "127.0.0.1:7100" and listen.gossip "0.0.0.0:7100" use the same port; each listener needs its own`}}},
		{name: "defaulted listen.gossip on the raft port", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:7100\n  raft: 127.0.0.1:7102\n",
			want: []Problem{{5, `listen.raft "127.0.0.1:7102" and listen.gossip "127.0.0.1:7102" use the same port; each listener needs its own`}}},
		{name: "default gossip port past 65535", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:65535\n  raft: 127.0.0.1:7101\n",
			want: []Problem{
				{4, "listen.gossip defaults to listen.api's port + 2, which is 65537, past 65535; give listen.gossip"},
				{4, "listen.http defaults to listen.api's port + 3, which is 65538, past 65535; give listen.http"},
			}},
		{name: "bad listen.http", yaml: good + "  http: 7103\n",
			want: []Problem{{6, `listen.http "7103" is not HOST:PORT (for example 127.0.0.1:7103)`}}},
		{name: "listen.http on the raft port", yaml: good + "  http: '[::]:7101'\n",
			want: []Problem{{6, `listen.raft "127.0.0.1:7101" and listen.http "[::]:7101" use the same port; each listener needs its own`}}},
		{name: "defaulted listen.http on the raft port", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:7100\n  raft: 127.0.0.1:7103\n",
			want: []Problem{{5, `listen.raft "127.0.0.1:7103" and listen.http "127.0.0.1:7103" use the same port; each listener needs its own`}}},
		{name: "default http port past 65535", yaml: site + dataDir + "listen:\n  api: 127.0.0.1:65533\n  raft: 127.0.0.1:7101\n",
			want: []Problem{{4, "listen.http defaults to listen.api's port + 3, which is 65536, past 65535; give listen.http"}}},
		{name: "advertise on every interface", yaml: good + "advertise:\n  api: 0.0.0.0:7100\n",
			want: []Problem{{7, `advertise.api "0.0.0.0:7100" names no host anyone can dial; give the host name or IP address and port other nodes reach this one at, such as broker.rutgers.edu:7100`}}},
		{name: "advertise.gossip without host", yaml: good + "advertise:\n  gossip: :7102\n",
			want: []Problem{{7, `advertise.gossip ":7102" names no host anyone can dial; give the host name or IP address and port other nodes reach this one at, such as broker.rutgers.edu:7102`}}},
		{name: "advertise.http without host", yaml: good + "advertise:\n  http: :7103\n",
			want: []Problem{{7, `advertise.http ":7103" names no host anyone can dial; give the host name or IP address and port outside verifiers reach this one at, such as broker.rutgers.edu:7103`}}},
		{name: "advertise.raft port 0", yaml: good + "advertise:\n  raft: broker.rutgers.edu:0\n",
			want: []Problem{{7, `advertise.raft "broker.rutgers.edu:0" has port "0", not one from 1 to 65535; give the host name or IP address and port other nodes reach this one at, such as broker.rutgers.edu:7101`}}},
		{name: "bad uid_range", yaml: good + "uid_range: 200000\ngid_range: 200000-209999\n",
			want: []Problem{{6, `uid_range: uid range "200000" is not LO-HI; give one such as 200000-299999`}}},
		{name: "non-numeric gid_range", yaml: good + "uid_range: 200000-209999\ngid_range: lo-hi\n",
			want: []Problem{{7, `gid_range: gid range "lo-hi" is not LO-HI; give one such as 200000-299999`}}},
		{name: "inverted uid_range", yaml: good + "uid_range: 209999-200000\ngid_range: 200000-209999\n",
			want: []Problem{{6, "uid_range: uid range 209999-200000 is inverted; the low end must not exceed the high end"}}},
		{name: "uid_range of system ids", yaml: good + "uid_range: 1-999\ngid_range: 200000-209999\n",
			want: []Problem{{6, "uid_range: uid range 1-999 is outside 1000-2147483646; ids below 1000 belong to system accounts"}}},
		{name: "uid_range without gid_range", yaml: good + "uid_range: 200000-209999\n",
			want: []Problem{{6, `gid_range: gid range "" is not LO-HI; give one such as 200000-299999`}}},
		{name: "gid_range without uid_range", yaml: good + "gid_range: 200000-209999\n",
			want: []Problem{{6, `uid_range: uid range "" is not LO-HI; give one such as 200000-299999`}}},
		{name: "oidc issuer over http", yaml: good + "oidc:\n  issuers:\n    - {url: http://cilogon.org, client_ids: [x]}\n",
			want: []Problem{{8, `oidc.issuers[0].url "http://cilogon.org" must be an https URL such as https://cilogon.org`}}},
		{name: "oidc issuer without client ids", yaml: good + "oidc:\n  issuers:\n    - {url: https://cilogon.org}\n",
			want: []Problem{{8, "oidc.issuers[0] (https://cilogon.org) needs client_ids: the client id labfed login is registered under at the issuer"}}},
		{name: "oidc unknown field", yaml: good + "oidc:\n  issuers:\n    - {url: https://cilogon.org, client_id: x}\n",
			want: []Problem{{8, "field client_id not found in oidc.issuers[0]; did you mean client_ids?"}}},
		{name: "session_ttl too long", yaml: good + "oidc:\n  session_ttl: 72h\n",
			want: []Problem{{7, "oidc.session_ttl 72h0m0s is out of range; give between 1m and 24h, such as 8h"}}},
		{name: "audit retention negative", yaml: good + "audit:\n  retention: -1h\n",
			want: []Problem{{7, "audit.retention -1h0m0s is out of range; give how long entries stay in the log, such as 2160h (90 days), or 0 to keep them all"}}},
		{name: "audit unknown field", yaml: good + "audit:\n  retension: 90d\n",
			want: []Problem{{7, "field retension not found in audit; did you mean retention?"}}},
		{name: "session_ttl not a duration", yaml: good + "oidc:\n  session_ttl: forever\n",
			want: []Problem{{7, "oidc.session_ttl: cannot unmarshal !!str `forever` into time.Duration; give a duration such as 90s, 15m or 8h"}}},
		{name: "bootstrap coordinator without email", yaml: good + "bootstrap:\n  coordinator: {name: rhea}\n",
			want: []Problem{{7, `bootstrap.coordinator.email: email "" is not a plain address; give one such as alice@rutgers.edu`}}},
		{name: "bootstrap coordinator bad name", yaml: good + "bootstrap:\n  coordinator: {name: Rhea!, email: rhea@rutgers.edu}\n",
			want: []Problem{{7, `bootstrap.coordinator.name: username "Rhea!" is not a portable POSIX login name; use lower-case letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters`}}},
		{name: "bootstrap coordinator bad identity", yaml: good + "bootstrap:\n  coordinator:\n    name: rhea\n    email: rhea@rutgers.edu\n    identities:\n      - https://cilogon.org=http://cilogon.org/serverA/users/42\n      - nonsense\n",
			want: []Problem{{12, `bootstrap.coordinator.identities: identity "nonsense" is not ISSUER=SUBJECT; give one such as https://cilogon.org=http://cilogon.org/serverA/users/1234`}}},
		{name: "bootstrap credential_ttl too short", yaml: good + "bootstrap:\n  credential_ttl: 1s\n",
			want: []Problem{{7, "bootstrap.credential_ttl 1s is out of range; give between 1m and 24h"}}},

		// Gossip.
		{name: "gossip join without port", yaml: good + "gossip:\n  join: [broker.psc.edu:7202, broker.psc.edu]\n",
			want: []Problem{{7, `gossip.join[1] "broker.psc.edu" is not HOST:PORT; give another broker's gossip address, such as broker.psc.edu:7202`}}},
		{name: "gossip join list items", yaml: good + "gossip:\n  join:\n    - broker.psc.edu:7202\n    - 0.0.0.0:7202\n",
			want: []Problem{{9, `gossip.join[1] "0.0.0.0:7202" names no host anyone can dial; give another broker's gossip address, such as broker.psc.edu:7202`}}},
		{name: "gossip join as a string", yaml: good + "gossip:\n  join: broker.psc.edu:7202\n",
			want: []Problem{{7, "gossip.join: cannot unmarshal !!str `broker....` into []string; give a list: [a, b], or one \"- item\" line each"}}},
		{name: "gossip label too long", yaml: good + "gossip:\n  label: " + strings.Repeat("x", 256) + "\n",
			want: []Problem{{7, "gossip.label has a control character or more than 255 bytes; give a short name for the federation, such as labfed"}}},
		{name: "gossip unknown field", yaml: good + "gossip:\n  keyfile: /etc/labfed/gossip.keys\n",
			want: []Problem{{7, "field keyfile not found in gossip; the fields there are keyring, label, join"}}},
		{name: "gossip misspelt field", yaml: good + "gossip:\n  lable: lab\n",
			want: []Problem{{7, "field lable not found in gossip; did you mean label?"}}},

		// Instruments.
		{name: "missing controller", yaml: good + krios + "  - name: aquilos\n    type: cryo-FIB\n    model: Aquilos 2\n    raw_data: /data/aquilos/raw\n",
			want: []Problem{{12, "instruments[1] (aquilos): controller is required: the HOST:PORT of the instrument's control computer, reachable from the site agent only"}}},
		{name: "empty controller", yaml: good + "instruments:\n  - name: krios-g4\n    type: TEM\n    model: Titan Krios G4\n    controller:\n    raw_data: /data/krios-g4/raw\n",
			want: []Problem{{10, "instruments[0] (krios-g4): controller is required: the HOST:PORT of the instrument's control computer, reachable from the site agent only"}}},
		{name: "controller without port", yaml: good + "instruments:\n  - {name: krios-g4, type: TEM, model: Titan Krios G4, controller: 10.20.0.5, raw_data: /data/krios-g4/raw}\n",
			want: []Problem{{7, `instruments[0] (krios-g4): controller "10.20.0.5" is not HOST:PORT; give the HOST:PORT of the instrument's control computer, such as 10.20.0.5:5900`}}},
		{name: "controller IPv6", yaml: good + "instruments:\n  - {name: krios-g4, type: TEM, model: Titan Krios G4, controller: 'fd00::5', raw_data: /data/krios-g4/raw}\n",
			want: []Problem{{7, `instruments[0] (krios-g4): controller "fd00::5" is not HOST:PORT; give the HOST:PORT of the instrument's control computer, such as 10.20.0.5:5900`}}},
		{name: "missing name", yaml: good + "instruments:\n  - type: TEM\n    model: Titan Krios G4\n    controller: 10.20.0.5:5900\n    raw_data: /data/krios-g4/raw\n",
			want: []Problem{{7, "instruments[0]: name is required: a lower-case name such as krios-g4, unique at the site; the federation calls it rutgers/NAME"}}},
		{name: "bad instrument name", yaml: good + "instruments:\n  - name: Krios G4\n    type: TEM\n    model: Titan Krios G4\n    controller: 10.20.0.5:5900\n    raw_data: /data/krios-g4/raw\n",
			want: []Problem{{7, `instruments[0]: instrument name "Krios G4" is not valid; use lower-case letters, digits and '-', starting with a letter, at most 63 characters`}}},
		{name: "duplicate instrument name", yaml: good + krios + "  - name: krios-g4\n    type: TEM\n    model: Titan Krios G3i\n    controller: 10.20.0.7:5900\n    raw_data: /data/krios-g3/raw\n",
			want: []Problem{{12, "instruments[1] (krios-g4): name krios-g4 is already used by instruments[0] on line 7; a site's instruments, compute targets and storage need different names, because grants call each one rutgers/krios-g4"}}},
		{name: "missing type and model", yaml: good + "instruments:\n  - name: krios-g4\n    type: \"  \"\n    controller: 10.20.0.5:5900\n    raw_data: /data/krios-g4/raw\n",
			want: []Problem{
				{7, "instruments[0] (krios-g4): model is required: the maker's model, such as Titan Krios G4"},
				{8, "instruments[0] (krios-g4): type is required: the kind of instrument, such as TEM, SEM, FIB or cryo-FIB"},
			}},
		{name: "missing raw_data", yaml: good + "instruments:\n  - {name: krios-g4, type: TEM, model: Titan Krios G4, controller: '10.20.0.5:5900'}\n",
			want: []Problem{{7, "instruments[0] (krios-g4): raw_data is required: the absolute path of the directory the instrument writes its data to, such as /data/krios-g4/raw"}}},
		{name: "relative raw_data", yaml: good + "instruments:\n  - name: krios-g4\n    type: TEM\n    model: Titan Krios G4\n    controller: 10.20.0.5:5900\n    raw_data: krios-g4/raw\n",
			want: []Problem{{11, `instruments[0] (krios-g4): raw_data "krios-g4/raw" is not an absolute path; give the full path, starting with /`}}},
		{name: "bad status", yaml: good + krios + "    status: broken\n",
			want: []Problem{{12, `instruments[0] (krios-g4): status "broken" is not available, maintenance or offline`}}},
		{name: "in_session status", yaml: good + krios + "    status: in_session\n",
			want: []Problem{{12, "instruments[0] (krios-g4): status in_session is reported by the site agent while a session runs; a config gives available, maintenance or offline"}}},
		{name: "unknown field in an instrument", yaml: good + krios + "    controler: 10.20.0.5:5900\n",
			want: []Problem{{12, "field controler not found in instruments[0] (krios-g4); did you mean controller?"}}},
		{name: "unknown field in an instrument, nothing close", yaml: good + krios + "    vendor: Thermo Fisher\n",
			want: []Problem{{12, "field vendor not found in instruments[0] (krios-g4); the fields there are name, type, model, controller, raw_data, status"}}},
		{name: "instruments as a mapping", yaml: good + "instruments:\n  krios-g4: {type: TEM}\n",
			want: []Problem{{7, "instruments: cannot unmarshal !!map into []node.Instrument; give a list: [a, b], or one \"- item\" line each"}}},

		// Compute.
		{name: "missing kind", yaml: good + compute + "  - name: gpu-ws1\n    gpus: 4\n",
			want: []Problem{{7, "compute[0] (gpu-ws1): kind is required: local (jobs run on the site agent's machine) or slurm (jobs are submitted to a SLURM partition)"}}},
		{name: "bad kind", yaml: good + compute + "  - name: gpu-ws1\n    kind: kubernetes\n    gpus: 4\n",
			want: []Problem{{8, `compute[0] (gpu-ws1): kind "kubernetes" is not local or slurm`}}},
		{name: "missing gpus", yaml: good + compute + "  - name: gpu-ws1\n    kind: local\n",
			want: []Problem{{7, "compute[0] (gpu-ws1): gpus is required: how many GPUs the target has, 0 for CPU only"}}},
		{name: "null gpus", yaml: good + compute + "  - name: gpu-ws1\n    kind: local\n    gpus: ~\n",
			want: []Problem{{9, "compute[0] (gpu-ws1): gpus is required: how many GPUs the target has, 0 for CPU only"}}},
		{name: "negative gpus", yaml: good + compute + "  - name: gpu-ws1\n    kind: local\n    gpus: -1\n",
			want: []Problem{{9, "compute[0] (gpu-ws1): gpus -1 is negative; give how many GPUs the target has, 0 for CPU only"}}},
		{name: "wrong type for gpus", yaml: good + compute + gpuWS + "  - name: gpu-ws2\n    kind: local\n    gpus: four\n",
			want: []Problem{{12, "compute[1].gpus: cannot unmarshal !!str `four` into int; give a whole number"}}},
		{name: "wrong type for gpus, flow style", yaml: good + compute + "  - {name: gpu-ws1, kind: local, gpus: 4.5}\n",
			want: []Problem{{7, "compute[0].gpus: cannot unmarshal !!float `4.5` into int; give a whole number"}}},
		{name: "slurm without partition", yaml: good + compute + "  - name: bridges2-gpu\n    kind: slurm\n    gpus: 64\n    slurm:\n      account: cryo\n",
			want: []Problem{{10, "compute[0] (bridges2-gpu): slurm.partition is required for kind slurm: the partition jobs are submitted to (sbatch --partition), such as GPU-shared"}}},
		{name: "slurm without a slurm section", yaml: good + compute + "  - name: bridges2-gpu\n    kind: slurm\n    gpus: 64\n",
			want: []Problem{{7, "compute[0] (bridges2-gpu): slurm.partition is required for kind slurm: the partition jobs are submitted to (sbatch --partition), such as GPU-shared"}}},
		{name: "partition on local", yaml: good + compute + gpuWS + "    slurm: {partition: gpu}\n",
			want: []Problem{{10, "compute[0] (gpu-ws1): slurm is only for kind slurm; remove it, or set kind: slurm"}}},
		{name: "partition with a space", yaml: good + compute + "  - name: bridges2-gpu\n    kind: slurm\n    gpus: 64\n    slurm: {partition: GPU shared}\n",
			want: []Problem{{10, `compute[0] (bridges2-gpu): slurm.partition "GPU shared" has a space or a control character; give the name sbatch --partition takes`}}},
		{name: "unknown field in slurm", yaml: good + compute + "  - name: bridges2-gpu\n    kind: slurm\n    gpus: 64\n    slurm:\n      partition: GPU-shared\n      qos: normal\n",
			want: []Problem{{12, "field qos not found in compute[0].slurm; the fields there are partition, account"}}},
		{name: "software without a version", yaml: good + compute + gpuWS + "    software:\n      cryosparc:\n      relion: \"5.0\"\n",
			want: []Problem{{11, `compute[0] (gpu-ws1): software.cryosparc has no version; give the installed version, such as "4.6.2"`}}},
		{name: "software version range", yaml: good + compute + gpuWS + "    software: {cryosparc: '>=4.6'}\n",
			want: []Problem{{10, `compute[0] (gpu-ws1): software.cryosparc ">=4.6" is not a version; give the installed version exactly, such as "4.6.2" (jobs, not targets, ask for ranges)`}}},
		{name: "software package with a space", yaml: good + compute + gpuWS + "    software: {cryo sparc: 4.6.2}\n",
			want: []Problem{{10, `compute[0] (gpu-ws1): software package "cryo sparc" is not a name; give names such as cryosparc or relion`}}},
		{name: "software as a list", yaml: good + compute + gpuWS + "    software: [cryosparc]\n",
			want: []Problem{{10, "compute[0].software: cannot unmarshal !!seq into map[string]string; give NAME: VALUE lines, indented below it, or {name: value}"}}},
		{name: "compute named like an instrument", yaml: good + krios + compute + "  - {name: krios-g4, kind: local, gpus: 1}\n",
			want: []Problem{{13, "compute[0] (krios-g4): name krios-g4 is already used by instruments[0] on line 7; a site's instruments, compute targets and storage need different names, because grants call each one rutgers/krios-g4"}}},

		// Storage.
		{name: "storage without path", yaml: good + "storage:\n  - name: raw\n    read_only: true\n",
			want: []Problem{{7, "storage[0] (raw): path is required: the absolute path of the exported directory, such as /data/krios-g4/raw"}}},
		{name: "relative storage path", yaml: good + "storage:\n  - name: raw\n    path: ./raw\n",
			want: []Problem{{8, `storage[0] (raw): path "./raw" is not an absolute path; give the full path, starting with /`}}},
		{name: "read_only not a bool", yaml: good + "storage:\n  - name: raw\n    path: /data/raw\n    read_only: sometimes\n",
			want: []Problem{{9, "storage[0].read_only: cannot unmarshal !!str `sometimes` into bool; give true or false"}}},

		// Several problems come out together, in the order of their lines.
		{name: "several problems", yaml: "site: Rutgers\n" + dataDir + listen + krios + "    status: broken\n" + compute + "  - name: gpu-ws1\n    kind: local\n    gpus: -4\n",
			want: []Problem{
				{1, `site: site name "Rutgers" is not valid; use lower-case letters, digits and '-', starting with a letter, at most 63 characters`},
				{12, `instruments[0] (krios-g4): status "broken" is not available, maintenance or offline`},
				{16, "compute[0] (gpu-ws1): gpus -4 is negative; give how many GPUs the target has, 0 for CPU only"},
			}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), strings.ReplaceAll(test.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(test.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig(%q) = %+v, nil; want problems %+v", test.yaml, c, test.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("LoadConfig(%q) = %T %v, want a *ConfigError", test.yaml, err, err)
			}
			if ce.File != path || !slices.Equal(ce.Problems, test.want) {
				t.Errorf("LoadConfig(%q) problems in %s:\n%+v\nwant in %s:\n%+v", test.yaml, ce.File, ce.Problems, path, test.want)
			}
			var lines []string
			for _, p := range test.want {
				if p.Line == 0 {
					lines = append(lines, path+": "+p.Msg)
				} else {
					lines = append(lines, fmt.Sprintf("%s:%d: %s", path, p.Line, p.Msg))
				}
			}
			if got, want := err.Error(), strings.Join(lines, "\n"); got != want {
				t.Errorf("LoadConfig(%q) = %q, want %q", test.yaml, got, want)
			}
		})
	}
}

// TestParseConfigManyProblems checks that a hopeless file gets a bounded
// message.
func TestParseConfigManyProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString("site: rutgers\ndata_dir: d\nlisten: {api: '127.0.0.1:7100', raft: '127.0.0.1:7101'}\nstorage:\n")
	for i := range 30 {
		fmt.Fprintf(&b, "  - {name: s%d, path: relative}\n", i)
	}
	_, err := ParseConfig("many.yaml", []byte(b.String()))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("ParseConfig(30 bad storage exports) = %v, want a *ConfigError", err)
	}
	if len(ce.Problems) != maxProblems+1 {
		t.Fatalf("ParseConfig(30 bad storage exports) has %d problems, want %d and a summary", len(ce.Problems), maxProblems)
	}
	if got, want := ce.Problems[maxProblems], (Problem{0, "10 more problems not shown"}); got != want {
		t.Errorf("ParseConfig(30 bad storage exports) last problem = %+v, want %+v", got, want)
	}
	if got, want := ce.Problems[0].Line, 5; got != want {
		t.Errorf("ParseConfig(30 bad storage exports) first problem at line %d, want %d", got, want)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadConfig(%q) = %v, want an error naming the file", path, err)
	}
}

func TestReadGossipKeyring(t *testing.T) {
	const (
		k16 = "MDEyMzQ1Njc4OWFiY2RlZg=="                     // "0123456789abcdef"
		k32 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
	)
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	path := write("good.keys", "# primary first\n"+k32+"\n\n  "+k16+"  \n")
	keys, err := ReadGossipKeyring(path)
	if err != nil {
		t.Fatalf("ReadGossipKeyring(good) = %v, want no error", err)
	}
	if len(keys) != 2 || string(keys[0]) != "0123456789abcdef0123456789abcdef" || string(keys[1]) != "0123456789abcdef" {
		t.Errorf("ReadGossipKeyring(good) = %q, want the 32-byte key, then the 16-byte one", keys)
	}

	const gen = "generate one with: head -c 32 /dev/urandom | base64"
	for _, test := range []struct {
		name, text string
		want       []Problem
	}{
		{"not base64", k32 + "\nnot a key!\n", []Problem{{2, "the key is not base64; " + gen}}},
		{"wrong length", "# old\n" + "MDEyMzQ1Njc4OQ==\n", []Problem{{2, "the key has 10 bytes; AES keys have 16, 24 or 32 (" + gen + ")"}}},
		{"no keys", "# nothing yet\n\n", []Problem{{0, "the gossip keyring holds no keys; put one base64 AES key a line, the primary first (" + gen + ")"}}},
	} {
		path := write(strings.ReplaceAll(test.name, " ", "-")+".keys", test.text)
		keys, err := ReadGossipKeyring(path)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("ReadGossipKeyring(%s) = %d keys, %v; want a *ConfigError", test.name, len(keys), err)
			continue
		}
		if !slices.Equal(ce.Problems, test.want) {
			t.Errorf("ReadGossipKeyring(%s) problems = %+v, want %+v", test.name, ce.Problems, test.want)
		}
		if strings.Contains(err.Error(), "not a key!") {
			t.Errorf("ReadGossipKeyring(%s) = %q, want it never to repeat the file's contents", test.name, err)
		}
	}
	if _, err := ReadGossipKeyring(filepath.Join(dir, "missing.keys")); err == nil || !strings.Contains(err.Error(), "missing.keys") {
		t.Errorf("ReadGossipKeyring(missing file) = %v, want an error naming it", err)
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
