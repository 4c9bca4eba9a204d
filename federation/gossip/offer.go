package gossip

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Statuses of instruments and compute targets.
const (
	StatusAvailable   = "available"
	StatusInSession   = "in_session"
	StatusMaintenance = "maintenance"
	StatusOffline     = "offline"
)

// Kinds of compute target.
const (
	KindLocal = "local"
	KindSlurm = "slurm"
)

// Instrument is an instrument a site offers; ID is "site/name".
type Instrument struct {
	ID, Type, Model, Status string
}

// ComputeTarget is a place analytics can run; ID is "site/name", Kind is
// local or slurm, Software maps a package to its version ("cryosparc" →
// "4.6.2").
type ComputeTarget struct {
	ID, Kind       string
	GPUs, GPUsFree int
	QueueWaitS     float64
	Software       map[string]string
	Status         string
}

// Offer is everything one broker node offers. The owner alone changes it;
// every change raises Version, and the highest Version wins everywhere.
type Offer struct {
	Node, Site  string
	Version     uint64
	Instruments []Instrument
	Compute     []ComputeTarget
}

// OfferView is an offer as this node knows it. Reachable is false while
// the owner is dead or has left; LastSeen is the last time this node had
// word of the owner (a probe answered, an offer, a membership change).
type OfferView struct {
	Offer
	Reachable bool
	LastSeen  time.Time
}

// Limits on an offer, so that one node cannot make every other node hold
// or gossip an unbounded amount of data.
const (
	maxNameLen     = 128 // node names
	maxSiteLen     = 64
	maxFieldLen    = 256 // IDs, types, models, statuses, software names and versions
	maxInstruments = 256
	maxCompute     = 256
	maxSoftware    = 64
	maxGPUs        = 1 << 20
	maxQueueWaitS  = 365 * 24 * 3600
)

var (
	statuses     = []string{StatusAvailable, StatusInSession, StatusMaintenance, StatusOffline}
	computeKinds = []string{KindLocal, KindSlurm}
)

// cloneOffer returns a deep copy, so that callers never share slices or
// maps with the catalog.
func cloneOffer(o Offer) Offer {
	o.Instruments = slices.Clone(o.Instruments)
	o.Compute = slices.Clone(o.Compute)
	for i := range o.Compute {
		o.Compute[i].Software = maps.Clone(o.Compute[i].Software)
	}
	return o
}

// validateShape checks what every offer heard from gossip must satisfy:
// bounded sizes, IDs of the owner's site, sane numbers. Statuses and kinds
// are not checked here, so that a newer node may add one without older
// nodes dropping its whole offer.
func validateShape(o *Offer) error {
	if err := checkName("node", o.Node, maxNameLen); err != nil {
		return err
	}
	if err := checkName("site", o.Site, maxSiteLen); err != nil {
		return err
	}
	if o.Version == 0 {
		return errors.New("offer version is 0")
	}
	if len(o.Instruments) > maxInstruments || len(o.Compute) > maxCompute {
		return fmt.Errorf("offer lists %d instruments and %d compute targets; at most %d and %d",
			len(o.Instruments), len(o.Compute), maxInstruments, maxCompute)
	}
	ids := map[string]bool{}
	for _, in := range o.Instruments {
		if err := checkID(o.Site, in.ID, ids); err != nil {
			return fmt.Errorf("instrument: %w", err)
		}
		if err := checkFields(in.Type, in.Model, in.Status); err != nil {
			return fmt.Errorf("instrument %s: %w", in.ID, err)
		}
	}
	for _, c := range o.Compute {
		if err := checkID(o.Site, c.ID, ids); err != nil {
			return fmt.Errorf("compute target: %w", err)
		}
		if err := checkCompute(&c); err != nil {
			return fmt.Errorf("compute target %s: %w", c.ID, err)
		}
	}
	return nil
}

// validateLocal adds the checks for the offer this node makes itself:
// known statuses and kinds.
func validateLocal(o *Offer) error {
	if err := validateShape(o); err != nil {
		return err
	}
	for _, in := range o.Instruments {
		if !slices.Contains(statuses, in.Status) {
			return fmt.Errorf("instrument %s: status %q; use one of %s", in.ID, in.Status, strings.Join(statuses, ", "))
		}
	}
	for _, c := range o.Compute {
		if !slices.Contains(computeKinds, c.Kind) {
			return fmt.Errorf("compute target %s: kind %q; use one of %s", c.ID, c.Kind, strings.Join(computeKinds, ", "))
		}
		if !slices.Contains(statuses, c.Status) {
			return fmt.Errorf("compute target %s: status %q; use one of %s", c.ID, c.Status, strings.Join(statuses, ", "))
		}
	}
	if _, err := encodeOffer(*o); err != nil {
		return fmt.Errorf("offer too large to gossip (%v); list fewer instruments, targets or software versions", err)
	}
	return nil
}

func checkCompute(c *ComputeTarget) error {
	if err := checkFields(c.Kind, c.Status); err != nil {
		return err
	}
	if c.GPUs < 0 || c.GPUs > maxGPUs || c.GPUsFree < 0 || c.GPUsFree > c.GPUs {
		return fmt.Errorf("gpus %d, free %d; want 0 ≤ free ≤ gpus ≤ %d", c.GPUs, c.GPUsFree, maxGPUs)
	}
	if math.IsNaN(c.QueueWaitS) || c.QueueWaitS < 0 || c.QueueWaitS > maxQueueWaitS {
		return fmt.Errorf("queue wait %v s is not between 0 and a year", c.QueueWaitS)
	}
	if len(c.Software) > maxSoftware {
		return fmt.Errorf("%d software entries; at most %d", len(c.Software), maxSoftware)
	}
	for k, v := range c.Software {
		if k == "" {
			return errors.New("software with an empty name")
		}
		if err := checkFields(k, v); err != nil {
			return fmt.Errorf("software %q: %w", k, err)
		}
	}
	return nil
}

func checkName(what, s string, limit int) error {
	if s == "" {
		return fmt.Errorf("empty %s name", what)
	}
	if len(s) > limit {
		return fmt.Errorf("%s name of %d bytes; at most %d", what, len(s), limit)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '/' }) >= 0 {
		return fmt.Errorf("%s name %q has a space, '/' or an unprintable character", what, s)
	}
	return nil
}

func checkID(site, id string, seen map[string]bool) error {
	name, ok := strings.CutPrefix(id, site+"/")
	if !ok || name == "" {
		return fmt.Errorf("id %q is not %s/NAME", id, site)
	}
	if len(id) > maxFieldLen || !utf8.ValidString(id) || strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("id %q is too long or has a space or an unprintable character", id)
	}
	if seen[id] {
		return fmt.Errorf("id %q is listed twice", id)
	}
	seen[id] = true
	return nil
}

// checkFields bounds free-text fields and requires valid UTF-8: JSON
// would replace invalid bytes, and an offer must read back exactly as it
// was sent, or its owner would take the echo for a stale offer.
func checkFields(fields ...string) error {
	for _, f := range fields {
		if len(f) > maxFieldLen {
			return fmt.Errorf("a field of %d bytes; at most %d", len(f), maxFieldLen)
		}
		if !utf8.ValidString(f) {
			return fmt.Errorf("field %q is not valid UTF-8", f)
		}
	}
	return nil
}
