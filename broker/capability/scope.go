package capability

import (
	"strings"

	"github.com/labfed/labfed/broker"
)

// Scope is one "action:resource" a token allows, with WLCG/SciTokens
// semantics: a storage scope on /a covers /a/b but never /ab.
type Scope struct {
	Action   string
	Resource broker.Resource
}

// ParseScope parses "instrument.operate:rutgers/krios-g4" or
// "storage.read:rutgers/raw/session-123" (also "storage.read:rutgers/raw:/session-123").
func ParseScope(s string) (Scope, error) {
	action, res, ok := strings.Cut(s, ":")
	if !ok || action == "" || res == "" {
		return Scope{}, broker.Errorf(broker.ErrInvalid, "scope %q is not ACTION:RESOURCE; give one such as instrument.operate:rutgers/krios-g4", s)
	}
	r, err := broker.ParseResource(res)
	if err != nil {
		return Scope{}, broker.Errorf(broker.ErrInvalid, "scope %q: %v", s, err)
	}
	if _, err := broker.ValidateActions([]string{action}, r); err != nil {
		return Scope{}, broker.Errorf(broker.ErrInvalid, "scope %q: %v", s, err)
	}
	if action != strings.TrimSpace(action) {
		return Scope{}, broker.Errorf(broker.ErrInvalid, "scope %q has spaces around its action", s)
	}
	return Scope{Action: action, Resource: r}, nil
}

// String returns the canonical form "action:site/name[/path]".
func (s Scope) String() string { return s.Action + ":" + s.Resource.ID() }

// Covers reports whether s allows want: the same action, and a resource
// that covers want's (same site and name, want's path equal to or below).
func (s Scope) Covers(want Scope) bool {
	return s.Action == want.Action && s.Resource.Covers(want.Resource)
}
