package broker

import (
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

var (
	nameRE     = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	usernameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	segmentRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,255}$`)
)

// ValidateName checks the name of a site, user, project or node: lower-case
// letters, digits and '-', starting with a letter, at most 63 characters.
// what names the thing for the message ("site", "user").
func ValidateName(what, name string) error {
	if name == "" {
		return Errorf(ErrInvalid, "%s name is empty; give a lower-case name such as %q", what, exampleName(what))
	}
	if !nameRE.MatchString(name) {
		return Errorf(ErrInvalid, "%s name %q is not valid; use lower-case letters, digits and '-', starting with a letter, at most 63 characters", what, name)
	}
	return nil
}

func exampleName(what string) string {
	switch what {
	case "site":
		return "rutgers"
	case "project":
		return "cryo-lab"
	default:
		return "alice"
	}
}

// ValidateUsername checks a POSIX login name as it will appear in passwd.
func ValidateUsername(name string) error {
	if !usernameRE.MatchString(name) {
		return Errorf(ErrInvalid, "username %q is not a portable POSIX login name; use lower-case letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters", name)
	}
	return nil
}

// ValidateEmail checks that e is a bare address such as alice@rutgers.edu.
func ValidateEmail(e string) error {
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return Errorf(ErrInvalid, "email %q is not a plain address; give one such as alice@rutgers.edu", e)
	}
	return nil
}

// Identity is a federated identity: the OIDC issuer and the subject it
// asserts.
type Identity struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

// ParseIdentity parses ISSUER=SUBJECT. The issuer must be an https URL (http
// only on loopback, for local issuers) and the subject non-empty.
func ParseIdentity(s string) (Identity, error) {
	iss, sub, ok := strings.Cut(s, "=")
	// Issuers are URLs and may contain '='; subjects rarely do. Split on the
	// last '=' that follows the URL's host.
	if i := strings.LastIndex(s, "="); ok && i > len(iss) {
		iss, sub = s[:i], s[i+1:]
	}
	if !ok || iss == "" || sub == "" {
		return Identity{}, Errorf(ErrInvalid, "identity %q is not ISSUER=SUBJECT; give one such as https://cilogon.org=http://cilogon.org/serverA/users/1234", s)
	}
	id := Identity{Issuer: iss, Subject: sub}
	return id, id.Validate()
}

// Validate checks the issuer URL and subject.
func (id Identity) Validate() error {
	u, err := url.Parse(id.Issuer)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Errorf(ErrInvalid, "identity issuer %q is not an absolute URL; give the issuer exactly as in its discovery document, such as https://cilogon.org", id.Issuer)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if h := u.Hostname(); h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1" {
			return Errorf(ErrInvalid, "identity issuer %q uses plain http; only https issuers are accepted (http only on loopback)", id.Issuer)
		}
	default:
		return Errorf(ErrInvalid, "identity issuer %q must be an https URL", id.Issuer)
	}
	if id.Subject == "" || len(id.Subject) > 255 {
		return Errorf(ErrInvalid, "identity subject for issuer %q must be 1 to 255 characters", id.Issuer)
	}
	return nil
}

func (id Identity) String() string { return id.Issuer + "=" + id.Subject }

// Range is an inclusive range of POSIX ids.
type Range struct {
	Lo uint32 `json:"lo"`
	Hi uint32 `json:"hi"`
}

// Bounds of allocatable POSIX ids: below 1000 are system accounts, and
// 2^31-1 keeps clear of tools that treat ids as signed.
const (
	MinPosixID = 1000
	MaxPosixID = 2147483646
)

// ParseRange parses "LO-HI". what names the range ("uid", "gid").
func ParseRange(what, s string) (Range, error) {
	lo, hi, ok := strings.Cut(s, "-")
	l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 32)
	h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return Range{}, Errorf(ErrInvalid, "%s range %q is not LO-HI; give one such as 200000-299999", what, s)
	}
	r := Range{Lo: uint32(l), Hi: uint32(h)}
	return r, r.Validate(what)
}

// Validate checks that the range is non-empty and within the allocatable
// bounds.
func (r Range) Validate(what string) error {
	if r.Lo > r.Hi {
		return Errorf(ErrInvalid, "%s range %s is inverted; the low end must not exceed the high end", what, r)
	}
	if r.Lo < MinPosixID || r.Hi > MaxPosixID {
		return Errorf(ErrInvalid, "%s range %s is outside %d-%d; ids below %d belong to system accounts", what, r, MinPosixID, MaxPosixID, MinPosixID)
	}
	return nil
}

// Contains reports whether r covers all of o.
func (r Range) Contains(o Range) bool { return r.Lo <= o.Lo && o.Hi <= r.Hi }

// Has reports whether n is inside r.
func (r Range) Has(n uint32) bool { return r.Lo <= n && n <= r.Hi }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Lo, r.Hi) }

// Reserved POSIX ids that are never allocated even inside a site's range:
// nobody/nogroup and the 16-bit "-1".
func Reserved(n uint32) bool { return n == 65534 || n == 65535 }
