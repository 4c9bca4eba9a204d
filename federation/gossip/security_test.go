package gossip

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// These tests use memberlist's real UDP/TCP transport, bound to 127.0.0.1
// on ports the kernel picks.

var otherKey = []byte("ffffeeeeddddccccbbbbaaaa99998888")

// loopbackNode starts a node on 127.0.0.1 with the test key and label;
// mod may change its configuration.
func loopbackNode(t *testing.T, logs *logRecorder, name, site string, mod func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		Name: name, Site: site, BindAddr: "127.0.0.1",
		Keys: [][]byte{testKey}, Label: "labfed-test",
		DeadOfferTTL: 2 * time.Second, KeyTimeout: 3 * time.Second,
		Logger: logs.logger(), Tune: fastTune,
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg, sampleOffer(site, name))
	if err != nil {
		t.Fatalf("New(%s) = %v", name, err)
	}
	t.Cleanup(func() { n.Shutdown() })
	if host, _, _ := net.SplitHostPort(n.Addr()); host != "127.0.0.1" {
		t.Fatalf("%s bound to %s, want 127.0.0.1", name, n.Addr())
	}
	return n
}

func loopbackCluster(t *testing.T, logs *logRecorder, count int, mod func(*Config)) []*Node {
	t.Helper()
	sites := []string{"rutgers", "psc", "fabric-dc", "ncsa"}
	var nodes []*Node
	for i := range count {
		site := sites[i%len(sites)]
		n := loopbackNode(t, logs, site+"-1", site, mod)
		if len(nodes) > 0 {
			if _, err := n.Join([]string{nodes[0].Addr()}); err != nil {
				t.Fatalf("%s: Join = %v", n.cfg.Name, err)
			}
		}
		nodes = append(nodes, n)
	}
	waitFor(t, 10*time.Second, "loopback convergence", allSee(nodes, aliveView(nodes)))
	return nodes
}

// injectPacket sends a forged gossip packet carrying an offer straight to
// a node, as an outsider that knows the label but not the key would.
func injectPacket(t *testing.T, to string, label string, o Offer) {
	t.Helper()
	msg, err := encodeOffer(o)
	if err != nil {
		t.Fatal(err)
	}
	const userMsg = 8 // memberlist's message type for delegate messages
	pkt, err := memberlist.AddLabelHeaderToPacket(append([]byte{userMsg}, msg...), label)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
}

func evilOffer() Offer {
	o := sampleOffer("evil", "evil-1")
	o.Node, o.Site, o.Version = "evil-1", "evil", uint64(time.Now().UnixNano())
	return o
}

func TestOutsidersCannotJoin(t *testing.T) {
	logs := newLogRecorder(t)
	members := loopbackCluster(t, logs, 2, nil)

	outsiders := []struct {
		name string
		mod  func(*Config)
	}{
		{"other-key", func(c *Config) { c.Keys = [][]byte{otherKey} }},
		{"no-key", func(c *Config) { c.Keys, c.DevPlaintext = nil, true }},
		{"wrong-label", func(c *Config) { c.Label = "another-federation" }},
		{"no-label", func(c *Config) { c.Label = "" }},
	}
	for _, o := range outsiders {
		x := loopbackNode(t, logs, o.name, "evil", o.mod)
		n, err := x.Join([]string{members[0].Addr()})
		if err == nil {
			t.Errorf("%s: Join = %d, nil; want an error", o.name, n)
		}
		x.UpdateOffer(func(o *Offer) { o.Instruments[0].Status = StatusInSession })
		t.Logf("%s: Join refused: %v", o.name, err)
	}
	injectPacket(t, members[0].Addr(), "labfed-test", evilOffer())
	injectPacket(t, members[1].Addr(), "", evilOffer())

	time.Sleep(1500 * time.Millisecond) // several probe and gossip rounds
	for _, n := range members {
		var got []string
		for _, m := range n.Members() {
			got = append(got, m.Name)
		}
		if len(got) != 2 {
			t.Errorf("%s sees members %v, want only the two with the key and label", n.cfg.Name, got)
		}
		for _, o := range n.Offers() {
			if o.Node != members[0].cfg.Name && o.Node != members[1].cfg.Name {
				t.Errorf("%s lists an offer of outsider %s", n.cfg.Name, o.Node)
			}
		}
	}
	if got := logs.matching("Decrypt packet failed", "unacceptable label", "Failed push/pull merge", "failed to receive"); len(got) == 0 {
		t.Error("no refusal was logged; the outsiders may never have reached the members")
	}
}

// TestInjectionControl shows that the forged packet of
// TestOutsidersCannotJoin does get in when gossip is not encrypted: it is
// the key that keeps it out.
func TestInjectionControl(t *testing.T) {
	logs := newLogRecorder(t)
	plain := loopbackCluster(t, logs, 2, func(c *Config) { c.Keys, c.DevPlaintext = nil, true })
	injectPacket(t, plain[0].Addr(), "labfed-test", evilOffer())
	waitFor(t, 5*time.Second, "forged offer accepted without encryption", func() (bool, string) {
		for _, o := range plain[0].Offers() {
			if o.Node == "evil-1" {
				return true, ""
			}
		}
		return false, "no evil-1 offer"
	})
}

func TestKeyRotation(t *testing.T) {
	logs := newLogRecorder(t)
	nodes := loopbackCluster(t, logs, 3, nil)
	logs.reset()

	// Steady gossip while the keys change.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				nodes[0].UpdateOffer(func(o *Offer) { o.Compute[0].GPUsFree = i % 8 })
			}
		}
	}()

	newKey := []byte("0123456789abcdef")
	steps := []struct {
		name string
		op   func([]byte) (KeyResult, error)
		key  []byte
		want [][]byte // every node's keys, primary first
	}{
		{"install", nodes[1].InstallKey, newKey, [][]byte{testKey, newKey}},
		{"use", nodes[1].UseKey, newKey, [][]byte{newKey, testKey}},
		{"remove old", nodes[2].RemoveKey, testKey, [][]byte{newKey}},
	}
	for _, s := range steps {
		start := time.Now()
		res, err := s.op(s.key)
		if err != nil || res.Acked != 3 || res.Members != 3 {
			t.Fatalf("%s: result %+v, %v; want all 3 members acknowledging", s.name, res, err)
		}
		t.Logf("%s: %d of %d members acknowledged in %v", s.name, res.Acked, res.Members, time.Since(start).Round(time.Millisecond))
		for _, n := range nodes {
			if got := n.Keys(); !sameKeys(got, s.want) {
				t.Errorf("%s: %s has %d keys (primary %x…), want %d (primary %x…)", s.name, n.cfg.Name, len(got), got[0][:4], len(s.want), s.want[0][:4])
			}
		}
		time.Sleep(500 * time.Millisecond) // gossip under each key setting
	}
	close(stop)
	wg.Wait()
	waitFor(t, 5*time.Second, "offers after rotation", allSee(nodes, aliveView(nodes)))
	if bad := logs.matching("Suspect", "Marking", "Refuting", "member dead", "Decrypt"); len(bad) > 0 {
		t.Errorf("the cluster did not stay whole during rotation:\n%s", strings.Join(bad, "\n"))
	}

	// A node that still has only the old key is now refused.
	stale := loopbackNode(t, logs, "stale-1", "psc", nil)
	if _, err := stale.Join([]string{nodes[0].Addr()}); err == nil {
		t.Error("a node with only the removed key joined")
	}
	time.Sleep(500 * time.Millisecond)
	for _, m := range nodes[0].Members() {
		if m.Name == "stale-1" {
			t.Errorf("%s lists stale-1 as a member (%s)", nodes[0].cfg.Name, m.Status)
		}
	}

	if _, err := nodes[0].RemoveKey(newKey); err == nil || !strings.Contains(err.Error(), "primary") {
		t.Errorf("RemoveKey(primary) = %v, want a refusal naming the primary key", err)
	}
	if _, err := nodes[0].UseKey(otherKey); err == nil {
		t.Error("UseKey of a key not installed: nil error")
	}
	if _, err := nodes[0].InstallKey([]byte("short")); err == nil {
		t.Error("InstallKey of a 5-byte key: nil error")
	}
}

func sameKeys(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
