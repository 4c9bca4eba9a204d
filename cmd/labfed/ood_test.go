package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestOODUserMap(t *testing.T) {
	tf := startTestFederation(t)
	tf.mustCLI(t, 0, "user", "add", "sam", "--email", "sam+cryo@rutgers.edu", "--home", "rutgers")
	tf.mustCLI(t, 0, "grant", "add", "--user", "sam", "--resource", "rutgers/krios-g4", "--actions", "instrument.view")
	tf.mustCLI(t, 0, "user", "add", "sue", "--email", "sue@rutgers.edu", "--home", "rutgers")
	tf.mustCLI(t, 0, "grant", "add", "--user", "sue", "--resource", "rutgers/krios-g4", "--actions", "instrument.view")
	tf.mustCLI(t, 0, "user", "update", "sue", "--status", "suspended")
	tests := []struct {
		name, remote, site string
		want               string // stdout; empty means failure expected
		errWant            string
	}{
		{"plain email", "alice@rutgers.edu", "rutgers", "alice\n", ""},
		{"url-encoded email", "alice%40rutgers.edu", "rutgers", "alice\n", ""},
		{"plus in email survives decoding", "sam%2Bcryo%40rutgers.edu", "rutgers", "sam\n", ""},
		{"email in other case", "ALICE@Rutgers.edu", "rutgers", "alice\n", ""},
		{"url-encoded OIDC subject", "http%3A%2F%2Fcilogon.org%2FserverA%2Fusers%2F1002", "psc", "bob\n", ""},
		{"unknown user", "nobody%40x.org", "rutgers", "", "not registered in the federation"},
		{"suspended user", "sue@rutgers.edu", "rutgers", "", "suspended"},
		{"no account at this site", "alice@rutgers.edu", "fabric-dc", "", "no account at site fabric-dc"},
		{"bad encoding", "alice%zz", "rutgers", "", "not valid URL encoding"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			out, _, err := tf.cli(1, "ood", "user-map", "--site", test.site, test.remote)
			if test.want != "" {
				if err != nil || out != test.want {
					t.Errorf("ood user-map %s = %q, %v; want %q", test.remote, out, err, test.want)
				}
				return
			}
			if err == nil || out != "" || !strings.Contains(errorLine(err), test.errWant) {
				t.Errorf("ood user-map %s = %q, %v; want nothing on stdout and an error containing %q", test.remote, out, err, test.errWant)
			}
		})
	}
}

func TestUserImportCSV(t *testing.T) {
	tf := startTestFederation(t)
	tf.mustCLI(t, 0, "user", "add", "dora", "--email", "dora@psu.edu", "--home", "psc")
	csvPath := filepath.Join("..", "..", "testdata", "ood", "user-map.csv")
	passwd := filepath.Join("..", "..", "testdata", "ood", "passwd")
	out, _, err := tf.cli(0, "user", "import", "--csv", csvPath, "--site", "psc", "--passwd", passwd, "--json")
	if err == nil || !strings.Contains(errorLine(err), "5 of 8 rows could not be imported") {
		t.Errorf("user import err = %v, want 5 of 8 rows failed", err)
	}
	var rows []importRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("user import --json printed %q: %v", out, err)
	}
	want := []struct {
		line          int
		status, error string
	}{
		{4, "skipped", "header row"},
		{5, "pinned", ""},
		// bob was pinned at uid 300500 by the demo directory with an
		// allocated gid; the passwd file's gid differs, so this is a conflict.
		{6, "error", "already has account bob uid 300500 gid 300000"},
		{7, "error", "not a plain address"},
		{8, "error", "no federation user has email zed@x.org"},
		{9, "error", "has 1 columns"},
		{10, "error", "not a portable POSIX login name"},
		{11, "pinned", ""}, // the same row twice: harmless
	}
	if len(rows) != len(want) {
		t.Fatalf("user import reported %d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		r := rows[i]
		if r.Row != w.line || r.Status != w.status || !strings.Contains(r.Error, w.error) {
			t.Errorf("row %d = line %d %s %q, want line %d %s %q", i, r.Row, r.Status, r.Error, w.line, w.status, w.error)
		}
	}
	var acc accountJSON
	if err := json.Unmarshal([]byte(tf.mustCLI(t, 0, "account", "show", "--user", "dora", "--site", "psc", "--json")), &acc); err != nil {
		t.Fatal(err)
	}
	if acc.Username != "dsmith" || acc.UID != 301234 || acc.GID != 301234 || !acc.Pinned {
		t.Errorf("dora's account at psc = %+v, want dsmith uid/gid 301234 pinned", acc)
	}
	if got, _, err := tf.cli(0, "ood", "user-map", "--site", "psc", "dora%40psu.edu"); err != nil || got != "dsmith\n" {
		t.Errorf("ood user-map dora = %q, %v; want dsmith", got, err)
	}
}
