package gossip

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// TestCluster runs 32 nodes over a simulated WAN of four sites (64 nodes
// and 1% packet loss with LABFED_INTEG): convergence, an offer change, a
// crash, a partition and its healing, each timed.
func TestCluster(t *testing.T) {
	perSite := 8
	topo := fourSites()
	if os.Getenv("LABFED_INTEG") != "" {
		perSite, topo.Loss = 16, 0.01
	}
	c := newCluster(t, topo)
	var nodes []*Node
	start := time.Now()
	for i := range perSite {
		for _, site := range topo.Sites {
			n := c.start(fmt.Sprintf("%s-%d", site, i+1), site)
			if len(nodes) > 0 {
				c.join(n, nodes[0].cfg.Name)
			}
			nodes = append(nodes, n)
		}
	}
	d := waitFor(t, 30*time.Second, "convergence", allSee(nodes, aliveView(nodes)))
	t.Logf("%d nodes: every node sees every node alive and every offer %v after the first join (%v after the last)",
		len(nodes), time.Since(start).Round(time.Millisecond), d.Round(time.Millisecond))

	t.Run("offer change", func(t *testing.T) {
		changer := nodes[len(nodes)/2]
		if err := changer.UpdateOffer(func(o *Offer) { o.Instruments[0].Status = StatusInSession }); err != nil {
			t.Fatal(err)
		}
		want := aliveView(nodes)
		d := waitFor(t, 5*time.Second, "offer propagation", allSee(nodes, want))
		t.Logf("UpdateOffer on %s reached all %d nodes in %v", changer.cfg.Name, len(nodes), d.Round(time.Millisecond))
		for _, n := range nodes {
			for _, o := range n.Offers() {
				if o.Node == changer.cfg.Name && o.Instruments[0].Status != StatusInSession {
					t.Errorf("%s: status of %s = %q, want in_session", n.cfg.Name, o.Instruments[0].ID, o.Instruments[0].Status)
				}
			}
		}
	})

	t.Run("crash", func(t *testing.T) {
		victim := nodes[len(nodes)-1]
		nodes = nodes[:len(nodes)-1]
		name := victim.cfg.Name
		version := ownOffer(victim).Version
		c.stop(name)
		want := aliveView(nodes)
		want.status[name] = MemberDead
		want.offers[name] = version
		want.reach[name] = false
		dead := waitFor(t, 15*time.Second, "dead detection", allSee(nodes, want))
		t.Logf("%s crashed: dead with its offers unreachable on all %d nodes after %v", name, len(nodes), dead.Round(time.Millisecond))

		want = aliveView(nodes)
		want.exclude = []string{name}
		gone := waitFor(t, 10*time.Second, "dead offers dropped", allSee(nodes, want))
		t.Logf("%s's offers dropped everywhere %v later (DeadOfferTTL %v)", name, gone.Round(time.Millisecond), nodes[0].cfg.DeadOfferTTL)
	})

	t.Run("partition and heal", func(t *testing.T) {
		half := len(nodes) / 2
		a, b := nodes[:half], nodes[half:]
		c.net.Partition(names(a), names(b))
		start := time.Now()
		waitFor(t, 20*time.Second, "partition seen", func() (bool, string) {
			if ok, why := allSee(a, splitView(a, b))(); !ok {
				return false, why
			}
			return allSee(b, splitView(b, a))()
		})
		t.Logf("partition %d|%d: each side sees the other dead and its offers unreachable after %v",
			len(a), len(b), time.Since(start).Round(time.Millisecond))

		c.net.Heal()
		d := waitFor(t, 30*time.Second, "reconvergence", allSee(nodes, aliveView(nodes)))
		t.Logf("healed: one view again on all %d nodes after %v", len(nodes), d.Round(time.Millisecond))
	})

	t.Run("coordinates", func(t *testing.T) {
		med, worst := siteRTTError(t, nodes, topo)
		t.Logf("SiteRTT over %d nodes: median relative error %.1f%%, worst %.1f%%", len(nodes), 100*med, 100*worst)
	})
}

// splitView is what the nodes of one side see during a partition: their
// side alive and reachable, the other side dead and unreachable (or, after
// DeadOfferTTL, dropped: both are accepted).
func splitView(mine, other []*Node) view {
	v := aliveView(mine)
	for _, n := range other {
		v.status[n.cfg.Name] = MemberDead
	}
	return v
}

func names(nodes []*Node) []string {
	var ns []string
	for _, n := range nodes {
		ns = append(ns, n.cfg.Name)
	}
	return ns
}

// siteRTTError returns the median and worst relative error of SiteRTT,
// from every node to every other site, against the topology.
func siteRTTError(t testing.TB, nodes []*Node, topo interface {
	RTT(a, b string) (time.Duration, bool)
}) (median, worst float64) {
	t.Helper()
	var errs []float64
	for _, n := range nodes {
		for _, site := range []string{"rutgers", "psc", "fabric-dc", "ncsa"} {
			if site == n.cfg.Site {
				continue
			}
			truth, _ := topo.RTT(n.cfg.Site, site)
			est, ok := n.SiteRTT(site)
			if !ok {
				errs = append(errs, 1)
				continue
			}
			e := (est - truth).Seconds() / truth.Seconds()
			errs = append(errs, max(e, -e))
		}
	}
	slices.Sort(errs)
	return errs[len(errs)/2], errs[len(errs)-1]
}
