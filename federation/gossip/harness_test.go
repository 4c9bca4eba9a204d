package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/labfed/labfed/federation/wansim"
)

// fourSites is the WAN most tests run on; the RTTs roughly respect the
// triangle inequality, as real ones do and as Vivaldi assumes.
func fourSites() *wansim.Topology {
	return &wansim.Topology{
		Sites: []string{"rutgers", "psc", "fabric-dc", "ncsa"},
		RTTms: map[string]map[string]float64{
			"rutgers":   {"psc": 20, "fabric-dc": 14, "ncsa": 30},
			"psc":       {"fabric-dc": 18, "ncsa": 24},
			"fabric-dc": {"ncsa": 36},
		},
	}
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fastTune shortens memberlist's intervals from WAN defaults (seconds) to
// what a test can wait for, keeping the probe timeout above the WAN's
// largest RTT.
func fastTune(c *memberlist.Config) {
	c.ProbeInterval = 300 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.GossipNodes = 3
	c.PushPullInterval = 4 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.SuspicionMult = 4
	c.SuspicionMaxTimeoutMult = 3
	c.GossipToTheDeadTime = 2 * time.Second
	// The simulated WAN has no bandwidth to save; compression would only
	// burn the CPU the race detector already strains.
	c.EnableCompression = false
}

// cluster runs gossip nodes over a simulated WAN.
type cluster struct {
	t     testing.TB
	net   *wansim.Network
	logs  *logRecorder
	mu    sync.Mutex
	nodes map[string]*Node
	// config adjusts every node's configuration.
	config func(*Config)
}

func newCluster(t testing.TB, topo *wansim.Topology) *cluster {
	t.Helper()
	c := &cluster{t: t, net: wansim.NewNetwork(topo, 1), logs: newLogRecorder(t), nodes: map[string]*Node{}}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range c.nodes {
			n.Shutdown()
		}
	})
	return c
}

func (c *cluster) baseConfig(name, site string) Config {
	cfg := Config{
		Name:              name,
		Site:              site,
		Keys:              [][]byte{testKey},
		Label:             "labfed-test",
		DeadOfferTTL:      2 * time.Second,
		ReconnectInterval: time.Second,
		KeyTimeout:        3 * time.Second,
		Logger:            c.logs.logger(),
		Tune:              fastTune,
	}
	if c.config != nil {
		c.config(&cfg)
	}
	return cfg
}

// start starts a node with a sample offer; mods adjust its configuration.
func (c *cluster) start(name, site string, mods ...func(*Config)) *Node {
	c.t.Helper()
	tr, err := c.net.Transport(name, site)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := c.baseConfig(name, site)
	cfg.Transport = tr
	for _, m := range mods {
		m(&cfg)
	}
	n, err := New(cfg, sampleOffer(site, name))
	if err != nil {
		c.t.Fatalf("New(%s) = %v", name, err)
	}
	c.mu.Lock()
	c.nodes[name] = n
	c.mu.Unlock()
	return n
}

// join makes n join the node named seed.
func (c *cluster) join(n *Node, seed string) {
	c.t.Helper()
	addr, ok := c.net.Addr(seed)
	if !ok {
		c.t.Fatalf("no node %s", seed)
	}
	if _, err := n.Join([]string{seed + "/" + addr}); err != nil {
		c.t.Fatalf("%s: Join(%s) = %v", n.cfg.Name, seed, err)
	}
}

// stop shuts a node down without leaving, as a crash would.
func (c *cluster) stop(name string) {
	c.mu.Lock()
	n := c.nodes[name]
	delete(c.nodes, name)
	c.mu.Unlock()
	n.Shutdown()
}

func sampleOffer(site, node string) Offer {
	return Offer{
		Instruments: []Instrument{{ID: site + "/krios-" + node, Type: "tem", Model: "Krios G4", Status: StatusAvailable}},
		Compute: []ComputeTarget{{
			ID: site + "/gpu-" + node, Kind: KindSlurm, GPUs: 8, GPUsFree: 4, QueueWaitS: 30,
			Software: map[string]string{"cryosparc": "4.6.2"}, Status: StatusAvailable,
		}},
	}
}

// ownOffer returns the offer a node holds for itself.
func ownOffer(n *Node) Offer {
	for _, v := range n.Offers() {
		if v.Node == n.cfg.Name {
			return v.Offer
		}
	}
	panic("a node's own offer is missing")
}

// waitFor polls cond until it holds and returns how long that took; on
// timeout the test fails with cond's last explanation.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var why string
	for time.Since(start) < timeout {
		var ok bool
		if ok, why = cond(); ok {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %s", what, timeout, why)
	return 0
}

// view describes what every observer should see: members with a status,
// offers with a version and reachability; names absent from both must not
// appear at all.
type view struct {
	status  map[string]string
	offers  map[string]uint64
	reach   map[string]bool
	exclude []string // nodes whose offers must be gone
}

// sees reports whether n's view matches v.
func (v view) sees(n *Node) (bool, string) {
	ms := map[string]string{}
	for _, m := range n.Members() {
		ms[m.Name] = m.Status
	}
	for name, want := range v.status {
		if ms[name] != want {
			return false, fmt.Sprintf("%s sees %s as %q, want %q", n.cfg.Name, name, ms[name], want)
		}
	}
	have := map[string]OfferView{}
	for _, o := range n.Offers() {
		have[o.Node] = o
	}
	for name, version := range v.offers {
		o, ok := have[name]
		switch {
		case !ok:
			return false, fmt.Sprintf("%s has no offer of %s", n.cfg.Name, name)
		case version != 0 && o.Version != version:
			return false, fmt.Sprintf("%s has version %d of %s's offer, want %d", n.cfg.Name, o.Version, name, version)
		case o.Reachable != v.reach[name]:
			return false, fmt.Sprintf("%s sees %s's offer reachable=%v, want %v", n.cfg.Name, name, o.Reachable, v.reach[name])
		}
	}
	for _, name := range v.exclude {
		if _, ok := have[name]; ok {
			return false, fmt.Sprintf("%s still lists the offer of %s", n.cfg.Name, name)
		}
	}
	return true, ""
}

// allSee reports whether every observer's view matches v.
func allSee(observers []*Node, v view) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range observers {
			if ok, why := v.sees(n); !ok {
				return false, why
			}
		}
		return true, ""
	}
}

// aliveView expects nodes alive with their current offers, reachable.
func aliveView(nodes []*Node) view {
	v := view{status: map[string]string{}, offers: map[string]uint64{}, reach: map[string]bool{}}
	for _, n := range nodes {
		v.status[n.cfg.Name] = MemberAlive
		v.offers[n.cfg.Name] = ownOffer(n).Version
		v.reach[n.cfg.Name] = true
	}
	return v
}

// logRecorder keeps every node's log records, so that tests can look for
// memberlist's own reports (suspicion, refutation) and a failing test can
// show what happened.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func newLogRecorder(t testing.TB) *logRecorder {
	r := &logRecorder{}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		tail := r.lines[max(0, len(r.lines)-200):]
		t.Logf("last %d log lines:\n%s", len(tail), strings.Join(tail, "\n"))
	})
	return r
}

func (r *logRecorder) logger() *slog.Logger { return slog.New(&recordHandler{r: r}) }

// matching returns the lines containing any of subs.
func (r *logRecorder) matching(subs ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if slices.ContainsFunc(subs, func(s string) bool { return strings.Contains(l, s) }) {
			out = append(out, l)
		}
	}
	return out
}

func (r *logRecorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = nil
}

const maxRecordedLines = 100000

type recordHandler struct {
	r     *logRecorder
	attrs []slog.Attr
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *recordHandler) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", rec.Time.Format("15:04:05.000"), rec.Level, rec.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s", a)
		return true
	})
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if len(h.r.lines) < maxRecordedLines {
		h.r.lines = append(h.r.lines, b.String())
	}
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{r: h.r, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *recordHandler) WithGroup(string) slog.Handler { return h }
