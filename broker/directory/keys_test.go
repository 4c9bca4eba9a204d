package directory_test

import (
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
)

func withNode(tb testing.TB, d *directory.Directory, id, site string) {
	tb.Helper()
	must(tb, d, &directory.Command{RegisterNode: &directory.RegisterNode{Node: directory.Node{ID: id, Site: site, RaftAddr: "127.0.0.1:1", APIAddr: "127.0.0.1:2"}}})
}

func pubKey(tb testing.TB, seed byte) []byte {
	tb.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
}

func TestSigningKeyRotation(t *testing.T) {
	d := fixture(t)
	withNode(t, d, "rutgers-1", "rutgers")
	withNode(t, d, "psc-1", "psc")
	publish := func(kid, issuer string, seed byte, at time.Time) *directory.Command {
		return &directory.Command{Time: at, PublishKey: &directory.PublishKey{KID: kid, Issuer: issuer, Public: pubKey(t, seed)}}
	}
	k1 := must(t, d, publish("rutgers-1-k1", "rutgers-1", 1, t0)).(*directory.SigningKey)
	must(t, d, publish("psc-1-k1", "psc-1", 2, t0))
	if k1.Status != directory.KeyActive || !k1.InBundle(t0) {
		t.Fatalf("new key = %+v", k1)
	}
	// A second key for rutgers-1 retires the first: it keeps verifying for
	// the longest token lifetime, then leaves the bundle.
	t1 := t0.Add(time.Hour)
	must(t, d, publish("rutgers-1-k2", "rutgers-1", 3, t1))
	old, _ := d.SigningKey("rutgers-1-k1")
	if old.Status != directory.KeyRetiring || !old.InBundle(t1.Add(11*time.Hour)) || old.InBundle(t1.Add(directory.MaxTokenLifetime+directory.CoverMargin)) {
		t.Errorf("retired key = %+v", old)
	}
	if other, _ := d.SigningKey("psc-1-k1"); other.Status != directory.KeyActive {
		t.Errorf("another broker's key changed: %+v", other)
	}
	// The next publication after that moment marks it expired.
	must(t, d, publish("rutgers-1-k3", "rutgers-1", 4, t1.Add(13*time.Hour)))
	if old, _ := d.SigningKey("rutgers-1-k1"); old.Status != directory.KeyExpired {
		t.Errorf("old key after 13h = %s, want expired", old.Status)
	}
	// Revocation is immediate.
	must(t, d, &directory.Command{Time: t1, RevokeKey: &directory.RevokeKey{KID: "psc-1-k1", Reason: "host compromised"}})
	if k, _ := d.SigningKey("psc-1-k1"); k.Status != directory.KeyRevoked || k.InBundle(t1) || k.Reason != "host compromised" {
		t.Errorf("revoked key = %+v", k)
	}
	keys, _ := d.SigningKeys()
	if len(keys) != 4 {
		t.Errorf("%d keys listed, want 4", len(keys))
	}
}

func TestSigningKeyBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  *directory.Command
		kind error
		want string
	}{
		{"short key", &directory.Command{PublishKey: &directory.PublishKey{KID: "k", Issuer: "rutgers-1", Public: []byte{1, 2}}}, broker.ErrInvalid, "has 32 bytes, not 2"},
		{"unknown issuer", &directory.Command{PublishKey: &directory.PublishKey{KID: "k", Issuer: "nobody", Public: pubKey(t, 1)}}, broker.ErrNotFound, `issuer "nobody" is not a broker node`},
		{"bad kid", &directory.Command{PublishKey: &directory.PublishKey{KID: "K!", Issuer: "rutgers-1", Public: pubKey(t, 1)}}, broker.ErrInvalid, "key id"},
		{"kid reused", &directory.Command{PublishKey: &directory.PublishKey{KID: "taken", Issuer: "rutgers-1", Public: pubKey(t, 9)}}, broker.ErrExists, "never reused"},
		{"revoke unknown", &directory.Command{RevokeKey: &directory.RevokeKey{KID: "nope"}}, broker.ErrNotFound, `no signing key "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := fixture(t)
			withNode(t, d, "rutgers-1", "rutgers")
			must(t, d, &directory.Command{PublishKey: &directory.PublishKey{KID: "taken", Issuer: "rutgers-1", Public: pubKey(t, 5)}})
			before, _ := d.Hash()
			tc.cmd.Time = t0
			res := d.Apply(tc.cmd)
			if broker.KindOf(res.Err) != tc.kind || res.Err == nil || !strings.Contains(res.Err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v containing %q", res.Err, tc.kind, tc.want)
			}
			if after, _ := d.Hash(); after != before {
				t.Error("a refused command changed the directory")
			}
		})
	}
}

func TestLocks(t *testing.T) {
	d := fixture(t)
	l := must(t, d, &directory.Command{Actor: "rhea", AddLock: &directory.AddLock{Kind: directory.LockUser, Value: "alice", Reason: "laptop stolen"}}).(*directory.Lock)
	if l.ID != "l-1" || !l.Until.Equal(t0.Add(directory.MaxTokenLifetime+directory.CoverMargin)) || l.By != "rhea" {
		t.Errorf("lock = %+v", l)
	}
	must(t, d, &directory.Command{AddLock: &directory.AddLock{Kind: directory.LockJTI, Value: "abc123"}})
	// A user lock covers tokens issued up to the lock, not after.
	if !l.Covers("x", "alice", t0.Add(-time.Minute), t0.Add(time.Minute)) || l.Covers("x", "alice", t0.Add(time.Second), t0.Add(time.Minute)) || l.Covers("x", "bob", t0, t0) {
		t.Error("user lock coverage wrong")
	}
	if ls, _ := d.Locks(t0); len(ls) != 2 {
		t.Errorf("%d locks, want 2", len(ls))
	}
	// Lapsed locks are pruned by the next lock after they end.
	must(t, d, &directory.Command{Time: t0.Add(13 * time.Hour), AddLock: &directory.AddLock{Kind: directory.LockJTI, Value: "later"}})
	if ls, _ := d.Locks(time.Time{}); len(ls) != 1 || ls[0].Value != "later" {
		t.Errorf("locks after 13h = %+v, want only the new one", ls)
	}
	for _, c := range []*directory.AddLock{{Kind: "key", Value: "k"}, {Kind: directory.LockUser, Value: "zed"}, {Kind: directory.LockJTI, Value: "a b"}} {
		before, _ := d.Hash()
		if res := d.Apply(&directory.Command{Time: t0, AddLock: c}); res.Err == nil {
			t.Errorf("AddLock(%+v) accepted", c)
		}
		if after, _ := d.Hash(); after != before {
			t.Errorf("refused AddLock(%+v) changed the directory", c)
		}
	}
}
