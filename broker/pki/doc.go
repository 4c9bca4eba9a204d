// Package pki holds the federation's public-key infrastructure: the
// federation CA, the certificates it issues to sites' brokers, agents and
// administrators, revocation, and the TLS configurations every labfed
// connection uses.
//
// # Identities
//
// A certificate names its holder with exactly one URI subject alternative
// name, spiffe://labfed/site/<site>/<kind>/<name>, where kind is one of
// KindBroker, KindAgent or KindAdmin. Authorization decisions read that
// Identity (PeerIdentity) and never the subject's common name or the DNS
// names, which exist only so that ordinary hostname verification can work
// for tools that insist on it.
//
// # Keys and certificates
//
// Every key is Ed25519. The CA is self-signed and may sign leaves only
// (MaxPathLenZero): there are no intermediates. Leaves carry both the server
// and the client extended key usage, because a broker is a server to its
// peers' dialers and a client when it dials them.
//
// # Revocation
//
// The CA writes a CRL file (Revoke). Each holder's Bundle re-reads the file
// when its modification time, size or inode changes, checking at most once a
// second, so a revocation copied to a node takes effect on the next
// handshake without a restart. A CRL file that is missing when the Bundle
// is loaded means no revocations; one that later disappears, fails to parse,
// is not signed by the CA or carries a lower CRL number than the one in use
// is ignored and the last good list stays in force, so a botched copy can
// never un-revoke a certificate. The CRL's NextUpdate is not enforced: the
// list is distributed as a file, not fetched, and a stale list is still
// better than none.
//
// # Verification
//
// Servers verify clients with the standard library (ClientCAs) and then
// check revocation and the Identity in VerifyConnection, which also runs on
// resumed sessions. Clients cannot use the standard library's verification
// as is, because it insists on matching a host name and brokers are often
// dialed by IP address or through names the certificate does not carry; see
// Bundle.ClientConfig.
package pki
