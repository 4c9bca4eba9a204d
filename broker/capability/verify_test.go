package capability

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
)

func TestVerifyCatalog(t *testing.T) {
	f := newFixture()
	v := f.verifier()
	seen := map[string]bool{}
	for _, test := range f.catalog(t) {
		if seen[test.name] {
			t.Fatalf("catalog has %q twice", test.name)
		}
		seen[test.name] = true
		t.Run(test.name, func(t *testing.T) {
			var want *Scope
			if test.want != "" {
				w := mustScope(t, test.want)
				want = &w
			}
			c, err := v.Verify(test.tok, want)
			if test.code == "" {
				if err != nil {
					t.Fatalf("Verify(%s) = %v, want accepted", test.name, err)
				}
				if c.Subject != "alice" || c.Audience != testSite || c.Issuer != "broker-a" || c.Version != "1" || len(c.Scope) == 0 {
					t.Errorf("Verify(%s) claims = %+v", test.name, c)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("Verify(%s) = %v, %v; want refused with %q", test.name, c, err, test.code)
			}
			if c != nil {
				t.Errorf("Verify(%s) returned claims with its refusal", test.name)
			}
			if re.Code != test.code {
				t.Errorf("Verify(%s) refused with %q (%s), want %q", test.name, re.Code, re.Reason, test.code)
			}
			if !errors.Is(err, ErrRefused) {
				t.Errorf("Verify(%s) error does not wrap ErrRefused", test.name)
			}
			if re.Reason == "" || strings.ContainsAny(re.Reason, "\r\n") || len(re.Reason) > 300 {
				t.Errorf("Verify(%s) reason %q is not one short line", test.name, re.Reason)
			}
		})
	}
}

func TestVerifyClaims(t *testing.T) {
	f := newFixture()
	tok := token(goodHeader(), goodClaims(), f.k1)
	c, err := f.verifier().Verify(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "tok-1" || !c.Expiry.Equal(testNow.Add(10*time.Minute)) || !c.NotBefore.Equal(testNow.Add(-5*time.Minute)) || !c.IssuedAt.Equal(testNow.Add(-5*time.Minute)) {
		t.Errorf("claims = %+v", c)
	}
	if c.POSIX == nil || c.POSIX.User != "alice" || c.POSIX.UID != 200001 || c.POSIX.GID != 200001 || len(c.POSIX.Groups) != 2 || c.POSIX.Groups[1] != 200002 {
		t.Errorf("posix = %+v", c.POSIX)
	}
	if len(c.Grants) != 1 || c.Grants[0] != "g-1" {
		t.Errorf("grants = %v", c.Grants)
	}
	if len(c.Scope) != 2 || c.Scope[0].String() != "instrument.operate:rutgers/krios-g4" || c.Scope[1].String() != "storage.read:rutgers/raw/a" {
		t.Errorf("scope = %v", c.Scope)
	}
}

func TestLeeway(t *testing.T) {
	f := newFixture()
	h, c := goodHeader(), goodClaims()
	nbf := token(h, c.set("nbf", unix(testNow.Add(45*time.Second))), f.k1)
	exp := token(h, c.set("exp", unix(testNow.Add(-45*time.Second))), f.k1)
	tests := []struct {
		name   string
		leeway time.Duration
		tok    string
		code   string
	}{
		{"nbf +45s, leeway 30s", 30 * time.Second, nbf, CodeNbf},
		{"nbf +45s, leeway 60s", 60 * time.Second, nbf, ""},
		{"nbf +45s, leeway 10m clamped to 60s", 10 * time.Minute, nbf, ""},
		{"nbf +45s, leeway 0", 0, nbf, CodeNbf},
		{"exp -45s, leeway 60s", 60 * time.Second, exp, ""},
		{"exp -45s, leeway 30s", 30 * time.Second, exp, CodeExp},
		{"exp +20m, leeway 1h clamped", time.Hour, token(h, c.set("exp", unix(testNow.Add(-61*time.Second))), f.k1), CodeExp},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := f.verifier(WithLeeway(test.leeway)).Verify(test.tok, nil)
			if got := code(err); got != test.code {
				t.Errorf("Verify with leeway %s = %v, want code %q", test.leeway, err, test.code)
			}
		})
	}
}

func code(err error) string {
	var re *RefusedError
	if errors.As(err, &re) {
		return re.Code
	}
	if err != nil {
		return "untyped: " + err.Error()
	}
	return ""
}

func TestSignVerifyRoundTrip(t *testing.T) {
	f := newFixture()
	s := NewSigner("k1", "broker-a", f.k1)
	in := Claims{
		Subject: "alice", Audience: "rutgers", ID: "tok-9",
		IssuedAt: testNow.Add(-time.Minute), NotBefore: testNow.Add(-time.Minute), Expiry: testNow.Add(14 * time.Minute),
		Scope:  []Scope{mustScope(t, "instrument.operate:rutgers/krios-g4"), mustScope(t, "storage.read:rutgers/raw:/session-123")},
		POSIX:  &POSIX{User: "alice", UID: 200001, GID: 200001, Groups: []uint32{200001}},
		Grants: []string{"g-1", "g-2"},
	}
	tok, err := s.Sign(in)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("Sign = %q, want compact JWS", tok)
	}
	if hdr := string(mustDecode(t, parts[0])); hdr != `{"alg":"EdDSA","kid":"k1","typ":"labfed-cap+jwt"}` {
		t.Errorf("header = %s", hdr)
	}
	want := mustScope(t, "storage.read:rutgers/raw/session-123/frames/1.tif")
	c, err := f.verifier().Verify(tok, &want)
	if err != nil {
		t.Fatalf("Verify(Sign(claims)) = %v", err)
	}
	if c.Issuer != "broker-a" || c.Version != "1" || c.Subject != "alice" || c.ID != "tok-9" || !c.Expiry.Equal(in.Expiry) || c.POSIX.UID != 200001 || len(c.Grants) != 2 || len(c.Scope) != 2 {
		t.Errorf("Verify(Sign(claims)) = %+v", c)
	}

	// Defaults: iat now, nbf = iat, exp = nbf + 15m.
	d := in
	d.IssuedAt, d.NotBefore, d.Expiry = time.Time{}, time.Time{}, time.Time{}
	tok, err = s.Sign(d)
	if err != nil {
		t.Fatal(err)
	}
	c, err = NewVerifier("rutgers", f.bundle).Verify(tok, nil)
	if err != nil {
		t.Fatalf("Verify(Sign(defaults)) = %v", err)
	}
	if got := c.Expiry.Sub(c.NotBefore); got != DefaultLifetime {
		t.Errorf("default lifetime = %s, want %s", got, DefaultLifetime)
	}
}

func TestSignRefuses(t *testing.T) {
	f := newFixture()
	s := NewSigner("k1", "broker-a", f.k1)
	base := Claims{
		Subject: "alice", Audience: "rutgers", ID: "tok-9",
		IssuedAt: testNow, NotBefore: testNow, Expiry: testNow.Add(time.Hour),
		Scope: []Scope{mustScope(t, "instrument.operate:rutgers/krios-g4")},
	}
	tests := []struct {
		name string
		mod  func(c *Claims)
	}{
		{"lifetime over 12h", func(c *Claims) { c.Expiry = c.NotBefore.Add(12*time.Hour + time.Second) }},
		{"exp equals nbf", func(c *Claims) { c.Expiry = c.NotBefore }},
		{"exp before nbf", func(c *Claims) { c.Expiry = c.NotBefore.Add(-time.Minute) }},
		{"other issuer", func(c *Claims) { c.Issuer = "broker-b" }},
		{"version 2", func(c *Claims) { c.Version = "2" }},
		{"no subject", func(c *Claims) { c.Subject = "" }},
		{"no audience", func(c *Claims) { c.Audience = "" }},
		{"bad audience", func(c *Claims) { c.Audience = "Rutgers psc" }},
		{"no id", func(c *Claims) { c.ID = "" }},
		{"no scope", func(c *Claims) { c.Scope = nil }},
		{"hand-built scope with space", func(c *Claims) {
			c.Scope = []Scope{{Action: "instrument.operate", Resource: mustScope(t, "instrument.operate:rutgers/krios-g4").Resource}, {Action: "storage.read x", Resource: mustScope(t, "storage.read:rutgers/raw").Resource}}
		}},
		{"bad posix user", func(c *Claims) { c.POSIX = &POSIX{User: "Root!"} }},
		{"empty grant", func(c *Claims) { c.Grants = []string{""} }},
		{"scope at another site", func(c *Claims) {
			c.Scope = append(c.Scope, mustScope(t, "compute.create:psc/bridges2-gpu"))
		}},
		{"only scope at another site", func(c *Claims) { c.Audience = "psc" }},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			c := base
			test.mod(&c)
			tok, err := s.Sign(c)
			if err == nil {
				t.Fatalf("Sign(%s) = %q, want an error", test.name, tok)
			}
			if !errors.Is(err, broker.ErrInvalid) || strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("Sign(%s) = %v, want one line of kind ErrInvalid", test.name, err)
			}
		})
	}
	if _, err := s.Sign(base); err != nil {
		t.Errorf("Sign(base) = %v", err)
	}
	if _, err := NewSigner("k1", "broker-a", nil).Sign(base); err == nil {
		t.Error("Sign with no key succeeded")
	}
	c := base
	c.Expiry = c.NotBefore.Add(MaxLifetime)
	if _, err := s.Sign(c); err != nil {
		t.Errorf("Sign with exactly MaxLifetime = %v", err)
	}
}

func mustDecode(t testing.TB, s string) []byte {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyScopeSite checks the refusal a site gives a token addressed
// to it whose scope names another site's resource, with its reason.
func TestVerifyScopeSite(t *testing.T) {
	f := newFixture()
	tok := token(goodHeader(), goodClaims().set("aud", `"psc"`).set("scope", `"instrument.operate:rutgers/krios-g4"`), f.k1)
	_, err := NewVerifier("psc", f.bundle, WithClock(func() time.Time { return testNow })).Verify(tok, nil)
	var re *RefusedError
	if !errors.As(err, &re) || re.Code != CodeScopeSite {
		t.Fatalf("Verify(aud psc, scope at rutgers) = %v, want code %q", err, CodeScopeSite)
	}
	if want := `scope "instrument.operate:rutgers/krios-g4" names site rutgers, but the token is for psc`; re.Reason != want {
		t.Errorf("Verify(aud psc, scope at rutgers) reason = %q, want %q", re.Reason, want)
	}
}

func TestVerifyNilBundle(t *testing.T) {
	f := newFixture()
	tok := token(goodHeader(), goodClaims(), f.k1)
	if _, err := NewVerifier(testSite, nil).Verify(tok, nil); code(err) != CodeKIDUnknown {
		t.Errorf("Verify with no bundle = %v, want code %q", err, CodeKIDUnknown)
	}
}

// TestVerifyConcurrent runs one Verifier from many goroutines, for -race.
func TestVerifyConcurrent(t *testing.T) {
	f := newFixture()
	v := f.verifier()
	tok := token(goodHeader(), goodClaims(), f.k1)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for range 20 {
				if _, err = v.Verify(tok, nil); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
