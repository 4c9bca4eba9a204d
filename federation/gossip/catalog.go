package gossip

import (
	"github.com/hashicorp/memberlist"
)

// receiveOffer applies an offer heard from a broadcast, a direct send or a
// push/pull.
func (n *Node) receiveOffer(o Offer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if o.Node == n.cfg.Name {
		n.defendOfferLocked(o)
		return
	}
	n.storeOfferLocked(o)
}

// defendOfferLocked keeps this node's offer authoritative for itself. An
// offer about this node that is not the one it holds comes from before a
// restart (with a clock set back, its version may even be higher): the
// node moves its own version above the stale one and broadcasts, so that
// the stale offer loses everywhere.
func (n *Node) defendOfferLocked(heard Offer) {
	stale := heard.Version > n.local.Version ||
		heard.Version == n.local.Version && !sameContent(heard, n.local)
	if !stale {
		return
	}
	n.log.Info("heard a stale offer about this node; superseding it",
		"stale_version", heard.Version, "own_version", n.local.Version)
	n.local.Version = max(heard.Version+1, n.nowVersion())
	n.broadcastOwnLocked()
}

// storeOfferLocked keeps o if it is newer than what the catalog holds and
// passes it on while its owner is alive (or not yet known: offers of a new
// node can arrive before memberlist's word of it). Offers of dead nodes are
// kept but not passed on, so that they die out instead of circulating.
func (n *Node) storeOfferLocked(o Offer) {
	cur := n.offers[o.Node]
	if cur != nil && o.Version <= cur.offer.Version {
		return
	}
	now := n.cfg.Now()
	e := &entry{offer: o, received: now, lastSeen: now}
	m := n.members[o.Node]
	if m != nil && !m.live() && cur != nil {
		e.lastSeen = cur.lastSeen
	}
	n.offers[o.Node] = e
	if m == nil || m.live() {
		n.relayLocked(o)
	}
}

// relayLocked queues an offer for gossip. Queueing under n.mu keeps the
// queue's order that of the versions: a named broadcast replaces the
// queued one of the same node, and an older one must never replace a
// newer one. Offers too large for a packet are not relayed; their owner
// sends them to every member itself.
func (n *Node) relayLocked(o Offer) {
	msg, err := encodeOffer(o)
	if err != nil {
		n.log.Error("encode offer", "peer", o.Node, "err", err)
		return
	}
	if len(msg) <= n.maxBroadcast {
		n.queue.QueueBroadcast(&offerBroadcast{node: o.Node, msg: msg})
	}
}

// broadcastOwnLocked spreads this node's offer. It goes straight to every
// live member, because memberlist transmits a broadcast only a few times
// (RetransmitMult × log10 N) to random members and in a small federation
// that misses a member now and then, which would then wait for the next
// push/pull; and it goes into the gossip queue, whose relays reach members
// that lost the direct packet.
func (n *Node) broadcastOwnLocked() {
	msg, err := encodeOffer(n.local)
	if err != nil {
		n.log.Error("encode own offer", "err", err)
		return
	}
	if len(msg) <= n.maxBroadcast {
		n.queue.QueueBroadcast(&offerBroadcast{node: n.cfg.Name, msg: msg})
	}
	targets := n.liveMembersLocked()
	go func() {
		for _, m := range targets {
			n.send(m, msg)
		}
	}()
}

// ownOfferMsgLocked encodes this node's offer.
func (n *Node) ownOfferMsgLocked() []byte {
	msg, err := encodeOffer(n.local)
	if err != nil {
		n.log.Error("encode own offer", "err", err)
		return nil
	}
	return msg
}

// send sends a message to one member: in a packet when it fits, else over
// a stream. It blocks while a stream opens.
func (n *Node) send(m *member, msg []byte) {
	var err error
	if len(msg) <= n.maxBroadcast {
		err = n.ml.SendBestEffort(m.mlNode(), msg)
	} else {
		err = n.ml.SendReliable(m.mlNode(), msg)
	}
	if err != nil {
		n.log.Debug("send to member", "peer", m.name, "err", err)
	}
}

// localState is the catalog for a push/pull: this node's offer and those
// of live nodes. Offers of dead nodes are not handed on, so that they can
// be dropped for good.
func (n *Node) localState() []byte {
	n.mu.Lock()
	offers := []Offer{n.local}
	for name, e := range n.offers {
		if m := n.members[name]; m != nil && m.live() {
			offers = append(offers, e.offer)
		}
	}
	n.mu.Unlock()
	b, err := encodeState(offers)
	if err != nil {
		n.log.Error("encode catalog for push/pull", "err", err)
		return nil
	}
	return b
}

// offerBroadcast is a queued offer; a newer one of the same node replaces
// it in the queue.
type offerBroadcast struct {
	node string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*offerBroadcast)(nil)

func (b *offerBroadcast) Name() string    { return "offer/" + b.node }
func (b *offerBroadcast) Message() []byte { return b.msg }
func (b *offerBroadcast) Finished()       {}

func (b *offerBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.Name()
}
