package gossip

import (
	"encoding/json"
	"time"

	"github.com/hashicorp/serf/coordinate"
)

// pingVersion heads the coordinate in an ack payload, as in Serf, so the
// payload can change without a new memberlist protocol.
const pingVersion = 1

// maxCoordBytes bounds a peer's coordinate: 8 dimensions need far less.
const maxCoordBytes = 2048

// ackPayload is our coordinate, appended to every ack we send.
func (n *Node) ackPayload() []byte {
	b, err := json.Marshal(n.coords.GetCoordinate())
	if err != nil {
		n.log.Error("encode coordinate", "err", err)
		return nil
	}
	return append([]byte{pingVersion}, b...)
}

// pingComplete feeds one direct probe's RTT and the peer's coordinate to
// Vivaldi, and caches the peer's coordinate for RTT estimates.
func (n *Node) pingComplete(peer string, rtt time.Duration, payload []byte) {
	now := n.cfg.Now()
	n.mu.Lock()
	if m := n.members[peer]; m != nil {
		m.suspectUntil = time.Time{} // it answered
	}
	if e := n.offers[peer]; e != nil {
		e.lastSeen = now
	}
	n.mu.Unlock()

	if len(payload) < 2 || payload[0] != pingVersion || len(payload) > maxCoordBytes {
		return
	}
	var c coordinate.Coordinate
	if err := json.Unmarshal(payload[1:], &c); err != nil {
		n.log.Debug("bad coordinate in ack", "peer", peer, "err", err)
		return
	}
	if _, err := n.coords.Update(peer, &c, rtt); err != nil {
		n.log.Debug("rejected coordinate", "peer", peer, "err", err)
		return
	}
	n.mu.Lock()
	n.peerCoords[peer] = &c
	n.mu.Unlock()
}

// Coordinate returns a copy of this node's network coordinate.
func (n *Node) Coordinate() *coordinate.Coordinate {
	return n.coords.GetCoordinate()
}

// RTT estimates the round-trip time from this node to another from their
// network coordinates; false until this node has probed it.
func (n *Node) RTT(node string) (time.Duration, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rttLocked(node)
}

func (n *Node) rttLocked(node string) (time.Duration, bool) {
	if node == n.cfg.Name {
		return 0, true
	}
	c := n.peerCoords[node]
	if c == nil {
		return 0, false
	}
	return n.coords.DistanceTo(c), true
}

// SiteRTT estimates the round-trip time from this node to the nearest live
// node of site; 0 for this node's own site.
func (n *Node) SiteRTT(site string) (time.Duration, bool) {
	if site == n.cfg.Site {
		return 0, true
	}
	n.mu.Lock()
	to := n.siteCoordsLocked(site)
	n.mu.Unlock()
	return nearest([]*coordinate.Coordinate{n.coords.GetCoordinate()}, to)
}

// RTTBetweenSites estimates the round-trip time between the nearest live
// nodes of two sites, from the coordinates this node holds (its own and
// those its peers reported), so that any node can answer for any two
// sites, as for "compute near SITE"; 0 when a == b.
func (n *Node) RTTBetweenSites(a, b string) (time.Duration, bool) {
	if a == b {
		return 0, true
	}
	n.mu.Lock()
	from, to := n.siteCoordsLocked(a), n.siteCoordsLocked(b)
	n.mu.Unlock()
	return nearest(from, to)
}

// nearest returns the smallest distance between a coordinate of from and
// one of to.
func nearest(from, to []*coordinate.Coordinate) (time.Duration, bool) {
	var best time.Duration
	found := false
	for _, x := range from {
		for _, y := range to {
			if !x.IsCompatibleWith(y) {
				continue
			}
			if d := x.DistanceTo(y); !found || d < best {
				best, found = d, true
			}
		}
	}
	return best, found
}

// siteCoordsLocked returns the coordinates of a site's live nodes.
func (n *Node) siteCoordsLocked(site string) []*coordinate.Coordinate {
	var cs []*coordinate.Coordinate
	if site == n.cfg.Site {
		cs = append(cs, n.coords.GetCoordinate())
	}
	for name, c := range n.peerCoords {
		if m := n.members[name]; m != nil && m.live() && m.site == site && name != n.cfg.Name {
			cs = append(cs, c)
		}
	}
	return cs
}
