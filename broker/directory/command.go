package directory

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/labfed/labfed/broker"
)

// Command is one entry of the replicated log. Exactly one of the operation
// fields is set. Time and Actor are stamped by the node that proposes the
// command, so every replica that applies it sees the same values: Apply never
// reads a clock.
type Command struct {
	Time  time.Time `json:"time"`
	Actor string    `json:"actor,omitempty"`
	// Guard, when set, must still hold for the command to apply.
	Guard *Guard `json:"guard,omitempty"`

	AddSite        *AddSite        `json:"add_site,omitempty"`
	UpdateSite     *UpdateSite     `json:"update_site,omitempty"`
	AddUser        *AddUser        `json:"add_user,omitempty"`
	UpdateUser     *UpdateUser     `json:"update_user,omitempty"`
	RemoveUser     *RemoveUser     `json:"remove_user,omitempty"`
	AddProject     *AddProject     `json:"add_project,omitempty"`
	AddMember      *ProjectMember  `json:"add_member,omitempty"`
	RemoveMember   *ProjectMember  `json:"remove_member,omitempty"`
	AddGrant       *AddGrant       `json:"add_grant,omitempty"`
	RevokeGrant    *RevokeGrant    `json:"revoke_grant,omitempty"`
	PinAccount     *PinAccount     `json:"pin_account,omitempty"`
	RegisterNode   *RegisterNode   `json:"register_node,omitempty"`
	DeregisterNode *DeregisterNode `json:"deregister_node,omitempty"`
	CreateSession  *CreateSession  `json:"create_session,omitempty"`
	RevokeSessions *RevokeSessions `json:"revoke_sessions,omitempty"`
	PublishKey     *PublishKey     `json:"publish_key,omitempty"`
	RevokeKey      *RevokeKey      `json:"revoke_key,omitempty"`
	AddLock        *AddLock        `json:"add_lock,omitempty"`
	AppendAudit    *AppendAudit    `json:"append_audit,omitempty"`
	ArchiveAudit   *ArchiveAudit   `json:"archive_audit,omitempty"`
}

// AddSite registers a site and its id ranges.
type AddSite struct {
	Name     string       `json:"name"`
	UIDRange broker.Range `json:"uid_range"`
	GIDRange broker.Range `json:"gid_range"`
}

// UpdateSite widens a site's id ranges; a nil range is left as it is.
type UpdateSite struct {
	Name     string        `json:"name"`
	UIDRange *broker.Range `json:"uid_range,omitempty"`
	GIDRange *broker.Range `json:"gid_range,omitempty"`
}

// AddUser registers a person.
type AddUser struct {
	Name       string            `json:"name"`
	Email      string            `json:"email"`
	Home       string            `json:"home"`
	Identities []broker.Identity `json:"identities,omitempty"`
	Roles      []string          `json:"roles,omitempty"`
}

// UpdateUser changes fields of a user; nil fields are left as they are.
type UpdateUser struct {
	Name          string            `json:"name"`
	Email         *string           `json:"email,omitempty"`
	Roles         *[]string         `json:"roles,omitempty"`
	Status        *string           `json:"status,omitempty"`
	AddIdentities []broker.Identity `json:"add_identities,omitempty"`
	// RemoveIdentities must each belong to the user; sessions opened with
	// them end.
	RemoveIdentities []broker.Identity `json:"remove_identities,omitempty"`
}

// RemoveUser removes a user, leaving tombstones so their names and numbers
// are never handed out again.
type RemoveUser struct {
	Name string `json:"name"`
}

// AddProject creates an empty project.
type AddProject struct {
	Name string `json:"name"`
}

// ProjectMember names a project and a user.
type ProjectMember struct {
	Project string `json:"project"`
	User    string `json:"user"`
}

// AddGrant lets a subject act on a resource. Subject is "user:NAME" or
// "project:NAME". A zero From means the command's time; a nil Until means no
// end.
type AddGrant struct {
	Subject  string     `json:"subject"`
	Resource string     `json:"resource"`
	Actions  []string   `json:"actions"`
	From     time.Time  `json:"from"`
	Until    *time.Time `json:"until,omitempty"`
}

// RevokeGrant ends a grant now.
type RevokeGrant struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// PinAccount imports an existing POSIX account (from LDAP) instead of
// allocating one. A zero GID allocates the user-private group from the
// site's range; an empty Username uses the user's name.
type PinAccount struct {
	User     string `json:"user"`
	Site     string `json:"site"`
	UID      uint32 `json:"uid"`
	GID      uint32 `json:"gid,omitempty"`
	Username string `json:"username,omitempty"`
}

// RegisterNode records a broker node's addresses. When the node's site is
// not yet in the directory and ranges are given, the site is added too.
type RegisterNode struct {
	Node     Node          `json:"node"`
	UIDRange *broker.Range `json:"uid_range,omitempty"`
	GIDRange *broker.Range `json:"gid_range,omitempty"`
}

// DeregisterNode forgets a node that left the federation.
type DeregisterNode struct {
	ID string `json:"id"`
}

// Encode returns the command's log entry bytes.
func (c *Command) Encode() ([]byte, error) { return json.Marshal(c) }

// DecodeCommand parses a log entry.
func DecodeCommand(b []byte) (*Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("directory: decode command: %w", err)
	}
	return &c, nil
}

// Result is what applying a command returns: the record it created or
// changed, or the error that made it change nothing.
type Result struct {
	Value any
	Err   error
}

// Guard makes a command conditional on the facts its authorization rested
// on. The broker decides who may do what on its view of the directory; a
// role can change between that decision and the moment the command applies,
// so Apply checks these facts again, deterministically, against the state
// the command meets.
type Guard struct {
	// User, when set, must exist, be active and still hold every role in
	// Roles.
	User  string   `json:"user,omitempty"`
	Roles []string `json:"roles,omitempty"`
	// Target, when set, is the user a site administrator of TargetSite
	// acts on: still homed at TargetSite and holding no role beyond
	// researcher and site-admin:TargetSite.
	Target     string `json:"target,omitempty"`
	TargetSite string `json:"target_site,omitempty"`
}
