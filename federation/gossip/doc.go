// Package gossip is a broker node's view of the federation: who is up
// (hashicorp/memberlist), what every site offers (instruments and compute
// targets), and how far away each site is (Vivaldi network coordinates,
// hashicorp/serf/coordinate).
//
// # Offers
//
// Each node owns one Offer, changed only through Node.UpdateOffer, which
// raises its Version. Offers travel as memberlist delegate messages, never
// as node metadata (memberlist caps that at 512 bytes; it carries only the
// site name):
//
//   - a change is broadcast through memberlist's TransmitLimitedQueue and
//     relayed by every node that had not seen it, so it reaches all nodes
//     in a few gossip rounds; an offer too large for one packet is sent by
//     its owner to each member over a stream instead;
//   - every push/pull exchanges the whole catalog (LocalState and
//     MergeRemoteState), which repairs whatever broadcasts missed and
//     brings a joining node up to date.
//
// The highest Version wins, with one exception that makes the owner
// authoritative: a node that hears an offer about itself that is not the
// one it holds (gossip from before a restart, whose version may be higher
// if the clock went back) raises its own version above it and broadcasts.
// Versions start at the wall clock in nanoseconds, so a restarted node
// normally starts above its old offer anyway.
//
// # Failures and partitions
//
// The offers of a node memberlist declares dead, or that left, are listed
// with Reachable false, and dropped after Config.DeadOfferTTL. They are not
// handed on in push/pull, so they die out rather than circulate. When the
// node comes back its offer arrives again with the next push/pull or
// broadcast. memberlist itself stops contacting dead nodes, so the node
// retries one dead member every Config.ReconnectInterval, as Serf does;
// that is how the two sides of a healed partition merge. A node that
// leaves with Node.Leave first tells every member so (memberlist's own
// notice does not say whether a node left or died), and is listed as left.
//
// # Encryption
//
// Gossip is encrypted and authenticated with the AES keys of a memberlist
// Keyring, in both directions, and every packet and stream carries
// Config.Label. A node without a key, with other keys, or with another
// label cannot join, and its messages are dropped before they reach this
// package. New refuses to start without keys unless Config.DevPlaintext is
// set. Keys rotate without downtime, as with Serf's KeyManager: InstallKey
// the new key, UseKey it, RemoveKey the old one; each step is applied here,
// sent to every live member over the encrypted channel, and acknowledged.
//
// # Network coordinates
//
// Every ack memberlist sends carries this node's coordinate (a version
// byte and JSON); every completed direct probe updates the local
// coordinate with the measured RTT and caches the peer's. RTT, SiteRTT and
// RTTBetweenSites estimate round-trip times from those coordinates.
//
// # Concurrency
//
// memberlist calls the delegate from its own goroutines, some while
// holding its node lock. The delegate only copies data under the Node's
// mutex and never calls memberlist while holding it; work that blocks
// (answering a key operation) runs on a worker goroutine.
package gossip
