package capability

import "testing"

func TestParseScope(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"instrument", "instrument.operate:rutgers/krios-g4", "instrument.operate:rutgers/krios-g4", true},
		{"storage path", "storage.read:rutgers/raw/session-123", "storage.read:rutgers/raw/session-123", true},
		{"storage colon path", "storage.read:rutgers/raw:/session-123", "storage.read:rutgers/raw/session-123", true},
		{"whole export", "storage.modify:rutgers/raw", "storage.modify:rutgers/raw", true},
		{"compute", "compute.create:psc/bridges2-gpu", "compute.create:psc/bridges2-gpu", true},
		{"no colon", "instrument.operate", "", false},
		{"empty action", ":rutgers/krios-g4", "", false},
		{"empty resource", "instrument.operate:", "", false},
		{"unknown action", "instrument.destroy:rutgers/krios-g4", "", false},
		{"path on instrument", "instrument.operate:rutgers/krios-g4/x", "", false},
		{"dotdot", "storage.read:rutgers/raw/a/../b", "", false},
		{"no name", "storage.read:rutgers", "", false},
		{"upper site", "storage.read:Rutgers/raw", "", false},
		{"space", "storage.read:rutgers/raw/a b", "", false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			got, err := ParseScope(test.in)
			if (err == nil) != test.ok {
				t.Fatalf("ParseScope(%q) error = %v, want ok %v", test.in, err, test.ok)
			}
			if err == nil && got.String() != test.want {
				t.Errorf("ParseScope(%q).String() = %q, want %q", test.in, got.String(), test.want)
			}
		})
	}
}

func TestScopeCovers(t *testing.T) {
	tests := []struct {
		have, want string
		covers     bool
	}{
		{"storage.read:rutgers/raw/a", "storage.read:rutgers/raw/a", true},
		{"storage.read:rutgers/raw/a", "storage.read:rutgers/raw/a/b", true},
		{"storage.read:rutgers/raw/a", "storage.read:rutgers/raw/ab", false},
		{"storage.read:rutgers/raw/a/b", "storage.read:rutgers/raw/a", false},
		{"storage.read:rutgers/raw", "storage.read:rutgers/raw/anything/deep", true},
		{"storage.read:rutgers/raw/a", "storage.modify:rutgers/raw/a", false},
		{"storage.read:rutgers/raw/a", "storage.read:rutgers/raw2/a", false},
		{"storage.read:rutgers/raw/a", "storage.read:psc/raw/a", false},
		{"instrument.operate:rutgers/krios-g4", "instrument.operate:rutgers/krios-g4", true},
		{"instrument.view:rutgers/krios-g4", "instrument.operate:rutgers/krios-g4", false},
		{"instrument.operate:rutgers/krios-g4", "instrument.operate:rutgers/krios-g5", false},
	}
	for _, test := range tests {
		have, want := mustScope(t, test.have), mustScope(t, test.want)
		if got := have.Covers(want); got != test.covers {
			t.Errorf("%s.Covers(%s) = %v, want %v", test.have, test.want, got, test.covers)
		}
	}
}

func mustScope(t testing.TB, s string) Scope {
	t.Helper()
	sc, err := ParseScope(s)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}
