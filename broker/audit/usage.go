package audit

import (
	"fmt"
	"math"
	"slices"
	"strconv"
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
	if by != BySite && by != ByUser && by != ByProject {
		return nil, fmt.Errorf("--by %q: give site, user or project", by)
	}
	rows := map[string]*UsageRow{}
	for _, e := range entries {
		if e.Decision != Allow {
			continue
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
			gpus := nonNegative(e.Details[DetailGPUs])
			h := seconds(e) * gpus / 3600
			add = func(r *UsageRow) { r.GPUHours += h }
		case ActionTokenIssue:
			add = func(r *UsageRow) { r.Tokens++ }
		default:
			continue
		}
		for _, k := range keysOf(e, by, projectsOf) {
			r := rows[k]
			if r == nil {
				r = &UsageRow{Key: k}
				rows[k] = r
			}
			add(r)
		}
	}
	out := make([]UsageRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b UsageRow) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	return out, nil
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

func keysOf(e *Entry, by string, projectsOf func(string) []string) []string {
	switch by {
	case BySite:
		return []string{orNone(e.Site)}
	case ByUser:
		return []string{e.user()}
	}
	if p := e.Details["project"]; p != "" {
		return []string{p}
	}
	if projectsOf != nil {
		if ps := projectsOf(e.user()); len(ps) > 0 {
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
