package wansim

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Port is the port of every simulated address, memberlist's default.
const Port = 7946

// maxPacket bounds a datagram, as UDP over IPv4 does.
const maxPacket = 65507

// ErrUnreachable is returned by a dial to a node that is shut down,
// killed, unknown or on the other side of a partition.
var ErrUnreachable = errors.New("wansim: host unreachable")

// Network is an in-memory WAN between simulated nodes. Its methods are safe
// for concurrent use.
type Network struct {
	topo *Topology

	mu     sync.Mutex
	rng    *rand.Rand
	hosts  map[string]*host // by node name; kept across restarts so the address stays
	byAddr map[string]*host
	perSit map[string]int // hosts allocated per site, for addresses
	group  map[string]int // partition group by node name; nil when healed
}

// host is a node's place in the network. Its transport changes when the
// node restarts; its address does not.
type host struct {
	name, site string
	addr       addr
	killed     bool
	t          *transport // nil while the node is shut down
}

// NewNetwork returns a network shaped by t; seed drives packet loss so
// that a test sees the same drops for the same sequence of sends. It
// panics when t is invalid (see Topology.Validate), like regexp.MustCompile:
// a broken topology in a test is a programming error.
func NewNetwork(t *Topology, seed int64) *Network {
	if err := t.Validate(); err != nil {
		panic(err)
	}
	return &Network{
		topo:   t,
		rng:    rand.New(rand.NewSource(seed)),
		hosts:  map[string]*host{},
		byAddr: map[string]*host{},
		perSit: map[string]int{},
	}
}

// Transport attaches the node nodeName at site to the network and returns
// its memberlist transport. A node that was shut down may attach again
// under the same name and gets its old address back, as a restarted
// machine would.
//
// Addresses are synthetic IPv4 addresses in 127.77.0.0/16 with port 7946
// (127.77.<site>.<n>), because memberlist advertises an IP, and a host
// name would make it query DNS. No socket is ever opened for them; use
// Addr or the "name/address" form with memberlist's Join.
func (n *Network) Transport(nodeName, site string) (memberlist.NodeAwareTransport, error) {
	if nodeName == "" {
		return nil, errors.New("wansim: empty node name")
	}
	if !n.topo.hasSite(site) {
		return nil, fmt.Errorf("wansim: site %q is not in the topology %v", site, n.topo.Sites)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	h, err := n.hostLocked(nodeName, site)
	if err != nil {
		return nil, err
	}
	if h.t != nil {
		return nil, fmt.Errorf("wansim: node %q already has a running transport; shut it down first", nodeName)
	}
	h.t = newTransport(n, h)
	return h.t, nil
}

func (n *Network) hostLocked(name, site string) (*host, error) {
	if h, ok := n.hosts[name]; ok {
		if h.site != site {
			return nil, fmt.Errorf("wansim: node %q is at site %q, not %q", name, h.site, site)
		}
		return h, nil
	}
	siteIdx := 0
	for i, s := range n.topo.Sites {
		if s == site {
			siteIdx = i + 1
		}
	}
	n.perSit[site]++
	if siteIdx > 254 || n.perSit[site] > 254 {
		return nil, fmt.Errorf("wansim: out of addresses (at most 254 sites and 254 nodes a site)")
	}
	ip := net.IPv4(127, 77, byte(siteIdx), byte(n.perSit[site]))
	h := &host{name: name, site: site, addr: addr{ip: ip}}
	n.hosts[name] = h
	n.byAddr[h.addr.String()] = h
	return h, nil
}

// Addr returns the address of a node attached before ("127.77.1.1:7946").
func (n *Network) Addr(nodeName string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.hosts[nodeName]
	if !ok {
		return "", false
	}
	return h.addr.String(), true
}

// Partition splits the network: nodes in different groups cannot reach
// each other (packets are dropped, dials fail). Nodes named in no group
// form one more group of their own. Streams already open are not cut.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[string]int{}
	for i, g := range groups {
		for _, name := range g {
			n.group[name] = i + 1
		}
	}
}

// Heal ends a partition.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = nil
}

// Kill cuts a node off the network without stopping it, as a crashed
// link would: its packets and dials, and those to it, fail until Revive.
func (n *Network) Kill(nodeName string) {
	n.setKilled(nodeName, true)
}

// Revive reconnects a node cut off by Kill.
func (n *Network) Revive(nodeName string) {
	n.setKilled(nodeName, false)
}

func (n *Network) setKilled(name string, killed bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h, ok := n.hosts[name]; ok {
		h.killed = killed
	}
}

// route finds the transport at address to as seen from the sender, and
// the one-way delay to it. It fails when the two cannot talk.
func (n *Network) route(from *host, to string) (*transport, time.Duration, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.byAddr[to]
	switch {
	case !ok:
		return nil, 0, fmt.Errorf("%w: no node at %s", ErrUnreachable, to)
	case from.killed || from.t == nil:
		return nil, 0, fmt.Errorf("%w: %s is down", ErrUnreachable, from.name)
	case h.killed || h.t == nil:
		return nil, 0, fmt.Errorf("%w: %s is down", ErrUnreachable, h.name)
	case n.group != nil && n.group[from.name] != n.group[h.name]:
		return nil, 0, fmt.Errorf("%w: %s and %s are partitioned", ErrUnreachable, from.name, h.name)
	}
	rtt, _ := n.topo.RTT(from.site, h.site)
	return h.t, rtt / 2, nil
}

// lose draws whether a packet is dropped.
func (n *Network) lose() bool {
	if n.topo.Loss == 0 {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rng.Float64() < n.topo.Loss
}

func (n *Network) detach(h *host, t *transport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h.t == t {
		h.t = nil
	}
}

// addr is a simulated address; memberlist only needs String.
type addr struct{ ip net.IP }

func (a addr) Network() string { return "wansim" }
func (a addr) String() string  { return net.JoinHostPort(a.ip.String(), strconv.Itoa(Port)) }

// transport is one node's memberlist.NodeAwareTransport.
type transport struct {
	net      *Network
	host     *host
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

func newTransport(n *Network, h *host) *transport {
	return &transport{
		net:      n,
		host:     h,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
}

// FinalAdvertiseAddr ignores the configured address: a simulated node has
// exactly one.
func (t *transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.host.addr.ip, Port, nil
}

func (t *transport) WriteTo(b []byte, to string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: to})
}

// WriteToAddress sends a datagram that arrives after the one-way delay,
// unless it is lost. Like UDP, an unreachable peer is not an error.
func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if len(b) > maxPacket {
		return now, fmt.Errorf("wansim: packet of %d bytes exceeds %d", len(b), maxPacket)
	}
	dst, delay, err := t.net.route(t.host, a.Addr)
	if err != nil || t.net.lose() {
		return now, nil
	}
	buf := append([]byte(nil), b...)
	from := t.host.addr
	time.AfterFunc(delay, func() {
		select {
		case dst.packetCh <- &memberlist.Packet{Buf: buf, From: from, Timestamp: time.Now()}:
		case <-dst.done:
		}
	})
	return now, nil
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *transport) DialTimeout(to string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: to}, timeout)
}

// DialAddressTimeout opens a reliable stream after one round trip (the
// handshake); bytes then take the one-way delay in each direction.
func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dst, delay, err := t.net.route(t.host, a.Addr)
	if err != nil {
		return nil, err
	}
	if timeout > 0 && 2*delay > timeout {
		time.Sleep(timeout)
		return nil, fmt.Errorf("wansim: dial %s: %w", a.Addr, os.ErrDeadlineExceeded)
	}
	time.Sleep(2 * delay)
	local, remote := newConnPair(t.host.addr, dst.host.addr, delay)
	var expire <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expire = timer.C
	}
	select {
	case dst.streamCh <- remote:
		return local, nil
	case <-dst.done:
	case <-t.done:
	case <-expire:
	}
	local.Close()
	remote.Close()
	return nil, fmt.Errorf("%w: %s stopped accepting", ErrUnreachable, a.Addr)
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown detaches the node; packets in flight to it are dropped.
func (t *transport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		t.net.detach(t.host, t)
	})
	return nil
}
