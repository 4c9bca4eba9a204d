package audit

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// UsageRow is one line of a usage report.
type UsageRow struct {
	Key             string  `json:"key"`
	InstrumentHours float64 `json:"instrument_hours"`
	GPUHours        float64 `json:"gpu_hours"`
	Sessions        uint64  `json:"sessions"`
	Jobs            uint64  `json:"jobs"`
	Tokens          uint64  `json:"tokens"`
}

// Usage groups.
const (
	BySite    = "site"
	ByUser    = "user"
	ByProject = "project"
)

// Usage sums what the allowed entries record, grouped by site, user or
// project: instrument hours from closed sessions' durations, GPU hours
// from finished or failed jobs' durations times their GPUs, and the
// sessions opened, jobs submitted and tokens issued. By project, a user's
// usage counts for the project the entry names (details "project") or
// else for every project projectsOf lists, or "(none)". Rows are sorted
// by key.
func Usage(entries []*Entry, by string, projectsOf func(user string) []string) ([]UsageRow, error) {
	t, err := NewTally(by, projectsOf)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		t.Add(e)
	}
	return t.Rows(), nil
}

// Tally sums usage one entry at a time (see Usage), so a report over a
// large log need not hold its entries.
type Tally struct {
	by         string
	projectsOf func(string) []string
	projects   map[string][]string // projectsOf, asked once per user
	rows       map[string]*UsageRow
}

// NewTally starts a usage report grouped by site, user or project.
func NewTally(by string, projectsOf func(user string) []string) (*Tally, error) {
	if by != BySite && by != ByUser && by != ByProject {
		return nil, fmt.Errorf("--by %q: give site, user or project", by)
	}
	return &Tally{by: by, projectsOf: projectsOf, projects: map[string][]string{}, rows: map[string]*UsageRow{}}, nil
}

// Add counts e, if it is an allowed entry usage is made of.
func (t *Tally) Add(e *Entry) {
	if e.Decision != Allow {
		return
	}
	var add func(r *UsageRow)
	switch e.Action {
	case ActionSessionOpen:
		add = func(r *UsageRow) { r.Sessions++ }
	case ActionSessionClose:
		h := seconds(e) / 3600
		add = func(r *UsageRow) { r.InstrumentHours += h }
	case ActionJobSubmit:
		add = func(r *UsageRow) { r.Jobs++ }
	case ActionJobFinish, ActionJobFail:
		h := seconds(e) * nonNegative(e.Details[DetailGPUs]) / 3600
		add = func(r *UsageRow) { r.GPUHours += h }
	case ActionTokenIssue:
		add = func(r *UsageRow) { r.Tokens++ }
	default:
		return
	}
	for _, k := range t.keysOf(e) {
		r := t.rows[k]
		if r == nil {
			r = &UsageRow{Key: k}
			t.rows[k] = r
		}
		add(r)
	}
}

// Rows returns the report, sorted by key.
func (t *Tally) Rows() []UsageRow {
	out := make([]UsageRow, 0, len(t.rows))
	for _, r := range t.rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b UsageRow) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func seconds(e *Entry) float64 { return nonNegative(e.Details[DetailSeconds]) }

// nonNegative reads a finite, non-negative number; anything else counts 0.
func nonNegative(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0
	}
	return f
}

// user is whom an entry's usage belongs to.
func (e *Entry) user() string {
	if e.Subject != "" {
		return e.Subject
	}
	return e.Actor
}

func (t *Tally) keysOf(e *Entry) []string {
	switch t.by {
	case BySite:
		return []string{orNone(e.Site)}
	case ByUser:
		return []string{e.user()}
	}
	if p := e.Details["project"]; p != "" {
		return []string{p}
	}
	if t.projectsOf != nil {
		u := e.user()
		ps, ok := t.projects[u]
		if !ok {
			ps = t.projectsOf(u)
			t.projects[u] = ps
		}
		if len(ps) > 0 {
			return ps
		}
	}
	return []string{"(none)"}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
