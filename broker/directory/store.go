package directory

import "io"

// Tx is one transaction on the store behind the directory. Keys within a
// bucket are kept in byte order.
type Tx interface {
	// Get returns the value for key, or nil. The slice is only valid for the
	// life of the transaction.
	Get(bucket, key string) []byte
	// Put stores value under key. Only in update transactions.
	Put(bucket, key string, value []byte) error
	// Delete removes key. Only in update transactions.
	Delete(bucket, key string) error
	// ForEach calls fn for each key starting with prefix, in key order. fn
	// must not modify the bucket; an error from fn stops the iteration and
	// is returned.
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
}

// Store is a transactional key-value store. Update runs fn in one
// transaction that commits only if fn returns nil, which is what makes every
// directory command all-or-nothing. Both may be called concurrently; updates
// are serialised.
type Store interface {
	View(fn func(Tx) error) error
	Update(fn func(Tx) error) error
}

// Buckets lists every bucket the directory uses, so a store can create them
// up front and a state hash can cover them all.
func Buckets() []string {
	return append([]string{
		bSites, bUsers, bEmails, bIdents, bProjects, bMemberOf, bGrants, bGrantsBySubject,
		bAccounts, bAccountsByUser, bUIDs, bGIDs, bProjectGIDs, bUsernames, bNodes, bMeta,
		bSessions, bSessionsByUser, bSessionExpiry, bLogins, bKeys, bKeysByIssuer, bLocks, bLocksByValue, bLocksByUntil,
	}, auditBuckets()...)
}

const (
	bSites           = "sites"
	bUsers           = "users"
	bEmails          = "emails"
	bIdents          = "identities"
	bProjects        = "projects"
	bMemberOf        = "member_of"
	bGrants          = "grants"
	bGrantsBySubject = "grants_by_subject"
	bAccounts        = "accounts"
	bAccountsByUser  = "accounts_by_user"
	bUIDs            = "uids"
	bGIDs            = "gids"
	bProjectGIDs     = "project_gids"
	bUsernames       = "usernames"
	bNodes           = "nodes"
	bMeta            = "meta"
	bSessions        = "sessions"
	bSessionsByUser  = "sessions_by_user"
	bSessionExpiry   = "session_expiry"
	bLogins          = "logins"
	bKeys            = "signing_keys"
	bKeysByIssuer    = "signing_keys_by_issuer"
	bLocks           = "locks"
	bLocksByValue    = "locks_by_value" // kind\x00value\x00seq → nil
	bLocksByUntil    = "locks_by_until" // until ns\x00seq → nil
)

// SnapshotStore is a Store that can also copy out and replace its whole
// state, which is what Raft snapshots need.
type SnapshotStore interface {
	Store
	// Snapshot pins a consistent view of the state; it must not block on
	// concurrent updates for long, since Raft calls it between applies.
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with one written by Snapshot. On
	// error the old state is left in place.
	Restore(r io.Reader) error
}

// Snapshot is a pinned view of the state being written out.
type Snapshot interface {
	WriteTo(w io.Writer) (int64, error)
	// Release frees the view; it is safe to call more than once.
	Release()
}
