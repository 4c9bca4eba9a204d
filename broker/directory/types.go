package directory

import (
	"time"

	"github.com/labfed/labfed/broker"
)

// Site is an institution in the federation with the POSIX id ranges its
// accounts are allocated from.
type Site struct {
	Name     string       `json:"name"`
	UIDRange broker.Range `json:"uid_range"`
	GIDRange broker.Range `json:"gid_range"`
	// NextUID and NextGID are allocation cursors: every number below them
	// inside the range has been handed out (or skipped because a pin held
	// it). They only move forward, which is what keeps numbers from ever
	// being reused.
	NextUID uint32    `json:"next_uid"`
	NextGID uint32    `json:"next_gid"`
	Created time.Time `json:"created"`
}

// User statuses.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
	StatusRemoved   = "removed"
)

// Roles.
const (
	RoleResearcher  = "researcher"
	RoleCoordinator = "coordinator"
	// RoleSiteAdminPrefix is followed by the site name: "site-admin:rutgers".
	RoleSiteAdminPrefix = "site-admin:"
)

// User is a person in the federation.
type User struct {
	Name       string            `json:"name"`
	Email      string            `json:"email"`
	Home       string            `json:"home"`
	Identities []broker.Identity `json:"identities"`
	Roles      []string          `json:"roles"`
	Status     string            `json:"status"`
	Created    time.Time         `json:"created"`
	Removed    *time.Time        `json:"removed,omitempty"`
}

// Project groups users; grants to a project reach all its members.
type Project struct {
	Name    string    `json:"name"`
	Members []string  `json:"members"`
	Created time.Time `json:"created"`
}

// Grant statuses as stored; "expired" and "pending" are derived at query
// time from the window.
const (
	GrantActive  = "active"
	GrantRevoked = "revoked"
)

// Grant lets a subject (a user or a project) perform actions on a resource
// during a window.
type Grant struct {
	ID       string    `json:"id"`
	Seq      uint64    `json:"seq"`
	Subject  string    `json:"subject"` // "user:alice" or "project:cryo-lab"
	Resource string    `json:"resource"`
	Actions  []string  `json:"actions"`
	From     time.Time `json:"from"`
	// Until is nil for a grant without an end.
	Until     *time.Time `json:"until,omitempty"`
	GrantedBy string     `json:"granted_by"`
	Created   time.Time  `json:"created"`
	Status    string     `json:"status"`
	RevokedBy string     `json:"revoked_by,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}

// Overlaps reports whether g's window intersects [from, until); a nil until
// is open-ended.
func (g *Grant) Overlaps(from time.Time, until *time.Time) bool {
	aEndsAfterB := g.Until == nil || g.Until.After(from)
	bEndsAfterA := until == nil || until.After(g.From)
	return aEndsAfterB && bEndsAfterA
}

// StateAt returns the grant's status at t: revoked, pending, active or
// expired.
func (g *Grant) StateAt(t time.Time) string {
	switch {
	case g.Status == GrantRevoked:
		return GrantRevoked
	case t.Before(g.From):
		return "pending"
	case g.Until != nil && !t.Before(*g.Until):
		return "expired"
	}
	return GrantActive
}

// Account is a user's POSIX identity at one site.
type Account struct {
	User     string   `json:"user"`
	Site     string   `json:"site"`
	Username string   `json:"username"`
	UID      uint32   `json:"uid"`
	GID      uint32   `json:"gid"`
	Groups   []uint32 `json:"groups"`
	// Pinned is set when the uid was imported (labfed account pin) rather
	// than allocated from the site's range.
	Pinned  bool      `json:"pinned"`
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
}

// Node is a broker node registered in the directory, so any node can find
// the leader's API address from its Raft id.
type Node struct {
	ID       string `json:"id"`
	Site     string `json:"site"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	// GossipAddr is where the node gossips; empty for a node without
	// gossip.
	GossipAddr string `json:"gossip_addr,omitempty"`
}
