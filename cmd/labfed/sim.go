package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/urfave/cli/v2"

	"github.com/labfed/labfed/federation/gossip"
	"github.com/labfed/labfed/federation/placement"
	"github.com/labfed/labfed/federation/wansim"
)

func simCommand() *cli.Command {
	return &cli.Command{
		Name:  "sim",
		Usage: "simulate the federation over a modelled wide-area network",
		Subcommands: []*cli.Command{{
			Name:  "coords",
			Usage: "run one broker per site over a simulated WAN and report how well network coordinates estimate RTTs",
			Description: "Starts one gossip node (and one compute target) per site of the topology file,\n" +
				"connected by an in-memory transport that delays every packet by the link's RTT/2\n" +
				"(and drops the given fraction), lets the Vivaldi coordinates converge, and reports\n" +
				"median_rel_error and p90_rel_error (|estimated - true| / true over all site pairs,\n" +
				"each estimated by the first site's node) and nearest_hit_rate (for each site as the\n" +
				"data's site, whether placement ranks the truly nearest other site's target first).\n" +
				"Topology files: testdata/topologies/.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "topology", Required: true, Usage: "the topology `FILE` (sites, rtt_ms, loss)"},
				&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long the coordinates settle after every node sees every other"},
				&cli.Int64Flag{Name: "seed", Value: 1, Usage: "seed of the simulated packet loss"},
				jsonFlag(),
			},
			Action: func(c *cli.Context) error {
				if c.Args().Len() > 0 {
					return fmt.Errorf("unexpected argument %q; see labfed sim coords --help", c.Args().First())
				}
				if c.Duration("duration") <= 0 {
					return errors.New("--duration must be positive, such as 10s")
				}
				topo, err := wansim.LoadTopology(c.String("topology"))
				if err != nil {
					return err
				}
				res, err := simCoords(c.Context, topo, c.Duration("duration"), c.Int64("seed"), c.App.ErrWriter)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, res)
				}
				_, err = fmt.Fprintf(c.App.Writer, "%d sites, %d pairs: median relative error %.1f%%, p90 %.1f%%; nearest site ranked first for %.0f%% of sites (converged in %.1fs)\n",
					res.Sites, res.Pairs, 100*res.MedianRelError, 100*res.P90RelError, 100*res.NearestHitRate, res.ConvergedS)
				return err
			},
		}},
	}
}

// simResult is what labfed sim coords reports.
type simResult struct {
	Sites          int            `json:"sites"`
	Pairs          int            `json:"pairs"`
	MedianRelError float64        `json:"median_rel_error"`
	P90RelError    float64        `json:"p90_rel_error"`
	NearestHitRate float64        `json:"nearest_hit_rate"`
	ConvergedS     float64        `json:"converged_s"`
	Misses         []string       `json:"misses,omitempty"`
	PairErrors     []simPairError `json:"pair_errors"`
}

type simPairError struct {
	A, B     string
	TrueMS   float64 `json:"true_ms"`
	EstMS    float64 `json:"est_ms"`
	RelError float64 `json:"rel_error"`
}

// simTune makes the simulated gossip probe often enough to gather RTT
// samples in seconds, with a probe timeout above the slowest link.
func simTune(maxRTT time.Duration) func(*memberlist.Config) {
	return func(c *memberlist.Config) {
		c.ProbeInterval = 100 * time.Millisecond
		c.ProbeTimeout = max(250*time.Millisecond, 3*maxRTT)
		c.GossipInterval = 50 * time.Millisecond
		c.PushPullInterval = 4 * time.Second
		c.TCPTimeout = 2 * time.Second
		c.EnableCompression = false
	}
}

func simCoords(ctx context.Context, topo *wansim.Topology, settle time.Duration, seed int64, progress io.Writer) (*simResult, error) {
	net := wansim.NewNetwork(topo, seed)
	var maxRTT time.Duration
	for _, a := range topo.Sites {
		for _, b := range topo.Sites {
			if d, ok := topo.RTT(a, b); ok {
				maxRTT = max(maxRTT, d)
			}
		}
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	nodes := map[string]*gossip.Node{}
	defer func() {
		for _, n := range nodes {
			n.Shutdown()
		}
	}()
	for _, site := range topo.Sites {
		name := site + "-1"
		tr, err := net.Transport(name, site)
		if err != nil {
			return nil, err
		}
		n, err := gossip.New(gossip.Config{
			Name: name, Site: site, Keys: [][]byte{key}, Label: "labfed-sim", Transport: tr,
			Logger: slog.New(slog.DiscardHandler), Tune: simTune(maxRTT),
		}, gossip.Offer{Node: name, Site: site, Compute: []gossip.ComputeTarget{{ID: site + "/gpu", Kind: "local", GPUs: 4, GPUsFree: 4, Status: "available"}}})
		if err != nil {
			return nil, err
		}
		nodes[site] = n
		if site != topo.Sites[0] {
			seedName := topo.Sites[0] + "-1"
			addr, _ := net.Addr(seedName)
			if _, err := n.Join([]string{seedName + "/" + addr}); err != nil {
				return nil, fmt.Errorf("%s joins %s: %w", name, seedName, err)
			}
		}
	}
	start := time.Now()
	for !simConverged(topo, nodes) {
		if time.Since(start) > time.Minute {
			return nil, errors.New("the simulated nodes did not all see each other within a minute")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	res := &simResult{Sites: len(topo.Sites), ConvergedS: time.Since(start).Seconds()}
	fmt.Fprintf(progress, "all %d nodes see each other after %.1fs; letting the coordinates settle for %s\n", len(nodes), res.ConvergedS, settle)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(settle):
	}
	simMeasure(topo, nodes, res)
	return res, nil
}

func simConverged(topo *wansim.Topology, nodes map[string]*gossip.Node) bool {
	for _, n := range nodes {
		alive := 0
		for _, m := range n.Members() {
			if m.Status == gossip.MemberAlive {
				alive++
			}
		}
		if alive < len(topo.Sites) {
			return false
		}
	}
	return true
}

// simMeasure compares the coordinate estimates with the topology and asks
// placement, from each site, which other site's target it would pick.
func simMeasure(topo *wansim.Topology, nodes map[string]*gossip.Node, res *simResult) {
	var errs []float64
	for i, a := range topo.Sites {
		for _, b := range topo.Sites[i+1:] {
			truth, _ := topo.RTT(a, b)
			est, ok := nodes[a].RTTBetweenSites(a, b)
			rel := 1.0
			if ok && truth > 0 {
				rel = math.Abs(est.Seconds()-truth.Seconds()) / truth.Seconds()
			}
			errs = append(errs, rel)
			res.PairErrors = append(res.PairErrors, simPairError{A: a, B: b, TrueMS: ms(truth), EstMS: ms(est), RelError: round3(rel)})
		}
	}
	res.Pairs = len(errs)
	slices.Sort(errs)
	res.MedianRelError = round3(quantile(errs, 0.5))
	res.P90RelError = round3(quantile(errs, 0.9))
	hits := 0
	for _, s := range topo.Sites {
		nearest, best := "", time.Duration(math.MaxInt64)
		var targets []placement.Target
		for _, o := range topo.Sites {
			if o == s {
				continue
			}
			if d, _ := topo.RTT(s, o); d < best {
				nearest, best = o, d
			}
			targets = append(targets, placement.Target{ID: o + "/gpu", Site: o, Kind: "local", GPUs: 4, GPUsFree: 4, Status: "available", Reachable: true})
		}
		rtt := func(site string) (time.Duration, bool) { return nodes[s].RTTBetweenSites(s, site) }
		ranked, _ := placement.Rank(placement.Job{DataSite: s, GPUs: 1}, targets, rtt, placement.DefaultWeights())
		if len(ranked) > 0 && ranked[0].Target.Site == nearest {
			hits++
		} else if len(ranked) > 0 {
			res.Misses = append(res.Misses, fmt.Sprintf("from %s: ranked %s first, nearest is %s", s, ranked[0].Target.Site, nearest))
		}
	}
	if len(topo.Sites) > 1 {
		res.NearestHitRate = round3(float64(hits) / float64(len(topo.Sites)))
	}
}

func ms(d time.Duration) float64 { return round3(d.Seconds() * 1000) }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// quantile of sorted values, by linear interpolation.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (pos-float64(lo))*(sorted[hi]-sorted[lo])
}
