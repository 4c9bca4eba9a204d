package wansim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodTopology = `
sites: [rutgers, psc, fabric-dc]   # one broker and one compute target per site
rtt_ms:                            # symmetric; each unordered pair once
  rutgers: {psc: 9.8, fabric-dc: 6.1}
  psc: {fabric-dc: 8.0}
loss: 0.0                          # optional
`

func TestParseTopology(t *testing.T) {
	topo, err := ParseTopology("good.yaml", []byte(goodTopology))
	if err != nil {
		t.Fatalf("ParseTopology(good) = %v", err)
	}
	tests := []struct {
		a, b string
		want time.Duration
		ok   bool
	}{
		{"rutgers", "psc", 9800 * time.Microsecond, true},
		{"psc", "rutgers", 9800 * time.Microsecond, true},
		{"fabric-dc", "psc", 8 * time.Millisecond, true},
		{"rutgers", "rutgers", 0, true},
		{"rutgers", "mars", 0, false},
	}
	for _, test := range tests {
		got, ok := topo.RTT(test.a, test.b)
		if got != test.want || ok != test.ok {
			t.Errorf("RTT(%q, %q) = %v, %v, want %v, %v", test.a, test.b, got, ok, test.want, test.ok)
		}
	}
}

func TestParseTopologyErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // substrings of the error, in order of appearance
	}{
		{
			name: "empty",
			file: "",
			want: []string{"t.yaml: empty topology"},
		},
		{
			name: "unknown field",
			file: "sites: [a, b]\nrtt_ms: {a: {b: 1}}\nlatency: 3\n",
			want: []string{`t.yaml:3: unknown field "latency"`, "the fields are sites, rtt_ms and loss"},
		},
		{
			name: "pair listed twice",
			file: "sites: [a, b]\nrtt_ms:\n  a: {b: 1}\n  b: {a: 1}\n",
			want: []string{"t.yaml:4: pair a–b is listed twice", "list each unordered pair once"},
		},
		{
			name: "missing pair",
			file: "sites: [a, b, c]\nrtt_ms:\n  a: {b: 1, c: 2}\n",
			want: []string{"t.yaml:2: missing RTT for pair b–c", "add b: {c: MILLISECONDS} under rtt_ms"},
		},
		{
			name: "site not in sites (outer)",
			file: "sites: [a, b]\nrtt_ms:\n  a: {b: 1}\n  z: {a: 1}\n",
			want: []string{`t.yaml:4: rtt_ms names site "z", which is not in sites`},
		},
		{
			name: "site not in sites (inner)",
			file: "sites: [a, b]\nrtt_ms:\n  a: {b: 1, y: 2}\n",
			want: []string{`t.yaml:3: rtt_ms.a names site "y", which is not in sites`},
		},
		{
			name: "negative rtt",
			file: "sites: [a, b]\nrtt_ms:\n  a:\n    b: -4\n",
			want: []string{"t.yaml:4: rtt_ms a–b is -4; give a non-negative number of milliseconds"},
		},
		{
			name: "loss too high",
			file: "sites: [a, b]\nrtt_ms: {a: {b: 1}}\nloss: 1\n",
			want: []string{"t.yaml:3: loss 1 is outside [0, 1)"},
		},
		{
			name: "negative loss",
			file: "sites: [a, b]\nrtt_ms: {a: {b: 1}}\nloss: -0.1\n",
			want: []string{"t.yaml:3: loss -0.1 is outside [0, 1)"},
		},
		{
			name: "self pair",
			file: "sites: [a, b]\nrtt_ms: {a: {b: 1, a: 0}}\n",
			want: []string{"t.yaml:2: rtt_ms.a lists the site itself"},
		},
		{
			name: "no sites",
			file: "rtt_ms: {}\n",
			want: []string{"t.yaml: no sites"},
		},
		{
			name: "duplicate site",
			file: "sites: [a, b, a]\nrtt_ms: {a: {b: 1}}\n",
			want: []string{`t.yaml:1: site "a" is listed twice in sites`},
		},
		{
			name: "upper-case site",
			file: "sites: [a, Rutgers]\nrtt_ms: {a: {Rutgers: 1}}\n",
			want: []string{`t.yaml:1: site name "Rutgers" is not a lower-case name`},
		},
		{
			name: "rtt not a number",
			file: "sites: [a, b]\nrtt_ms:\n  a: {b: fast}\n",
			want: []string{"t.yaml:3: cannot unmarshal", "rtt_ms maps a site to {site: milliseconds}"},
		},
		{
			name: "duplicate key",
			file: "sites: [a, b]\nrtt_ms:\n  a: {b: 1}\n  a: {b: 2}\n",
			want: []string{"t.yaml:4:", `mapping key "a" already defined at line 3`},
		},
		{
			name: "not yaml",
			file: "sites: [a, b\n",
			want: []string{"t.yaml:"},
		},
		{
			name: "several problems in line order",
			file: "sites: [a, b, c]\nrtt_ms:\n  a: {b: -1}\n  b: {a: 2}\nloss: 2\n",
			want: []string{"t.yaml:2: missing RTT for pair a–c", "t.yaml:3: rtt_ms a–b is -1", "t.yaml:4: pair a–b is listed twice", "t.yaml:5: loss 2"},
		},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			topo, err := ParseTopology("t.yaml", []byte(test.file))
			if err == nil {
				t.Fatalf("ParseTopology(%q) = %+v, nil, want an error", test.file, topo)
			}
			t.Logf("%s", err)
			msg := err.Error()
			for _, w := range test.want {
				i := strings.Index(msg, w)
				if i < 0 {
					t.Fatalf("ParseTopology(%q) = %q, want it to contain %q", test.file, msg, w)
				}
				msg = msg[i+len(w):]
			}
		})
	}
}

func TestLoadTopology(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wan.yaml")
	if err := os.WriteFile(path, []byte(goodTopology+"extra: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadTopology(path)
	if err == nil || !strings.Contains(err.Error(), path+":7: unknown field") {
		t.Errorf("LoadTopology(%q) = %v, want an unknown field error naming the file and line 7", path, err)
	}
	if _, err := LoadTopology(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("LoadTopology(missing) = nil error")
	}
}

func TestValidateInCode(t *testing.T) {
	topo := &Topology{Sites: []string{"a", "b"}, RTTms: map[string]map[string]float64{}}
	if err := topo.Validate(); err == nil || !strings.Contains(err.Error(), "topology: missing RTT for pair a–b") {
		t.Errorf("Validate() = %v, want a missing pair error", err)
	}
}
