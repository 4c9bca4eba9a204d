// Package wansim simulates a wide-area network between broker nodes in
// memory, for tests and for `labfed sim coords`: memberlist runs over it
// unchanged, and the round-trip times it sees are those of a topology file.
//
// # Topology
//
// A topology names the sites and the RTT between each pair of them:
//
//	sites: [rutgers, psc, fabric-dc]
//	rtt_ms:
//	  rutgers: {psc: 9.8, fabric-dc: 6.1}
//	  psc: {fabric-dc: 8.0}
//	loss: 0.0
//
// The format is shared with other tools, so it is decoded strictly: see
// ParseTopology for what is refused.
//
// # Network
//
// A Network hands out one memberlist transport per node. A datagram from a
// node at site a to one at site b arrives RTT(a, b)/2 later, or never, with
// probability Loss; within a site it arrives at once. Streams are reliable,
// take one RTT to open and the one-way delay for every write. Partition,
// Heal, Kill and Revive change who can reach whom while the nodes run.
//
// Nothing here opens a socket: nodes get synthetic addresses in
// 127.77.0.0/16 that exist only inside the Network.
package wansim
