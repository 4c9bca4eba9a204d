package wansim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Topology is a set of sites and the round-trip times between them. RTTms
// holds each unordered pair of distinct sites once, as the file lists it;
// use RTT for a symmetric lookup.
type Topology struct {
	Sites []string
	RTTms map[string]map[string]float64
	// Loss is the fraction of packets dropped on every link, in [0, 1).
	Loss float64
}

// RTT returns the round-trip time between the sites a and b, which is 0
// within a site. It reports false when either site is unknown or the pair
// has no RTT.
func (t *Topology) RTT(a, b string) (time.Duration, bool) {
	if !t.hasSite(a) || !t.hasSite(b) {
		return 0, false
	}
	if a == b {
		return 0, true
	}
	ms, ok := t.RTTms[a][b]
	if !ok {
		ms, ok = t.RTTms[b][a]
	}
	if !ok {
		return 0, false
	}
	return time.Duration(ms * float64(time.Millisecond)), true
}

func (t *Topology) hasSite(s string) bool {
	for _, x := range t.Sites {
		if x == s {
			return true
		}
	}
	return false
}

// Validate checks a topology built in code by the rules LoadTopology
// applies to files.
func (t *Topology) Validate() error {
	return t.validate("topology", nil)
}

// rawTopology is the file format; it is decoded strictly so that a
// misspelt field is an error rather than a silently missing RTT.
type rawTopology struct {
	Sites []string                      `yaml:"sites"`
	RTTms map[string]map[string]float64 `yaml:"rtt_ms"`
	Loss  float64                       `yaml:"loss"`
}

// LoadTopology reads a topology file (see ParseTopology).
func LoadTopology(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	return ParseTopology(path, b)
}

// ParseTopology decodes a topology from YAML; name (usually the file name)
// prefixes every error message. The format is
//
//	sites: [rutgers, psc, fabric-dc]
//	rtt_ms:                  # symmetric; each unordered pair once
//	  rutgers: {psc: 9.8, fabric-dc: 6.1}
//	  psc: {fabric-dc: 8.0}
//	loss: 0.0                # optional, in [0, 1)
//
// Unknown fields, a pair listed twice or missing, a site not in sites, a
// negative RTT and a loss outside [0, 1) are errors.
func ParseTopology(name string, b []byte) (*Topology, error) {
	var raw rawTopology
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty topology; list sites and rtt_ms", name)
		}
		return nil, yamlError(name, err)
	}
	// Decode a second time into a node tree: the struct has no positions,
	// and a message that names the line saves the reader a search.
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, yamlError(name, err)
	}
	t := &Topology{Sites: raw.Sites, RTTms: raw.RTTms, Loss: raw.Loss}
	if t.RTTms == nil {
		t.RTTms = map[string]map[string]float64{}
	}
	if err := t.validate(name, positionsOf(&root)); err != nil {
		return nil, err
	}
	return t, nil
}

var (
	yamlLine     = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type`)
)

// yamlError rewrites yaml.v3's messages into "name:line: what; hint".
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	lines := []string{err.Error()}
	if errors.As(err, &te) {
		lines = te.Errors
	}
	var errs []error
	for _, l := range lines {
		errs = append(errs, errors.New(yamlLineError(name, l)))
	}
	return errors.Join(errs...)
}

func yamlLineError(name, l string) string {
	m := yamlLine.FindStringSubmatch(l)
	if m == nil {
		return fmt.Sprintf("%s: %s", name, strings.TrimPrefix(l, "yaml: "))
	}
	where, what := name+":"+m[1], m[2]
	if f := unknownField.FindStringSubmatch(what); f != nil {
		return fmt.Sprintf("%s: unknown field %q; the fields are sites, rtt_ms and loss", where, f[1])
	}
	if strings.Contains(what, "cannot unmarshal") {
		return fmt.Sprintf("%s: %s; sites is a list of names, rtt_ms maps a site to {site: milliseconds}, loss is a fraction", where, what)
	}
	return where + ": " + what
}

// positions holds line numbers from the YAML node tree; zero means unknown.
type positions struct {
	sites     int                       // the sites key
	rtt       int                       // the rtt_ms key
	loss      int                       // the loss key
	siteEntry map[string]int            // a name in the sites list
	from      map[string]int            // a site key under rtt_ms
	pair      map[string]map[string]int // a site key inside rtt_ms[from]
}

func (p *positions) pairLine(a, b string) int {
	if p == nil {
		return 0
	}
	return p.pair[a][b]
}

func positionsOf(root *yaml.Node) *positions {
	p := &positions{siteEntry: map[string]int{}, from: map[string]int{}, pair: map[string]map[string]int{}}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return p
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return p
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case "sites":
			p.sites = k.Line
			for _, s := range v.Content {
				if _, seen := p.siteEntry[s.Value]; !seen {
					p.siteEntry[s.Value] = s.Line
				}
			}
		case "rtt_ms":
			p.rtt = k.Line
			p.rttPositions(v)
		case "loss":
			p.loss = k.Line
		}
	}
	return p
}

func (p *positions) rttPositions(v *yaml.Node) {
	for j := 0; j+1 < len(v.Content); j += 2 {
		from, pairs := v.Content[j], v.Content[j+1]
		p.from[from.Value] = from.Line
		p.pair[from.Value] = map[string]int{}
		for k := 0; k+1 < len(pairs.Content); k += 2 {
			p.pair[from.Value][pairs.Content[k].Value] = pairs.Content[k].Line
		}
	}
}

var siteName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// problem is one validation finding; they are sorted by line so that a
// file's errors read top to bottom.
type problem struct {
	line int
	msg  string
}

func (t *Topology) validate(name string, pos *positions) error {
	if pos == nil {
		pos = &positions{}
	}
	var ps []problem
	add := func(line int, format string, args ...any) {
		ps = append(ps, problem{line, fmt.Sprintf(format, args...)})
	}
	t.validateSites(pos, add)
	t.validatePairs(pos, add)
	if !(t.Loss >= 0 && t.Loss < 1) {
		add(pos.loss, "loss %v is outside [0, 1); give the fraction of packets dropped, e.g. 0.01", t.Loss)
	}
	return problemsError(name, ps)
}

func (t *Topology) validateSites(pos *positions, add func(int, string, ...any)) {
	if len(t.Sites) == 0 {
		add(pos.sites, "no sites; list them, e.g. sites: [rutgers, psc]")
	}
	seen := map[string]bool{}
	for _, s := range t.Sites {
		switch {
		case !siteName.MatchString(s):
			add(pos.siteEntry[s], "site name %q is not a lower-case name (letters, digits, '-', '.', '_')", s)
		case seen[s]:
			add(pos.siteEntry[s], "site %q is listed twice in sites; list each site once", s)
		}
		seen[s] = true
	}
}

func (t *Topology) validatePairs(pos *positions, add func(int, string, ...any)) {
	for _, a := range sortedKeys(t.RTTms) {
		if !t.hasSite(a) {
			add(pos.from[a], "rtt_ms names site %q, which is not in sites; add it to sites or fix the name", a)
			continue
		}
		for _, b := range sortedKeys(t.RTTms[a]) {
			ms := t.RTTms[a][b]
			line := pos.pairLine(a, b)
			switch {
			case !t.hasSite(b):
				add(line, "rtt_ms.%s names site %q, which is not in sites; add it to sites or fix the name", a, b)
			case a == b:
				add(line, "rtt_ms.%s lists the site itself; the RTT within a site is always 0, remove it", a)
			case math.IsNaN(ms) || math.IsInf(ms, 0) || ms < 0:
				add(line, "rtt_ms %s–%s is %v; give a non-negative number of milliseconds", a, b, ms)
			}
			if _, twice := t.RTTms[b][a]; twice && a < b {
				add(max(line, pos.pairLine(b, a)), "pair %s–%s is listed twice (as %s: {%s: …} and %s: {%s: …}); list each unordered pair once",
					a, b, a, b, b, a)
			}
		}
	}
	for i, a := range t.Sites {
		for _, b := range t.Sites[i+1:] {
			_, ab := t.RTTms[a][b]
			_, ba := t.RTTms[b][a]
			if !ab && !ba && a != b {
				add(pos.rtt, "missing RTT for pair %s–%s; add %s: {%s: MILLISECONDS} under rtt_ms", a, b, a, b)
			}
		}
	}
}

func problemsError(name string, ps []problem) error {
	if len(ps) == 0 {
		return nil
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].line < ps[j].line })
	errs := make([]error, len(ps))
	for i, p := range ps {
		where := name
		if p.line > 0 {
			where += ":" + strconv.Itoa(p.line)
		}
		errs[i] = fmt.Errorf("%s: %s", where, p.msg)
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
