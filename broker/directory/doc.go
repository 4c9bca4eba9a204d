// Package directory is the federated directory's deterministic state
// machine: sites, users, projects, grants, per-site POSIX accounts and the
// broker nodes, kept in a transactional key-value Store.
//
// # Commands
//
// Every change is a Command, an entry of the replicated log. Apply and
// ApplyBatch run commands against the store; a command either applies
// completely or changes nothing, and its outcome depends only on the command
// and the prior state. The proposing node stamps Time and Actor into the
// command, so no replica ever reads a clock; iteration is always in key or
// sorted order, never in map order.
//
// # Accounts
//
// When a grant first reaches a user at a site (directly or through a
// project), the user gets an account there: the next free uid of the site's
// range, a user-private gid, and a gid for each of the user's projects.
// Allocation cursors only move forward and every number handed out is
// recorded with its owner forever, so numbers are never reused, even after
// the user is removed. Pinned accounts (imported from LDAP) claim their
// numbers the same way, and the allocator skips them.
//
// # Queries
//
// The query methods (Sites, User, Grants, Account, Hash, …) read the local
// store; whether that is linearizable is the replica layer's concern.
package directory
