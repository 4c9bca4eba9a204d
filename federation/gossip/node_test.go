package gossip

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/labfed/labfed/federation/wansim"
)

// startSmall starts one node per site of fourSites, joined together, and
// waits until they see each other.
func startSmall(t *testing.T, c *cluster) []*Node {
	t.Helper()
	var nodes []*Node
	for _, site := range fourSites().Sites {
		n := c.start(site+"-1", site)
		if len(nodes) > 0 {
			c.join(n, nodes[0].cfg.Name)
		}
		nodes = append(nodes, n)
	}
	waitFor(t, 10*time.Second, "convergence", allSee(nodes, aliveView(nodes)))
	return nodes
}

// TestRestartedNodeWins restarts a node with its clock set an hour back,
// so that its new offer starts below the version the others hold of its
// old one: the stale gossip it then hears about itself must not win.
func TestRestartedNodeWins(t *testing.T) {
	c := newCluster(t, fourSites())
	nodes := startSmall(t, c)
	victim := nodes[1]
	for range 3 {
		if err := victim.UpdateOffer(func(o *Offer) { o.Compute[0].GPUsFree-- }); err != nil {
			t.Fatal(err)
		}
	}
	old := ownOffer(victim).Version
	waitFor(t, 5*time.Second, "old offer spread", allSee(nodes, aliveView(nodes)))

	// Restart at once, before anyone declares the old incarnation dead.
	c.stop(victim.cfg.Name)
	restarted := c.start(victim.cfg.Name, victim.cfg.Site, func(cfg *Config) {
		cfg.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	})
	if v := ownOffer(restarted).Version; v >= old {
		t.Fatalf("restarted node starts at version %d, want below the old %d for this test to mean anything", v, old)
	}
	if err := restarted.UpdateOffer(func(o *Offer) { o.Instruments[0].Model = "Krios G4 (restarted)" }); err != nil {
		t.Fatal(err)
	}
	c.join(restarted, nodes[0].cfg.Name)
	nodes[1] = restarted

	d := waitFor(t, 10*time.Second, "restarted offer wins", func() (bool, string) {
		own := ownOffer(restarted)
		if own.Version <= old {
			return false, fmt.Sprintf("restarted node is at version %d, not above the stale %d", own.Version, old)
		}
		return allSee(nodes, aliveView(nodes))()
	})
	t.Logf("restarted node moved from below %d to %d; its offer won everywhere in %v", old, ownOffer(restarted).Version, d.Round(time.Millisecond))
	// Every node now holds a version above the stale one, which therefore
	// can never win again; look once more after some gossip all the same.
	time.Sleep(time.Second)
	for _, n := range nodes {
		for _, o := range n.Offers() {
			if o.Node == restarted.cfg.Name && o.Instruments[0].Model != "Krios G4 (restarted)" {
				t.Errorf("%s holds the stale offer of %s again (version %d)", n.cfg.Name, o.Node, o.Version)
			}
		}
	}

	t.Run("leave", func(t *testing.T) {
		leaver := nodes[3]
		rest := nodes[:3]
		version := ownOffer(leaver).Version
		if err := leaver.Leave(time.Second); err != nil {
			t.Fatal(err)
		}
		c.stop(leaver.cfg.Name)
		want := aliveView(rest)
		want.status[leaver.cfg.Name] = MemberLeft
		want.offers[leaver.cfg.Name] = version
		want.reach[leaver.cfg.Name] = false
		d := waitFor(t, 5*time.Second, "leave seen", allSee(rest, want))
		want = aliveView(rest)
		want.exclude = []string{leaver.cfg.Name}
		gone := waitFor(t, 5*time.Second, "left offers dropped", allSee(rest, want))
		t.Logf("%s left: seen as left within %v, offers dropped %v later", leaver.cfg.Name, d.Round(time.Millisecond), gone.Round(time.Millisecond))
	})
}

// TestLargeOffer checks that an offer too large for a gossip packet still
// reaches everyone, over streams.
func TestLargeOffer(t *testing.T) {
	c := newCluster(t, fourSites())
	nodes := startSmall(t, c)
	big := nodes[2]
	err := big.UpdateOffer(func(o *Offer) {
		for i := range 40 {
			o.Instruments = append(o.Instruments, Instrument{
				ID: fmt.Sprintf("%s/scope-%02d", big.cfg.Site, i), Type: "tem", Model: "Glacios 2 Cryo-TEM", Status: StatusAvailable,
			})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := encodeOffer(ownOffer(big))
	if len(msg) <= big.maxBroadcast {
		t.Fatalf("offer of %d bytes fits a packet (%d); make it larger", len(msg), big.maxBroadcast)
	}
	d := waitFor(t, 5*time.Second, "large offer spread", allSee(nodes, aliveView(nodes)))
	t.Logf("offer of %d bytes (packet room %d) reached all nodes in %v", len(msg), big.maxBroadcast, d.Round(time.Millisecond))
}

func TestUpdateOffer(t *testing.T) {
	c := newCluster(t, fourSites())
	n := c.start("psc-1", "psc")
	before := ownOffer(n)
	err := n.UpdateOffer(func(o *Offer) {
		o.Node, o.Site, o.Version = "intruder", "elsewhere", 1
		o.Instruments[0].Status = StatusMaintenance
	})
	if err != nil {
		t.Fatalf("UpdateOffer = %v", err)
	}
	after := ownOffer(n)
	if after.Node != "psc-1" || after.Site != "psc" || after.Version <= before.Version || after.Instruments[0].Status != StatusMaintenance {
		t.Errorf("after UpdateOffer: node %q site %q version %d (was %d) status %q", after.Node, after.Site, after.Version, before.Version, after.Instruments[0].Status)
	}

	bad := []struct {
		name string
		edit func(*Offer)
		want string
	}{
		{"unknown status", func(o *Offer) { o.Instruments[0].Status = "broken" }, `status "broken"`},
		{"foreign id", func(o *Offer) { o.Instruments[0].ID = "rutgers/krios" }, `id "rutgers/krios" is not psc/NAME`},
		{"duplicate id", func(o *Offer) { o.Instruments = append(o.Instruments, o.Instruments[0]) }, "listed twice"},
		{"free above total", func(o *Offer) { o.Compute[0].GPUsFree = 9 }, "want 0 ≤ free ≤ gpus"},
		{"unknown kind", func(o *Offer) { o.Compute[0].Kind = "k8s" }, `kind "k8s"`},
		{"negative wait", func(o *Offer) { o.Compute[0].QueueWaitS = -1 }, "queue wait"},
		{"invalid UTF-8", func(o *Offer) { o.Instruments[0].Model = "Krios \xff" }, "not valid UTF-8"},
		{"too large", func(o *Offer) {
			for i := range 100 { // within every count limit, but 1 MB encoded
				sw := map[string]string{}
				for j := range 10 {
					sw[fmt.Sprint(j)] = strings.Repeat("v", maxFieldLen)
				}
				o.Compute = append(o.Compute, ComputeTarget{ID: fmt.Sprintf("psc/c%d", i), Kind: KindLocal, Software: sw, Status: StatusAvailable})
			}
		}, "offer too large to gossip"},
	}
	for _, test := range bad {
		t.Run(test.name, func(t *testing.T) {
			err := n.UpdateOffer(test.edit)
			if err == nil || !strings.Contains(err.Error(), test.want) {
				t.Errorf("UpdateOffer(%s) = %v, want an error containing %q", test.name, err, test.want)
			}
			if got := ownOffer(n); got.Version != after.Version {
				t.Errorf("refused UpdateOffer changed the version from %d to %d", after.Version, got.Version)
			}
		})
	}
	// The caller's edits must not reach the catalog through shared maps.
	var kept map[string]string
	n.UpdateOffer(func(o *Offer) { kept = o.Compute[0].Software })
	kept["cryosparc"] = "0.0.1"
	if got := ownOffer(n).Compute[0].Software["cryosparc"]; got != "4.6.2" {
		t.Errorf("software version = %q after editing a map kept from UpdateOffer, want 4.6.2", got)
	}
}

// TestDefendOffer feeds a node offers about itself.
func TestDefendOffer(t *testing.T) {
	c := newCluster(t, fourSites())
	n := c.start("psc-1", "psc")
	own := ownOffer(n)

	n.receiveOffer(cloneOffer(own)) // its own offer, echoed back
	if got := ownOffer(n).Version; got != own.Version {
		t.Errorf("an echo of its own offer moved the version from %d to %d", own.Version, got)
	}
	older := cloneOffer(own)
	older.Version--
	older.Instruments[0].Model = "old"
	n.receiveOffer(older)
	if got := ownOffer(n); got.Version != own.Version || got.Instruments[0].Model == "old" {
		t.Errorf("an older offer about itself changed it: version %d, model %q", got.Version, got.Instruments[0].Model)
	}
	for _, bump := range []uint64{0, 1 << 40} { // same version, other content; far higher version
		stale := cloneOffer(ownOffer(n))
		stale.Version += bump
		stale.Instruments[0].Model = "stale"
		n.receiveOffer(stale)
		got := ownOffer(n)
		if got.Version <= stale.Version || got.Instruments[0].Model == "stale" {
			t.Errorf("stale offer at version %d: own offer now version %d, model %q; want above it and unchanged", stale.Version, got.Version, got.Instruments[0].Model)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	good := func() Config {
		return Config{Name: "psc-1", Site: "psc", Keys: [][]byte{testKey}, BindAddr: "127.0.0.1"}
	}
	tests := []struct {
		name  string
		edit  func(*Config, *Offer)
		want  string
		errIs error
	}{
		{"no keys", func(c *Config, _ *Offer) { c.Keys = nil }, "", ErrNoKeys},
		{"short key", func(c *Config, _ *Offer) { c.Keys = [][]byte{[]byte("short")} }, "gossip key 1", nil},
		{"duplicate key", func(c *Config, _ *Offer) { c.Keys = [][]byte{testKey, testKey} }, "gossip key 2 is listed twice", nil},
		{"no name", func(c *Config, _ *Offer) { c.Name = "" }, "empty node name", nil},
		{"bad site", func(c *Config, _ *Offer) { c.Site = "p sc" }, "site name", nil},
		{"long label", func(c *Config, _ *Offer) { c.Label = strings.Repeat("x", 300) }, "gossip label", nil},
		{"negative TTL", func(c *Config, _ *Offer) { c.DeadOfferTTL = -time.Second }, "gossip dead offer TTL is negative", nil},
		{"offer of another node", func(_ *Config, o *Offer) { o.Node = "rutgers-1" }, `local offer is for node "rutgers-1"`, nil},
		{"offer of another site", func(_ *Config, o *Offer) { o.Site = "rutgers" }, `local offer is for site "rutgers"`, nil},
		{"invalid offer", func(_ *Config, o *Offer) { o.Instruments[0].Status = "" }, "local offer: instrument psc/krios-psc-1: status", nil},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			cfg, offer := good(), sampleOffer("psc", "psc-1")
			test.edit(&cfg, &offer)
			n, err := New(cfg, offer)
			if err == nil {
				n.Shutdown()
				t.Fatalf("New = nil error, want %q", test.want)
			}
			if test.errIs != nil && !errors.Is(err, test.errIs) {
				t.Errorf("New = %v, want %v", err, test.errIs)
			}
			if !strings.Contains(err.Error(), test.want) {
				t.Errorf("New = %v, want an error containing %q", err, test.want)
			}
		})
	}
}

// TestKeyOpIncomplete checks that a key operation reports the members it
// could not reach instead of claiming success.
func TestKeyOpIncomplete(t *testing.T) {
	c := newCluster(t, fourSites())
	c.config = func(cfg *Config) { cfg.KeyTimeout = time.Second }
	nodes := startSmall(t, c)
	c.net.Kill(nodes[3].cfg.Name)
	newKey := []byte("fedcba9876543210")
	res, err := nodes[0].InstallKey(newKey)
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("InstallKey with a member cut off = %+v, %v, want ErrIncomplete", res, err)
	}
	lost := nodes[3].cfg.Name
	if _, failed := res.Failed[lost]; !failed && !strings.Contains(strings.Join(res.Missing, ","), lost) {
		t.Errorf("InstallKey result %+v does not name %s", res, lost)
	}
	if res.Members != 4 || res.Acked != 3 {
		t.Errorf("InstallKey result: %d members, %d acked; want 4, 3", res.Members, res.Acked)
	}
	t.Logf("InstallKey with %s cut off: %v", lost, err)
}

func TestPlaintextNodeHasNoKeys(t *testing.T) {
	net := wansim.NewNetwork(fourSites(), 1)
	tr, _ := net.Transport("psc-1", "psc")
	n, err := New(Config{Name: "psc-1", Site: "psc", DevPlaintext: true, Transport: tr, Logger: newLogRecorder(t).logger()}, Offer{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if _, err := n.InstallKey(testKey); !errors.Is(err, ErrPlaintext) {
		t.Errorf("InstallKey on a plaintext node = %v, want ErrPlaintext", err)
	}
	if keys := n.Keys(); keys != nil {
		t.Errorf("Keys() = %v, want nil", keys)
	}
}

// TestSuspect cuts a node off long enough for probes to fail but not for
// memberlist's (lengthened) suspicion to expire, then reconnects it.
func TestSuspect(t *testing.T) {
	c := newCluster(t, fourSites())
	c.config = func(cfg *Config) {
		cfg.Tune = func(mc *memberlist.Config) {
			fastTune(mc)
			mc.SuspicionMult = 30 // about 9 s before a suspect is declared dead
		}
	}
	nodes := startSmall(t, c)
	victim := nodes[3].cfg.Name
	c.net.Kill(victim)
	d := waitFor(t, 10*time.Second, "suspicion", func() (bool, string) {
		for _, n := range nodes[:3] {
			for _, m := range n.Members() {
				if m.Name == victim && m.Status == MemberSuspect {
					return true, ""
				}
			}
		}
		return false, "no node suspects " + victim
	})
	t.Logf("%s cut off: suspected after %v", victim, d.Round(time.Millisecond))
	c.net.Revive(victim)
	d = waitFor(t, 10*time.Second, "alive again", allSee(nodes, aliveView(nodes)))
	t.Logf("%s reconnected: alive everywhere again after %v", victim, d.Round(time.Millisecond))
}
