package directory

import (
	"crypto/ed25519"
	"encoding/json"
	"slices"
	"time"

	"github.com/labfed/labfed/broker"
)

// Signing key statuses. A retiring key no longer signs but still verifies
// until every token it signed has expired; then it is expired and leaves
// the trust bundle. A revoked key verifies nothing.
const (
	KeyActive   = "active"
	KeyRetiring = "retiring"
	KeyExpired  = "expired"
	KeyRevoked  = "revoked"
)

// MaxTokenLifetime bounds every capability token, so a retired key can
// leave the bundle this long after it stopped signing.
const MaxTokenLifetime = 12 * time.Hour

// CoverMargin is how long past MaxTokenLifetime a retiring key and a
// revocation lock last: verifiers accept a token up to 60 s past its exp,
// and brokers' clocks differ by a little more.
const CoverMargin = 2 * time.Minute

// SigningKey is the public half of a broker's capability signing key; the
// set of active and retiring keys is the federation's trust bundle.
type SigningKey struct {
	KID    string `json:"kid"`
	Issuer string `json:"issuer"` // the broker node that holds the private half
	Public []byte `json:"public"` // Ed25519, 32 bytes
	Status string `json:"status"`
	// NotBefore is when the key was published; NotAfter, once it retires
	// or is revoked, when it stops verifying.
	NotBefore time.Time  `json:"not_before"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}

// InBundle reports whether verifiers should trust the key at t.
func (k *SigningKey) InBundle(t time.Time) bool {
	switch k.Status {
	case KeyActive:
		return true
	case KeyRetiring:
		return k.NotAfter == nil || t.Before(*k.NotAfter)
	}
	return false
}

// PublishKey adds a broker's new signing key. The broker's other active
// keys start retiring: one node signs with one key at a time.
type PublishKey struct {
	KID    string `json:"kid"`
	Issuer string `json:"issuer"`
	Public []byte `json:"public"`
}

// RevokeKey takes a key out of the bundle at once.
type RevokeKey struct {
	KID    string `json:"kid"`
	Reason string `json:"reason,omitempty"`
}

func (a *applier) publishKey(c *PublishKey) (any, error) {
	if err := broker.ValidateName("key id", c.KID); err != nil {
		return nil, err
	}
	if len(c.Public) != ed25519.PublicKeySize {
		return nil, broker.Errorf(broker.ErrInvalid, "key %s: an Ed25519 public key has %d bytes, not %d", c.KID, ed25519.PublicKeySize, len(c.Public))
	}
	if a.tx.Get(bNodes, c.Issuer) == nil {
		return nil, broker.Errorf(broker.ErrNotFound, "key %s: issuer %q is not a broker node of the federation", c.KID, c.Issuer)
	}
	if a.tx.Get(bKeys, c.KID) != nil {
		return nil, broker.Errorf(broker.ErrExists, "key %s is already published; key ids are never reused", c.KID)
	}
	a.expireKeys()
	for _, kid := range suffixes(a.tx, bKeysByIssuer, c.Issuer) {
		k, err := getJSON[SigningKey](a.tx, bKeys, kid)
		if err != nil || k == nil || k.Status != KeyActive {
			continue
		}
		until := a.now.Add(MaxTokenLifetime + CoverMargin)
		k.Status, k.NotAfter = KeyRetiring, &until
		if err := putJSON(a.tx, bKeys, kid, k); err != nil {
			return nil, err
		}
	}
	k := &SigningKey{KID: c.KID, Issuer: c.Issuer, Public: slices.Clone(c.Public), Status: KeyActive, NotBefore: a.now}
	if err := putJSON(a.tx, bKeys, k.KID, k); err != nil {
		return nil, err
	}
	return k, a.tx.Put(bKeysByIssuer, k2(c.Issuer, c.KID), nil)
}

func (a *applier) revokeKey(c *RevokeKey) (any, error) {
	k, err := getJSON[SigningKey](a.tx, bKeys, c.KID)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return nil, broker.Errorf(broker.ErrNotFound, "no signing key %q; see labfed keys list", c.KID)
	}
	if k.Status == KeyRevoked {
		return k, nil
	}
	now := a.now
	k.Status, k.NotAfter, k.Reason = KeyRevoked, &now, c.Reason
	return k, putJSON(a.tx, bKeys, k.KID, k)
}

// expireKeys moves retiring keys whose last token has expired out of the
// bundle, at the command's time.
func (a *applier) expireKeys() {
	var done []*SigningKey
	_ = a.tx.ForEach(bKeys, "", func(_ string, v []byte) error {
		k := new(SigningKey)
		if json.Unmarshal(v, k) == nil && k.Status == KeyRetiring && k.NotAfter != nil && !a.now.Before(*k.NotAfter) {
			done = append(done, k)
		}
		return nil
	})
	for _, k := range done {
		k.Status = KeyExpired
		_ = putJSON(a.tx, bKeys, k.KID, k)
	}
}

// SigningKeys lists every signing key ever published, by kid.
func (d *Directory) SigningKeys() ([]*SigningKey, error) { return list[SigningKey](d, bKeys, "", nil) }

// SigningKey returns one key.
func (d *Directory) SigningKey(kid string) (*SigningKey, error) {
	return get[SigningKey](d, bKeys, kid, broker.Errorf(broker.ErrNotFound, "no signing key %q; see labfed keys list", kid))
}
