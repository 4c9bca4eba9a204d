package directory

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
)

// Directory is the federated directory's state machine over a Store.
type Directory struct {
	store Store
}

// New returns a directory over s.
func New(s Store) *Directory { return &Directory{store: s} }

// Apply applies one command. A command that fails changes nothing. Apply is
// deterministic: its outcome depends only on cmd and the prior state, never
// on clocks, randomness or map order.
func (d *Directory) Apply(cmd *Command) Result {
	res, err := d.ApplyBatch([]*Command{cmd})
	if err != nil {
		return Result{Err: err}
	}
	return res[0]
}

type applier struct {
	tx    Tx
	now   time.Time
	actor string
}

func (a *applier) apply(c *Command) (any, error) {
	if err := a.checkGuard(c.Guard); err != nil {
		return nil, err
	}
	switch {
	case c.AppendAudit != nil:
		return a.appendAudit(c.AppendAudit)
	case c.ArchiveAudit != nil:
		return a.archiveAudit(c.ArchiveAudit)
	case c.AddSite != nil:
		return a.addSite(c.AddSite)
	case c.UpdateSite != nil:
		return a.updateSite(c.UpdateSite)
	case c.AddUser != nil:
		return a.addUser(c.AddUser)
	case c.UpdateUser != nil:
		return a.updateUser(c.UpdateUser)
	case c.RemoveUser != nil:
		return a.removeUser(c.RemoveUser)
	case c.AddProject != nil:
		return a.addProject(c.AddProject)
	case c.AddMember != nil:
		return a.addMember(c.AddMember)
	case c.RemoveMember != nil:
		return a.removeMember(c.RemoveMember)
	case c.AddGrant != nil:
		return a.addGrant(c.AddGrant)
	case c.RevokeGrant != nil:
		return a.revokeGrant(c.RevokeGrant)
	case c.PinAccount != nil:
		return a.pinAccount(c.PinAccount)
	case c.RegisterNode != nil:
		return a.registerNode(c.RegisterNode)
	case c.DeregisterNode != nil:
		return a.deregisterNode(c.DeregisterNode)
	case c.CreateSession != nil:
		return a.createSession(c.CreateSession)
	case c.RevokeSessions != nil:
		return a.revokeSessions(c.RevokeSessions)
	case c.PublishKey != nil:
		return a.publishKey(c.PublishKey)
	case c.RevokeKey != nil:
		return a.revokeKey(c.RevokeKey)
	case c.AddLock != nil:
		return a.addLock(c.AddLock)
	}
	return nil, broker.Errorf(broker.ErrInvalid, "empty directory command; this is a bug in the client that sent it")
}

func (a *applier) checkGuard(g *Guard) error {
	if g == nil {
		return nil
	}
	if g.User != "" {
		u, err := getJSON[User](a.tx, bUsers, g.User)
		if err != nil {
			return err
		}
		if u == nil || u.Status != StatusActive {
			return broker.Errorf(broker.ErrPrecondition, "user %s is no longer active; the request was not applied", g.User)
		}
		for _, r := range g.Roles {
			if !slices.Contains(u.Roles, r) {
				return broker.Errorf(broker.ErrPrecondition, "user %s no longer holds role %s; the request was not applied", g.User, r)
			}
		}
	}
	if g.Target != "" {
		u, err := getJSON[User](a.tx, bUsers, g.Target)
		if err != nil {
			return err
		}
		if u == nil || u.Home != g.TargetSite || slices.ContainsFunc(u.Roles, func(r string) bool {
			return r != RoleResearcher && r != RoleSiteAdminPrefix+g.TargetSite
		}) {
			return broker.Errorf(broker.ErrPrecondition, "user %s changed (home or roles) and is no longer in the care of site %s's administrators; the request was not applied", g.Target, g.TargetSite)
		}
	}
	return nil
}

// ---- record helpers ----

func getJSON[T any](tx Tx, bucket, key string) (*T, error) {
	b := tx.Get(bucket, key)
	if b == nil {
		return nil, nil
	}
	v := new(T)
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("directory: corrupt record %s/%s: %w", bucket, key, err)
	}
	return v, nil
}

func putJSON(tx Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("directory: encode %s/%s: %w", bucket, key, err)
	}
	return tx.Put(bucket, key, b)
}

func k2(a, b string) string { return a + "\x00" + b }

func idKey(site string, n uint32) string { return k2(site, fmt.Sprintf("%010d", n)) }

func grantKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

func (a *applier) site(name string) (*Site, error) {
	s, err := getJSON[Site](a.tx, bSites, name)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, broker.Errorf(broker.ErrNotFound, "site %q is not in the directory; add it with labfed site add %s --uid-range LO-HI --gid-range LO-HI", name, name)
	}
	return s, nil
}

// liveUser returns a user that exists and has not been removed.
func (a *applier) liveUser(name string) (*User, error) {
	u, err := getJSON[User](a.tx, bUsers, name)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, broker.Errorf(broker.ErrNotFound, "user %q is not in the directory; add it with labfed user add %s --email E --home SITE", name, name)
	}
	if u.Status == StatusRemoved {
		return nil, broker.Errorf(broker.ErrNotFound, "user %q was removed; removed users cannot be changed or granted anything", name)
	}
	return u, nil
}

func (a *applier) project(name string) (*Project, error) {
	p, err := getJSON[Project](a.tx, bProjects, name)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, broker.Errorf(broker.ErrNotFound, "project %q is not in the directory; add it with labfed project add %s", name, name)
	}
	return p, nil
}

// ---- sites ----

func (a *applier) addSite(c *AddSite) (any, error) {
	if err := broker.ValidateName("site", c.Name); err != nil {
		return nil, err
	}
	if err := c.UIDRange.Validate("uid"); err != nil {
		return nil, err
	}
	if err := c.GIDRange.Validate("gid"); err != nil {
		return nil, err
	}
	if a.tx.Get(bSites, c.Name) != nil {
		return nil, broker.Errorf(broker.ErrExists, "site %q already exists; change its ranges with labfed site update %s", c.Name, c.Name)
	}
	s := &Site{Name: c.Name, UIDRange: c.UIDRange, GIDRange: c.GIDRange, NextUID: c.UIDRange.Lo, NextGID: c.GIDRange.Lo, Created: a.now}
	return s, putJSON(a.tx, bSites, s.Name, s)
}

func (a *applier) updateSite(c *UpdateSite) (any, error) {
	s, err := a.site(c.Name)
	if err != nil {
		return nil, err
	}
	widen := func(what string, old broker.Range, nr *broker.Range) (broker.Range, error) {
		if nr == nil {
			return old, nil
		}
		if err := nr.Validate(what); err != nil {
			return old, err
		}
		if !nr.Contains(old) {
			return old, broker.Errorf(broker.ErrPrecondition, "%s range %s of site %s cannot become %s: ranges only grow, because accounts already hold numbers in the old one; give a range that contains %s", what, old, s.Name, nr, old)
		}
		return *nr, nil
	}
	if s.UIDRange, err = widen("uid", s.UIDRange, c.UIDRange); err != nil {
		return nil, err
	}
	if s.GIDRange, err = widen("gid", s.GIDRange, c.GIDRange); err != nil {
		return nil, err
	}
	return s, putJSON(a.tx, bSites, s.Name, s)
}

// ---- users ----

func validateRoles(tx Tx, roles []string) ([]string, error) {
	out := []string{}
	for _, r := range roles {
		switch {
		case r == RoleResearcher || r == RoleCoordinator:
		case strings.HasPrefix(r, RoleSiteAdminPrefix):
			site := strings.TrimPrefix(r, RoleSiteAdminPrefix)
			if tx.Get(bSites, site) == nil {
				return nil, broker.Errorf(broker.ErrNotFound, "role %q names site %q, which is not in the directory", r, site)
			}
		default:
			return nil, broker.Errorf(broker.ErrInvalid, "role %q is unknown; use researcher, coordinator or site-admin:SITE", r)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		out = append(out, RoleResearcher)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (a *applier) claimIdentities(user string, ids []broker.Identity) error {
	for _, id := range ids {
		if err := id.Validate(); err != nil {
			return err
		}
		k := k2(id.Issuer, id.Subject)
		if owner := a.tx.Get(bIdents, k); owner != nil {
			if string(owner) == user {
				continue
			}
			return broker.Errorf(broker.ErrExists, "identity %s already belongs to user %s; one identity maps to one user", id, owner)
		}
		if err := a.tx.Put(bIdents, k, []byte(user)); err != nil {
			return err
		}
	}
	return nil
}

func normEmail(e string) string { return strings.ToLower(e) }

func (a *applier) claimEmail(user, email string) error {
	if err := broker.ValidateEmail(email); err != nil {
		return err
	}
	k := normEmail(email)
	if owner := a.tx.Get(bEmails, k); owner != nil && string(owner) != user {
		return broker.Errorf(broker.ErrExists, "email %s already belongs to user %s", email, owner)
	}
	return a.tx.Put(bEmails, k, []byte(user))
}

func (a *applier) addUser(c *AddUser) (any, error) {
	if err := broker.ValidateName("user", c.Name); err != nil {
		return nil, err
	}
	if old, err := getJSON[User](a.tx, bUsers, c.Name); err != nil {
		return nil, err
	} else if old != nil {
		if old.Status == StatusRemoved {
			return nil, broker.Errorf(broker.ErrExists, "user name %q belonged to a removed user; names are never reused, so pick another", c.Name)
		}
		return nil, broker.Errorf(broker.ErrExists, "user %q already exists; change it with labfed user update %s", c.Name, c.Name)
	}
	if _, err := a.site(c.Home); err != nil {
		return nil, broker.Errorf(broker.ErrNotFound, "home site %q of user %s is not in the directory; add the site first", c.Home, c.Name)
	}
	roles, err := validateRoles(a.tx, c.Roles)
	if err != nil {
		return nil, err
	}
	if err := a.claimEmail(c.Name, c.Email); err != nil {
		return nil, err
	}
	ids := slices.Clone(c.Identities)
	sortIdentities(ids)
	ids = slices.Compact(ids)
	if err := a.claimIdentities(c.Name, ids); err != nil {
		return nil, err
	}
	if ids == nil {
		ids = []broker.Identity{}
	}
	u := &User{Name: c.Name, Email: c.Email, Home: c.Home, Identities: ids, Roles: roles, Status: StatusActive, Created: a.now}
	return u, putJSON(a.tx, bUsers, u.Name, u)
}

func sortIdentities(ids []broker.Identity) {
	slices.SortFunc(ids, func(x, y broker.Identity) int {
		if c := strings.Compare(x.Issuer, y.Issuer); c != 0 {
			return c
		}
		return strings.Compare(x.Subject, y.Subject)
	})
}

func (a *applier) updateUser(c *UpdateUser) (any, error) {
	u, err := a.liveUser(c.Name)
	if err != nil {
		return nil, err
	}
	if c.Email != nil && normEmail(*c.Email) != normEmail(u.Email) {
		if err := a.claimEmail(u.Name, *c.Email); err != nil {
			return nil, err
		}
		if err := a.tx.Delete(bEmails, normEmail(u.Email)); err != nil {
			return nil, err
		}
		u.Email = *c.Email
	}
	if c.Roles != nil {
		if u.Roles, err = validateRoles(a.tx, *c.Roles); err != nil {
			return nil, err
		}
	}
	if c.Status != nil {
		switch *c.Status {
		case StatusActive, StatusSuspended:
			u.Status = *c.Status
			if u.Status == StatusSuspended {
				// A suspension ends every login for good: lifting it
				// later must not bring old sessions back.
				a.endSessions(u.Name)
			}
		default:
			return nil, broker.Errorf(broker.ErrInvalid, "status %q is not one a user can be set to; use active or suspended (labfed user remove removes)", *c.Status)
		}
	}
	for _, id := range c.RemoveIdentities {
		k := k2(id.Issuer, id.Subject)
		if owner := string(a.tx.Get(bIdents, k)); owner != u.Name {
			return nil, broker.Errorf(broker.ErrNotFound, "identity %s is not one of %s's; see labfed user show %s", id, u.Name, u.Name)
		}
		if err := a.tx.Delete(bIdents, k); err != nil {
			return nil, err
		}
		u.Identities = slices.DeleteFunc(u.Identities, func(x broker.Identity) bool { return x == id })
		a.endSessionsVia(u.Name, id)
	}
	if len(c.AddIdentities) > 0 {
		if err := a.claimIdentities(u.Name, c.AddIdentities); err != nil {
			return nil, err
		}
		u.Identities = append(u.Identities, c.AddIdentities...)
		sortIdentities(u.Identities)
		u.Identities = slices.Compact(u.Identities)
	}
	return u, putJSON(a.tx, bUsers, u.Name, u)
}

func (a *applier) removeUser(c *RemoveUser) (any, error) {
	u, err := a.liveUser(c.Name)
	if err != nil {
		return nil, err
	}
	a.endSessions(u.Name)
	// Free the identity and email so the person can be registered again
	// under a new name; the name, usernames and numbers stay as tombstones.
	for _, id := range u.Identities {
		if err := a.tx.Delete(bIdents, k2(id.Issuer, id.Subject)); err != nil {
			return nil, err
		}
	}
	if err := a.tx.Delete(bEmails, normEmail(u.Email)); err != nil {
		return nil, err
	}
	for _, p := range a.projectsOf(u.Name) {
		if _, err := a.removeMember(&ProjectMember{Project: p, User: u.Name}); err != nil {
			return nil, err
		}
	}
	if err := a.revokeSubjectGrants("user:"+u.Name, "user removed"); err != nil {
		return nil, err
	}
	for _, site := range a.accountSites(u.Name) {
		acc, err := getJSON[Account](a.tx, bAccounts, k2(site, u.Name))
		if err != nil {
			return nil, err
		}
		acc.Status = StatusRemoved
		if err := putJSON(a.tx, bAccounts, k2(site, u.Name), acc); err != nil {
			return nil, err
		}
	}
	now := a.now
	u.Status, u.Removed = StatusRemoved, &now
	return u, putJSON(a.tx, bUsers, u.Name, u)
}

func (a *applier) revokeSubjectGrants(subject, reason string) error {
	var seqs []string
	err := a.tx.ForEach(bGrantsBySubject, subject+"\x00", func(k string, _ []byte) error {
		seqs = append(seqs, k[len(subject)+1:])
		return nil
	})
	if err != nil {
		return err
	}
	for _, s := range seqs {
		g, err := getJSON[Grant](a.tx, bGrants, s)
		if err != nil {
			return err
		}
		if g.Status == GrantRevoked {
			continue
		}
		if err := a.markRevoked(g, reason); err != nil {
			return err
		}
	}
	return nil
}

// projectsOf lists the projects a user belongs to, in name order.
func (a *applier) projectsOf(user string) []string {
	return suffixes(a.tx, bMemberOf, user)
}

// accountSites lists the sites where a user has an account, in name order.
func (a *applier) accountSites(user string) []string {
	return suffixes(a.tx, bAccountsByUser, user)
}

// suffixes returns the second halves of the k2(first, ·) keys in bucket.
func suffixes(tx Tx, bucket, first string) []string {
	var out []string
	_ = tx.ForEach(bucket, first+"\x00", func(k string, _ []byte) error {
		out = append(out, k[len(first)+1:])
		return nil
	})
	return out
}

// ---- projects ----

func (a *applier) addProject(c *AddProject) (any, error) {
	if err := broker.ValidateName("project", c.Name); err != nil {
		return nil, err
	}
	if a.tx.Get(bProjects, c.Name) != nil {
		return nil, broker.Errorf(broker.ErrExists, "project %q already exists; add members with labfed project add-member %s USER", c.Name, c.Name)
	}
	p := &Project{Name: c.Name, Members: []string{}, Created: a.now}
	return p, putJSON(a.tx, bProjects, p.Name, p)
}

func (a *applier) addMember(c *ProjectMember) (any, error) {
	p, err := a.project(c.Project)
	if err != nil {
		return nil, err
	}
	if _, err := a.liveUser(c.User); err != nil {
		return nil, err
	}
	if _, found := slices.BinarySearch(p.Members, c.User); found {
		return nil, broker.Errorf(broker.ErrExists, "user %s is already a member of project %s", c.User, c.Project)
	}
	p.Members = append(p.Members, c.User)
	slices.Sort(p.Members)
	if err := putJSON(a.tx, bProjects, p.Name, p); err != nil {
		return nil, err
	}
	if err := a.tx.Put(bMemberOf, k2(c.User, c.Project), nil); err != nil {
		return nil, err
	}
	// The new member's accounts gain the project's group, and the member
	// gets accounts wherever the project holds grants.
	for _, site := range a.accountSites(c.User) {
		if err := a.ensureAccount(c.User, site); err != nil {
			return nil, err
		}
	}
	for _, site := range a.grantSites("project:" + p.Name) {
		if err := a.ensureAccount(c.User, site); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (a *applier) removeMember(c *ProjectMember) (any, error) {
	p, err := a.project(c.Project)
	if err != nil {
		return nil, err
	}
	i, found := slices.BinarySearch(p.Members, c.User)
	if !found {
		return nil, broker.Errorf(broker.ErrNotFound, "user %s is not a member of project %s", c.User, c.Project)
	}
	p.Members = slices.Delete(p.Members, i, i+1)
	if err := putJSON(a.tx, bProjects, p.Name, p); err != nil {
		return nil, err
	}
	if err := a.tx.Delete(bMemberOf, k2(c.User, c.Project)); err != nil {
		return nil, err
	}
	for _, site := range a.accountSites(c.User) {
		gid, ok := a.projectGID(p.Name, site)
		if !ok {
			continue
		}
		acc, err := getJSON[Account](a.tx, bAccounts, k2(site, c.User))
		if err != nil {
			return nil, err
		}
		acc.Groups = slices.DeleteFunc(acc.Groups, func(g uint32) bool { return g == gid })
		if err := putJSON(a.tx, bAccounts, k2(site, c.User), acc); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// grantSites lists the sites of the subject's active grants, sorted and
// without repeats.
func (a *applier) grantSites(subject string) []string {
	var sites []string
	for _, seq := range suffixes(a.tx, bGrantsBySubject, subject) {
		g, err := getJSON[Grant](a.tx, bGrants, seq)
		if err != nil || g == nil || g.Status == GrantRevoked {
			continue
		}
		site, _, _ := strings.Cut(g.Resource, "/")
		sites = append(sites, site)
	}
	slices.Sort(sites)
	return slices.Compact(sites)
}

// ---- grants ----

func (a *applier) addGrant(c *AddGrant) (any, error) {
	kind, name, ok := strings.Cut(c.Subject, ":")
	if !ok || (kind != "user" && kind != "project") {
		return nil, broker.Errorf(broker.ErrInvalid, "grant subject %q is not user:NAME or project:NAME", c.Subject)
	}
	var members []string
	if kind == "user" {
		u, err := a.liveUser(name)
		if err != nil {
			return nil, err
		}
		if u.Status != StatusActive {
			return nil, broker.Errorf(broker.ErrPrecondition, "user %s is %s; reactivate them with labfed user update %s --status active before granting", name, u.Status, name)
		}
		members = []string{name}
	} else {
		p, err := a.project(name)
		if err != nil {
			return nil, err
		}
		members = p.Members
	}
	res, err := broker.ParseResource(c.Resource)
	if err != nil {
		return nil, err
	}
	if _, err := a.site(res.Site); err != nil {
		return nil, err
	}
	actions, err := broker.ValidateActions(c.Actions, res)
	if err != nil {
		return nil, err
	}
	from := c.From.UTC()
	if from.IsZero() {
		from = a.now
	}
	var until *time.Time
	if c.Until != nil {
		u := c.Until.UTC()
		until = &u
		if !u.After(a.now) {
			return nil, broker.Errorf(broker.ErrInvalid, "grant window ends at %s, which has already passed; give a later --until", u.Format(time.RFC3339))
		}
		if !u.After(from) {
			return nil, broker.Errorf(broker.ErrInvalid, "grant window is inverted: until %s is not after from %s", u.Format(time.RFC3339), from.Format(time.RFC3339))
		}
	}
	// A second grant for the same subject, resource and action over an
	// overlapping window would make revocation ambiguous: revoking one
	// would leave the other in force.
	for _, seq := range suffixes(a.tx, bGrantsBySubject, c.Subject) {
		g, err := getJSON[Grant](a.tx, bGrants, seq)
		if err != nil {
			return nil, err
		}
		if g.Status == GrantRevoked || g.Resource != res.ID() || !g.Overlaps(from, until) {
			continue
		}
		for _, act := range actions {
			if slices.Contains(g.Actions, act) {
				return nil, broker.Errorf(broker.ErrExists, "grant %s already gives %s %s on %s in an overlapping window; revoke it or choose a window that does not overlap", g.ID, c.Subject, act, g.Resource)
			}
		}
	}
	seq := a.counter("grant_seq") + 1
	a.setCounter("grant_seq", seq)
	g := &Grant{
		ID: "g-" + strconv.FormatUint(seq, 10), Seq: seq, Subject: c.Subject, Resource: res.ID(),
		Actions: actions, From: from, Until: until, GrantedBy: a.actor, Created: a.now, Status: GrantActive,
	}
	if err := putJSON(a.tx, bGrants, grantKey(seq), g); err != nil {
		return nil, err
	}
	if err := a.tx.Put(bGrantsBySubject, k2(c.Subject, grantKey(seq)), nil); err != nil {
		return nil, err
	}
	for _, m := range members {
		if err := a.ensureAccount(m, res.Site); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// ParseGrantID turns "g-12" into 12.
func ParseGrantID(id string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(id, "g-"), 10, 64)
	if err != nil || !strings.HasPrefix(id, "g-") || n == 0 {
		return 0, broker.Errorf(broker.ErrInvalid, "grant id %q is not of the form g-N; find ids with labfed grant list", id)
	}
	return n, nil
}

func (a *applier) revokeGrant(c *RevokeGrant) (any, error) {
	seq, err := ParseGrantID(c.ID)
	if err != nil {
		return nil, err
	}
	g, err := getJSON[Grant](a.tx, bGrants, grantKey(seq))
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, broker.Errorf(broker.ErrNotFound, "grant %s does not exist; find ids with labfed grant list", c.ID)
	}
	if g.Status == GrantRevoked {
		return nil, broker.Errorf(broker.ErrPrecondition, "grant %s was already revoked at %s by %s", g.ID, g.RevokedAt.Format(time.RFC3339), g.RevokedBy)
	}
	return g, a.markRevoked(g, c.Reason)
}

func (a *applier) markRevoked(g *Grant, reason string) error {
	now := a.now
	g.Status, g.RevokedAt, g.RevokedBy, g.Reason = GrantRevoked, &now, a.actor, reason
	return putJSON(a.tx, bGrants, grantKey(g.Seq), g)
}

func (a *applier) counter(name string) uint64 {
	b := a.tx.Get(bMeta, name)
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (a *applier) setCounter(name string, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	_ = a.tx.Put(bMeta, name, b[:])
}

// ---- accounts ----

// ensureAccount gives user an account at site if they have none, and makes
// sure its groups include a gid for every project the user belongs to.
func (a *applier) ensureAccount(user, site string) error {
	key := k2(site, user)
	acc, err := getJSON[Account](a.tx, bAccounts, key)
	if err != nil {
		return err
	}
	s, err := a.site(site)
	if err != nil {
		return err
	}
	if acc == nil {
		if owner := a.tx.Get(bUsernames, k2(site, user)); owner != nil {
			return broker.Errorf(broker.ErrExists, "username %s at site %s is already taken by user %s; pin an account with another username using labfed account pin --user %s --site %s --uid N", user, site, owner, user, site)
		}
		uid, err := a.allocate(s, "uid")
		if err != nil {
			return err
		}
		gid, err := a.allocate(s, "gid")
		if err != nil {
			return err
		}
		acc = &Account{User: user, Site: site, Username: user, UID: uid, GID: gid, Groups: []uint32{}, Status: StatusActive, Created: a.now}
		if err := a.claimAccount(acc); err != nil {
			return err
		}
	}
	for _, p := range a.projectsOf(user) {
		gid, ok := a.projectGID(p, site)
		if !ok {
			if gid, err = a.allocate(s, "gid"); err != nil {
				return err
			}
			if err := a.tx.Put(bGIDs, idKey(site, gid), []byte("project:"+p)); err != nil {
				return err
			}
			if err := a.tx.Put(bProjectGIDs, k2(site, p), []byte(strconv.FormatUint(uint64(gid), 10))); err != nil {
				return err
			}
		}
		if !slices.Contains(acc.Groups, gid) {
			acc.Groups = append(acc.Groups, gid)
		}
	}
	slices.Sort(acc.Groups)
	if err := putJSON(a.tx, bSites, s.Name, s); err != nil {
		return err
	}
	return putJSON(a.tx, bAccounts, key, acc)
}

// claimAccount records the numbers and username an account holds. Those
// records are never deleted, which is how numbers are never reused.
func (a *applier) claimAccount(acc *Account) error {
	owner := []byte("user:" + acc.User)
	if err := a.tx.Put(bUIDs, idKey(acc.Site, acc.UID), owner); err != nil {
		return err
	}
	if err := a.tx.Put(bGIDs, idKey(acc.Site, acc.GID), owner); err != nil {
		return err
	}
	if err := a.tx.Put(bUsernames, k2(acc.Site, acc.Username), []byte(acc.User)); err != nil {
		return err
	}
	return a.tx.Put(bAccountsByUser, k2(acc.User, acc.Site), nil)
}

func (a *applier) projectGID(project, site string) (uint32, bool) {
	b := a.tx.Get(bProjectGIDs, k2(site, project))
	if b == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b), 10, 32)
	return uint32(n), err == nil
}

// allocate hands out the next free number of the site's uid or gid range,
// skipping numbers held by pins and reserved ids. It advances the cursor in
// s; the caller stores s.
func (a *applier) allocate(s *Site, what string) (uint32, error) {
	cursor, rng, bucket, flag := &s.NextUID, s.UIDRange, bUIDs, "--uid-range"
	if what == "gid" {
		cursor, rng, bucket, flag = &s.NextGID, s.GIDRange, bGIDs, "--gid-range"
	}
	for n := max(*cursor, rng.Lo); n <= rng.Hi && n >= rng.Lo; n++ {
		if broker.Reserved(n) || a.tx.Get(bucket, idKey(s.Name, n)) != nil {
			continue
		}
		*cursor = n + 1
		return n, nil
	}
	return 0, broker.Errorf(broker.ErrExhausted, "%s range %s of site %s is exhausted; widen it with labfed site update %s %s LO-HI", what, rng, s.Name, s.Name, flag)
}

func (a *applier) pinAccount(c *PinAccount) (any, error) {
	if _, err := a.liveUser(c.User); err != nil {
		return nil, err
	}
	s, err := a.site(c.Site)
	if err != nil {
		return nil, err
	}
	username := c.Username
	if username == "" {
		username = c.User
	}
	if err := broker.ValidateUsername(username); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		what string
		n    uint32
	}{{"uid", c.UID}, {"gid", c.GID}} {
		if (p.n != 0 || p.what == "uid") && (p.n < broker.MinPosixID || p.n > broker.MaxPosixID || broker.Reserved(p.n)) {
			return nil, broker.Errorf(broker.ErrInvalid, "%s %d cannot be pinned: it must be between %d and %d and not a reserved id", p.what, p.n, broker.MinPosixID, broker.MaxPosixID)
		}
	}
	if acc, err := getJSON[Account](a.tx, bAccounts, k2(c.Site, c.User)); err != nil {
		return nil, err
	} else if acc != nil {
		if acc.UID == c.UID && (c.GID == 0 || acc.GID == c.GID) && acc.Username == username {
			return acc, nil // the same pin again: importing twice is harmless
		}
		return nil, broker.Errorf(broker.ErrExists, "user %s already has account %s uid %d gid %d at site %s; a pin must come before the first grant allocates an account", c.User, acc.Username, acc.UID, acc.GID, c.Site)
	}
	if owner := a.tx.Get(bUIDs, idKey(c.Site, c.UID)); owner != nil {
		return nil, broker.Errorf(broker.ErrExists, "uid %d at site %s is already held by %s; numbers are never shared or reused", c.UID, c.Site, owner)
	}
	if owner := a.tx.Get(bUsernames, k2(c.Site, username)); owner != nil {
		return nil, broker.Errorf(broker.ErrExists, "username %s at site %s is already held by user %s", username, c.Site, owner)
	}
	gid := c.GID
	if gid != 0 {
		if owner := a.tx.Get(bGIDs, idKey(c.Site, gid)); owner != nil {
			return nil, broker.Errorf(broker.ErrExists, "gid %d at site %s is already held by %s; numbers are never shared or reused", gid, c.Site, owner)
		}
	}
	// Claim the uid first so that, when the pinned uid lies inside the
	// site's range, the allocator skips it.
	if err := a.tx.Put(bUIDs, idKey(c.Site, c.UID), []byte("user:"+c.User)); err != nil {
		return nil, err
	}
	if gid == 0 {
		if gid, err = a.allocate(s, "gid"); err != nil {
			return nil, err
		}
	}
	acc := &Account{User: c.User, Site: c.Site, Username: username, UID: c.UID, GID: gid, Groups: []uint32{}, Pinned: true, Status: StatusActive, Created: a.now}
	if err := a.claimAccount(acc); err != nil {
		return nil, err
	}
	if err := putJSON(a.tx, bAccounts, k2(c.Site, c.User), acc); err != nil {
		return nil, err
	}
	if err := putJSON(a.tx, bSites, s.Name, s); err != nil {
		return nil, err
	}
	if err := a.ensureAccount(c.User, c.Site); err != nil {
		return nil, err
	}
	return getJSON[Account](a.tx, bAccounts, k2(c.Site, c.User))
}

// ---- nodes ----

func (a *applier) registerNode(c *RegisterNode) (any, error) {
	n := c.Node
	if err := broker.ValidateName("node", n.ID); err != nil {
		return nil, err
	}
	if err := broker.ValidateName("site", n.Site); err != nil {
		return nil, err
	}
	if n.RaftAddr == "" || n.APIAddr == "" {
		return nil, broker.Errorf(broker.ErrInvalid, "node %s must give both its raft and API addresses", n.ID)
	}
	if a.tx.Get(bSites, n.Site) == nil && c.UIDRange != nil && c.GIDRange != nil {
		if _, err := a.addSite(&AddSite{Name: n.Site, UIDRange: *c.UIDRange, GIDRange: *c.GIDRange}); err != nil {
			return nil, err
		}
	}
	return &n, putJSON(a.tx, bNodes, n.ID, &n)
}

func (a *applier) deregisterNode(c *DeregisterNode) (any, error) {
	if a.tx.Get(bNodes, c.ID) == nil {
		return nil, broker.Errorf(broker.ErrNotFound, "node %s is not registered", c.ID)
	}
	return nil, a.tx.Delete(bNodes, c.ID)
}
