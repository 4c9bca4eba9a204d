package placement

import (
	"cmp"
	"errors"
	"strings"
)

// requirement is a parsed Job.Software value: op is "any", "=", ">=",
// ">", "<=" or "<".
type requirement struct {
	op, version string
}

func parseRequirement(s string) (requirement, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return requirement{op: "any"}, nil
	}
	op := "="
	for _, o := range []struct{ prefix, op string }{{"==", "="}, {">=", ">="}, {"<=", "<="}, {"=", "="}, {">", ">"}, {"<", "<"}} {
		if rest, ok := strings.CutPrefix(s, o.prefix); ok {
			op, s = o.op, strings.TrimSpace(rest)
			break
		}
	}
	if s == "" || strings.ContainsAny(s, " \t<>=~^*!,") {
		return requirement{}, errors.New("give a version such as 4.6.2 (exactly that one), >=5.0, >5.0, <=5.0, <5.0, or * for any")
	}
	return requirement{op: op, version: s}, nil
}

// satisfies reports whether an installed version meets a requirement. An
// exact requirement compares text, since workers and masters must run the
// same build; a requirement that does not parse is met by nothing.
func satisfies(have, want string) bool {
	r, err := parseRequirement(want)
	if err != nil {
		return false
	}
	switch r.op {
	case "any":
		return true
	case "=":
		return have == r.version
	}
	c := compareVersions(have, r.version)
	switch r.op {
	case ">=":
		return c >= 0
	case ">":
		return c > 0
	case "<=":
		return c <= 0
	default: // "<"
		return c < 0
	}
}

// compareVersions orders dotted versions component by component: the
// leading digits of each as a number (missing components count as 0, so
// 5 = 5.0, and 5.10 > 5.9), then the rest as text, a component with no
// rest ranking after one with (5.0 > 5.0-beta). A leading "v" is ignored.
func compareVersions(a, b string) int {
	as := strings.Split(strings.TrimPrefix(a, "v"), ".")
	bs := strings.Split(strings.TrimPrefix(b, "v"), ".")
	for i := range max(len(as), len(bs)) {
		x, y := "0", "0"
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xn, xr := splitDigits(x)
		yn, yr := splitDigits(y)
		if c := cmp.Or(cmp.Compare(len(xn), len(yn)), strings.Compare(xn, yn)); c != 0 {
			return c
		}
		switch {
		case xr == yr:
		case xr == "":
			return 1
		case yr == "":
			return -1
		default:
			return strings.Compare(xr, yr)
		}
	}
	return 0
}

// splitDigits splits a version component into its leading number, without
// leading zeros, and the rest.
func splitDigits(s string) (num, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num = strings.TrimLeft(s[:i], "0")
	return num, s[i:]
}
