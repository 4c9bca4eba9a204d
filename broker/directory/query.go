package directory

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
)

// The query methods read the store directly; they are as fresh as the
// replica they run on. Linearizable reads are the replica layer's concern.

func list[T any](d *Directory, bucket, prefix string, keep func(*T) bool) ([]*T, error) {
	var out []*T
	err := d.store.View(func(tx Tx) error {
		return tx.ForEach(bucket, prefix, func(k string, b []byte) error {
			v := new(T)
			if err := json.Unmarshal(b, v); err != nil {
				return fmt.Errorf("directory: corrupt record %s/%s: %w", bucket, k, err)
			}
			if keep == nil || keep(v) {
				out = append(out, v)
			}
			return nil
		})
	})
	if out == nil {
		out = []*T{}
	}
	return out, err
}

func get[T any](d *Directory, bucket, key string, notFound error) (*T, error) {
	var v *T
	err := d.store.View(func(tx Tx) (err error) {
		v, err = getJSON[T](tx, bucket, key)
		return err
	})
	if err == nil && v == nil {
		err = notFound
	}
	return v, err
}

// Sites lists all sites by name.
func (d *Directory) Sites() ([]*Site, error) { return list[Site](d, bSites, "", nil) }

// Site returns one site.
func (d *Directory) Site(name string) (*Site, error) {
	return get[Site](d, bSites, name, broker.Errorf(broker.ErrNotFound, "site %q is not in the directory; list sites with labfed site list", name))
}

// Users lists users by name; removed users only when includeRemoved.
func (d *Directory) Users(includeRemoved bool) ([]*User, error) {
	return list(d, bUsers, "", func(u *User) bool { return includeRemoved || u.Status != StatusRemoved })
}

// User returns one user, including a removed one.
func (d *Directory) User(name string) (*User, error) {
	return get[User](d, bUsers, name, broker.Errorf(broker.ErrNotFound, "user %q is not in the directory; list users with labfed user list", name))
}

// UserByIdentity returns the user an OIDC identity maps to.
func (d *Directory) UserByIdentity(id broker.Identity) (*User, error) {
	var name string
	_ = d.store.View(func(tx Tx) error {
		name = string(tx.Get(bIdents, k2(id.Issuer, id.Subject)))
		return nil
	})
	if name == "" {
		return nil, broker.Errorf(broker.ErrNotFound, "identity %s is not registered in the federation; ask your site administrator", id)
	}
	return d.User(name)
}

// MapRemoteUser finds the user behind a portal's REMOTE_USER: an email
// address, or an OIDC subject under any issuer (CILogon subjects are
// URLs, unique across issuers). A subject claimed under two issuers by
// different users is refused as ambiguous.
func (d *Directory) MapRemoteUser(remote string) (*User, error) {
	var names []string
	err := d.store.View(func(tx Tx) error {
		if strings.Contains(remote, "@") && !strings.Contains(remote, "/") {
			if n := tx.Get(bEmails, normEmail(remote)); n != nil {
				names = append(names, string(n))
			}
			return nil
		}
		return tx.ForEach(bIdents, "", func(k string, v []byte) error {
			if _, sub, _ := strings.Cut(k, "\x00"); sub == remote && !slices.Contains(names, string(v)) {
				names = append(names, string(v))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	switch len(names) {
	case 0:
		return nil, broker.Errorf(broker.ErrNotFound, "%q is not registered in the federation; ask your site administrator", remote)
	case 1:
		return d.User(names[0])
	}
	return nil, broker.Errorf(broker.ErrPrecondition, "subject %q belongs to several users (%s); map it by email instead", remote, strings.Join(names, ", "))
}

// Projects lists projects by name.
func (d *Directory) Projects() ([]*Project, error) { return list[Project](d, bProjects, "", nil) }

// Project returns one project.
func (d *Directory) Project(name string) (*Project, error) {
	return get[Project](d, bProjects, name, broker.Errorf(broker.ErrNotFound, "project %q is not in the directory; list projects with labfed project list", name))
}

// GrantFilter selects grants; empty fields match everything.
type GrantFilter struct {
	Subject  string // "user:alice" or "project:x"
	Resource string
	// IncludeRevoked keeps revoked grants in the answer.
	IncludeRevoked bool
}

// Grants lists grants in the order they were made.
func (d *Directory) Grants(f GrantFilter) ([]*Grant, error) {
	keep := func(g *Grant) bool {
		return (f.IncludeRevoked || g.Status != GrantRevoked) &&
			(f.Subject == "" || g.Subject == f.Subject) &&
			(f.Resource == "" || g.Resource == f.Resource || strings.HasPrefix(g.Resource, f.Resource+"/"))
	}
	if f.Subject == "" {
		return list(d, bGrants, "", keep)
	}
	// One subject: through the subject index rather than every grant.
	out := []*Grant{}
	err := d.store.View(func(tx Tx) error {
		return tx.ForEach(bGrantsBySubject, f.Subject+"\x00", func(k string, _ []byte) error {
			key := k[len(f.Subject)+1:]
			g, err := getJSON[Grant](tx, bGrants, key)
			if err != nil {
				return err
			}
			if g == nil {
				return fmt.Errorf("directory: grant index names %s/%s, which does not exist", bGrants, key)
			}
			if keep(g) {
				out = append(out, g)
			}
			return nil
		})
	})
	return out, err
}

// Grant returns one grant by id ("g-12").
func (d *Directory) Grant(id string) (*Grant, error) {
	seq, err := ParseGrantID(id)
	if err != nil {
		return nil, err
	}
	return get[Grant](d, bGrants, grantKey(seq), broker.Errorf(broker.ErrNotFound, "grant %s does not exist; find ids with labfed grant list", id))
}

// Account returns a user's account at a site.
func (d *Directory) Account(user, site string) (*Account, error) {
	return get[Account](d, bAccounts, k2(site, user), broker.Errorf(broker.ErrNotFound, "user %s has no account at site %s; accounts are made when a grant touches the site, or pinned with labfed account pin", user, site))
}

// Accounts lists the accounts at a site by user name; an empty site lists
// every site's.
func (d *Directory) Accounts(site string) ([]*Account, error) {
	prefix := ""
	if site != "" {
		prefix = site + "\x00"
	}
	return list[Account](d, bAccounts, prefix, nil)
}

// Nodes lists registered broker nodes by id.
func (d *Directory) Nodes() ([]*Node, error) { return list[Node](d, bNodes, "", nil) }

// Node returns one registered node.
func (d *Directory) Node(id string) (*Node, error) {
	return get[Node](d, bNodes, id, broker.Errorf(broker.ErrNotFound, "node %s is not registered", id))
}

// Hash returns a digest of the directory's records: everything but the
// audit log, which its own hash chain covers (AuditHead). Replicas that
// applied the same log have the same hash, and a refused command, which
// adds only its audit entry, leaves it unchanged.
func (d *Directory) Hash() (string, error) {
	h := sha256.New()
	buckets := slices.DeleteFunc(Buckets(), func(b string) bool { return slices.Contains(auditBuckets(), b) })
	slices.Sort(buckets)
	err := d.store.View(func(tx Tx) error {
		for _, b := range buckets {
			h.Write([]byte(b))
			h.Write([]byte{0})
			if err := tx.ForEach(b, "", func(k string, v []byte) error {
				if b == bMeta && k == metaAuditHead {
					return nil
				}
				h.Write([]byte(k))
				h.Write([]byte{0})
				h.Write(v)
				h.Write([]byte{0})
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// ProjectsOf lists the projects user is a member of, by name.
func (d *Directory) ProjectsOf(user string) []string {
	var out []string
	_ = d.store.View(func(tx Tx) error {
		out = suffixes(tx, bMemberOf, user)
		return nil
	})
	return out
}

// Entitlements is what the directory holds that decides a capability for
// a user at a site, read in one transaction so the parts agree.
type Entitlements struct {
	User *User
	// Projects the user is a member of.
	Projects []string
	// Grants to the user and to their projects, revoked ones included (a
	// refusal may name them).
	Grants []*Grant
	// Account at the site; nil when the user has none there.
	Account *Account
	// UserLocks are the locks on the user's tokens in force at t.
	UserLocks []*Lock
	// Key is the signing key asked for; nil when it is not in the bundle.
	Key *SigningKey
}

// Entitlements reads a user's entitlements at site as of t, and the
// signing key kid that would sign for them.
func (d *Directory) Entitlements(user, site, kid string, t time.Time) (*Entitlements, error) {
	e := &Entitlements{}
	err := d.store.View(func(tx Tx) error {
		var err error
		if e.Key, err = getJSON[SigningKey](tx, bKeys, kid); err != nil {
			return err
		}
		u, err := getJSON[User](tx, bUsers, user)
		if err != nil {
			return err
		}
		if u == nil {
			return broker.Errorf(broker.ErrNotFound, "user %q is not in the directory; list users with labfed user list", user)
		}
		e.User = u
		e.Projects = suffixes(tx, bMemberOf, user)
		for _, subj := range append([]string{"user:" + user}, prefixAll("project:", e.Projects)...) {
			err := tx.ForEach(bGrantsBySubject, subj+"\x00", func(k string, _ []byte) error {
				key := k[len(subj)+1:]
				g, err := getJSON[Grant](tx, bGrants, key)
				if err != nil {
					return err
				}
				if g == nil {
					return fmt.Errorf("directory: grant index names %s/%s, which does not exist", bGrants, key)
				}
				e.Grants = append(e.Grants, g)
				return nil
			})
			if err != nil {
				return err
			}
		}
		if e.Account, err = getJSON[Account](tx, bAccounts, k2(site, user)); err != nil {
			return err
		}
		prefix := k2(k2(LockUser, user), "")
		return tx.ForEach(bLocksByValue, prefix, func(k string, _ []byte) error {
			l, err := getJSON[Lock](tx, bLocks, k[len(prefix):])
			if err == nil && l != nil && t.Before(l.Until) {
				e.UserLocks = append(e.UserLocks, l)
			}
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

func prefixAll(prefix string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = prefix + x
	}
	return out
}
