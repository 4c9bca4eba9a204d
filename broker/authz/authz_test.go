package authz

import (
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func res(s string) broker.Resource {
	r, err := broker.ParseResource(s)
	if err != nil {
		panic(err)
	}
	return r
}

func TestDecide(t *testing.T) {
	in4h := now.Add(4 * time.Hour)
	past := now.Add(-time.Hour)
	base := Input{User: "alice", UserStatus: "active", Projects: []string{"cryo-lab"}, HasAccount: true,
		Action: "instrument.operate", Resource: res("rutgers/krios-g4"), Now: now}
	grants := []Grant{
		{ID: "g-1", Subject: "project:cryo-lab", Resource: res("rutgers/krios-g4"), Actions: []string{"instrument.operate"}, From: past, Until: &in4h},
		{ID: "g-2", Subject: "user:alice", Resource: res("rutgers/raw/session-1"), Actions: []string{"storage.read"}, From: past},
	}
	for _, tc := range []struct {
		name   string
		edit   func(*Input)
		ok     bool
		reason string
		expiry time.Time
	}{
		{"through a project, default lifetime", nil, true, "", now.Add(DefaultTTL)},
		{"lifetime cut to the grant's end", func(in *Input) { in.TTL = 10 * time.Hour }, true, "", in4h},
		{"too long", func(in *Input) { in.TTL = 13 * time.Hour }, false, "a token lives at most 12h0m0s; ask for less than 13h0m0s", time.Time{}},
		{"suspended", func(in *Input) { in.UserStatus = "suspended" }, false, "user alice is suspended", time.Time{}},
		{"no grant", func(in *Input) { in.Projects = nil }, false, "no grant for instrument.operate on rutgers/krios-g4", time.Time{}},
		{"other action", func(in *Input) { in.Action = "instrument.view" }, false, "no grant for instrument.view on rutgers/krios-g4", time.Time{}},
		{"storage below the granted path", func(in *Input) { in.Action, in.Resource = "storage.read", res("rutgers/raw/session-1/movies") }, true, "", now.Add(DefaultTTL)},
		{"storage beside the granted path", func(in *Input) { in.Action, in.Resource = "storage.read", res("rutgers/raw/session-10") }, false, "no grant for storage.read on rutgers/raw/session-10", time.Time{}},
		{"grant ended", func(in *Input) { in.Now = in4h }, false, "grant g-1 for instrument.operate on rutgers/krios-g4 ended at 2026-11-24T16:00:00Z", time.Time{}},
		{"no account", func(in *Input) { in.HasAccount = false }, false, "user alice has no account at site rutgers yet", time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := base
			in.Grants = grants
			if tc.edit != nil {
				tc.edit(&in)
			}
			d := Decide(in)
			if d.Allowed != tc.ok || d.Reason != tc.reason || (tc.ok && !d.Expiry.Equal(tc.expiry)) {
				t.Errorf("Decide = %+v, want allowed=%v reason %q expiry %v", d, tc.ok, tc.reason, tc.expiry)
			}
		})
	}
	// A revoked grant never counts.
	in := base
	in.Grants = []Grant{grants[0]}
	in.Grants[0].Revoked = true
	if d := Decide(in); d.Allowed {
		t.Error("a revoked grant allowed a token")
	}
}

// BenchmarkDecide measures the decision alone (aim: p50 ≤ 5 µs).
func BenchmarkDecide(b *testing.B) {
	until := now.Add(time.Hour)
	in := Input{User: "alice", UserStatus: "active", Projects: []string{"p1", "p2", "cryo-lab"}, HasAccount: true,
		Action: "instrument.operate", Resource: res("rutgers/krios-g4"), Now: now}
	for i := range 20 {
		in.Grants = append(in.Grants, Grant{ID: "g", Subject: "user:bob", Resource: res("rutgers/x" + string(rune('a'+i))), Actions: []string{"instrument.view"}, From: now.Add(-time.Hour)})
	}
	in.Grants = append(in.Grants, Grant{ID: "g-1", Subject: "project:cryo-lab", Resource: res("rutgers/krios-g4"), Actions: []string{"instrument.operate"}, From: now.Add(-time.Hour), Until: &until})
	for b.Loop() {
		if !Decide(in).Allowed {
			b.Fatal("denied")
		}
	}
}
