package directory

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
)

// Session is a person's login to the federation: a short-lived credential
// handed out after they proved an OIDC identity (or, once, by the bootstrap
// to the first coordinator). The directory keeps only the SHA-256 of the
// secret, so a copy of the state or a snapshot cannot be used to log in.
type Session struct {
	// ID is the hex SHA-256 of the secret; it is what the directory is
	// keyed by and never leaves the brokers.
	ID   string `json:"id"`
	User string `json:"user"`
	// Site is the site of the broker the person logged in through.
	Site string `json:"site"`
	// Via is the OIDC identity that was proven; empty for the bootstrap
	// credential.
	Via     *broker.Identity `json:"via,omitempty"`
	Created time.Time        `json:"created"`
	Expires time.Time        `json:"expires"`
}

// Short is the prefix of the ID shown to people (logs, session lists).
func (s *Session) Short() string { return s.ID[:12] }

// ExpiredAt reports whether the session is over at t.
func (s *Session) ExpiredAt(t time.Time) bool { return !t.Before(s.Expires) }

// CreateSession records a login. LoginID, when set, is a digest of the
// ID token that was presented; it is remembered until LoginExpires so the
// same ID token can never open a second session.
type CreateSession struct {
	Session      Session   `json:"session"`
	LoginID      string    `json:"login_id,omitempty"`
	LoginExpires time.Time `json:"login_expires,omitempty"`
}

// RevokeSessions ends one session (ID) or every session of a user (User).
type RevokeSessions struct {
	ID   string `json:"id,omitempty"`
	User string `json:"user,omitempty"`
}

// ---- apply ----

// errStop ends a ForEach early.
var errStop = errors.New("stop")

func validDigest(what, s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
		return broker.Errorf(broker.ErrInvalid, "%s must be a hex SHA-256 digest; this is a bug in the broker that sent it", what)
	}
	return nil
}

// expiryKey orders the expiry index by whole seconds, clamped to a range
// that formats to a fixed width, so key order is time order for any time a
// token can claim.
func expiryKey(t time.Time, id string) string {
	return k2(expirySeconds(t), id)
}

func expirySeconds(t time.Time) string {
	const maxSec = 1 << 40 // year 36812
	sec := min(max(t.Unix(), 0), maxSec)
	return fmt.Sprintf("%020d", sec)
}

func (a *applier) createSession(c *CreateSession) (any, error) {
	s := c.Session
	if err := validDigest("session id", s.ID); err != nil {
		return nil, err
	}
	if !s.Expires.After(a.now) {
		return nil, broker.Errorf(broker.ErrInvalid, "session for %s would expire at %s, before it starts", s.User, s.Expires.Format(time.RFC3339))
	}
	a.pruneSessions()
	u, err := a.liveUser(s.User)
	if err != nil {
		return nil, err
	}
	if u.Status != StatusActive {
		return nil, broker.Errorf(broker.ErrPrecondition, "user %s is %s and cannot log in; ask your site administrator", u.Name, u.Status)
	}
	if s.Via != nil {
		// The identity was mapped to the user before the command was
		// proposed; make sure it still is.
		if owner := string(a.tx.Get(bIdents, k2(s.Via.Issuer, s.Via.Subject))); owner != u.Name {
			return nil, broker.Errorf(broker.ErrNotFound, "identity %s is not registered in the federation; ask your site administrator", s.Via)
		}
	}
	if a.tx.Get(bSessions, s.ID) != nil {
		return nil, broker.Errorf(broker.ErrExists, "session %s already exists", s.Short())
	}
	if c.LoginID != "" {
		if err := validDigest("login id", c.LoginID); err != nil {
			return nil, err
		}
		if a.tx.Get(bLogins, c.LoginID) != nil {
			return nil, broker.Errorf(broker.ErrExists, "this ID token was already used to log in; run labfed login again for a fresh one")
		}
		exp := c.LoginExpires
		if exp.Before(s.Expires) {
			exp = s.Expires
		}
		if err := a.tx.Put(bLogins, c.LoginID, []byte(exp.UTC().Format(time.RFC3339Nano))); err != nil {
			return nil, err
		}
		if err := a.tx.Put(bSessionExpiry, expiryKey(exp, "login:"+c.LoginID), nil); err != nil {
			return nil, err
		}
	}
	s.Created = a.now
	if err := putJSON(a.tx, bSessions, s.ID, &s); err != nil {
		return nil, err
	}
	if err := a.tx.Put(bSessionsByUser, k2(s.User, s.ID), nil); err != nil {
		return nil, err
	}
	if err := a.tx.Put(bSessionExpiry, expiryKey(s.Expires, s.ID), nil); err != nil {
		return nil, err
	}
	return &s, nil
}

// pruneSessions forgets sessions and used ID tokens that are over at the
// command's time. The expiry index keeps this proportional to what is
// removed, not to how many sessions exist.
func (a *applier) pruneSessions() {
	// Entries of the current second are kept until the next one: pruning
	// a little late is harmless, early would reopen a replay window.
	limit := expirySeconds(a.now)
	var over []string
	_ = a.tx.ForEach(bSessionExpiry, "", func(k string, _ []byte) error {
		if ts, _, _ := strings.Cut(k, "\x00"); ts >= limit {
			return errStop
		}
		over = append(over, k)
		return nil
	})
	for _, k := range over {
		_, id, _ := strings.Cut(k, "\x00")
		_ = a.tx.Delete(bSessionExpiry, k)
		if login, ok := strings.CutPrefix(id, "login:"); ok {
			_ = a.tx.Delete(bLogins, login)
			continue
		}
		a.deleteSession(id)
	}
}

func (a *applier) deleteSession(id string) {
	s, err := getJSON[Session](a.tx, bSessions, id)
	if err != nil || s == nil {
		return
	}
	_ = a.tx.Delete(bSessions, id)
	_ = a.tx.Delete(bSessionsByUser, k2(s.User, id))
	_ = a.tx.Delete(bSessionExpiry, expiryKey(s.Expires, id))
}

// endSessions deletes every session of user and returns how many there were.
func (a *applier) endSessions(user string) int {
	ids := suffixes(a.tx, bSessionsByUser, user)
	for _, id := range ids {
		a.deleteSession(id)
	}
	return len(ids)
}

// endSessionsVia deletes the sessions of user opened with identity id.
func (a *applier) endSessionsVia(user string, id broker.Identity) {
	for _, sid := range suffixes(a.tx, bSessionsByUser, user) {
		if s, err := getJSON[Session](a.tx, bSessions, sid); err == nil && s != nil && s.Via != nil && *s.Via == id {
			a.deleteSession(sid)
		}
	}
}

func (a *applier) revokeSessions(c *RevokeSessions) (any, error) {
	switch {
	case c.ID != "" && c.User != "":
		return nil, broker.Errorf(broker.ErrInvalid, "revoke one session or all of a user's sessions, not both")
	case c.ID != "":
		if a.tx.Get(bSessions, c.ID) == nil {
			return nil, broker.Errorf(broker.ErrNotFound, "no such session; it may have expired or been revoked already")
		}
		a.deleteSession(c.ID)
		return 1, nil
	case c.User != "":
		if a.tx.Get(bUsers, c.User) == nil {
			return nil, broker.Errorf(broker.ErrNotFound, "user %q is not in the directory", c.User)
		}
		return a.endSessions(c.User), nil
	}
	return nil, broker.Errorf(broker.ErrInvalid, "name the session or the user whose sessions to revoke")
}

// ---- queries ----

// Session returns the session with the given ID (the hex SHA-256 of its
// secret), whether or not it has expired; callers compare Expires with
// their clock.
func (d *Directory) Session(id string) (*Session, error) {
	return get[Session](d, bSessions, id, broker.Errorf(broker.ErrNotFound, "this session credential is not known to the federation (revoked, expired or never issued); run labfed login"))
}

// Sessions lists the sessions of a user, or of everyone when user is empty.
func (d *Directory) Sessions(user string) ([]*Session, error) {
	if user == "" {
		return list[Session](d, bSessions, "", nil)
	}
	var ids []string
	_ = d.store.View(func(tx Tx) error {
		ids = suffixes(tx, bSessionsByUser, user)
		return nil
	})
	out := make([]*Session, 0, len(ids))
	for _, id := range ids {
		s, err := d.Session(id)
		if err != nil {
			continue // revoked between the two reads
		}
		out = append(out, s)
	}
	return out, nil
}
