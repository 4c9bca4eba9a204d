package directory_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/storage/boltstate"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// newDir returns a directory over a fresh bbolt state file.
func newDir(tb testing.TB) *directory.Directory {
	tb.Helper()
	st, err := boltstate.Create(filepath.Join(tb.TempDir(), "state.db"), directory.Buckets())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return directory.New(st)
}

func rng(lo, hi uint32) broker.Range { return broker.Range{Lo: lo, Hi: hi} }

// must applies cmd and fails the test if it errs.
func must(tb testing.TB, d *directory.Directory, cmd *directory.Command) any {
	tb.Helper()
	if cmd.Time.IsZero() {
		cmd.Time = t0
	}
	res := d.Apply(cmd)
	if res.Err != nil {
		tb.Fatalf("Apply(%s) = %v", describe(cmd), res.Err)
	}
	return res.Value
}

func describe(c *directory.Command) string {
	b, _ := c.Encode()
	return string(b)
}

// fixture: sites rutgers and psc, users alice and bob, project cryo-lab with
// alice.
func fixture(tb testing.TB) *directory.Directory {
	tb.Helper()
	d := newDir(tb)
	must(tb, d, &directory.Command{AddSite: &directory.AddSite{Name: "rutgers", UIDRange: rng(200000, 200009), GIDRange: rng(200000, 200019)}})
	must(tb, d, &directory.Command{AddSite: &directory.AddSite{Name: "psc", UIDRange: rng(300000, 300002), GIDRange: rng(300000, 300009)}})
	must(tb, d, &directory.Command{AddUser: &directory.AddUser{Name: "alice", Email: "alice@rutgers.edu", Home: "rutgers",
		Identities: []broker.Identity{{Issuer: "https://cilogon.org", Subject: "http://cilogon.org/serverA/users/1"}}}})
	must(tb, d, &directory.Command{AddUser: &directory.AddUser{Name: "bob", Email: "bob@cmu.edu", Home: "psc"}})
	must(tb, d, &directory.Command{AddProject: &directory.AddProject{Name: "cryo-lab"}})
	must(tb, d, &directory.Command{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: "alice"}})
	return d
}

func grant(subject, resource string, actions ...string) *directory.Command {
	return &directory.Command{Actor: "admin", AddGrant: &directory.AddGrant{Subject: subject, Resource: resource, Actions: actions}}
}

func TestGrantAllocatesAccount(t *testing.T) {
	d := fixture(t)
	g := must(t, d, grant("user:alice", "psc/bridges2-gpu", "compute.create")).(*directory.Grant)
	if g.ID != "g-1" || g.GrantedBy != "admin" || !g.From.Equal(t0) || g.Until != nil {
		t.Errorf("grant = %+v, want g-1 by admin from t0 without end", g)
	}
	a, err := d.Account("alice", "psc")
	if err != nil {
		t.Fatal(err)
	}
	// uid 300000; user-private gid 300000; cryo-lab gets gid 300001.
	want := directory.Account{User: "alice", Site: "psc", Username: "alice", UID: 300000, GID: 300000, Groups: []uint32{300001}, Status: "active", Created: t0}
	if fmt.Sprint(*a) != fmt.Sprint(want) {
		t.Errorf("Account(alice, psc) = %+v, want %+v", *a, want)
	}
	// A second grant at the same site reuses the account.
	must(t, d, grant("user:alice", "psc/raw/alice", "storage.read"))
	if b, _ := d.Account("alice", "psc"); b.UID != a.UID {
		t.Errorf("second grant changed uid to %d, want %d", b.UID, a.UID)
	}
	if _, err := d.Account("alice", "rutgers"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Account(alice, rutgers) err = %v, want NotFound (no grant there)", err)
	}
}

func TestProjectGrantReachesMembers(t *testing.T) {
	d := fixture(t)
	must(t, d, grant("project:cryo-lab", "rutgers/krios-g4", "instrument.view"))
	a, err := d.Account("alice", "rutgers")
	if err != nil {
		t.Fatalf("member alice has no account after project grant: %v", err)
	}
	// A member added later gets an account at the project's grant sites and
	// the project's group.
	must(t, d, &directory.Command{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: "bob"}})
	b, err := d.Account("bob", "rutgers")
	if err != nil {
		t.Fatalf("new member bob has no account: %v", err)
	}
	if len(a.Groups) != 1 || len(b.Groups) != 1 || a.Groups[0] != b.Groups[0] {
		t.Errorf("groups alice=%v bob=%v, want the same single project gid", a.Groups, b.Groups)
	}
	if a.UID == b.UID || a.GID == b.GID || b.GID == b.Groups[0] {
		t.Errorf("numbers collide: alice %+v bob %+v", a, b)
	}
	// Removing the member drops the group but keeps the account.
	must(t, d, &directory.Command{RemoveMember: &directory.ProjectMember{Project: "cryo-lab", User: "bob"}})
	b2, _ := d.Account("bob", "rutgers")
	if len(b2.Groups) != 0 || b2.UID != b.UID {
		t.Errorf("after remove-member bob = %+v, want same uid and no groups", b2)
	}
}

func TestUIDsNeverReused(t *testing.T) {
	d := fixture(t)
	must(t, d, grant("user:bob", "psc/bridges2-gpu", "compute.create"))
	bob, _ := d.Account("bob", "psc")
	must(t, d, &directory.Command{RemoveUser: &directory.RemoveUser{Name: "bob"}})
	must(t, d, &directory.Command{AddUser: &directory.AddUser{Name: "bob2", Email: "bob@cmu.edu", Home: "psc"}})
	must(t, d, grant("user:bob2", "psc/bridges2-gpu", "compute.create"))
	bob2, _ := d.Account("bob2", "psc")
	if bob2.UID == bob.UID || bob2.GID == bob.GID {
		t.Errorf("bob2 got uid %d gid %d, removed bob held %d %d: numbers reused", bob2.UID, bob2.GID, bob.UID, bob.GID)
	}
	tomb, _ := d.Account("bob", "psc")
	if tomb.Status != directory.StatusRemoved {
		t.Errorf("removed bob's account status = %q, want removed", tomb.Status)
	}
	gs, _ := d.Grants(directory.GrantFilter{Subject: "user:bob", IncludeRevoked: true})
	if len(gs) != 1 || gs[0].Status != directory.GrantRevoked {
		t.Errorf("removed bob's grants = %+v, want one revoked", gs)
	}
	res := d.Apply(&directory.Command{Time: t0, AddUser: &directory.AddUser{Name: "bob", Email: "x@y.org", Home: "psc"}})
	if !errors.Is(res.Err, broker.ErrExists) || !strings.Contains(res.Err.Error(), "never reused") {
		t.Errorf("re-adding removed name: err = %v, want AlreadyExists saying names are never reused", res.Err)
	}
}

func TestRangeExhaustedAndWidened(t *testing.T) {
	d := fixture(t)
	// psc has 3 uids; alice pins one inside the range, leaving 2.
	must(t, d, &directory.Command{PinAccount: &directory.PinAccount{User: "alice", Site: "psc", UID: 300001}})
	for _, u := range []string{"u1", "u2", "u3"} {
		must(t, d, &directory.Command{AddUser: &directory.AddUser{Name: u, Email: u + "@x.org", Home: "psc"}})
	}
	must(t, d, grant("user:u1", "psc/gpu", "compute.create"))
	must(t, d, grant("user:u2", "psc/gpu", "compute.create"))
	u1, _ := d.Account("u1", "psc")
	u2, _ := d.Account("u2", "psc")
	if u1.UID != 300000 || u2.UID != 300002 {
		t.Errorf("uids = %d, %d; want 300000, 300002 (300001 is pinned)", u1.UID, u2.UID)
	}
	before, _ := d.Hash()
	res := d.Apply(&directory.Command{Time: t0, AddGrant: &directory.AddGrant{Subject: "user:u3", Resource: "psc/gpu", Actions: []string{"compute.create"}}})
	want := "uid range 300000-300002 of site psc is exhausted; widen it with labfed site update psc --uid-range LO-HI"
	if !errors.Is(res.Err, broker.ErrExhausted) || res.Err.Error() != want {
		t.Fatalf("grant past exhaustion: err = %v, want %q", res.Err, want)
	}
	if after, _ := d.Hash(); after != before {
		t.Errorf("failed grant changed the state: hash %s -> %s", before, after)
	}
	must(t, d, &directory.Command{UpdateSite: &directory.UpdateSite{Name: "psc", UIDRange: &broker.Range{Lo: 300000, Hi: 300010}}})
	must(t, d, grant("user:u3", "psc/gpu", "compute.create"))
	if u3, _ := d.Account("u3", "psc"); u3.UID != 300003 {
		t.Errorf("u3 uid = %d after widening, want 300003", u3.UID)
	}
}

func TestPin(t *testing.T) {
	d := fixture(t)
	a := must(t, d, &directory.Command{PinAccount: &directory.PinAccount{User: "alice", Site: "rutgers", UID: 5001, GID: 5001, Username: "asmith"}}).(*directory.Account)
	if a.UID != 5001 || a.GID != 5001 || a.Username != "asmith" || !a.Pinned || len(a.Groups) != 1 {
		t.Errorf("pinned account = %+v, want uid/gid 5001, asmith, pinned, cryo-lab group", a)
	}
	// The same pin again is harmless; a grant later reuses the account.
	must(t, d, &directory.Command{PinAccount: &directory.PinAccount{User: "alice", Site: "rutgers", UID: 5001, GID: 5001, Username: "asmith"}})
	must(t, d, grant("user:alice", "rutgers/krios-g4", "instrument.operate"))
	if b, _ := d.Account("alice", "rutgers"); b.UID != 5001 {
		t.Errorf("grant after pin changed uid to %d", b.UID)
	}
}

// TestBadInput applies invalid commands to a populated directory and checks
// each error's kind and message, and that none changes the state.
func TestBadInput(t *testing.T) {
	later := t0.Add(time.Hour)
	earlier := t0.Add(-time.Hour)
	tests := []struct {
		name string
		cmd  directory.Command
		kind error
		msg  string // substring
	}{
		{"site bad name", directory.Command{AddSite: &directory.AddSite{Name: "Rutgers", UIDRange: rng(5000, 6000), GIDRange: rng(5000, 6000)}}, broker.ErrInvalid, `site name "Rutgers" is not valid`},
		{"site inverted range", directory.Command{AddSite: &directory.AddSite{Name: "x", UIDRange: rng(6000, 5000), GIDRange: rng(5000, 6000)}}, broker.ErrInvalid, "uid range 6000-5000 is inverted"},
		{"site system range", directory.Command{AddSite: &directory.AddSite{Name: "x", UIDRange: rng(0, 5000), GIDRange: rng(5000, 6000)}}, broker.ErrInvalid, "system accounts"},
		{"site exists", directory.Command{AddSite: &directory.AddSite{Name: "psc", UIDRange: rng(5000, 6000), GIDRange: rng(5000, 6000)}}, broker.ErrExists, `site "psc" already exists`},
		{"site shrink", directory.Command{UpdateSite: &directory.UpdateSite{Name: "psc", UIDRange: &broker.Range{Lo: 300000, Hi: 300001}}}, broker.ErrPrecondition, "ranges only grow"},
		{"site update unknown", directory.Command{UpdateSite: &directory.UpdateSite{Name: "nope", UIDRange: &broker.Range{Lo: 5000, Hi: 6000}}}, broker.ErrNotFound, `site "nope" is not in the directory`},
		{"user exists", directory.Command{AddUser: &directory.AddUser{Name: "alice", Email: "a2@x.org", Home: "psc"}}, broker.ErrExists, `user "alice" already exists`},
		{"user bad email", directory.Command{AddUser: &directory.AddUser{Name: "eve", Email: "eve at x", Home: "psc"}}, broker.ErrInvalid, "not a plain address"},
		{"user email taken", directory.Command{AddUser: &directory.AddUser{Name: "eve", Email: "ALICE@rutgers.edu", Home: "psc"}}, broker.ErrExists, "already belongs to user alice"},
		{"user unknown home", directory.Command{AddUser: &directory.AddUser{Name: "eve", Email: "eve@x.org", Home: "mars"}}, broker.ErrNotFound, `home site "mars"`},
		{"user identity taken", directory.Command{AddUser: &directory.AddUser{Name: "eve", Email: "eve@x.org", Home: "psc", Identities: []broker.Identity{{Issuer: "https://cilogon.org", Subject: "http://cilogon.org/serverA/users/1"}}}}, broker.ErrExists, "already belongs to user alice"},
		{"user http issuer", directory.Command{AddUser: &directory.AddUser{Name: "eve", Email: "eve@x.org", Home: "psc", Identities: []broker.Identity{{Issuer: "http://idp.example.org", Subject: "1"}}}}, broker.ErrInvalid, "plain http"},
		{"user bad role", directory.Command{AddUser: &directory.AddUser{Name: "eve", Email: "eve@x.org", Home: "psc", Roles: []string{"root"}}}, broker.ErrInvalid, `role "root" is unknown`},
		{"user admin of unknown site", directory.Command{AddUser: &directory.AddUser{Name: "eve", Email: "eve@x.org", Home: "psc", Roles: []string{"site-admin:mars"}}}, broker.ErrNotFound, `names site "mars"`},
		{"user bad status", directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", Status: ptr("deleted")}}, broker.ErrInvalid, "use active or suspended"},
		{"remove unknown user", directory.Command{RemoveUser: &directory.RemoveUser{Name: "zed"}}, broker.ErrNotFound, `user "zed" is not in the directory`},
		{"project exists", directory.Command{AddProject: &directory.AddProject{Name: "cryo-lab"}}, broker.ErrExists, "already exists"},
		{"member again", directory.Command{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: "alice"}}, broker.ErrExists, "already a member"},
		{"member unknown project", directory.Command{AddMember: &directory.ProjectMember{Project: "nope", User: "alice"}}, broker.ErrNotFound, `project "nope"`},
		{"member unknown user", directory.Command{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: "zed"}}, broker.ErrNotFound, `user "zed"`},
		{"grant bad subject", directory.Command{AddGrant: &directory.AddGrant{Subject: "alice", Resource: "psc/gpu", Actions: []string{"compute.create"}}}, broker.ErrInvalid, "not user:NAME or project:NAME"},
		{"grant unknown user", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:zed", Resource: "psc/gpu", Actions: []string{"compute.create"}}}, broker.ErrNotFound, `user "zed"`},
		{"grant unknown site", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "mars/gpu", Actions: []string{"compute.create"}}}, broker.ErrNotFound, `site "mars"`},
		{"grant bad resource", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "psc", Actions: []string{"compute.create"}}}, broker.ErrInvalid, "is not SITE/NAME"},
		{"grant dotdot path", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "psc/raw/../etc", Actions: []string{"storage.read"}}}, broker.ErrInvalid, "never '.' or '..'"},
		{"grant unknown action", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "psc/gpu", Actions: []string{"compute.destroy"}}}, broker.ErrInvalid, `action "compute.destroy" is unknown`},
		{"grant no actions", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "psc/gpu"}}, broker.ErrInvalid, "no actions given"},
		{"grant path on instrument", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "rutgers/krios-g4/x", Actions: []string{"instrument.operate"}}}, broker.ErrInvalid, "names a path"},
		{"grant inverted window", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "psc/gpu", Actions: []string{"compute.create"}, From: later.Add(time.Hour), Until: &later}}, broker.ErrInvalid, "grant window is inverted"},
		{"grant ended", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "psc/gpu", Actions: []string{"compute.create"}, From: earlier.Add(-time.Hour), Until: &earlier}}, broker.ErrInvalid, "already passed"},
		{"grant overlaps", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "rutgers/krios-g4", Actions: []string{"instrument.view", "instrument.operate"}, From: later}}, broker.ErrExists, "grant g-1 already gives user:alice instrument.operate"},
		{"grant suspended user", directory.Command{AddGrant: &directory.AddGrant{Subject: "user:sam", Resource: "psc/gpu", Actions: []string{"compute.create"}}}, broker.ErrPrecondition, "user sam is suspended"},
		{"revoke bad id", directory.Command{RevokeGrant: &directory.RevokeGrant{ID: "12"}}, broker.ErrInvalid, "not of the form g-N"},
		{"revoke unknown", directory.Command{RevokeGrant: &directory.RevokeGrant{ID: "g-99"}}, broker.ErrNotFound, "grant g-99 does not exist"},
		{"revoke twice", directory.Command{RevokeGrant: &directory.RevokeGrant{ID: "g-2"}}, broker.ErrPrecondition, "already revoked"},
		{"pin taken uid", directory.Command{PinAccount: &directory.PinAccount{User: "bob", Site: "rutgers", UID: 200000}}, broker.ErrExists, "uid 200000 at site rutgers is already held by user:alice"},
		{"pin system uid", directory.Command{PinAccount: &directory.PinAccount{User: "bob", Site: "rutgers", UID: 0}}, broker.ErrInvalid, "uid 0 cannot be pinned"},
		{"pin nobody", directory.Command{PinAccount: &directory.PinAccount{User: "bob", Site: "rutgers", UID: 65534}}, broker.ErrInvalid, "uid 65534 cannot be pinned"},
		{"pin over account", directory.Command{PinAccount: &directory.PinAccount{User: "alice", Site: "rutgers", UID: 7000}}, broker.ErrExists, "a pin must come before the first grant"},
		{"pin taken username", directory.Command{PinAccount: &directory.PinAccount{User: "bob", Site: "rutgers", UID: 7000, Username: "alice"}}, broker.ErrExists, "username alice at site rutgers"},
		{"pin bad username", directory.Command{PinAccount: &directory.PinAccount{User: "bob", Site: "rutgers", UID: 7000, Username: "Bob Smith"}}, broker.ErrInvalid, "not a portable POSIX login name"},
		{"pin taken gid", directory.Command{PinAccount: &directory.PinAccount{User: "bob", Site: "rutgers", UID: 7000, GID: 200000}}, broker.ErrExists, "gid 200000 at site rutgers"},
		{"empty command", directory.Command{}, broker.ErrInvalid, "empty directory command"},
	}
	d := fixture(t)
	must(t, d, grant("user:alice", "rutgers/krios-g4", "instrument.operate")) // g-1
	must(t, d, grant("user:alice", "psc/raw/alice", "storage.read"))          // g-2
	must(t, d, &directory.Command{RevokeGrant: &directory.RevokeGrant{ID: "g-2"}})
	must(t, d, &directory.Command{AddUser: &directory.AddUser{Name: "sam", Email: "sam@x.org", Home: "psc"}})
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "sam", Status: ptr(directory.StatusSuspended)}})
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			before, _ := d.Hash()
			cmd := test.cmd
			cmd.Time = t0
			res := d.Apply(&cmd)
			if !errors.Is(res.Err, test.kind) || !strings.Contains(fmt.Sprint(res.Err), test.msg) {
				t.Errorf("Apply(%s) = %v, want %v containing %q", describe(&cmd), res.Err, test.kind, test.msg)
			}
			if after, _ := d.Hash(); after != before {
				t.Errorf("Apply(%s) failed but changed the state", describe(&cmd))
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestDeterministic applies the same log to two directories and compares
// state hashes.
func TestDeterministic(t *testing.T) {
	build := func() string {
		d := fixture(t)
		for i := range 5 {
			u := fmt.Sprintf("user%d", i)
			must(t, d, &directory.Command{Time: t0.Add(time.Duration(i) * time.Second), AddUser: &directory.AddUser{Name: u, Email: u + "@x.org", Home: "rutgers"}})
			must(t, d, &directory.Command{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: u}})
		}
		must(t, d, grant("project:cryo-lab", "rutgers/krios-g4", "instrument.view"))
		h, err := d.Hash()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if a, b := build(), build(); a != b {
		t.Errorf("same log gave hashes %s and %s", a, b)
	}
}

// TestBatchFailedCommandLeavesNoTrace runs a batch whose middle command
// writes several records and then fails: none of its writes may survive,
// while the commands around it apply.
func TestBatchFailedCommandLeavesNoTrace(t *testing.T) {
	d := fixture(t)
	for _, u := range []string{"u1", "u2", "u3"} {
		must(t, d, &directory.Command{AddUser: &directory.AddUser{Name: u, Email: u + "@x.org", Home: "psc"}})
		must(t, d, &directory.Command{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: u}})
	}
	// cryo-lab has 4 members; psc has 3 uids: the project grant allocates
	// three accounts and fails on the fourth.
	cmds := []*directory.Command{
		{Time: t0, AddProject: &directory.AddProject{Name: "before"}},
		{Time: t0, AddGrant: &directory.AddGrant{Subject: "project:cryo-lab", Resource: "psc/gpu", Actions: []string{"compute.create"}}},
		{Time: t0, AddProject: &directory.AddProject{Name: "after"}},
	}
	res, err := d.ApplyBatch(cmds)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[2].Err != nil || !errors.Is(res[1].Err, broker.ErrExhausted) {
		t.Fatalf("ApplyBatch errors = %v, %v, %v; want nil, exhausted, nil", res[0].Err, res[1].Err, res[2].Err)
	}
	if accs, _ := d.Accounts("psc"); len(accs) != 0 {
		t.Errorf("Accounts(psc) = %d accounts after a failed grant, want 0", len(accs))
	}
	if gs, _ := d.Grants(directory.GrantFilter{IncludeRevoked: true}); len(gs) != 0 {
		t.Errorf("Grants() = %d after a failed grant, want 0", len(gs))
	}
	if s, _ := d.Site("psc"); s.NextUID != 300000 {
		t.Errorf("psc NextUID = %d after a failed grant, want 300000", s.NextUID)
	}
	for _, p := range []string{"before", "after"} {
		if _, err := d.Project(p); err != nil {
			t.Errorf("Project(%s) = %v, want it applied", p, err)
		}
	}
	// The same log applied one command at a time gives the same state.
	d2 := fixture(t)
	for _, u := range []string{"u1", "u2", "u3"} {
		must(t, d2, &directory.Command{AddUser: &directory.AddUser{Name: u, Email: u + "@x.org", Home: "psc"}})
		must(t, d2, &directory.Command{AddMember: &directory.ProjectMember{Project: "cryo-lab", User: u}})
	}
	for _, c := range cmds {
		d2.Apply(c)
	}
	h1, _ := d.Hash()
	h2, _ := d2.Hash()
	if h1 != h2 {
		t.Errorf("batch and one-by-one application differ: %s vs %s", h1, h2)
	}
}

func TestMapRemoteUser(t *testing.T) {
	d := fixture(t)
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "bob", AddIdentities: []broker.Identity{{Issuer: "https://idp.cmu.edu", Subject: "shared-sub"}}}})
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", AddIdentities: []broker.Identity{{Issuer: "https://idp.rutgers.edu", Subject: "shared-sub"}}}})
	tests := []struct {
		remote, want string
		kind         error
	}{
		{"alice@rutgers.edu", "alice", nil},
		{"BOB@cmu.edu", "bob", nil},
		{"http://cilogon.org/serverA/users/1", "alice", nil},
		{"nobody@x.org", "", broker.ErrNotFound},
		{"http://cilogon.org/serverA/users/999", "", broker.ErrNotFound},
		{"shared-sub", "", broker.ErrPrecondition},
	}
	for _, test := range tests {
		u, err := d.MapRemoteUser(test.remote)
		switch {
		case test.kind != nil && !errors.Is(err, test.kind):
			t.Errorf("MapRemoteUser(%q) = %v, %v; want %v", test.remote, u, err, test.kind)
		case test.kind == nil && (err != nil || u.Name != test.want):
			t.Errorf("MapRemoteUser(%q) = %v, %v; want %s", test.remote, u, err, test.want)
		}
	}
}
