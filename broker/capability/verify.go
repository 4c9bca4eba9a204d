package capability

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
)

// Verifier checks capability tokens addressed to one site. It is safe for
// concurrent use if its Bundle and Revoked callback are.
type Verifier struct {
	site    string
	bundle  Bundle
	now     func() time.Time
	leeway  time.Duration
	revoked func(c *Claims) (reason string, revoked bool)
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithClock makes the Verifier read the time from now instead of time.Now.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// WithLeeway sets the clock skew tolerated on exp, nbf and iat. It is
// clamped to [0, MaxLeeway]: the brief allows at most 60 s.
func WithLeeway(d time.Duration) Option {
	return func(v *Verifier) { v.leeway = min(max(d, 0), MaxLeeway) }
}

// WithRevoked installs the last check of Verify: revoked reports whether the
// token's jti, subject or anything else it names has been revoked, and why.
// It sees claims that are otherwise valid and must not block for long.
func WithRevoked(revoked func(c *Claims) (reason string, revoked bool)) Option {
	return func(v *Verifier) { v.revoked = revoked }
}

// NewVerifier returns a Verifier for tokens whose aud is site, signed by
// keys of b.
func NewVerifier(site string, b Bundle, opts ...Option) *Verifier {
	v := &Verifier{site: site, bundle: b, now: time.Now, leeway: DefaultLeeway}
	for _, o := range opts {
		o(v)
	}
	return v
}

var b64 = base64.RawURLEncoding.Strict()

// knownClaims are the claims of version 1; any other is refused.
var knownClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "ver", "scope", "posix", "grant"}

// Verify checks token and returns its claims, or a *RefusedError saying
// which check refused it. want, if not nil, must be covered by one of the
// token's scopes. The checks run in a fixed order: size, serialization,
// header, key, signature, claims, scope, revocation.
func (v *Verifier) Verify(token string, want *Scope) (*Claims, error) {
	if len(token) > MaxTokenSize {
		return nil, refuse(CodeSize, "token is %d bytes, more than the %d allowed", len(token), MaxTokenSize)
	}
	// Compact serialization only: three segments of the base64url alphabet.
	// Checking the alphabet first also keeps the decoder from skipping
	// '\r' and '\n', which would make one signature have many spellings.
	dots := 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c == '.':
			dots++
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return nil, refuse(CodeCompact, "token has byte %q at offset %d; only the compact serialization (three base64url segments joined by '.') is accepted", c, i)
		}
	}
	if dots != 2 {
		return nil, refuse(CodeCompact, "token has %d segments, want 3 (header.payload.signature)", dots+1)
	}
	hSeg, rest, _ := strings.Cut(token, ".")
	pSeg, sSeg, _ := strings.Cut(rest, ".")
	hdrJSON, err := b64.DecodeString(hSeg)
	if err != nil {
		return nil, refuse(CodeBase64, "header segment is not canonical unpadded base64url")
	}
	payload, err := b64.DecodeString(pSeg)
	if err != nil {
		return nil, refuse(CodeBase64, "payload segment is not canonical unpadded base64url")
	}
	sig, err := b64.DecodeString(sSeg)
	if err != nil {
		return nil, refuse(CodeBase64, "signature segment is not canonical unpadded base64url")
	}

	key, rerr := v.header(hdrJSON)
	if rerr != nil {
		return nil, rerr
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, refuse(CodeSignature, "signature is %d bytes, want %d", len(sig), ed25519.SignatureSize)
	}
	if !ed25519.Verify(key.Public, []byte(token[:len(hSeg)+1+len(pSeg)]), sig) {
		return nil, refuse(CodeSignature, "signature does not verify with key %s of %s", quote(key.KID), quote(key.Issuer))
	}

	c, rerr := v.claims(payload, key)
	if rerr != nil {
		return nil, rerr
	}
	if want != nil && !slices.ContainsFunc(c.Scope, func(s Scope) bool { return s.Covers(*want) }) {
		return nil, refuse(CodeScopeDenied, "no scope of the token covers %s", quote(want.String()))
	}
	if v.revoked != nil {
		if reason, revoked := v.revoked(c); revoked {
			return nil, refuse(CodeRevoked, "%s", reason)
		}
	}
	return c, nil
}

// header checks the protected header and returns the pinned key it names.
func (v *Verifier) header(b []byte) (Key, *RefusedError) {
	h, err := decodeObject(b)
	if err != nil {
		if d := (*dupKeyError)(nil); errors.As(err, &d) {
			return Key{}, refuse(CodeHeaderDup, "header %v", err)
		}
		return Key{}, refuse(CodeHeader, "header: %v", err)
	}
	var alg, typ, kid string
	if raw, ok := h["alg"]; !ok {
		return Key{}, refuse(CodeAlg, "header has no alg; only %s is accepted", Alg)
	} else if json.Unmarshal(raw, &alg) != nil || alg != Alg {
		return Key{}, refuse(CodeAlg, "header alg is %s; only %s is accepted", show(raw), Alg)
	}
	if raw, ok := h["typ"]; !ok {
		return Key{}, refuse(CodeTyp, "header has no typ; want %s", Typ)
	} else if json.Unmarshal(raw, &typ) != nil || typ != Typ {
		return Key{}, refuse(CodeTyp, "header typ is %s; want %s", show(raw), Typ)
	}
	if raw, ok := h["kid"]; !ok {
		return Key{}, refuse(CodeKID, "header has no kid; tokens name their key by kid")
	} else if json.Unmarshal(raw, &kid) != nil || kid == "" {
		return Key{}, refuse(CodeKID, "header kid is %s; want a non-empty string", show(raw))
	}
	// Keys and certificates named by the token are never trusted: the key
	// comes from the bundle alone. Name the offending parameter.
	for _, p := range []struct{ name, code string }{
		{"jwk", CodeJWK}, {"jku", CodeJKU}, {"x5u", CodeX5U}, {"x5c", CodeX5C}, {"x5t", CodeX5T}, {"x5t#S256", CodeX5T},
	} {
		if _, ok := h[p.name]; ok {
			return Key{}, refuse(p.code, "header carries %s; keys come from the trust bundle only, never from the token", p.name)
		}
	}
	if _, ok := h["crit"]; ok {
		return Key{}, refuse(CodeCrit, "header demands crit extensions; none is understood")
	}
	if len(h) != 3 {
		var extra []string
		for k := range h {
			if k != "alg" && k != "typ" && k != "kid" {
				extra = append(extra, quote(k))
			}
		}
		slices.Sort(extra)
		return Key{}, refuse(CodeHeaderParam, "header has parameter %s; only alg, kid and typ are allowed", extra[0])
	}

	var key Key
	ok := false
	if v.bundle != nil {
		key, ok = v.bundle.Key(kid)
	}
	if !ok {
		return Key{}, refuse(CodeKIDUnknown, "key %s is not in the trust bundle (unknown or removed)", quote(kid))
	}
	switch {
	case key.KID != kid || len(key.Public) != ed25519.PublicKeySize || key.Issuer == "":
		return Key{}, refuse(CodeKeyInvalid, "trust bundle entry for key %s is malformed (kid, issuer or %d-byte Ed25519 key)", quote(kid), ed25519.PublicKeySize)
	case key.Status == KeyRevoked:
		return Key{}, refuse(CodeKeyRevoked, "key %s of %s is revoked", quote(kid), quote(key.Issuer))
	case key.Status != KeyActive && key.Status != KeyRetiring:
		return Key{}, refuse(CodeKeyStatus, "key %s has status %s; only active or retiring keys verify", quote(kid), quote(key.Status))
	case !key.NotAfter.IsZero() && !v.now().Before(key.NotAfter):
		return Key{}, refuse(CodeKeyExpired, "key %s stopped verifying at %s", quote(kid), key.NotAfter.UTC().Format(time.RFC3339))
	}
	return key, nil
}

// claims parses and checks the payload of a token signed by key.
func (v *Verifier) claims(b []byte, key Key) (*Claims, *RefusedError) {
	m, err := decodeObject(b)
	if err != nil {
		if d := (*dupKeyError)(nil); errors.As(err, &d) {
			return nil, refuse(CodeClaimsDup, "claims: %v", err)
		}
		return nil, refuse(CodeClaims, "claims: %v", err)
	}
	c := &Claims{}
	if s, ok := str(m, "ver"); !ok || s != Version {
		return nil, refuse(CodeVer, "claim ver is %s; this verifier understands %q", show(m["ver"]), Version)
	}
	c.Version = Version
	for k := range m {
		if !slices.Contains(knownClaims, k) {
			return nil, refuse(CodeClaims, "claim %s is not part of version %s tokens", quote(k), Version)
		}
	}
	var ok bool
	if c.Issuer, ok = str(m, "iss"); !ok || c.Issuer != key.Issuer {
		return nil, refuse(CodeIss, "claim iss is %s but key %s belongs to %s", show(m["iss"]), quote(key.KID), quote(key.Issuer))
	}
	if c.Audience, ok = audience(m["aud"]); !ok || c.Audience != v.site {
		return nil, refuse(CodeAud, "claim aud is %s; this site is %s", show(m["aud"]), quote(v.site))
	}
	if c.Subject, ok = str(m, "sub"); !ok || c.Subject == "" {
		return nil, refuse(CodeSub, "claim sub is missing or empty")
	}
	if c.ID, ok = str(m, "jti"); !ok || c.ID == "" {
		return nil, refuse(CodeJTI, "claim jti is missing or empty")
	}

	exp, ok := numericDate(m["exp"])
	if !ok {
		return nil, refuse(CodeExp, "claim exp is %s; want integer seconds since 1970", show(m["exp"]))
	}
	nbf, ok := numericDate(m["nbf"])
	if !ok {
		return nil, refuse(CodeNbf, "claim nbf is %s; want integer seconds since 1970", show(m["nbf"]))
	}
	iat, ok := numericDate(m["iat"])
	if !ok {
		return nil, refuse(CodeIat, "claim iat is %s; want integer seconds since 1970", show(m["iat"]))
	}
	c.Expiry, c.NotBefore, c.IssuedAt = time.Unix(exp, 0), time.Unix(nbf, 0), time.Unix(iat, 0)
	if exp <= nbf || time.Duration(exp-nbf)*time.Second > MaxLifetime {
		return nil, refuse(CodeLifetime, "token is valid from %s to %s; lifetimes are positive and at most %s", fmtTime(c.NotBefore), fmtTime(c.Expiry), MaxLifetime)
	}
	now := v.now()
	if !now.Before(c.Expiry.Add(v.leeway)) {
		return nil, refuse(CodeExp, "token expired at %s (now %s, leeway %s)", fmtTime(c.Expiry), fmtTime(now), v.leeway)
	}
	if now.Add(v.leeway).Before(c.NotBefore) {
		return nil, refuse(CodeNbf, "token is not valid before %s (now %s, leeway %s)", fmtTime(c.NotBefore), fmtTime(now), v.leeway)
	}
	if now.Add(v.leeway).Before(c.IssuedAt) {
		return nil, refuse(CodeIat, "token was issued at %s, in the future (now %s, leeway %s)", fmtTime(c.IssuedAt), fmtTime(now), v.leeway)
	}
	if (!key.NotBefore.IsZero() && c.IssuedAt.Before(key.NotBefore.Truncate(time.Second))) ||
		(!key.NotAfter.IsZero() && !c.IssuedAt.Before(key.NotAfter)) {
		return nil, refuse(CodeKeyWindow, "token was issued at %s, outside the validity of key %s", fmtTime(c.IssuedAt), quote(key.KID))
	}

	if raw, ok := m["posix"]; ok {
		p, ok := posix(raw)
		if !ok {
			return nil, refuse(CodePOSIX, "claim posix is not {\"user\",\"uid\",\"gid\",\"groups\"} with a POSIX user name and 32-bit ids")
		}
		c.POSIX = p
	}
	if raw, ok := m["grant"]; ok {
		if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &c.Grants) != nil || slices.Contains(c.Grants, "") {
			return nil, refuse(CodeGrant, "claim grant is not a list of grant ids")
		}
	}

	scope, ok := str(m, "scope")
	if !ok || scope == "" {
		return nil, refuse(CodeScope, "claim scope is missing or empty")
	}
	for _, s := range strings.Split(scope, " ") {
		sc, err := ParseScope(s)
		if err != nil {
			return nil, refuse(CodeScope, "claim scope: %v", oneLine(err))
		}
		// The broker sets aud to the site of the resource; a scope
		// elsewhere means the token was not minted by that rule, and the
		// audience site must not act on another site's resource.
		if sc.Resource.Site != c.Audience {
			return nil, refuse(CodeScopeSite, "scope %s names site %s, but the token is for %s", quote(sc.String()), sc.Resource.Site, c.Audience)
		}
		c.Scope = append(c.Scope, sc)
	}
	return c, nil
}

// str returns m[k] if it is a JSON string.
func str(m map[string]json.RawMessage, k string) (string, bool) {
	raw, ok := m[k]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// audience accepts a string or an array of exactly one string.
func audience(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var s string
	if raw[0] == '"' {
		return s, json.Unmarshal(raw, &s) == nil
	}
	var a []string
	if raw[0] != '[' || json.Unmarshal(raw, &a) != nil || len(a) != 1 {
		return "", false
	}
	return a[0], true
}

// numericDate accepts a positive integer of at most 11 digits: RFC 7519
// allows fractions, but labfed never writes them, so refuse rather than
// round.
func numericDate(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 || len(raw) > 11 || raw[0] == '0' {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil
}

// posix decodes the posix claim, matching member names exactly (a struct
// decode would match "USER" to user) and refusing unknown members.
func posix(raw json.RawMessage) (*POSIX, bool) {
	var m map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &m) != nil || len(m) > 4 {
		return nil, false
	}
	p := &POSIX{}
	user, ok := str(m, "user")
	if !ok || broker.ValidateUsername(user) != nil {
		return nil, false
	}
	p.User = user
	var ok2 bool
	if p.UID, ok2 = uint32JSON(m["uid"]); !ok2 {
		return nil, false
	}
	if p.GID, ok2 = uint32JSON(m["gid"]); !ok2 {
		return nil, false
	}
	n := 3
	if r, ok := m["groups"]; ok {
		n++
		var elems []json.RawMessage
		if len(r) == 0 || r[0] != '[' || json.Unmarshal(r, &elems) != nil {
			return nil, false
		}
		p.Groups = make([]uint32, len(elems))
		for i, e := range elems {
			if p.Groups[i], ok2 = uint32JSON(e); !ok2 {
				return nil, false
			}
		}
	}
	return p, n == len(m)
}

// uint32JSON accepts a JSON integer in [0, 2^32): never null (which
// encoding/json would quietly turn into uid 0), a sign, a fraction or an
// exponent.
func uint32JSON(raw json.RawMessage) (uint32, bool) {
	if len(raw) == 0 || len(raw) > 10 || (raw[0] == '0' && len(raw) > 1) {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(raw), 10, 32)
	return uint32(n), err == nil
}

// show renders a raw JSON value from a token for a message: strings
// decoded, anything else as written, both shortened.
func show(raw json.RawMessage) string {
	if raw == nil {
		return "missing"
	}
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return quote(s)
	}
	return quote(string(raw))
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// oneLine returns err's message on one line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }
