// Package audit defines the federation's audit trail: entries, their
// canonical encoding and hash chain, filters, usage figures, and the
// delivery of an agent's entries to its broker.
//
// Every decision a broker or agent makes is an Entry. The directory's state
// machine numbers entries and chains them: each carries the SHA-256 of the
// previous entry's hash and its own canonical encoding, so changing,
// removing or reordering any entry breaks every hash after it.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Decisions.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Actions recorded. Directory changes are named after their command
// ("grant.add"); the others are listed here.
const (
	ActionTokenIssue    = "token.issue"
	ActionLogin         = "login"
	ActionLogout        = "logout"
	ActionSessionOpen   = "session.open"
	ActionSessionClose  = "session.close"
	ActionMount         = "mount"
	ActionJobSubmit     = "job.submit"
	ActionJobPlace      = "job.place"
	ActionJobFinish     = "job.finish"
	ActionJobFail       = "job.fail"
	ActionAccessRefused = "access.refused" // an RPC refused by its access rule
)

// Detail keys with a meaning for usage.
const (
	// DetailSeconds is a session's or job's duration in seconds.
	DetailSeconds = "seconds"
	// DetailGPUs is the number of GPUs a job held.
	DetailGPUs = "gpus"
	// DetailEnded says how a session ended (closed, expired, revoked).
	DetailEnded = "ended"
)

// Entry is one audited decision.
type Entry struct {
	// Seq numbers entries from 1 without gaps; the state machine sets it.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Actor is who asked: a user name, or a certificate identity such as
	// rutgers/agent/agent-1; ActorSite is the site they came from.
	Actor     string `json:"actor"`
	ActorSite string `json:"actor_site,omitempty"`
	// Subject is the user the decision concerns when not the actor (the
	// user a token was issued for, whose session it is).
	Subject  string `json:"subject,omitempty"`
	Action   string `json:"action"`
	Resource string `json:"resource,omitempty"`
	// Site is the site whose resource or record it is.
	Site     string            `json:"site,omitempty"`
	Decision string            `json:"decision"`
	Reason   string            `json:"reason,omitempty"`
	Details  map[string]string `json:"details,omitempty"`
	// Grants and Token connect the entry to the grants that justified it
	// and the token (jti) involved.
	Grants []string `json:"grants,omitempty"`
	Token  string   `json:"token,omitempty"`
	// Source is the broker or agent that recorded the entry, and
	// SourceSeq the agent's own number for it, which makes delivery
	// exactly-once.
	Source    string `json:"source,omitempty"`
	SourceSeq uint64 `json:"source_seq,omitempty"`

	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// Canonical is the entry's canonical encoding: its JSON without Hash.
// Struct fields keep their order and encoding/json sorts map keys, so the
// same entry always encodes to the same bytes.
func (e *Entry) Canonical() []byte {
	c := *e
	c.Hash = ""
	c.Time = c.Time.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		// Only strings, numbers and times: encoding cannot fail.
		panic(fmt.Sprintf("audit: encode entry %d: %v", e.Seq, err))
	}
	return b
}

// ComputeHash returns hex(SHA-256(prev hash ‖ canonical encoding)).
func (e *Entry) ComputeHash() string {
	h := sha256.New()
	h.Write([]byte(e.PrevHash))
	h.Write(e.Canonical())
	return hex.EncodeToString(h.Sum(nil))
}

// Link makes e the entry after prev (nil for the first): it sets Seq,
// PrevHash and Hash.
func Link(prevSeq uint64, prevHash string, e *Entry) {
	e.Seq, e.PrevHash, e.Time = prevSeq+1, prevHash, e.Time.UTC()
	e.Hash = e.ComputeHash()
}

// Check checks e against the entry before it: the sequence follows, the
// previous hash matches, and its own hash is its content's. It returns a
// one-line reason when it does not.
func Check(prevSeq uint64, prevHash string, e *Entry) error {
	switch {
	case e.Seq != prevSeq+1:
		return fmt.Errorf("entry %d follows entry %d: an entry is missing or out of order", e.Seq, prevSeq)
	case e.PrevHash != prevHash:
		return fmt.Errorf("entry %d names previous hash %s, but entry %d hashes to %s", e.Seq, short(e.PrevHash), prevSeq, short(prevHash))
	case e.ComputeHash() != e.Hash:
		return fmt.Errorf("entry %d does not match its hash %s: its content was changed", e.Seq, short(e.Hash))
	}
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	if h == "" {
		return "(none)"
	}
	return h
}

// Validate refuses an entry submitted by an agent or broker that the log
// must not hold: missing who, what or decision, or a decision other than
// allow and deny.
func (e *Entry) Validate() error {
	switch {
	case e.Actor == "":
		return fmt.Errorf("audit entry has no actor")
	case e.Action == "":
		return fmt.Errorf("audit entry has no action")
	case e.Decision != Allow && e.Decision != Deny:
		return fmt.Errorf("audit entry decision %q is not allow or deny", e.Decision)
	case e.Time.IsZero():
		return fmt.Errorf("audit entry has no time")
	case e.Time.Year() < 2000 || e.Time.Year() > 9999:
		return fmt.Errorf("audit entry time %s is not a plausible time", e.Time.UTC().Format(time.RFC3339))
	case e.Seq != 0 || e.Hash != "" || e.PrevHash != "":
		return fmt.Errorf("audit entry comes numbered or hashed; the log numbers and chains entries itself")
	}
	for _, f := range []string{e.Actor, e.ActorSite, e.Subject, e.Action, e.Resource, e.Site, e.Token, e.Source} {
		if strings.ContainsFunc(f, unicode.IsControl) {
			return fmt.Errorf("audit entry field %q has a control character", f)
		}
	}
	if len(e.Canonical()) > MaxEntrySize {
		return fmt.Errorf("audit entry is larger than %d bytes; shorten its details", MaxEntrySize)
	}
	return nil
}

// MaxEntrySize bounds one entry's encoding.
const MaxEntrySize = 16 << 10

// MaxSkew bounds how far a submitted entry's time may lie from the time
// of the command that records it: an agent queues entries while its
// broker is away (up to MaxQueued), and clocks differ a little.
const (
	MaxQueued = 30 * 24 * time.Hour
	MaxSkew   = 5 * time.Minute
)

// AgentActions are the actions a site agent may record; everything else
// is a broker's decision.
var AgentActions = []string{ActionSessionOpen, ActionSessionClose, ActionMount, ActionJobSubmit, ActionJobPlace, ActionJobFinish, ActionJobFail}

// Filter selects entries. Empty fields match everything; User matches the
// actor or the subject.
type Filter struct {
	User, Site, Resource, Action, Decision string
	Since, Until                           time.Time
}

// Match reports whether e passes f.
func (f *Filter) Match(e *Entry) bool {
	return (f.User == "" || e.Actor == f.User || e.Subject == f.User) &&
		(f.Site == "" || e.Site == f.Site || e.ActorSite == f.Site) &&
		(f.Resource == "" || e.Resource == f.Resource || (len(e.Resource) > len(f.Resource) && e.Resource[:len(f.Resource)] == f.Resource && e.Resource[len(f.Resource)] == '/')) &&
		(f.Action == "" || e.Action == f.Action) &&
		(f.Decision == "" || e.Decision == f.Decision) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since)) &&
		(f.Until.IsZero() || e.Time.Before(f.Until))
}

// Concerns reports whether e is about user (as actor or subject): what a
// researcher may read.
func (e *Entry) Concerns(user string) bool { return e.Actor == user || e.Subject == user }

// InSite reports whether e is about site (its resource or record, or the
// actor's site): what a site administrator may read.
func (e *Entry) InSite(site string) bool { return e.Site == site || e.ActorSite == site }

// SortedDetails returns the detail keys in order, for printing.
func (e *Entry) SortedDetails() []string {
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
