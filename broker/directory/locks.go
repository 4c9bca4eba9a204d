package directory

import (
	"fmt"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
)

// Lock kinds: a lock refuses one token (jti) or every token of a user
// issued before the lock, until everything it covers has expired.
const (
	LockJTI  = "jti"
	LockUser = "user"
)

// Lock is a revocation lock, replicated to every broker and streamed to
// verifiers.
type Lock struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	Value   string    `json:"value"`
	Reason  string    `json:"reason,omitempty"`
	Created time.Time `json:"created"`
	// Until is when everything the lock covers has expired; it lapses then.
	Until time.Time `json:"until"`
	By    string    `json:"by"`
}

// Covers reports whether the lock refuses a token with this jti and
// subject, issued at iat, at time t.
func (l *Lock) Covers(jti, sub string, iat, t time.Time) bool {
	if !t.Before(l.Until) {
		return false
	}
	switch l.Kind {
	case LockJTI:
		return l.Value == jti
	case LockUser:
		return l.Value == sub && !iat.After(l.Created)
	}
	return false
}

// AddLock writes a revocation lock lasting the longest token lifetime.
type AddLock struct {
	Kind   string `json:"kind"`
	Value  string `json:"value"`
	Reason string `json:"reason,omitempty"`
}

func (a *applier) addLock(c *AddLock) (any, error) {
	switch c.Kind {
	case LockJTI:
		if c.Value == "" || len(c.Value) > 128 || strings.ContainsAny(c.Value, " \t\n") {
			return nil, broker.Errorf(broker.ErrInvalid, "jti %q is not a token id; see labfed token inspect", c.Value)
		}
	case LockUser:
		if _, err := a.liveUser(c.Value); err != nil {
			return nil, err
		}
	default:
		return nil, broker.Errorf(broker.ErrInvalid, "lock kind %q is not jti or user", c.Kind)
	}
	a.pruneLocks()
	n := a.counter("lock") + 1
	a.setCounter("lock", n)
	l := &Lock{ID: fmt.Sprintf("l-%d", n), Kind: c.Kind, Value: c.Value, Reason: c.Reason, Created: a.now, Until: a.now.Add(MaxTokenLifetime + CoverMargin), By: a.actor}
	seq := fmt.Sprintf("%020d", n)
	if err := a.tx.Put(bLocksByValue, k2(k2(l.Kind, l.Value), seq), nil); err != nil {
		return nil, err
	}
	if err := a.tx.Put(bLocksByUntil, k2(timeKey(l.Until), seq), nil); err != nil {
		return nil, err
	}
	return l, putJSON(a.tx, bLocks, seq, l)
}

// pruneLocks forgets locks that have lapsed at the command's time. It
// walks the expiry index from the oldest and stops at the first lock still
// in force, so its cost is the number of lapsed locks, not of all locks.
func (a *applier) pruneLocks() {
	now := timeKey(a.now)
	var gone []string // expiry index keys
	_ = a.tx.ForEach(bLocksByUntil, "", func(k string, _ []byte) error {
		if k[:strings.IndexByte(k, 0)] > now {
			return errStop
		}
		gone = append(gone, k)
		return nil
	})
	for _, k := range gone {
		seq := k[strings.IndexByte(k, 0)+1:]
		if l, err := getJSON[Lock](a.tx, bLocks, seq); err == nil && l != nil {
			_ = a.tx.Delete(bLocksByValue, k2(k2(l.Kind, l.Value), seq))
		}
		_ = a.tx.Delete(bLocks, seq)
		_ = a.tx.Delete(bLocksByUntil, k)
	}
}

// LocksOn lists the locks of kind on value (a user, a jti) that have not
// lapsed at t, through the index rather than every lock.
func (d *Directory) LocksOn(kind, value string, t time.Time) ([]*Lock, error) {
	out := []*Lock{}
	prefix := k2(k2(kind, value), "")
	err := d.store.View(func(tx Tx) error {
		return tx.ForEach(bLocksByValue, prefix, func(k string, _ []byte) error {
			l, err := getJSON[Lock](tx, bLocks, k[len(prefix):])
			if err != nil {
				return err
			}
			if l != nil && t.Before(l.Until) {
				out = append(out, l)
			}
			return nil
		})
	})
	return out, err
}

// Locks lists the locks that have not lapsed at t, oldest first.
func (d *Directory) Locks(t time.Time) ([]*Lock, error) {
	return list(d, bLocks, "", func(l *Lock) bool { return t.Before(l.Until) })
}
