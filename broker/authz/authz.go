// Package authz decides whether a user may have a capability now: one
// function, Decide, used by every broker before it signs a token, so the
// rules live in one place and can be tested without a broker.
package authz

import (
	"fmt"
	"slices"
	"time"

	"github.com/labfed/labfed/broker"
)

// Lifetimes of a capability token.
const (
	DefaultTTL = 15 * time.Minute
	MaxTTL     = 12 * time.Hour
)

// Grant is what Decide needs of a grant.
type Grant struct {
	ID       string
	Subject  string // "user:alice" or "project:cryo-lab"
	Resource broker.Resource
	Actions  []string
	From     time.Time
	Until    *time.Time // nil: no end
	Revoked  bool
}

// Input is everything the decision depends on; Decide reads no clock and
// no store.
type Input struct {
	User       string
	UserStatus string // "active" to be allowed
	Projects   []string
	// Grants may include any grants; Decide picks those reaching the user.
	Grants     []Grant
	HasAccount bool // the user has an account at the resource's site
	Action     string
	Resource   broker.Resource
	Now        time.Time
	// TTL requested; zero means DefaultTTL.
	TTL time.Duration
}

// Decision says yes (with the token's window and the grants that justify
// it) or no with a reason a person understands.
type Decision struct {
	Allowed   bool
	Reason    string
	Grants    []string
	NotBefore time.Time
	Expiry    time.Time
}

func deny(format string, args ...any) Decision {
	return Decision{Reason: fmt.Sprintf(format, args...)}
}

// Decide applies the rules: an active user; a grant to the user or one of
// their projects covering the resource and action now; an account at the
// resource's site; a lifetime within the grant's window, at most MaxTTL.
func Decide(in Input) Decision {
	ttl := in.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	scope := in.Action + " on " + in.Resource.ID()
	switch {
	case ttl < 0 || ttl > MaxTTL:
		return deny("a token lives at most %s; ask for less than %s", MaxTTL, ttl)
	case in.UserStatus != "active":
		return deny("user %s is %s", in.User, orUnknown(in.UserStatus))
	}
	subjects := []string{"user:" + in.User}
	for _, p := range in.Projects {
		subjects = append(subjects, "project:"+p)
	}
	var best *Grant
	var notYet, ended *Grant
	for i := range in.Grants {
		g := &in.Grants[i]
		if g.Revoked || !slices.Contains(subjects, g.Subject) || !slices.Contains(g.Actions, in.Action) || !g.Resource.Covers(in.Resource) {
			continue
		}
		switch {
		case in.Now.Before(g.From):
			notYet = g
		case g.Until != nil && !in.Now.Before(*g.Until):
			ended = g
		case best == nil || later(g.Until, best.Until):
			best = g
		}
	}
	if best == nil {
		switch {
		case notYet != nil:
			return deny("grant %s for %s starts at %s", notYet.ID, scope, notYet.From.UTC().Format(time.RFC3339))
		case ended != nil:
			return deny("grant %s for %s ended at %s", ended.ID, scope, ended.Until.UTC().Format(time.RFC3339))
		}
		return deny("no grant for %s", scope)
	}
	if !in.HasAccount {
		return deny("user %s has no account at site %s yet", in.User, in.Resource.Site)
	}
	exp := in.Now.Add(ttl)
	if best.Until != nil && best.Until.Before(exp) {
		exp = *best.Until
	}
	return Decision{Allowed: true, Grants: []string{best.ID}, NotBefore: in.Now, Expiry: exp}
}

// later reports whether end a is later than b (nil is never-ending).
func later(a, b *time.Time) bool {
	if a == nil {
		return b != nil
	}
	return b != nil && a.After(*b)
}

func orUnknown(s string) string {
	if s == "" {
		return "not registered"
	}
	return s
}
