package replica

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
)

// The uid test gives accounts at a site to many users from clients on every
// node while the nemesis kills and partitions nodes, then removes some users
// and adds others, and checks that POSIX numbers were never shared or
// reused.

const uidSite = "psc"

// Ranges of uidSite. The pins below hold one uid inside the uid range and
// one uid and gid outside both.
var (
	uidRange = broker.Range{Lo: 300000, Hi: 300999}
	gidRange = broker.Range{Lo: 300000, Hi: 301999}
)

const (
	pinnedInside  = "w10" // pinned to a uid inside uidRange
	pinnedOutside = "w11" // pinned to a uid and gid outside the ranges
	pinInsideUID  = 300003
	pinOutsideID  = 5000
)

// Projects and their first members; the members' accounts carry the
// project's gid.
var uidProjects = map[string][]string{
	"proj-a": {"w00", "w01", "w02", "w03", "w04"},
	"proj-b": {"w05", "w06", "w07", "w08", "w09"},
}

type uidConfig struct {
	name    string
	nodes   int
	users   int // users granted in the first phase
	removed int // of those, removed in the second phase
	added   int // users added and granted in the second phase
	integ   bool
}

func TestUIDsUniqueUnderFaults(t *testing.T) {
	tests := []uidConfig{
		{name: "short", nodes: 3, users: 30, removed: 10, added: 15},
		{name: "long", nodes: 5, users: 150, removed: 50, added: 100, integ: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.integ && os.Getenv("LABFED_INTEG") != "1" {
				t.Skip("long run; set LABFED_INTEG=1")
			}
			runUIDs(t, tt)
		})
	}
}

// idBook remembers every (site number → owner) pair any read has shown,
// and reports a number that changes owner.
type idBook struct {
	tb testing.TB

	mu   sync.Mutex
	uids map[uint32]string
	gids map[uint32]string
}

func newIDBook(tb testing.TB) *idBook {
	return &idBook{tb: tb, uids: map[uint32]string{}, gids: map[uint32]string{}}
}

func (b *idBook) see(what string, m map[uint32]string, n uint32, owner string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := m[n]; ok && old != owner {
		b.tb.Errorf("%s %d at %s belongs to %s, but was seen held by %s: numbers must never be reused", what, n, uidSite, owner, old)
		return
	}
	m[n] = owner
}

// account records an account's numbers: its uid and user-private gid are
// the user's; a group is a project's and so not recorded by owner here
// (checkSite checks those).
func (b *idBook) account(a *directory.Account) {
	b.see("uid", b.uids, a.UID, "user:"+a.User)
	b.see("gid", b.gids, a.GID, "user:"+a.User)
}

func runUIDs(t *testing.T, cfg uidConfig) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	c := newCluster(t, cfg.nodes)
	c.Leader(t)
	c.MustApply(t, 0, addSite(testSite, 100000, 100999, 100000, 101999))
	c.MustApply(t, 0, &directory.Command{AddSite: &directory.AddSite{Name: uidSite, UIDRange: uidRange, GIDRange: gidRange}})
	users := make([]string, cfg.users)
	for k := range users {
		users[k] = fmt.Sprintf("w%02d", k)
		c.MustApply(t, k%cfg.nodes, addUser(users[k], users[k]+"@x.org"))
	}
	for _, p := range slices.Sorted(maps.Keys(uidProjects)) {
		c.MustApply(t, 0, &directory.Command{AddProject: &directory.AddProject{Name: p}})
		for _, u := range uidProjects[p] {
			c.MustApply(t, 0, &directory.Command{AddMember: &directory.ProjectMember{Project: p, User: u}})
		}
	}
	c.MustApply(t, 1, &directory.Command{PinAccount: &directory.PinAccount{User: pinnedInside, Site: uidSite, UID: pinInsideUID}})
	c.MustApply(t, 2, &directory.Command{PinAccount: &directory.PinAccount{User: pinnedOutside, Site: uidSite, UID: pinOutsideID, GID: pinOutsideID}})

	book := newIDBook(t)

	// Phase 1: every user gets a grant at the site, from clients on every
	// node; so does proj-a, which reaches its members.
	var jobs [][]*directory.Command
	for k, u := range users {
		jobs = append(jobs, []*directory.Command{grantAt("user:"+u, "bridges2")})
		if k == len(users)/2 {
			jobs = append(jobs, []*directory.Command{grantAt("project:proj-a", "ocean")})
		}
	}
	c.UnderFaults(t, rand.New(rand.NewPCG(seed, 0)), func() { runJobs(t, c, book, jobs, seed+1) })
	checkAllReplicas(t, c, book, "after grants")

	// Phase 2: remove some users and add new ones, some into proj-b.
	jobs = nil
	removed := map[string]bool{}
	for k := range cfg.removed {
		// From the end, sparing the pinned users; the first of each
		// project goes too.
		u := users[len(users)-1-k]
		if k < 2 {
			u = fmt.Sprintf("w%02d", 5*k)
		}
		removed[u] = true
		jobs = append(jobs, []*directory.Command{{RemoveUser: &directory.RemoveUser{Name: u}}})
	}
	var added []string
	for k := range cfg.added {
		u := fmt.Sprintf("x%02d", k)
		added = append(added, u)
		job := []*directory.Command{addUser(u, u+"@x.org")}
		if k%3 == 0 {
			job = append(job, &directory.Command{AddMember: &directory.ProjectMember{Project: "proj-b", User: u}})
		}
		job = append(job, grantAt("user:"+u, "bridges2"))
		jobs = append(jobs, job)
	}
	c.UnderFaults(t, rand.New(rand.NewPCG(seed, 1)), func() { runJobs(t, c, book, jobs, seed+2) })
	checkAllReplicas(t, c, book, "at the end")

	// Every account the test asked for exists, and removed users keep
	// theirs as tombstones.
	d := c.Replica(0).Directory()
	for _, u := range append(slices.Clone(users), added...) {
		a, err := d.Account(u, uidSite)
		if err != nil {
			t.Errorf("Account(%s, %s) = %v, want an account", u, uidSite, err)
			continue
		}
		want := directory.StatusActive
		if removed[u] {
			want = directory.StatusRemoved
		}
		if a.Status != want {
			t.Errorf("Account(%s, %s).Status = %s, want %s", u, uidSite, a.Status, want)
		}
	}
	for _, tt := range []struct {
		user string
		uid  uint32
	}{
		{pinnedInside, pinInsideUID},
		{pinnedOutside, pinOutsideID},
	} {
		if a, err := d.Account(tt.user, uidSite); err != nil || a.UID != tt.uid || !a.Pinned {
			t.Errorf("Account(%s, %s) = %+v, %v; want pinned uid %d", tt.user, uidSite, a, err, tt.uid)
		}
	}
}

// grantAt returns a grant of compute on site resource name to subject.
func grantAt(subject, name string) *directory.Command {
	return &directory.Command{Actor: "test", AddGrant: &directory.AddGrant{
		Subject: subject, Resource: uidSite + "/" + name, Actions: []string{broker.ActionComputeCreate},
	}}
}

// runJobs runs each job's commands in order, the jobs spread over one
// client per node, each client sending to its own node. A command whose
// outcome is unknown is sent again until it is known to have taken effect:
// an error saying it already has (ErrExists, or ErrNotFound for a removal)
// counts. After each command the client reads back the user's account at
// the site, if any, into book.
func runJobs(t *testing.T, c *cluster, book *idBook, jobs [][]*directory.Command, seed uint64) {
	t.Helper()
	var wg sync.WaitGroup
	for node := range c.N() {
		rnd := rand.New(rand.NewPCG(seed, uint64(node)))
		wg.Go(func() {
			for j := node; j < len(jobs); j += c.N() {
				for _, cmd := range jobs[j] {
					if err := ensure(c, node, cmd); err != nil {
						t.Errorf("n%d: %s: %v", node, describeCmd(cmd), err)
						return
					}
					if u := subjectUser(cmd); u != "" {
						readAccount(t, c, node, book, u)
					}
					time.Sleep(time.Duration(50+rnd.IntN(200)) * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
}

// ensure applies cmd through node until it is known to have taken effect.
func ensure(c *cluster, node int, cmd *directory.Command) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cmd.Time = time.Now().UTC()
		_, err := c.Apply(ctx, node, cmd)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, broker.ErrExists) && cmd.RemoveUser == nil:
			return nil // an earlier attempt took effect
		case errors.Is(err, broker.ErrNotFound) && cmd.RemoveUser != nil:
			return nil
		case errors.Is(err, broker.ErrAmbiguous), errors.Is(err, broker.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		default:
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after a minute: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subjectUser returns the user a command gives an account or changes.
func subjectUser(cmd *directory.Command) string {
	if cmd.AddGrant != nil {
		u, _ := strings.CutPrefix(cmd.AddGrant.Subject, "user:")
		if u != cmd.AddGrant.Subject {
			return u
		}
	}
	if cmd.RemoveUser != nil {
		return cmd.RemoveUser.Name
	}
	return ""
}

func describeCmd(cmd *directory.Command) string {
	b, _ := cmd.Encode()
	return string(b)
}

// readAccount reads user's account through node with a linearizable read
// and records it; a read that fails is skipped.
func readAccount(tb testing.TB, c *cluster, node int, book *idBook, user string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var acc *directory.Account
	err := c.Read(ctx, node, func(d *directory.Directory) error {
		a, err := d.Account(user, uidSite)
		acc = a
		return err
	})
	if err == nil {
		book.account(acc)
	}
}

// checkAllReplicas checks the site's accounts on every replica, which must
// be converged and quiet, and records what it sees in book.
func checkAllReplicas(t *testing.T, c *cluster, book *idBook, when string) {
	t.Helper()
	for _, i := range c.Live() {
		r := c.Replica(i)
		if r == nil {
			continue
		}
		checkSite(t, r, book, when)
	}
}

// checkSite checks the invariants of uidSite's numbers in r's directory:
// no uid held twice; no gid held twice among user-private groups and
// project groups together; each project's members share one project gid;
// every number inside the site's ranges unless pinned; and no number has
// changed owner since book first saw it.
func checkSite(t *testing.T, r *Replica, book *idBook, when string) {
	t.Helper()
	d := r.Directory()
	accounts, err := d.Accounts(uidSite)
	if err != nil {
		t.Fatalf("%s: Accounts(%s) on %s = %v", when, uidSite, r.ID(), err)
	}
	site, err := d.Site(uidSite)
	if err != nil {
		t.Fatalf("%s: Site(%s) on %s = %v", when, uidSite, r.ID(), err)
	}
	projects, err := d.Projects()
	if err != nil {
		t.Fatalf("%s: Projects() on %s = %v", when, r.ID(), err)
	}
	byUser := map[string]*directory.Account{}
	uids := map[uint32]string{}
	gids := map[uint32]string{} // user-private and project gids
	for _, a := range accounts {
		byUser[a.User] = a
		if other, ok := uids[a.UID]; ok {
			t.Errorf("%s on %s: uid %d is held by both %s and %s", when, r.ID(), a.UID, other, a.User)
		}
		uids[a.UID] = a.User
		if other, ok := gids[a.GID]; ok {
			t.Errorf("%s on %s: gid %d is held by both %s and %s", when, r.ID(), a.GID, other, "user:"+a.User)
		}
		gids[a.GID] = "user:" + a.User
		if !uidRange.Has(a.UID) && !a.Pinned {
			t.Errorf("%s on %s: %s has uid %d outside %s and is not pinned", when, r.ID(), a.User, a.UID, site.UIDRange)
		}
		if !gidRange.Has(a.GID) && !a.Pinned {
			t.Errorf("%s on %s: %s has gid %d outside %s and is not pinned", when, r.ID(), a.User, a.GID, site.GIDRange)
		}
		if a.UID >= site.NextUID && a.UID <= site.UIDRange.Hi && !a.Pinned {
			t.Errorf("%s on %s: %s has uid %d at or past the cursor %d", when, r.ID(), a.User, a.UID, site.NextUID)
		}
		book.account(a)
	}
	for _, p := range projects {
		var pgid uint32
		for _, m := range p.Members {
			a, ok := byUser[m]
			if !ok {
				continue
			}
			if len(a.Groups) != 1 {
				t.Errorf("%s on %s: %s in project %s has groups %v, want one", when, r.ID(), m, p.Name, a.Groups)
				continue
			}
			switch {
			case pgid == 0:
				pgid = a.Groups[0]
			case a.Groups[0] != pgid:
				t.Errorf("%s on %s: members of %s have project gids %d and %d, want one", when, r.ID(), p.Name, pgid, a.Groups[0])
			}
		}
		if pgid == 0 {
			continue
		}
		if other, ok := gids[pgid]; ok {
			t.Errorf("%s on %s: gid %d of project %s is also held by %s", when, r.ID(), pgid, p.Name, other)
		}
		gids[pgid] = "project:" + p.Name
		if !gidRange.Has(pgid) {
			t.Errorf("%s on %s: project %s has gid %d outside %s", when, r.ID(), p.Name, pgid, site.GIDRange)
		}
		book.see("gid", book.gids, pgid, "project:"+p.Name)
	}
	for _, a := range accounts {
		if a.Status == directory.StatusRemoved && len(a.Groups) != 0 {
			t.Errorf("%s on %s: removed user %s keeps groups %v, want none", when, r.ID(), a.User, a.Groups)
		}
	}
}
