package directory_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
)

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

var aliceID = broker.Identity{Issuer: "https://cilogon.org", Subject: "http://cilogon.org/serverA/users/1"}

func login(secret, user string, via *broker.Identity, at time.Time, ttl time.Duration, idToken string) *directory.Command {
	c := &directory.Command{Time: at, CreateSession: &directory.CreateSession{
		Session: directory.Session{ID: digest(secret), User: user, Site: "rutgers", Via: via, Expires: at.Add(ttl)},
	}}
	if idToken != "" {
		c.CreateSession.LoginID = digest(idToken)
		c.CreateSession.LoginExpires = at.Add(5 * time.Minute)
	}
	return c
}

func TestSessionLifecycle(t *testing.T) {
	d := fixture(t)
	s := must(t, d, login("s1", "alice", &aliceID, t0, time.Hour, "idtok-1")).(*directory.Session)
	if s.User != "alice" || !s.Created.Equal(t0) || !s.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("session = %+v", s)
	}
	got, err := d.Session(digest("s1"))
	if err != nil || got.User != "alice" {
		t.Fatalf("Session = %+v, %v", got, err)
	}
	if got.ExpiredAt(t0.Add(59*time.Minute)) || !got.ExpiredAt(t0.Add(time.Hour)) {
		t.Errorf("ExpiredAt wrong around %s", got.Expires)
	}

	// The same ID token cannot open a second session, even with a new secret.
	res := d.Apply(login("s2", "alice", &aliceID, t0.Add(time.Second), time.Hour, "idtok-1"))
	if broker.KindOf(res.Err) != broker.ErrExists || !strings.Contains(res.Err.Error(), "already used") {
		t.Errorf("replayed ID token: %v", res.Err)
	}
	must(t, d, login("s3", "alice", &aliceID, t0.Add(time.Second), time.Hour, "idtok-2"))
	must(t, d, login("s4", "bob", nil, t0.Add(time.Second), time.Hour, ""))
	if ss, _ := d.Sessions("alice"); len(ss) != 2 {
		t.Errorf("alice has %d sessions, want 2", len(ss))
	}

	// Revoking one, then all of a user's.
	if n := must(t, d, &directory.Command{RevokeSessions: &directory.RevokeSessions{ID: digest("s1")}}); n != 1 {
		t.Errorf("revoke one = %v", n)
	}
	if _, err := d.Session(digest("s1")); broker.KindOf(err) != broker.ErrNotFound {
		t.Errorf("revoked session still found: %v", err)
	}
	if n := must(t, d, &directory.Command{RevokeSessions: &directory.RevokeSessions{User: "alice"}}); n != 1 {
		t.Errorf("revoke alice's = %v", n)
	}
	if ss, _ := d.Sessions(""); len(ss) != 1 || ss[0].User != "bob" {
		t.Errorf("left: %+v", ss)
	}
}

func TestSessionsPrunedWhenOver(t *testing.T) {
	d := fixture(t)
	must(t, d, login("old", "alice", &aliceID, t0, time.Minute, "idtok-old"))
	// Two hours later, a new login prunes the expired session and the
	// used-ID-token record, which lets the (long expired) token's digest go.
	later := t0.Add(2 * time.Hour)
	must(t, d, login("new", "alice", &aliceID, later, time.Hour, "idtok-new"))
	if _, err := d.Session(digest("old")); broker.KindOf(err) != broker.ErrNotFound {
		t.Errorf("expired session not pruned: %v", err)
	}
	if ss, _ := d.Sessions("alice"); len(ss) != 1 {
		t.Errorf("alice has %d sessions after pruning, want 1", len(ss))
	}
	must(t, d, login("again", "alice", &aliceID, later, time.Hour, "idtok-old"))
}

func TestSessionBadInput(t *testing.T) {
	suspended := func(d *directory.Directory) {
		must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "bob", Status: ptr("suspended")}})
	}
	other := broker.Identity{Issuer: "https://cilogon.org", Subject: "someone-else"}
	for _, tc := range []struct {
		name  string
		setup func(*directory.Directory)
		cmd   *directory.Command
		kind  error
		want  string
	}{
		{name: "unknown user", cmd: login("x", "zed", nil, t0, time.Hour, ""), kind: broker.ErrNotFound, want: `user "zed" is not in the directory`},
		{name: "suspended", setup: suspended, cmd: login("x", "bob", nil, t0, time.Hour, ""), kind: broker.ErrPrecondition, want: "bob is suspended"},
		{name: "identity not the user's", cmd: login("x", "alice", &other, t0, time.Hour, ""), kind: broker.ErrNotFound, want: "not registered in the federation"},
		{name: "already expired", cmd: login("x", "alice", nil, t0, -time.Minute, ""), kind: broker.ErrInvalid, want: "before it starts"},
		{name: "bad digest", cmd: &directory.Command{Time: t0, CreateSession: &directory.CreateSession{Session: directory.Session{ID: "abc", User: "alice", Expires: t0.Add(time.Hour)}}}, kind: broker.ErrInvalid, want: "hex SHA-256"},
		{name: "revoke both", cmd: &directory.Command{RevokeSessions: &directory.RevokeSessions{ID: digest("a"), User: "alice"}}, kind: broker.ErrInvalid, want: "not both"},
		{name: "revoke unknown", cmd: &directory.Command{RevokeSessions: &directory.RevokeSessions{ID: digest("a")}}, kind: broker.ErrNotFound, want: "no such session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := fixture(t)
			if tc.setup != nil {
				tc.setup(d)
			}
			before, _ := d.Hash()
			if tc.cmd.Time.IsZero() {
				tc.cmd.Time = t0
			}
			res := d.Apply(tc.cmd)
			if broker.KindOf(res.Err) != tc.kind || res.Err == nil || !strings.Contains(res.Err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v containing %q", res.Err, tc.kind, tc.want)
			}
			if after, _ := d.Hash(); after != before {
				t.Error("a refused command changed the directory")
			}
		})
	}
}

func TestSuspendAndRemoveEndSessions(t *testing.T) {
	d := fixture(t)
	must(t, d, login("a1", "alice", &aliceID, t0, time.Hour, ""))
	must(t, d, login("b1", "bob", nil, t0, time.Hour, ""))
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", Status: ptr("suspended")}})
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", Status: ptr("active")}})
	if _, err := d.Session(digest("a1")); broker.KindOf(err) != broker.ErrNotFound {
		t.Errorf("alice's session survived a suspension and its lifting: %v", err)
	}
	must(t, d, &directory.Command{RemoveUser: &directory.RemoveUser{Name: "bob"}})
	if ss, _ := d.Sessions(""); len(ss) != 0 {
		t.Errorf("sessions left after suspension and removal: %+v", ss)
	}
}

func TestGuard(t *testing.T) {
	d := fixture(t)
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "bob", Roles: &[]string{"site-admin:psc"}}})
	email := "new@rutgers.edu"
	change := func(g *directory.Guard) directory.Result {
		return d.Apply(&directory.Command{Time: t0, Guard: g, UpdateUser: &directory.UpdateUser{Name: "alice", Email: &email}})
	}
	for _, tc := range []struct {
		name  string
		guard *directory.Guard
		want  string
	}{
		{"actor lost the role", &directory.Guard{User: "bob", Roles: []string{"coordinator"}}, "no longer holds role coordinator"},
		{"actor unknown", &directory.Guard{User: "zed"}, "no longer active"},
		{"target not at the site", &directory.Guard{User: "bob", Roles: []string{"site-admin:psc"}, Target: "alice", TargetSite: "psc"}, "no longer in the care of site psc"},
	} {
		before, _ := d.Hash()
		if res := change(tc.guard); broker.KindOf(res.Err) != broker.ErrPrecondition || !strings.Contains(res.Err.Error(), tc.want) {
			t.Errorf("%s: %v, want precondition %q", tc.name, res.Err, tc.want)
		}
		if after, _ := d.Hash(); after != before {
			t.Errorf("%s: a guarded command that failed changed the directory", tc.name)
		}
	}
	// Promoting the target in between is caught as well.
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", Roles: &[]string{"coordinator"}}})
	if res := change(&directory.Guard{User: "bob", Roles: []string{"site-admin:psc"}, Target: "alice", TargetSite: "rutgers"}); broker.KindOf(res.Err) != broker.ErrPrecondition {
		t.Errorf("guard over a promoted target: %v", res.Err)
	}
	if res := change(&directory.Guard{User: "bob", Roles: []string{"site-admin:psc"}}); res.Err != nil {
		t.Errorf("guard that holds: %v", res.Err)
	}
}

func TestRemoveIdentityEndsItsSessions(t *testing.T) {
	d := fixture(t)
	other := broker.Identity{Issuer: "https://idp.rutgers.edu", Subject: "alice"}
	must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", AddIdentities: []broker.Identity{other}}})
	must(t, d, login("via-cilogon", "alice", &aliceID, t0, time.Hour, ""))
	must(t, d, login("via-rutgers", "alice", &other, t0, time.Hour, ""))
	u := must(t, d, &directory.Command{UpdateUser: &directory.UpdateUser{Name: "alice", RemoveIdentities: []broker.Identity{aliceID}}}).(*directory.User)
	if len(u.Identities) != 1 || u.Identities[0] != other {
		t.Errorf("identities after removal = %v, want only %v", u.Identities, other)
	}
	if _, err := d.UserByIdentity(aliceID); broker.KindOf(err) != broker.ErrNotFound {
		t.Errorf("removed identity still maps: %v", err)
	}
	if _, err := d.Session(digest("via-cilogon")); broker.KindOf(err) != broker.ErrNotFound {
		t.Errorf("session opened with the removed identity survived: %v", err)
	}
	if _, err := d.Session(digest("via-rutgers")); err != nil {
		t.Errorf("session opened with the other identity ended: %v", err)
	}
	res := d.Apply(&directory.Command{Time: t0, UpdateUser: &directory.UpdateUser{Name: "bob", RemoveIdentities: []broker.Identity{other}}})
	if broker.KindOf(res.Err) != broker.ErrNotFound || !strings.Contains(res.Err.Error(), "is not one of bob's") {
		t.Errorf("removing someone else's identity = %v", res.Err)
	}
}
