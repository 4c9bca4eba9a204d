package capability

import (
	"crypto/ed25519"
	"time"
)

// Header and claim constants of version 1 tokens.
const (
	Alg     = "EdDSA"
	Typ     = "labfed-cap+jwt"
	Version = "1"

	// DefaultLifetime is what Sign gives a token without an Expiry.
	DefaultLifetime = 15 * time.Minute
	// MaxLifetime bounds exp-nbf; Sign refuses and Verify refuses longer.
	MaxLifetime = 12 * time.Hour
	// MaxLeeway bounds the clock skew a Verifier tolerates on exp, nbf
	// and iat.
	MaxLeeway = 60 * time.Second
	// DefaultLeeway is the Verifier's leeway unless WithLeeway says otherwise.
	DefaultLeeway = 30 * time.Second
	// MaxTokenSize bounds the token Verify will look at, before any parsing.
	MaxTokenSize = 8 << 10
)

// POSIX is the account a token's subject has at the audience site.
type POSIX struct {
	User   string   `json:"user"`
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups"`
}

// Claims of a capability token. Times have one-second resolution on the
// wire.
type Claims struct {
	Issuer, Subject, Audience, ID string
	IssuedAt, NotBefore, Expiry   time.Time
	Version                       string
	Scope                         []Scope
	POSIX                         *POSIX
	Grants                        []string
}

// Key statuses in the trust bundle. A retiring key no longer signs but
// still verifies; a revoked key verifies nothing.
const (
	KeyActive   = "active"
	KeyRetiring = "retiring"
	KeyRevoked  = "revoked"
)

// Key is one public key of the trust bundle, pinned by KID. NotBefore and
// NotAfter bound the key's validity; a zero value leaves that end open.
type Key struct {
	KID, Issuer         string
	Public              ed25519.PublicKey
	Status              string
	NotBefore, NotAfter time.Time
}

// Bundle is the federation's trust bundle as a verifier sees it. Key must
// be safe for concurrent use. It runs on every Verify, so it should answer
// from memory; broker/trust's Store blocks only for a kid it does not know,
// for one bounded refresh.
type Bundle interface {
	Key(kid string) (Key, bool)
}

// StaticBundle is a Bundle held in memory, keyed by KID.
type StaticBundle map[string]Key

// Key implements Bundle.
func (b StaticBundle) Key(kid string) (Key, bool) {
	k, ok := b[kid]
	return k, ok
}

var _ Bundle = StaticBundle(nil)

// wireClaims is the JSON form Sign writes.
type wireClaims struct {
	Iss   string   `json:"iss"`
	Sub   string   `json:"sub"`
	Aud   string   `json:"aud"`
	Exp   int64    `json:"exp"`
	Nbf   int64    `json:"nbf"`
	Iat   int64    `json:"iat"`
	Jti   string   `json:"jti"`
	Ver   string   `json:"ver"`
	Scope string   `json:"scope"`
	Posix *POSIX   `json:"posix,omitempty"`
	Grant []string `json:"grant,omitempty"`
}
