package gossip

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"
)

// Member statuses.
const (
	MemberAlive   = "alive"
	MemberSuspect = "suspect"
	MemberDead    = "dead"
	MemberLeft    = "left"
)

// Member is a broker node as this node sees it. RTT is estimated from
// network coordinates, from this node, when HasRTT.
type Member struct {
	Name, Site, Addr string
	// Status is alive, suspect, dead or left. Suspect is reported while
	// this node's own probe of the member has failed and memberlist's
	// suspicion timeout runs; suspicion raised by other nodes is not seen
	// here (memberlist does not expose it).
	Status string
	RTT    time.Duration
	HasRTT bool
}

// Node is one broker's gossip: membership, the catalog of offers and
// network coordinates. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring // nil with DevPlaintext
	queue   *memberlist.TransmitLimitedQueue
	coords  *coordinate.Client
	addr    string

	// maxBroadcast is the largest message that fits in one gossip packet;
	// larger offers go to each member over a stream instead.
	maxBroadcast int
	// memberlist's probing settings, for the length of a suspicion
	probeInterval    time.Duration
	suspicionMult    int
	suspicionMaxMult int
	alive            atomic.Int64 // alive members, for the broadcast queue's retransmit count

	updating sync.Mutex // serializes UpdateOffer

	mu         sync.Mutex
	local      Offer
	offers     map[string]*entry  // other nodes' offers
	members    map[string]*member // every node memberlist told us of, this one included
	peerCoords map[string]*coordinate.Coordinate
	pending    map[string]chan keyAck // key operations waiting for acknowledgements
	leaving    map[string]time.Time   // nodes that announced they leave, until memberlist confirms

	work     chan func() // work that must not run on memberlist's goroutines
	stop     chan struct{}
	wg       sync.WaitGroup
	shutdown sync.Once
}

// entry is another node's offer in the catalog.
type entry struct {
	offer    Offer
	received time.Time // when this version arrived
	lastSeen time.Time
}

// member is a copy of what memberlist said of a node: memberlist's own
// Node values change under its lock, so they are copied in its callbacks.
type member struct {
	name, site string
	ip         net.IP
	port       uint16
	state      memberlist.NodeStateType
	since      time.Time // when state last changed
	// suspectUntil is set when this node's memberlist suspects the member
	// (see noteSuspect) and cleared by any sign of life or a state change.
	suspectUntil time.Time
}

func (m *member) addr() string { return net.JoinHostPort(m.ip.String(), strconv.Itoa(int(m.port))) }

// live reports whether memberlist counts the member alive; suspicion
// (see noteSuspect) does not change that.
func (m *member) live() bool { return m.state == memberlist.StateAlive }

// mlNode is what memberlist needs to send to the member.
func (m *member) mlNode() *memberlist.Node {
	return &memberlist.Node{Name: m.name, Addr: m.ip, Port: m.port}
}

const workQueue = 256

// New starts gossip with local as this node's offer. local.Node and
// local.Site may be left empty; they are taken from cfg. The node is
// alone until Join.
func New(cfg Config, local Offer) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	local, err = prepareLocal(cfg, local)
	if err != nil {
		return nil, err
	}
	coords, err := coordinate.NewClient(coordinate.DefaultConfig())
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:        cfg,
		log:        cfg.Logger.With("node", cfg.Name),
		coords:     coords,
		local:      local,
		offers:     map[string]*entry{},
		members:    map[string]*member{},
		peerCoords: map[string]*coordinate.Coordinate{},
		pending:    map[string]chan keyAck{},
		leaving:    map[string]time.Time{},
		work:       make(chan func(), workQueue),
		stop:       make(chan struct{}),
	}
	if len(cfg.Keys) > 0 {
		if n.keyring, err = memberlist.NewKeyring(cfg.Keys, cfg.Keys[0]); err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
	} else {
		n.log.Warn("gossip is NOT encrypted (dev_plaintext); anyone who reaches the gossip port can join and change the catalog")
	}
	mc := n.memberlistConfig()
	n.probeInterval, n.suspicionMult, n.suspicionMaxMult = mc.ProbeInterval, mc.SuspicionMult, mc.SuspicionMaxTimeoutMult
	n.maxBroadcast = maxBroadcast(mc)
	n.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return max(int(n.alive.Load()), 1) },
		RetransmitMult: mc.RetransmitMult,
	}
	if n.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	n.mu.Lock()
	if self := n.members[cfg.Name]; self != nil {
		n.addr = self.addr()
	}
	n.mu.Unlock()
	n.wg.Add(2)
	go n.worker()
	go n.maintain()
	return n, nil
}

// maxBroadcast is the room memberlist leaves a delegate message in one
// packet, less a margin for its compound, label and encryption headers.
func maxBroadcast(c *memberlist.Config) int {
	const headers = 128
	return c.UDPBufferSize - headers - len(c.Label)
}

func prepareLocal(cfg Config, o Offer) (Offer, error) {
	o = cloneOffer(o)
	if o.Node != "" && o.Node != cfg.Name {
		return o, fmt.Errorf("local offer is for node %q, but this node is %q", o.Node, cfg.Name)
	}
	if o.Site != "" && o.Site != cfg.Site {
		return o, fmt.Errorf("local offer is for site %q, but this node is at %q", o.Site, cfg.Site)
	}
	o.Node, o.Site = cfg.Name, cfg.Site
	// Wall-clock nanoseconds: a restarted node starts above every version
	// it gave out before, unless its clock went back (see defendOfferLocked).
	o.Version = uint64(cfg.Now().UnixNano())
	if err := validateLocal(&o); err != nil {
		return o, fmt.Errorf("local offer: %w", err)
	}
	return o, nil
}

// Join contacts existing members ("host:port", or "name/host:port") and
// returns how many it reached.
func (n *Node) Join(addrs []string) (int, error) {
	got, err := n.ml.Join(addrs)
	if err != nil {
		return got, fmt.Errorf("gossip join: %w", err)
	}
	return got, nil
}

// Leave tells the other members this node is leaving and waits up to
// timeout for the message to spread. Shutdown must follow.
func (n *Node) Leave(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	n.announceLeave(timeout / 2)
	return n.ml.Leave(time.Until(deadline))
}

// announceLeave sends our leave intent to every live member, waiting at
// most wait for the sends.
func (n *Node) announceLeave(wait time.Duration) {
	msg, err := encodeLeave(leaveIntent{Node: n.cfg.Name})
	if err != nil {
		n.log.Error("encode leave intent", "err", err)
		return
	}
	n.mu.Lock()
	targets := n.liveMembersLocked()
	n.mu.Unlock()
	done := make(chan struct{}, len(targets))
	for _, m := range targets {
		go func() {
			if err := n.ml.SendReliable(m.mlNode(), msg); err != nil {
				n.log.Debug("send leave intent", "peer", m.name, "err", err)
			}
			done <- struct{}{}
		}()
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for range targets {
		select {
		case <-done:
		case <-timeout.C:
			return
		}
	}
}

// Shutdown stops gossip at once; without Leave first, the others will
// declare this node dead. It is safe to call more than once.
func (n *Node) Shutdown() error {
	var err error
	n.shutdown.Do(func() {
		err = n.ml.Shutdown()
		close(n.stop)
		n.wg.Wait()
	})
	return err
}

// Addr returns the host:port this node gossips on.
func (n *Node) Addr() string { return n.addr }

// UpdateOffer lets fn edit a copy of this node's offer, then raises its
// version and broadcasts it. Node, Site and Version are this node's to set
// and are restored after fn. An edit that leaves an invalid offer is
// refused and changes nothing. Updates are serialized; fn may read the
// node (Offers, Members) but must not call UpdateOffer.
func (n *Node) UpdateOffer(fn func(*Offer)) error {
	n.updating.Lock()
	defer n.updating.Unlock()
	n.mu.Lock()
	o := cloneOffer(n.local)
	n.mu.Unlock()

	fn(&o)
	o = cloneOffer(o) // fn may have kept references to the copy's maps
	o.Node, o.Site = n.cfg.Name, n.cfg.Site

	n.mu.Lock()
	defer n.mu.Unlock()
	// n.local.Version may have moved while fn ran (defendOfferLocked).
	o.Version = max(n.local.Version+1, n.nowVersion())
	if err := validateLocal(&o); err != nil {
		return fmt.Errorf("update offer: %w", err)
	}
	n.local = o
	n.broadcastOwnLocked()
	return nil
}

func (n *Node) nowVersion() uint64 { return uint64(n.cfg.Now().UnixNano()) }

// Offers returns every offer this node knows, its own included, sorted by
// node name. Offers of nodes dead or gone longer than DeadOfferTTL are
// left out.
func (n *Node) Offers() []OfferView {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	views := []OfferView{{Offer: cloneOffer(n.local), Reachable: true, LastSeen: now}}
	for name, e := range n.offers {
		reachable, since := n.reachLocked(name, e)
		if !reachable && now.Sub(since) >= n.cfg.DeadOfferTTL {
			continue
		}
		views = append(views, OfferView{Offer: cloneOffer(e.offer), Reachable: reachable, LastSeen: e.lastSeen})
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Node < views[j].Node })
	return views
}

// reachLocked reports whether an offer's owner is alive and, if not, since
// when it has not been.
func (n *Node) reachLocked(name string, e *entry) (bool, time.Time) {
	m := n.members[name]
	switch {
	case m == nil:
		return false, e.received
	case m.live():
		return true, time.Time{}
	default:
		return false, m.since
	}
}

// Members returns every node this node knows of, itself included, sorted
// by name: alive and suspect ones, and dead or departed ones until they
// are forgotten (after ReconnectTimeout, or DeadOfferTTL for those that
// left).
func (n *Node) Members() []Member {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	ms := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		v := Member{Name: m.name, Site: m.site, Addr: m.addr(), Status: statusOf(m)}
		if v.Status == MemberAlive && now.Before(m.suspectUntil) {
			v.Status = MemberSuspect
		}
		v.RTT, v.HasRTT = n.rttLocked(m.name)
		ms = append(ms, v)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	return ms
}

func statusOf(m *member) string {
	switch m.state {
	case memberlist.StateAlive:
		return MemberAlive
	case memberlist.StateLeft:
		return MemberLeft
	default:
		return MemberDead
	}
}

// noteSuspect records that this node's memberlist suspects a member. The
// only way memberlist tells is its log line ("Suspect NAME has failed, no
// acks received"), which logBridge watches for: its EventDelegate says
// nothing of suspicion, Node.State is never updated, and the Nodes that
// Members returns are read unlocked (hashicorp/memberlist#306). The mark
// lasts as long as memberlist's longest suspicion timeout, after which the
// member is either dead or has refuted it.
func (n *Node) noteSuspect(name string) {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.members[name]; m != nil && m.state == memberlist.StateAlive {
		m.suspectUntil = now.Add(n.suspicionMax())
	}
}

// suspicionMax mirrors memberlist's suspicion timeout at the most:
// SuspicionMult × max(1, log10 N) × ProbeInterval × SuspicionMaxTimeoutMult.
func (n *Node) suspicionMax() time.Duration {
	scale := max(1, math.Log10(float64(n.alive.Load())))
	base := time.Duration(float64(n.suspicionMult) * scale * float64(n.probeInterval))
	return base * time.Duration(max(n.suspicionMaxMult, 1))
}

// liveMembersLocked returns the other live members.
func (n *Node) liveMembersLocked() []*member {
	var ms []*member
	for _, m := range n.members {
		if m.name != n.cfg.Name && m.live() {
			c := *m
			ms = append(ms, &c)
		}
	}
	return ms
}

// worker runs work handed off by memberlist callbacks, which must not
// block.
func (n *Node) worker() {
	defer n.wg.Done()
	for {
		select {
		case f := <-n.work:
			f()
		case <-n.stop:
			return
		}
	}
}

func (n *Node) enqueue(f func()) {
	select {
	case n.work <- f:
	default:
		n.log.Warn("gossip work queue is full; dropping a request")
	}
}

// maintain forgets dead members and their offers when their time is up,
// and tries to rejoin dead members: memberlist alone gives up on them,
// so the two halves of a healed partition would stay apart.
func (n *Node) maintain() {
	defer n.wg.Done()
	reap := time.NewTicker(max(min(n.cfg.DeadOfferTTL/4, time.Second), 10*time.Millisecond))
	defer reap.Stop()
	reconnect := time.NewTicker(n.cfg.ReconnectInterval)
	defer reconnect.Stop()
	for {
		select {
		case <-reap.C:
			n.reap()
		case <-reconnect.C:
			n.reconnect()
		case <-n.stop:
			return
		}
	}
}

func (n *Node) reap() {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, e := range n.offers {
		if reachable, since := n.reachLocked(name, e); !reachable && now.Sub(since) >= n.cfg.DeadOfferTTL {
			delete(n.offers, name)
			n.log.Info("dropped the offers of an unreachable node", "peer", name, "since", since)
		}
	}
	for name, since := range n.leaving {
		if now.Sub(since) >= time.Minute {
			delete(n.leaving, name) // it never went
		}
	}
	for name, m := range n.members {
		keep := n.cfg.ReconnectTimeout
		if m.state == memberlist.StateLeft {
			keep = n.cfg.DeadOfferTTL
		}
		if !m.live() && now.Sub(m.since) >= keep {
			delete(n.members, name)
			delete(n.peerCoords, name)
			n.coords.ForgetNode(name)
		}
	}
}

func (n *Node) reconnect() {
	n.mu.Lock()
	var dead []string
	for _, m := range n.members {
		if m.state == memberlist.StateDead {
			dead = append(dead, m.name+"/"+m.addr())
		}
	}
	n.mu.Unlock()
	if len(dead) == 0 {
		return
	}
	slices.Sort(dead) // map order is random already; sorting makes the pick the only randomness
	target := dead[rand.IntN(len(dead))]
	if _, err := n.ml.Join([]string{target}); err != nil {
		n.log.Debug("reconnect to a dead member failed", "peer", target, "err", err)
	}
}
