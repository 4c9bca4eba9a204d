package placement

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/labfed/labfed/broker"
)

// StatusAvailable is the only status of a target that takes jobs.
const StatusAvailable = "available"

// Target is a compute target as the federation offers it.
type Target struct {
	// ID is "site/name"; Site is the site part.
	ID, Site string
	// Kind is local or slurm; ranking does not depend on it.
	Kind           string
	GPUs, GPUsFree int
	QueueWait      time.Duration
	// Software maps a package to its installed version.
	Software map[string]string
	// Status is StatusAvailable when the target takes jobs.
	Status string
	// Reachable is false while the target's broker is down or cut off.
	Reachable bool
}

// Job is what an analytics job needs.
type Job struct {
	// DataSite is the site that holds the job's input data.
	DataSite string
	// GPUs is how many free GPUs the job takes; 0 for a CPU job.
	GPUs int
	// Software maps a package to the version the job needs: "4.6.2"
	// exactly, a range such as ">=5.0", or "" for any (see the package
	// documentation).
	Software map[string]string
}

// Validate reports a job Rank cannot rank sensibly: negative GPUs or a
// version requirement it does not understand.
func (j Job) Validate() error {
	if j.GPUs < 0 {
		return broker.Errorf(broker.ErrInvalid, "a job needs 0 GPUs or more, not %d", j.GPUs)
	}
	for _, pkg := range slices.Sorted(maps.Keys(j.Software)) {
		if pkg == "" || strings.ContainsAny(pkg, " \t=") {
			return broker.Errorf(broker.ErrInvalid, "software %q is not a package name; give one such as cryosparc=4.6.2", pkg)
		}
		if _, err := parseRequirement(j.Software[pkg]); err != nil {
			return broker.Errorf(broker.ErrInvalid, "software %s: %v", pkg, err)
		}
	}
	return nil
}

// Ranked is a target that can run the job, with its score (higher is
// better), the RTT from the data's site when known, and one sentence
// explaining its place in the ranking.
type Ranked struct {
	Target Target
	Score  float64
	RTT    time.Duration
	HasRTT bool
	Reason string
}

// Excluded is a target that cannot run the job, and why.
type Excluded struct {
	Target Target
	Reason string
}

// Weights set how much each part of the estimate counts (see the package
// documentation). A zero field takes its default; a negative one counts
// as zero.
type Weights struct {
	// RoundTrips prices distance: moving the job's data to the target is
	// taken to cost this many round trips between the data's site and the
	// target's. Default 1000, so 10 ms of RTT costs 10 s.
	RoundTrips float64
	// Queue multiplies the target's queue wait; default 1.
	Queue float64
	// Crowding is the delay charged to a job that would take every free
	// GPU of a target; a job taking a share of them is charged that
	// share. Default 30 s.
	Crowding time.Duration
	// Half is the estimate that scores 75 (half way down its band);
	// default 1 min.
	Half time.Duration
}

// DefaultWeights returns the weights Rank uses for zero fields.
func DefaultWeights() Weights {
	return Weights{RoundTrips: 1000, Queue: 1, Crowding: 30 * time.Second, Half: time.Minute}
}

func (w Weights) withDefaults() Weights {
	d := DefaultWeights()
	if w.RoundTrips == 0 {
		w.RoundTrips = d.RoundTrips
	}
	if w.Queue == 0 {
		w.Queue = d.Queue
	}
	if w.Crowding == 0 {
		w.Crowding = d.Crowding
	}
	if w.Half <= 0 {
		w.Half = d.Half
	}
	w.RoundTrips = max(w.RoundTrips, 0)
	w.Queue = max(w.Queue, 0)
	w.Crowding = max(w.Crowding, 0)
	return w
}

// candidate is a ranked target with the parts of its estimate, in
// seconds, kept to explain the ranking.
type candidate struct {
	Ranked
	sameSite                bool
	rttCost, queue, crowded float64
}

func (c *candidate) estimate() float64 { return c.rttCost + c.queue + c.crowded }

// Rank splits targets into those that can run job, best first, and those
// that cannot, by ID. rtt gives the round-trip time from the job's data
// site to another site, when known; it may be nil, and it is called at
// most once per site. Rank does not modify its arguments, and its result
// depends on nothing else.
func Rank(job Job, targets []Target, rtt func(site string) (time.Duration, bool), w Weights) (ranked []Ranked, excluded []Excluded) {
	w = w.withDefaults()
	need := max(job.GPUs, 0)
	type rttResult struct {
		d  time.Duration
		ok bool
	}
	rtts := map[string]rttResult{}
	siteRTT := func(site string) (time.Duration, bool) {
		if r, ok := rtts[site]; ok {
			return r.d, r.ok
		}
		var r rttResult
		if rtt != nil {
			r.d, r.ok = rtt(site)
			r.ok = r.ok && r.d >= 0
		}
		rtts[site] = r
		return r.d, r.ok
	}

	var cands []*candidate
	for _, t := range targets {
		if why := exclusions(job, need, t); why != "" {
			excluded = append(excluded, Excluded{Target: t, Reason: t.ID + ": " + why})
			continue
		}
		c := &candidate{Ranked: Ranked{Target: t}}
		switch {
		case job.DataSite != "" && t.Site == job.DataSite:
			c.sameSite, c.HasRTT = true, true
		case job.DataSite != "":
			c.RTT, c.HasRTT = siteRTT(t.Site)
		}
		c.rttCost = w.RoundTrips * c.RTT.Seconds()
		c.queue = w.Queue * max(t.QueueWait, 0).Seconds()
		if need > 0 {
			c.crowded = w.Crowding.Seconds() * float64(need) / float64(t.GPUsFree)
		}
		// Known RTTs score in (50, 100], unknown ones in (0, 50].
		half := w.Half.Seconds()
		c.Score = 50 * half / (half + c.estimate())
		if c.HasRTT {
			c.Score += 50
		}
		cands = append(cands, c)
	}
	slices.SortStableFunc(cands, func(a, b *candidate) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), strings.Compare(a.Target.ID, b.Target.ID))
	})
	for i, c := range cands {
		c.Reason = explain(job, cands, i)
		ranked = append(ranked, c.Ranked)
	}
	slices.SortStableFunc(excluded, func(a, b Excluded) int { return strings.Compare(a.Target.ID, b.Target.ID) })
	return ranked, excluded
}

// exclusions says why t cannot run the job, or "" when it can.
func exclusions(job Job, need int, t Target) string {
	if !t.Reachable {
		return fmt.Sprintf("unreachable: the broker of %s is down or cut off, so the target cannot take jobs now", t.Site)
	}
	var why []string
	if t.Status != StatusAvailable {
		why = append(why, fmt.Sprintf("status %q, not available", t.Status))
	}
	switch {
	case t.GPUs < need:
		why = append(why, fmt.Sprintf("needs %d GPUs, has %d in all", need, t.GPUs))
	case t.GPUsFree < need:
		why = append(why, fmt.Sprintf("needs %d GPUs, %d free of %d", need, max(t.GPUsFree, 0), t.GPUs))
	}
	for _, pkg := range slices.Sorted(maps.Keys(job.Software)) {
		want := job.Software[pkg]
		have, ok := t.Software[pkg]
		switch {
		case !ok && strings.Trim(want, " *") == "":
			why = append(why, fmt.Sprintf("does not run %s, which the job needs", pkg))
		case !ok:
			why = append(why, fmt.Sprintf("does not run %s, which the job needs (%s)", pkg, want))
		case !satisfies(have, want):
			why = append(why, mismatch(pkg, have, want))
		}
	}
	return strings.Join(why, "; ")
}

// mismatch explains a version that does not meet the job's requirement.
func mismatch(pkg, have, want string) string {
	r, err := parseRequirement(want)
	switch {
	case err == nil && r.op != "=":
		return fmt.Sprintf("runs %s %s; the job needs %s", pkg, have, want)
	case pkg == "cryosparc":
		return fmt.Sprintf("runs %s %s; the job needs %s to match the master", pkg, have, r.version)
	case err == nil:
		return fmt.Sprintf("runs %s %s; the job needs exactly %s", pkg, have, r.version)
	default:
		return fmt.Sprintf("runs %s %s; the job needs %s", pkg, have, want)
	}
}

// explain writes the sentence for cands[i]: what the target offers, and
// why it is where it is, compared with the target just above it.
func explain(job Job, cands []*candidate, i int) string {
	c := cands[i]
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, %s, %s; ", c.Target.ID, distance(job, c), queue(c.Target.QueueWait), gpus(c.Target))
	if i == 0 {
		switch {
		case len(cands) == 1:
			b.WriteString("ranked first as the only target that can run the job")
		case cands[1].Score == c.Score:
			fmt.Fprintf(&b, "ranked first, tied with %s on estimated start; the tie is broken by ID", cands[1].Target.ID)
		default:
			b.WriteString("ranked first because it has the shortest estimated start")
		}
		if !c.HasRTT && job.DataSite != "" {
			b.WriteString(", leaving out the transfer of the data, whose RTT is unknown")
		}
		return b.String()
	}
	above := cands[i-1]
	fmt.Fprintf(&b, "ranked %s", ordinal(i+1))
	switch {
	case above.Score == c.Score:
		fmt.Fprintf(&b, ", tied with %s on estimated start; the tie is broken by ID", above.Target.ID)
	case above.HasRTT && !c.HasRTT:
		fmt.Fprintf(&b, ", after every target with a known RTT, because the time to move %s's data here cannot be estimated", job.DataSite)
	default:
		fmt.Fprintf(&b, ", after %s, %s", above.Target.ID, behind(job, c, above))
	}
	return b.String()
}

// behind names the part of c's estimate that puts it after above: the
// part by which it exceeds above's the most.
func behind(job Job, c, above *candidate) string {
	parts := []struct {
		delta float64
		why   string
	}{
		{c.rttCost - above.rttCost, fmt.Sprintf("it is farther from %s's data (%s vs %s)", job.DataSite, ms(c.RTT), ms(above.RTT))},
		{c.queue - above.queue, fmt.Sprintf("of its longer queue (%s vs %s)", queueLen(c.Target.QueueWait), queueLen(above.Target.QueueWait))},
		{c.crowded - above.crowded, fmt.Sprintf("the job would take more of its free GPUs (%d of %d vs %d of %d)",
			max(job.GPUs, 0), c.Target.GPUsFree, max(job.GPUs, 0), above.Target.GPUsFree)},
	}
	best, worse := -1, 0
	for k, p := range parts {
		if p.delta > 0 {
			worse++
			if best < 0 || p.delta > parts[best].delta {
				best = k
			}
		}
	}
	switch {
	case best < 0:
		return "with a slightly longer estimated start"
	case worse > 1:
		return "mostly because " + parts[best].why
	default:
		return "because " + parts[best].why
	}
}

func distance(job Job, c *candidate) string {
	switch {
	case job.DataSite == "":
		return "no data site given"
	case c.sameSite:
		return "at " + job.DataSite + " with the data"
	case c.HasRTT:
		return ms(c.RTT) + " from " + job.DataSite + "'s data"
	default:
		return "RTT from " + job.DataSite + " unknown"
	}
}

func ms(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func queue(d time.Duration) string {
	if d < time.Second {
		return "no queue"
	}
	return queueLen(d) + " queue"
}

// queueLen writes a queue wait the way people say it.
func queueLen(d time.Duration) string {
	switch {
	case d < time.Second:
		return "none"
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute).Minutes()))
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
}

func gpus(t Target) string {
	if t.GPUs == 0 {
		return "no GPUs"
	}
	return fmt.Sprintf("%d of %d GPUs free", t.GPUsFree, t.GPUs)
}

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprintf("%d%s", n, suffix)
}
