package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/rpc"
	"github.com/labfed/labfed/federation/gossip"
	"github.com/labfed/labfed/federation/placement"
	"github.com/labfed/labfed/federation/replica"
)

// localOffer is what this site offers, from its config. GPUs start free and
// queues empty; the site agent reports changes.
func localOffer(c *Config) gossip.Offer {
	o := gossip.Offer{Node: c.Node, Site: c.Site}
	for _, in := range c.Instruments {
		st := in.Status
		if st == "" {
			st = StatusAvailable
		}
		o.Instruments = append(o.Instruments, gossip.Instrument{ID: c.Site + "/" + in.Name, Type: in.Type, Model: in.Model, Status: st})
	}
	for _, t := range c.Compute {
		o.Compute = append(o.Compute, gossip.ComputeTarget{
			ID: c.Site + "/" + t.Name, Kind: t.Kind, GPUs: t.GPUs, GPUsFree: t.GPUs, Software: maps.Clone(t.Software), Status: StatusAvailable,
		})
	}
	return o
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return h, port, err
}

// startGossip joins the node to the federation's gossip. Outside
// development mode the gossip is encrypted with the keyring the config
// names; without one the node does not start.
func startGossip(c *Config, dev bool, log *slog.Logger, tune func(*gossip.Config)) (*gossip.Node, error) {
	gc := gossip.Config{Name: c.Node, Site: c.Site, Label: c.Gossip.Label, Logger: log}
	var err error
	if gc.BindAddr, gc.BindPort, err = splitHostPort(c.Listen.Gossip); err != nil {
		return nil, fmt.Errorf("listen.gossip %q: %w", c.Listen.Gossip, err)
	}
	if c.Advertise.Gossip != "" && c.Advertise.Gossip != c.Listen.Gossip {
		if gc.AdvertiseAddr, gc.AdvertisePort, err = splitHostPort(c.Advertise.Gossip); err != nil {
			return nil, fmt.Errorf("advertise.gossip %q: %w", c.Advertise.Gossip, err)
		}
	}
	switch {
	case c.Gossip.Keyring != "":
		if gc.Keys, err = ReadGossipKeyring(c.Gossip.Keyring); err != nil {
			return nil, err
		}
		gc.KeysChanged = func(keys [][]byte) { saveKeyring(c.Gossip.Keyring, keys, log) }
	case dev:
		gc.DevPlaintext = true
		log.Warn("development mode: gossip is not encrypted; anyone on this host can read and inject offers")
	default:
		return nil, errors.New("gossip.keyring is required: the federation's gossip key file (labfed gossip keygen > FILE, the same file at every site), or run a loopback-only development node with --dev-insecure")
	}
	if tune != nil {
		tune(&gc)
	}
	g, err := gossip.New(gc, localOffer(c))
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", c.Listen.Gossip, err)
	}
	return g, nil
}

// joinGossip keeps this node in the gossip of every broker the directory
// knows: it joins the configured seeds and any registered node it does not
// see alive, quickly until it has company and then every 30 s, which also
// heals partitions.
func joinGossip(ctx context.Context, g *gossip.Node, rep *replica.Replica, seeds []string, self string, log *slog.Logger) {
	wait := 500 * time.Millisecond
	for {
		alive := map[string]bool{}
		for _, m := range g.Members() {
			alive[m.Name] = m.Status == gossip.MemberAlive
		}
		addrs := slices.Clone(seeds)
		if nodes, err := rep.Directory().Nodes(); err == nil {
			for _, n := range nodes {
				if n.ID != self && n.GossipAddr != "" && !alive[n.ID] {
					addrs = append(addrs, n.GossipAddr)
				}
			}
		}
		if len(addrs) > 0 {
			if k, err := g.Join(addrs); err != nil && k == 0 {
				log.Debug("gossip join failed; will retry", "addrs", addrs, "err", err)
			}
		}
		if len(alive) > 1 {
			wait = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// discovery answers the discovery service from the gossip view.
type discovery struct{ g *gossip.Node }

func (d discovery) Members() []broker.Member {
	var out []broker.Member
	for _, m := range d.g.Members() {
		out = append(out, broker.Member{Name: m.Name, Site: m.Site, Addr: m.Addr, Status: m.Status, RTT: m.RTT, HasRTT: m.HasRTT})
	}
	return out
}

func (d discovery) Instruments() []broker.Instrument {
	var out []broker.Instrument
	for _, o := range d.g.Offers() {
		for _, in := range o.Instruments {
			st := in.Status
			if !o.Reachable {
				st = broker.StatusUnreachable
			}
			out = append(out, broker.Instrument{ID: in.ID, Site: o.Site, Type: in.Type, Model: in.Model, Status: st})
		}
	}
	slices.SortFunc(out, func(a, b broker.Instrument) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// targets lists every compute target, each with its site's reachability.
func (d discovery) targets() ([]broker.ComputeTarget, map[string]bool) {
	var out []broker.ComputeTarget
	reach := map[string]bool{}
	for _, o := range d.g.Offers() {
		for _, t := range o.Compute {
			st := t.Status
			if !o.Reachable {
				st = broker.StatusUnreachable
			}
			reach[t.ID] = o.Reachable
			out = append(out, broker.ComputeTarget{
				ID: t.ID, Site: o.Site, Kind: t.Kind, GPUs: t.GPUs, GPUsFree: t.GPUsFree,
				QueueWait: time.Duration(t.QueueWaitS * float64(time.Second)), Software: t.Software, Status: st,
			})
		}
	}
	slices.SortFunc(out, func(a, b broker.ComputeTarget) int { return strings.Compare(a.ID, b.ID) })
	return out, reach
}

func (d discovery) Compute(near string) []broker.ComputeTarget {
	out, _ := d.targets()
	if near != "" {
		for i := range out {
			out[i].RTT, out[i].HasRTT = d.g.RTTBetweenSites(near, out[i].Site)
		}
	}
	return out
}

func (d discovery) Place(job broker.Job) ([]broker.Placement, []broker.Exclusion) {
	ts, reach := d.targets()
	var in []placement.Target
	for _, t := range ts {
		st := t.Status
		if st == broker.StatusUnreachable {
			st = StatusAvailable // reachability is said separately
		}
		in = append(in, placement.Target{ID: t.ID, Site: t.Site, Kind: t.Kind, GPUs: t.GPUs, GPUsFree: t.GPUsFree, QueueWait: t.QueueWait, Software: t.Software, Status: st, Reachable: reach[t.ID]})
	}
	rtt := func(site string) (time.Duration, bool) { return d.g.RTTBetweenSites(job.DataSite, site) }
	ranked, excluded := placement.Rank(placement.Job{DataSite: job.DataSite, GPUs: job.GPUs, Software: job.Software}, in, rtt, placement.DefaultWeights())
	var out []broker.Placement
	for _, r := range ranked {
		out = append(out, broker.Placement{Target: r.Target.ID, Score: r.Score, RTT: r.RTT, HasRTT: r.HasRTT, QueueWait: r.Target.QueueWait, GPUsFree: r.Target.GPUsFree, Reason: r.Reason})
	}
	var ex []broker.Exclusion
	for _, e := range excluded {
		ex = append(ex, broker.Exclusion{Target: e.Target.ID, Reason: e.Reason})
	}
	return out, ex
}

// NewGossipKeyring writes a keyring file holding one fresh 32-byte AES key,
// mode 0600. Every site of a federation uses the same file.
func NewGossipKeyring(path string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	line := "# labfed gossip keyring: base64 AES keys, one per line; the first encrypts.\n" + base64.StdEncoding.EncodeToString(key) + "\n"
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// gossipKeys adapts the gossip keyring for the RPC layer.
type gossipKeys struct{ g *gossip.Node }

func (k gossipKeys) KeyOp(op string, key []byte) (rpc.KeyResult, error) {
	var res gossip.KeyResult
	var err error
	switch op {
	case "install":
		res, err = k.g.InstallKey(key)
	case "use":
		res, err = k.g.UseKey(key)
	case "remove":
		res, err = k.g.RemoveKey(key)
	default:
		return rpc.KeyResult{}, fmt.Errorf("unknown key operation %q", op)
	}
	out := rpc.KeyResult{Members: res.Members, Acked: res.Acked, Failed: maps.Clone(res.Failed)}
	for _, m := range res.Missing {
		if out.Failed == nil {
			out.Failed = map[string]string{}
		}
		out.Failed[m] = "did not answer in time; repeat the operation (it is safe to)"
	}
	return out, err
}

func (k gossipKeys) Keys() [][]byte { return k.g.Keys() }

// saveKeyring rewrites the keyring file after a rotation step, atomically
// and with mode 0600, so the node restarts with the keys the federation
// now uses.
func saveKeyring(path string, keys [][]byte, log *slog.Logger) {
	text := "# labfed gossip keyring: base64 AES keys, one per line; the first encrypts.\n"
	for _, k := range keys {
		text += base64.StdEncoding.EncodeToString(k) + "\n"
	}
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, []byte(text), 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		log.Error("could not save the rotated gossip keyring; this node will restart with its old keys", "file", path, "err", err)
	}
}

// reporter changes this site's offer when its agent or administrator
// reports a status change; gossip spreads it.
type reporter struct {
	site, node string
	g          *gossip.Node
}

func (r reporter) Site() string { return r.site }

var offerStatuses = []string{broker.StatusAvailable, broker.StatusInSession, broker.StatusMaintenance, broker.StatusOffline}

func (r reporter) Report(c rpc.StatusChange) error {
	if c.Status != nil && !slices.Contains(offerStatuses, *c.Status) {
		return broker.Errorf(broker.ErrInvalid, "status %q is not one of %v", *c.Status, offerStatuses)
	}
	if c.QueueWaitS != nil && (*c.QueueWaitS < 0 || *c.QueueWaitS > 30*24*3600) {
		return broker.Errorf(broker.ErrInvalid, "queue wait %.0fs is out of range", *c.QueueWaitS)
	}
	// Check the change on a copy first, so a refused one changes nothing
	// (not even the offer's version).
	for _, v := range r.g.Offers() {
		if v.Node == r.node {
			o := v.Offer
			o.Instruments, o.Compute = slices.Clone(o.Instruments), slices.Clone(o.Compute)
			if err := r.apply(&o, c); err != nil {
				return err
			}
		}
	}
	var err error
	if uerr := r.g.UpdateOffer(func(o *gossip.Offer) { err = r.apply(o, c) }); uerr != nil {
		return uerr
	}
	return err
}

func (r reporter) apply(o *gossip.Offer, c rpc.StatusChange) error {
	found := broker.Errorf(broker.ErrNotFound, "site %s offers nothing called %s; see labfed instruments and labfed compute", r.site, c.ID)
	func() {
		for i := range o.Instruments {
			in := &o.Instruments[i]
			if in.ID != c.ID {
				continue
			}
			if c.GPUsFree != nil || c.QueueWaitS != nil {
				found = broker.Errorf(broker.ErrInvalid, "%s is an instrument: only its status can change", c.ID)
				return
			}
			in.Status, found = *c.Status, nil
		}
		for i := range o.Compute {
			t := &o.Compute[i]
			if t.ID != c.ID {
				continue
			}
			if c.GPUsFree != nil && (*c.GPUsFree < 0 || *c.GPUsFree > t.GPUs) {
				found = broker.Errorf(broker.ErrInvalid, "%s has %d GPUs; %d free is impossible", c.ID, t.GPUs, *c.GPUsFree)
				return
			}
			if c.Status != nil {
				t.Status = *c.Status
			}
			if c.GPUsFree != nil {
				t.GPUsFree = *c.GPUsFree
			}
			if c.QueueWaitS != nil {
				t.QueueWaitS = *c.QueueWaitS
			}
			found = nil
		}
	}()
	return found
}
