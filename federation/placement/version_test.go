package placement

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"4.6.2", "4.6.2", 0},
		{"5", "5.0", 0},
		{"5.0.0", "5", 0},
		{"v5.1", "5.1", 0},
		{"05.1", "5.01", 0},
		{"5.10", "5.9", 1},
		{"4.5.3", "4.6.2", -1},
		{"5.0", "5.0-beta", 1},
		{"5.0-beta2", "5.0-beta10", 1}, // text, not numbers, after the digits
		{"5.0rc1", "5.0", -1},
		{"12345678901234567890.1", "9.1", 1},
	}
	for _, test := range tests {
		if got := compareVersions(test.a, test.b); got != test.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", test.a, test.b, got, test.want)
		}
		if got := compareVersions(test.b, test.a); got != -test.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", test.b, test.a, got, -test.want)
		}
	}
}

func TestSatisfies(t *testing.T) {
	tests := []struct {
		have, want string
		ok         bool
	}{
		{"4.6.2", "4.6.2", true},
		{"4.6.2", "=4.6.2", true},
		{"4.6.2", "== 4.6.2", true},
		{"4.6.2", "4.6.3", false},
		{"5", "5.0", false}, // exact versions compare as text
		{"5.0", ">=5.0", true},
		{"5", ">=5.0", true},
		{"5.10", ">=5.9", true},
		{"4.1", ">=5.0", false},
		{"5.0", ">5.0", false},
		{"5.0.1", ">5.0", true},
		{"4.9", "<5.0", true},
		{"5.0", "<5.0", false},
		{"5.0", "<=5.0", true},
		{"anything", "", true},
		{"anything", "*", true},
		{"4.6.2", "~4.6", false}, // not understood: nothing meets it
	}
	for _, test := range tests {
		if got := satisfies(test.have, test.want); got != test.ok {
			t.Errorf("satisfies(%q, %q) = %v, want %v", test.have, test.want, got, test.ok)
		}
	}
}
