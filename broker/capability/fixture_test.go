package capability

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The fixture: a federation where broker-a signs with k1 (active), has a
// retiring k0, a revoked k-revoked, and once had k-removed, now gone from
// the bundle. The site is rutgers; the clock is fixed.
var (
	testNow  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testSite = "rutgers"
)

type fixture struct {
	k1, k0, revoked, removed, attacker ed25519.PrivateKey
	bundle                             StaticBundle
}

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytesOf(seed, ed25519.SeedSize))
}

func bytesOf(b byte, n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = b + byte(i)
	}
	return s
}

func newFixture() *fixture {
	f := &fixture{k1: testKey(1), k0: testKey(2), revoked: testKey(3), removed: testKey(4), attacker: testKey(5)}
	pub := func(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }
	f.bundle = StaticBundle{
		"k1":        {KID: "k1", Issuer: "broker-a", Public: pub(f.k1), Status: KeyActive, NotBefore: testNow.Add(-24 * time.Hour)},
		"k0":        {KID: "k0", Issuer: "broker-a", Public: pub(f.k0), Status: KeyRetiring, NotBefore: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(12 * time.Hour)},
		"k-revoked": {KID: "k-revoked", Issuer: "broker-a", Public: pub(f.revoked), Status: KeyRevoked},
		"k-expired": {KID: "k-expired", Issuer: "broker-a", Public: pub(f.k1), Status: KeyRetiring, NotAfter: testNow.Add(-time.Second)},
		"k-late":    {KID: "k-late", Issuer: "broker-a", Public: pub(f.k1), Status: KeyActive, NotBefore: testNow.Add(-time.Minute)},
		"k-odd":     {KID: "k-odd", Issuer: "broker-a", Public: pub(f.k1), Status: "expired"},
	}
	return f
}

// verifier refuses jti "tok-revoked" and user "mallory", as a site's
// revocation list would.
func (f *fixture) verifier(opts ...Option) *Verifier {
	opts = append([]Option{
		WithClock(func() time.Time { return testNow }),
		WithRevoked(func(c *Claims) (string, bool) {
			switch {
			case c.ID == "tok-revoked":
				return "token tok-revoked was revoked by a site admin", true
			case c.Subject == "mallory":
				return "user mallory is suspended", true
			}
			return "", false
		}),
	}, opts...)
	return NewVerifier(testSite, f.bundle, opts...)
}

// kv is one member of a hand-written JSON object; v is raw JSON.
type kv struct{ k, v string }

type object []kv

func (o object) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\"%s\":%s", m.k, m.v) // k is raw JSON string content, so tests can escape
	}
	b.WriteByte('}')
	return b.String()
}

// set replaces k's value, or appends k.
func (o object) set(k, v string) object {
	out := append(object(nil), o...)
	for i := range out {
		if out[i].k == k {
			out[i].v = v
			return out
		}
	}
	return append(out, kv{k, v})
}

func (o object) del(k string) object {
	var out object
	for _, m := range o {
		if m.k != k {
			out = append(out, m)
		}
	}
	return out
}

// add appends a member even if k is already there (duplicates).
func (o object) add(k, v string) object { return append(append(object(nil), o...), kv{k, v}) }

func goodHeader() object {
	return object{{"alg", `"EdDSA"`}, {"kid", `"k1"`}, {"typ", `"labfed-cap+jwt"`}}
}

func unix(t time.Time) string { return fmt.Sprint(t.Unix()) }

func goodClaims() object {
	return object{
		{"iss", `"broker-a"`},
		{"sub", `"alice"`},
		{"aud", `"rutgers"`},
		{"exp", unix(testNow.Add(10 * time.Minute))},
		{"nbf", unix(testNow.Add(-5 * time.Minute))},
		{"iat", unix(testNow.Add(-5 * time.Minute))},
		{"jti", `"tok-1"`},
		{"ver", `"1"`},
		{"scope", `"instrument.operate:rutgers/krios-g4 storage.read:rutgers/raw/a"`},
		{"posix", `{"user":"alice","uid":200001,"gid":200001,"groups":[200001,200002]}`},
		{"grant", `["g-1"]`},
	}
}

func seg(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// token signs header.claims with priv, byte for byte as written.
func token(header, claims fmt.Stringer, priv ed25519.PrivateKey) string {
	in := seg(header.String()) + "." + seg(claims.String())
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

// hmacToken signs with HS256 using secret, the classic confusion attack
// with the verifier's public key as the HMAC key.
func hmacToken(header, claims fmt.Stringer, secret []byte) string {
	in := seg(header.String()) + "." + seg(claims.String())
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// hostile is one row of the catalog: Verify(tok, want) must refuse with
// code, or accept when code is "".
type hostile struct {
	name string
	tok  string
	want string // scope asked for; "" means nil
	code string
}

func (f *fixture) catalog(tb testing.TB) []hostile {
	tb.Helper()
	h, c := goodHeader(), goodClaims()
	good := token(h, c, f.k1)
	parts := strings.Split(good, ".")
	pub := f.k1.Public().(ed25519.PublicKey)
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	opKrios := "instrument.operate:rutgers/krios-g4"
	return []hostile{
		// Accepted, for contrast.
		{"valid", good, opKrios, ""},
		{"valid any scope", good, "", ""},
		{"valid storage below path", good, "storage.read:rutgers/raw/a/b", ""},
		{"retiring key", token(h.set("kid", `"k0"`), c, f.k0), opKrios, ""},
		{"aud single-element array", token(h, c.set("aud", `["rutgers"]`), f.k1), opKrios, ""},
		{"nbf within leeway", token(h, c.set("nbf", unix(testNow.Add(20*time.Second))), f.k1), opKrios, ""},
		{"exp within leeway", token(h, c.set("exp", unix(testNow.Add(-20*time.Second))), f.k1), opKrios, ""},
		{"no posix no grant", token(h, c.del("posix").del("grant"), f.k1), opKrios, ""},

		// Size and serialization.
		{"oversized 1 MiB of dots", strings.Repeat(".", 1<<20), "", CodeSize},
		{"just over the limit", strings.Repeat("A", MaxTokenSize+1), "", CodeSize},
		{"JSON serialization", fmt.Sprintf(`{"payload":%q,"protected":%q,"signature":%q}`, parts[1], parts[0], parts[2]), "", CodeCompact},
		{"two segments", parts[0] + "." + parts[1], "", CodeCompact},
		{"four segments", good + ".", "", CodeCompact},
		{"padding", good + "==", "", CodeCompact},
		{"newline in signature", parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:], "", CodeCompact},
		{"standard base64 alphabet", parts[0] + "." + parts[1] + "." + parts[2][:10] + "+" + parts[2][11:], "", CodeCompact},
		{"empty", "", "", CodeCompact},
		{"non-canonical signature encoding", parts[0] + "." + parts[1] + "." + parts[2][:85] + string(parts[2][85]+1), "", CodeBase64},
		{"bad base64 header", "A." + parts[1] + "." + parts[2], "", CodeBase64},

		// Header.
		{"header not JSON", seg("alg=EdDSA") + "." + parts[1] + "." + parts[2], "", CodeHeader},
		{"header array", token(stringer(`["EdDSA"]`), c, f.k1), "", CodeHeader},
		{"header trailing data", token(stringer(h.String()+`{}`), c, f.k1), "", CodeHeader},
		{"duplicate header alg", token(object{{"alg", `"none"`}}.add("alg", `"EdDSA"`).add("kid", `"k1"`).add("typ", `"labfed-cap+jwt"`), c, f.k1), "", CodeHeaderDup},
		{"duplicate header kid", token(h.add("kid", `"k-removed"`), c, f.k1), "", CodeHeaderDup},
		{"duplicate header escaped", token(h.add("ki\\u0064", `"k0"`), c, f.k1), "", CodeHeaderDup},
		{"alg none", seg(h.set("alg", `"none"`).String()) + "." + parts[1] + ".", "", CodeAlg},
		{"alg HS256 with public key as secret", hmacToken(h.set("alg", `"HS256"`), c, pub), "", CodeAlg},
		{"alg RS256", token(h.set("alg", `"RS256"`), c, f.k1), "", CodeAlg},
		{"alg Ed25519", token(h.set("alg", `"Ed25519"`), c, f.k1), "", CodeAlg},
		{"alg lower case", token(h.set("alg", `"eddsa"`), c, f.k1), "", CodeAlg},
		{"alg missing", token(h.del("alg"), c, f.k1), "", CodeAlg},
		{"alg not a string", token(h.set("alg", `["EdDSA"]`), c, f.k1), "", CodeAlg},
		{"typ missing", token(h.del("typ"), c, f.k1), "", CodeTyp},
		{"typ JWT", token(h.set("typ", `"JWT"`), c, f.k1), "", CodeTyp},
		{"typ other case", token(h.set("typ", `"LABFED-CAP+JWT"`), c, f.k1), "", CodeTyp},
		{"kid missing", token(h.del("kid"), c, f.k1), "", CodeKID},
		{"kid empty", token(h.set("kid", `""`), c, f.k1), "", CodeKID},
		{"kid number", token(h.set("kid", `1`), c, f.k1), "", CodeKID},
		{"jwk header", token(h.add("jwk", fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q}`, base64.RawURLEncoding.EncodeToString(f.attacker.Public().(ed25519.PublicKey)))), c, f.k1), "", CodeJWK},
		{"jwk header signed by its key", token(h.add("jwk", fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":%q}`, base64.RawURLEncoding.EncodeToString(f.attacker.Public().(ed25519.PublicKey)))), c, f.attacker), "", CodeJWK},
		{"jku header", token(h.add("jku", `"https://evil.example/jwks.json"`), c, f.k1), "", CodeJKU},
		{"x5u header", token(h.add("x5u", `"https://evil.example/cert.pem"`), c, f.k1), "", CodeX5U},
		{"x5c header", token(h.add("x5c", `["MIIB"]`), c, f.k1), "", CodeX5C},
		{"x5t header", token(h.add("x5t", `"AAAA"`), c, f.k1), "", CodeX5T},
		{"x5t#S256 header", token(h.add("x5t#S256", `"AAAA"`), c, f.k1), "", CodeX5T},
		{"crit unknown", token(h.add("crit", `["exp-ext"]`).add("exp-ext", `true`), c, f.k1), "", CodeCrit},
		{"crit empty", token(h.add("crit", `[]`), c, f.k1), "", CodeCrit},
		{"unknown header param", token(h.add("cty", `"JWT"`), c, f.k1), "", CodeHeaderParam},
		{"b64 false", token(h.add("b64", `false`), c, f.k1), "", CodeHeaderParam},
		{"unknown kid", token(h.set("kid", `"nope"`), c, f.attacker), "", CodeKIDUnknown},
		{"removed key", token(h.set("kid", `"k-removed"`), c, f.removed), "", CodeKIDUnknown},
		{"revoked key", token(h.set("kid", `"k-revoked"`), c, f.revoked), "", CodeKeyRevoked},
		{"expired key status", token(h.set("kid", `"k-odd"`), c, f.k1), "", CodeKeyStatus},
		{"key past its window", token(h.set("kid", `"k-expired"`), c, f.k1), "", CodeKeyExpired},

		// Signature.
		{"tampered payload", parts[0] + "." + seg(c.set("scope", `"instrument.operate:rutgers/krios-g4 storage.modify:rutgers/raw"`).String()) + "." + parts[2], "", CodeSignature},
		{"tampered signature", parts[0] + "." + parts[1] + "." + flip(parts[2], 5), "", CodeSignature},
		{"empty signature", parts[0] + "." + parts[1] + ".", "", CodeSignature},
		{"short signature", parts[0] + "." + parts[1] + "." + parts[2][:84], "", CodeSignature},
		{"signed by another key", token(h, c, f.attacker), "", CodeSignature},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(token(h, c.set("jti", `"tok-2"`), f.k1), ".")[2], "", CodeSignature},

		// Claims.
		{"claims not JSON", token(h, stringer("not json"), f.k1), "", CodeClaims},
		{"claims array", token(h, stringer(`[1]`), f.k1), "", CodeClaims},
		{"claims trailing data", token(h, stringer(c.String()+" 1"), f.k1), "", CodeClaims},
		{"claims invalid UTF-8", token(h, stringer(c.set("sub", "\"al\xffce\"").String()), f.k1), "", CodeClaims},
		{"duplicate aud", token(h, c.add("aud", `"psc"`), f.k1), "", CodeClaimsDup},
		{"duplicate aud reversed", token(h, c.set("aud", `"psc"`).add("aud", `"rutgers"`), f.k1), "", CodeClaimsDup},
		{"duplicate escaped aud", token(h, c.add("a\\u0075d", `"psc"`), f.k1), "", CodeClaimsDup},
		{"duplicate in posix", token(h, c.set("posix", `{"user":"alice","uid":200001,"gid":200001,"uid":0}`), f.k1), "", CodeClaimsDup},
		{"upper-case AUD", token(h, c.add("AUD", `"psc"`), f.k1), "", CodeClaims},
		{"unknown claim", token(h, c.add("admin", `true`), f.k1), "", CodeClaims},
		{"deep nesting", token(h, c.add("x", `[[[[[1]]]]]`), f.k1), "", CodeClaims},
		{"ver 2", token(h, c.set("ver", `"2"`), f.k1), "", CodeVer},
		{"ver number", token(h, c.set("ver", `1`), f.k1), "", CodeVer},
		{"ver missing", token(h, c.del("ver"), f.k1), "", CodeVer},
		{"wrong iss", token(h, c.set("iss", `"broker-b"`), f.k1), "", CodeIss},
		{"iss missing", token(h, c.del("iss"), f.k1), "", CodeIss},
		{"wrong aud", token(h, c.set("aud", `"psc"`), f.k1), "", CodeAud},
		{"aud two sites", token(h, c.set("aud", `["rutgers","psc"]`), f.k1), "", CodeAud},
		{"aud empty array", token(h, c.set("aud", `[]`), f.k1), "", CodeAud},
		{"aud missing", token(h, c.del("aud"), f.k1), "", CodeAud},
		{"aud other case", token(h, c.set("aud", `"Rutgers"`), f.k1), "", CodeAud},
		{"sub missing", token(h, c.del("sub"), f.k1), "", CodeSub},
		{"jti empty", token(h, c.set("jti", `""`), f.k1), "", CodeJTI},
		{"expired", token(h, c.set("exp", unix(testNow.Add(-31*time.Second))), f.k1), "", CodeExp},
		{"expired long ago", token(h, c.set("exp", unix(testNow.Add(-time.Hour))).set("nbf", unix(testNow.Add(-2*time.Hour))).set("iat", unix(testNow.Add(-2*time.Hour))), f.k1), "", CodeExp},
		{"exp fractional", token(h, c.set("exp", unix(testNow.Add(10*time.Minute))+".5"), f.k1), "", CodeExp},
		{"exp string", token(h, c.set("exp", `"`+unix(testNow.Add(10*time.Minute))+`"`), f.k1), "", CodeExp},
		{"exp missing", token(h, c.del("exp"), f.k1), "", CodeExp},
		{"nbf beyond leeway", token(h, c.set("nbf", unix(testNow.Add(31*time.Second))), f.k1), "", CodeNbf},
		{"nbf missing", token(h, c.del("nbf"), f.k1), "", CodeNbf},
		{"iat in the future", token(h, c.set("iat", unix(testNow.Add(2*time.Minute))), f.k1), "", CodeIat},
		{"iat negative", token(h, c.set("iat", "-1"), f.k1), "", CodeIat},
		{"lifetime over 12h", token(h, c.set("exp", unix(testNow.Add(12*time.Hour))), f.k1), "", CodeLifetime},
		{"exp before nbf", token(h, c.set("exp", unix(testNow.Add(-6*time.Minute))), f.k1), "", CodeLifetime},
		{"iat before key published", token(h.set("kid", `"k-late"`), c, f.k1), "", CodeKeyWindow},
		{"posix uid null", token(h, c.set("posix", `{"user":"alice","uid":null,"gid":200001}`), f.k1), "", CodePOSIX},
		{"posix uid negative", token(h, c.set("posix", `{"user":"alice","uid":-1,"gid":200001}`), f.k1), "", CodePOSIX},
		{"posix uid too large", token(h, c.set("posix", `{"user":"alice","uid":4294967296,"gid":200001}`), f.k1), "", CodePOSIX},
		{"posix group null", token(h, c.set("posix", `{"user":"alice","uid":1,"gid":1,"groups":[null]}`), f.k1), "", CodePOSIX},
		{"posix upper-case member", token(h, c.set("posix", `{"USER":"root","user":"alice","uid":1,"gid":1}`), f.k1), "", CodePOSIX},
		{"posix bad user", token(h, c.set("posix", `{"user":"../root","uid":1,"gid":1}`), f.k1), "", CodePOSIX},
		{"grant not a list", token(h, c.set("grant", `"g-1"`), f.k1), "", CodeGrant},
		{"scope missing", token(h, c.del("scope"), f.k1), "", CodeScope},
		{"scope empty", token(h, c.set("scope", `""`), f.k1), "", CodeScope},
		{"scope double space", token(h, c.set("scope", `"instrument.operate:rutgers/krios-g4  storage.read:rutgers/raw/a"`), f.k1), "", CodeScope},
		{"scope unknown action", token(h, c.set("scope", `"instrument.operate:rutgers/krios-g4 root:rutgers/krios-g4"`), f.k1), "", CodeScope},
		{"scope list", token(h, c.set("scope", `["instrument.operate:rutgers/krios-g4"]`), f.k1), "", CodeScope},

		// Scope against the audience: every scope is at the aud site, even
		// when another scope covers what is asked for.
		{"scope at another site beside one here", token(h, c.set("scope", `"instrument.operate:rutgers/krios-g4 compute.create:psc/bridges2-gpu"`), f.k1), opKrios, CodeScopeSite},
		{"scope only at another site", token(h, c.set("scope", `"instrument.operate:psc/krios-g4"`), f.k1), "", CodeScopeSite},
		{"scope at a site whose name extends aud", token(h, c.set("scope", `"storage.read:rutgers-dc/raw/a"`), f.k1), "", CodeScopeSite},

		// Scope against the request.
		{"scope for another resource", good, "instrument.operate:rutgers/krios-g5", CodeScopeDenied},
		{"scope for another action", good, "instrument.view:rutgers/krios-g4", CodeScopeDenied},
		{"scope /ab against /a", good, "storage.read:rutgers/raw/ab", CodeScopeDenied},
		{"scope above the path", good, "storage.read:rutgers/raw", CodeScopeDenied},
		{"scope read does not modify", good, "storage.modify:rutgers/raw/a", CodeScopeDenied},

		// Revocation.
		{"revoked jti", token(h, c.set("jti", `"tok-revoked"`), f.k1), opKrios, CodeRevoked},
		{"revoked user", token(h, c.set("sub", `"mallory"`).set("posix", `{"user":"mallory","uid":200002,"gid":200002}`), f.k1), opKrios, CodeRevoked},
	}
}

type stringer string

func (s stringer) String() string { return string(s) }
