package broker

import (
	"slices"
	"strings"
)

// Actions a grant can allow. The grammar follows WLCG/SciTokens scopes:
// "action:resource".
const (
	ActionInstrumentOperate = "instrument.operate"
	ActionInstrumentView    = "instrument.view"
	ActionStorageRead       = "storage.read"
	ActionStorageModify     = "storage.modify"
	ActionStorageCreate     = "storage.create"
	ActionComputeCreate     = "compute.create"
)

// Actions lists every action in a stable order.
func Actions() []string {
	return []string{ActionInstrumentOperate, ActionInstrumentView, ActionStorageRead, ActionStorageModify, ActionStorageCreate, ActionComputeCreate}
}

// IsStorageAction reports whether a is one of the storage.* actions, whose
// resources carry a hierarchical path.
func IsStorageAction(a string) bool { return strings.HasPrefix(a, "storage.") }

// Resource identifies something a site offers: "site/name" for instruments
// and compute targets, "site/name/path…" for a path inside a storage export.
type Resource struct {
	Site string
	Name string
	// Path is "/" for a whole storage export, otherwise "/a/b" without a
	// trailing slash.
	Path string
}

// ParseResource parses "site/name" or "site/name/path…". A storage export
// path may also be written "site/name:/path" as in the brief.
func ParseResource(s string) (Resource, error) {
	norm := strings.Replace(s, ":/", "/", 1)
	parts := strings.Split(norm, "/")
	if len(parts) < 2 {
		return Resource{}, Errorf(ErrInvalid, "resource %q is not SITE/NAME; give one such as rutgers/krios-g4 or rutgers/raw/session-123", s)
	}
	if err := ValidateName("site", parts[0]); err != nil {
		return Resource{}, Errorf(ErrInvalid, "resource %q: %v", s, err)
	}
	if err := ValidateName("resource", parts[1]); err != nil {
		return Resource{}, Errorf(ErrInvalid, "resource %q: %v", s, err)
	}
	r := Resource{Site: parts[0], Name: parts[1], Path: "/"}
	if len(parts) > 2 {
		for _, seg := range parts[2:] {
			if seg == "" && len(parts) == 3 {
				continue // "site/name/" is the whole export
			}
			if seg == "." || seg == ".." || !segmentRE.MatchString(seg) {
				return Resource{}, Errorf(ErrInvalid, "resource %q has path segment %q; paths use letters, digits, '.', '_' and '-' and never '.' or '..'", s, seg)
			}
		}
		if p := strings.Join(parts[2:], "/"); p != "" {
			r.Path = "/" + p
		}
	}
	return r, nil
}

// ID returns the resource's canonical string: "site/name" or
// "site/name/path".
func (r Resource) ID() string {
	if r.Path == "" || r.Path == "/" {
		return r.Site + "/" + r.Name
	}
	return r.Site + "/" + r.Name + r.Path
}

// HasPath reports whether the resource names a path below a storage export.
func (r Resource) HasPath() bool { return r.Path != "" && r.Path != "/" }

// Covers reports whether r covers o with WLCG semantics: same site and name,
// and o's path equal to or below r's ("/a" covers "/a/b", never "/ab").
func (r Resource) Covers(o Resource) bool {
	if r.Site != o.Site || r.Name != o.Name {
		return false
	}
	rp, op := r.Path, o.Path
	if rp == "" || rp == "/" {
		return true
	}
	return op == rp || strings.HasPrefix(op, rp+"/")
}

// ValidateActions checks a list of actions against the known ones and the
// resource they apply to, and returns them sorted and deduplicated.
func ValidateActions(actions []string, r Resource) ([]string, error) {
	if len(actions) == 0 {
		return nil, Errorf(ErrInvalid, "no actions given; give one or more of %s", strings.Join(Actions(), ","))
	}
	out := make([]string, 0, len(actions))
	for _, a := range actions {
		a = strings.TrimSpace(a)
		if !slices.Contains(Actions(), a) {
			return nil, Errorf(ErrInvalid, "action %q is unknown; use one of %s", a, strings.Join(Actions(), ","))
		}
		if !IsStorageAction(a) && r.HasPath() {
			return nil, Errorf(ErrInvalid, "action %s applies to a whole resource, but %q names a path; drop the path or use a storage.* action", a, r.ID())
		}
		out = append(out, a)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
