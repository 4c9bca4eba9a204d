package audit

import (
	"fmt"
	"testing"
	"time"
)

// TestUsage: hours from closed sessions and finished or failed jobs,
// counts of sessions, jobs and tokens, grouped three ways; refusals and
// nonsense figures count nothing.
func TestUsage(t *testing.T) {
	at := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	e := func(actor, subject, site, action, decision string, details map[string]string) *Entry {
		return &Entry{Time: at, Actor: actor, Subject: subject, Site: site, Action: action, Decision: decision, Details: details}
	}
	entries := []*Entry{
		e("alice", "", "rutgers", ActionSessionOpen, Allow, nil),
		e("alice", "", "rutgers", ActionSessionClose, Allow, map[string]string{DetailSeconds: "5400"}),
		e("bob", "", "psc", ActionJobSubmit, Allow, nil),
		e("bob", "", "psc", ActionJobFinish, Allow, map[string]string{DetailSeconds: "3600", DetailGPUs: "4"}),
		e("bob", "", "psc", ActionJobFail, Allow, map[string]string{DetailSeconds: "1800", DetailGPUs: "2", "project": "cryo-lab"}),
		e("rhea", "alice", "rutgers", ActionTokenIssue, Allow, nil),
		e("carol", "", "rutgers", ActionTokenIssue, Deny, nil),
		e("alice", "", "rutgers", ActionSessionClose, Allow, map[string]string{DetailSeconds: "NaN"}),
		e("bob", "", "psc", ActionJobFinish, Allow, map[string]string{DetailSeconds: "3600", DetailGPUs: "-8"}),
	}
	projects := func(u string) []string {
		if u == "alice" {
			return []string{"cryo-lab", "teaching"}
		}
		return nil
	}
	for _, tc := range []struct{ by, want string }{
		{BySite, "[{psc 0 5 0 1 0} {rutgers 1.5 0 1 0 1}]"},
		{ByUser, "[{alice 1.5 0 1 0 1} {bob 0 5 0 1 0}]"},
		{ByProject, "[{(none) 0 4 0 1 0} {cryo-lab 1.5 1 1 0 1} {teaching 1.5 0 1 0 1}]"},
	} {
		rows, err := Usage(entries, tc.by, projects)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(rows); got != tc.want {
			t.Errorf("by %s: %s\nwant       %s", tc.by, got, tc.want)
		}
	}
	if _, err := Usage(entries, "moon", nil); err == nil {
		t.Error("usage by moon accepted")
	}
}
