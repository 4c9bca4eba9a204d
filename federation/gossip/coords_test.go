package gossip

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestCoordinates checks that Vivaldi, fed by memberlist's probes over the
// simulated WAN, learns the topology's RTTs: the median relative error of
// SiteRTT, from every node to every other site, must fall below 25%.
func TestCoordinates(t *testing.T) {
	topo := fourSites()
	c := newCluster(t, topo)
	c.config = func(cfg *Config) {
		cfg.Tune = func(mc *memberlist.Config) {
			fastTune(mc)
			mc.ProbeInterval = 100 * time.Millisecond // more RTT samples a second
		}
	}
	var nodes []*Node
	for i := range 2 {
		for _, site := range topo.Sites {
			n := c.start(fmt.Sprintf("%s-%d", site, i+1), site)
			if len(nodes) > 0 {
				c.join(n, nodes[0].cfg.Name)
			}
			nodes = append(nodes, n)
		}
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "convergence", allSee(nodes, aliveView(nodes)))
	med, worst := siteRTTError(t, nodes, topo)
	t.Logf("at convergence (%v): SiteRTT median relative error %.1f%%, worst %.1f%%",
		time.Since(start).Round(time.Millisecond), 100*med, 100*worst)
	time.Sleep(3 * time.Second) // let the coordinates settle
	waitFor(t, 15*time.Second, "coordinates within 25%", func() (bool, string) {
		med, worst = siteRTTError(t, nodes, topo)
		return med <= 0.25, fmt.Sprintf("median relative error %.1f%%", 100*med)
	})
	t.Logf("%d nodes at %d sites, %v after the first join: SiteRTT median relative error %.1f%%, worst %.1f%%",
		len(nodes), len(topo.Sites), time.Since(start).Round(time.Millisecond), 100*med, 100*worst)

	for i, a := range topo.Sites {
		for _, b := range topo.Sites[i+1:] {
			truth, _ := topo.RTT(a, b)
			est, ok := nodes[0].RTTBetweenSites(a, b)
			t.Logf("RTTBetweenSites(%s, %s) from %s = %v (%v), topology %v", a, b, nodes[0].cfg.Name, est.Round(100*time.Microsecond), ok, truth)
		}
	}
	if rtt, ok := nodes[0].SiteRTT(nodes[0].cfg.Site); !ok || rtt != 0 {
		t.Errorf("SiteRTT(own site) = %v, %v, want 0, true", rtt, ok)
	}
	if _, ok := nodes[0].SiteRTT("mars"); ok {
		t.Error("SiteRTT(unknown site) reported an estimate")
	}
	for _, m := range nodes[0].Members() {
		if !m.HasRTT {
			t.Errorf("Members(): %s has no RTT estimate", m.Name)
		}
	}
	if c := nodes[0].Coordinate(); c == nil || !c.IsValid() {
		t.Errorf("Coordinate() = %+v, want a valid coordinate", c)
	}
}
