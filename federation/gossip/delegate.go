package gossip

import (
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. It is a separate type so that
// they stay off Node's API. memberlist calls the event methods with its
// node lock held, the only time a *memberlist.Node may be read; they copy
// what they need and never call back into memberlist. None of the methods
// blocks: anything slow goes to Node.work.
type delegate struct{ n *Node }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate  = (*delegate)(nil)
)

// NodeMeta carries the site name only; see encodeMeta.
func (d *delegate) NodeMeta(limit int) []byte {
	return encodeMeta(d.n.cfg.Site, limit)
}

// NotifyMsg handles offers and key messages sent by gossip or over a
// stream.
func (d *delegate) NotifyMsg(b []byte) {
	m, err := decode(b)
	if err != nil {
		d.n.log.Warn("dropped a gossip message", "err", err)
		return
	}
	switch m.typ {
	case msgOffer:
		d.n.receiveOffer(m.offer)
	case msgKeyOp:
		d.n.enqueue(func() { d.n.handleKeyOp(m.keyOp) })
	case msgKeyAck:
		d.n.handleKeyAck(m.keyAck)
	case msgLeave:
		d.n.handleLeave(m.leave)
	default:
		d.n.log.Warn("dropped a gossip message of unexpected type", "type", m.typ)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.queue.GetBroadcasts(overhead, limit)
}

// LocalState and MergeRemoteState exchange the whole catalog on join and
// at every push/pull, which repairs whatever broadcasts missed.
func (d *delegate) LocalState(join bool) []byte {
	return d.n.localState()
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	m, err := decode(buf)
	if err == nil && m.typ != msgState {
		err = errMalformed
	}
	if err != nil {
		d.n.log.Warn("dropped a catalog from push/pull", "err", err)
		return
	}
	for _, o := range m.state {
		d.n.receiveOffer(o)
	}
}

// NotifyJoin is called when a node joins or comes back from the dead, and
// for this node itself at start.
func (d *delegate) NotifyJoin(node *memberlist.Node) {
	d.n.setMember(node, memberlist.StateAlive)
}

// NotifyLeave is called when a node is declared dead or leaves; which of
// the two, only our own leave intent tells (see leaveIntent).
func (d *delegate) NotifyLeave(node *memberlist.Node) {
	d.n.setMember(node, memberlist.StateDead)
}

func (d *delegate) NotifyUpdate(node *memberlist.Node) {
	d.n.setMember(node, memberlist.StateAlive)
}

// setMember records memberlist's word of a node.
func (n *Node) setMember(node *memberlist.Node, state memberlist.NodeStateType) {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.members[node.Name]
	if m == nil {
		m = &member{name: node.Name}
		n.members[node.Name] = m
	}
	wasLive := m.live() && !m.since.IsZero()
	if _, leaving := n.leaving[node.Name]; leaving && state == memberlist.StateDead {
		state = memberlist.StateLeft
		delete(n.leaving, node.Name)
	}
	if state != m.state || m.since.IsZero() {
		m.since = now
	}
	m.state = state
	m.suspectUntil = time.Time{}
	m.site = decodeMeta(node.Meta)
	m.ip, m.port = slices.Clone(node.Addr), node.Port
	switch {
	case !wasLive && m.live():
		delete(n.leaving, node.Name) // it came back
		n.alive.Add(1)
		n.log.Info("member alive", "peer", m.name, "site", m.site, "addr", m.addr())
		n.greetLocked(m)
	case wasLive && !m.live():
		n.alive.Add(-1)
		n.log.Info("member "+statusOf(m), "peer", m.name)
	}
	if e := n.offers[node.Name]; e != nil {
		e.lastSeen = now
	}
}

// greetLocked sends our offer to a member that joined or came back: it may
// have dropped our offer while it was cut off, and a join's push/pull
// reaches only one member, whose broadcast may miss some.
func (n *Node) greetLocked(m *member) {
	if m.name == n.cfg.Name {
		return
	}
	to, msg := *m, n.ownOfferMsgLocked()
	if msg != nil {
		go n.send(&to, msg) // not on the worker: a stream can take TCPTimeout to fail
	}
}

// handleLeave records that a node announced it is leaving. The intent
// usually arrives before memberlist's notice; if it arrives after, the node
// is already dead here and becomes left.
func (n *Node) handleLeave(l leaveIntent) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.members[l.Node]; m != nil && m.state == memberlist.StateDead {
		m.state = memberlist.StateLeft
		return
	}
	n.leaving[l.Node] = n.cfg.Now()
}

// AckPayload and NotifyPingComplete carry network coordinates on
// memberlist's probes; see coords.go.
func (d *delegate) AckPayload() []byte { return d.n.ackPayload() }

func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	// Only the name is read: memberlist passes its own Node here without
	// holding its lock, and names never change.
	d.n.pingComplete(other.Name, rtt, payload)
}
