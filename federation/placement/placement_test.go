package placement

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/broker"
)

// The federation of the examples in testdata/config: a workstation beside
// the microscope at rutgers, a SLURM partition at psc 9.8 ms away, and a
// cloudlet at fabric-dc, 31 ms away, with an older CryoSPARC.
func gpuWS1() Target {
	return Target{ID: "rutgers/gpu-ws1", Site: "rutgers", Kind: "local", GPUs: 4, GPUsFree: 4,
		Software: map[string]string{"cryosparc": "4.6.2"}, Status: StatusAvailable, Reachable: true}
}

func bridges2() Target {
	return Target{ID: "psc/bridges2-gpu", Site: "psc", Kind: "slurm", GPUs: 64, GPUsFree: 12,
		Software: map[string]string{"cryosparc": "4.6.2", "relion": "5.0"}, Status: StatusAvailable, Reachable: true}
}

func cloudlet() Target {
	return Target{ID: "fabric-dc/cloudlet-gpu", Site: "fabric-dc", Kind: "local", GPUs: 2, GPUsFree: 2,
		Software: map[string]string{"cryosparc": "4.5.3"}, Status: StatusAvailable, Reachable: true}
}

func with(t Target, change func(*Target)) Target {
	t.Software = maps.Clone(t.Software)
	change(&t)
	return t
}

// rttFrom returns an rtt function with the given RTTs in milliseconds; a
// site not listed is unknown.
func rttFrom(msBySite map[string]float64) func(string) (time.Duration, bool) {
	return func(site string) (time.Duration, bool) {
		ms, ok := msBySite[site]
		return time.Duration(ms * float64(time.Millisecond)), ok
	}
}

var fromRutgers = rttFrom(map[string]float64{"psc": 9.8, "fabric-dc": 31})

func cryosparc(v string) map[string]string { return map[string]string{"cryosparc": v} }

// result is what a test compares: the ranked IDs with their reasons, and
// the excluded reasons.
type result struct {
	ranked   []string
	excluded []string
}

func summarize(ranked []Ranked, excluded []Excluded) result {
	var r result
	for _, x := range ranked {
		r.ranked = append(r.ranked, x.Reason)
	}
	for _, x := range excluded {
		r.excluded = append(r.excluded, x.Reason)
	}
	return r
}

func TestRank(t *testing.T) {
	tests := []struct {
		name    string
		job     Job
		targets []Target
		rtt     func(string) (time.Duration, bool)
		want    result
	}{
		{
			name:    "the data's own site first",
			job:     Job{DataSite: "rutgers", GPUs: 1, Software: cryosparc("4.6.2")},
			targets: []Target{bridges2(), cloudlet(), gpuWS1()},
			rtt:     fromRutgers,
			want: result{
				ranked: []string{
					"rutgers/gpu-ws1: at rutgers with the data, no queue, 4 of 4 GPUs free; ranked first because it has the shortest estimated start",
					"psc/bridges2-gpu: 9.8 ms from rutgers's data, no queue, 12 of 64 GPUs free; ranked 2nd, after rutgers/gpu-ws1, because it is farther from rutgers's data (9.8 ms vs 0.0 ms)",
				},
				excluded: []string{"fabric-dc/cloudlet-gpu: runs cryosparc 4.5.3; the job needs 4.6.2 to match the master"},
			},
		},
		{
			name:    "headroom wins over distance",
			job:     Job{DataSite: "rutgers", GPUs: 4, Software: cryosparc("4.6.2")},
			targets: []Target{gpuWS1(), bridges2(), cloudlet()},
			rtt:     fromRutgers,
			want: result{
				ranked: []string{
					"psc/bridges2-gpu: 9.8 ms from rutgers's data, no queue, 12 of 64 GPUs free; ranked first because it has the shortest estimated start",
					"rutgers/gpu-ws1: at rutgers with the data, no queue, 4 of 4 GPUs free; ranked 2nd, after psc/bridges2-gpu, because the job would take more of its free GPUs (4 of 4 vs 4 of 12)",
				},
				excluded: []string{"fabric-dc/cloudlet-gpu: needs 4 GPUs, has 2 in all; runs cryosparc 4.5.3; the job needs 4.6.2 to match the master"},
			},
		},
		{
			name: "queue wait",
			job:  Job{DataSite: "fabric-dc", GPUs: 1},
			targets: []Target{
				with(bridges2(), func(t *Target) { t.QueueWait = 12 * time.Minute }),
				with(cloudlet(), func(t *Target) { t.GPUsFree = 1 }),
			},
			rtt: rttFrom(map[string]float64{"psc": 14.2}),
			want: result{ranked: []string{
				"fabric-dc/cloudlet-gpu: at fabric-dc with the data, no queue, 1 of 2 GPUs free; ranked first because it has the shortest estimated start",
				"psc/bridges2-gpu: 14.2 ms from fabric-dc's data, 12 min queue, 12 of 64 GPUs free; ranked 2nd, after fabric-dc/cloudlet-gpu, mostly because of its longer queue (12 min vs none)",
			}},
		},
		{
			name: "versions decide",
			job:  Job{DataSite: "fabric-dc", GPUs: 1, Software: cryosparc("4.5.3")},
			targets: []Target{gpuWS1(), bridges2(), cloudlet(),
				with(gpuWS1(), func(t *Target) { t.ID, t.Software = "rutgers/gpu-ws2", nil })},
			rtt: rttFrom(map[string]float64{"psc": 14.2, "rutgers": 31}),
			want: result{
				ranked: []string{"fabric-dc/cloudlet-gpu: at fabric-dc with the data, no queue, 2 of 2 GPUs free; ranked first as the only target that can run the job"},
				excluded: []string{
					"psc/bridges2-gpu: runs cryosparc 4.6.2; the job needs 4.5.3 to match the master",
					"rutgers/gpu-ws1: runs cryosparc 4.6.2; the job needs 4.5.3 to match the master",
					"rutgers/gpu-ws2: does not run cryosparc, which the job needs (4.5.3)",
				},
			},
		},
		{
			name: "version ranges and any version",
			job:  Job{DataSite: "rutgers", Software: map[string]string{"relion": ">=5.0", "cryosparc": ""}},
			targets: []Target{bridges2(), gpuWS1(),
				with(bridges2(), func(t *Target) { t.ID, t.Site, t.Software["relion"] = "pitt/h100", "pitt", "5.10" }),
				with(bridges2(), func(t *Target) { t.ID, t.Site, t.Software["relion"] = "pitt/v100", "pitt", "4.1" }),
			},
			rtt: rttFrom(map[string]float64{"psc": 9.8, "pitt": 9.8}),
			want: result{
				ranked: []string{
					"pitt/h100: 9.8 ms from rutgers's data, no queue, 12 of 64 GPUs free; ranked first, tied with psc/bridges2-gpu on estimated start; the tie is broken by ID",
					"psc/bridges2-gpu: 9.8 ms from rutgers's data, no queue, 12 of 64 GPUs free; ranked 2nd, tied with pitt/h100 on estimated start; the tie is broken by ID",
				},
				excluded: []string{
					"pitt/v100: runs relion 4.1; the job needs >=5.0",
					"rutgers/gpu-ws1: does not run relion, which the job needs (>=5.0)",
				},
			},
		},
		{
			name: "unknown RTT ranks after known",
			job:  Job{DataSite: "rutgers", GPUs: 1, Software: cryosparc("*")},
			targets: []Target{
				cloudlet(),
				with(bridges2(), func(t *Target) { t.QueueWait = 90 * time.Minute }),
				with(cloudlet(), func(t *Target) { t.ID = "fabric-dc/cloudlet-cpu"; t.GPUsFree = 1 }),
			},
			rtt: rttFrom(map[string]float64{"psc": 9.8}),
			want: result{ranked: []string{
				"psc/bridges2-gpu: 9.8 ms from rutgers's data, 1 h 30 min queue, 12 of 64 GPUs free; ranked first because it has the shortest estimated start",
				"fabric-dc/cloudlet-gpu: RTT from rutgers unknown, no queue, 2 of 2 GPUs free; ranked 2nd, after every target with a known RTT, because the time to move rutgers's data here cannot be estimated",
				"fabric-dc/cloudlet-cpu: RTT from rutgers unknown, no queue, 1 of 2 GPUs free; ranked 3rd, after fabric-dc/cloudlet-gpu, because the job would take more of its free GPUs (1 of 1 vs 1 of 2)",
			}},
		},
		{
			name:    "no RTT known at all",
			job:     Job{DataSite: "rutgers", GPUs: 2},
			targets: []Target{cloudlet(), bridges2()},
			rtt:     nil,
			want: result{ranked: []string{
				"psc/bridges2-gpu: RTT from rutgers unknown, no queue, 12 of 64 GPUs free; ranked first because it has the shortest estimated start, leaving out the transfer of the data, whose RTT is unknown",
				"fabric-dc/cloudlet-gpu: RTT from rutgers unknown, no queue, 2 of 2 GPUs free; ranked 2nd, after psc/bridges2-gpu, because the job would take more of its free GPUs (2 of 2 vs 2 of 12)",
			}},
		},
		{
			name: "CPU job without a data site",
			job:  Job{},
			targets: []Target{
				with(cloudlet(), func(t *Target) { t.ID, t.GPUs, t.GPUsFree = "fabric-dc/cpu", 0, 0 }),
				with(bridges2(), func(t *Target) { t.QueueWait = 30 * time.Second }),
			},
			rtt: fromRutgers,
			want: result{ranked: []string{
				"fabric-dc/cpu: no data site given, no queue, no GPUs; ranked first because it has the shortest estimated start",
				"psc/bridges2-gpu: no data site given, 30 s queue, 12 of 64 GPUs free; ranked 2nd, after fabric-dc/cpu, because of its longer queue (30 s vs none)",
			}},
		},
		{
			name:    "nothing to rank",
			job:     Job{DataSite: "rutgers", GPUs: 1},
			targets: nil,
			rtt:     fromRutgers,
			want:    result{},
		},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			ranked, excluded := Rank(test.job, test.targets, test.rtt, DefaultWeights())
			if got := summarize(ranked, excluded); !reflect.DeepEqual(got, test.want) {
				t.Errorf("Rank(%+v) =\n%s\nwant\n%s", test.job, show(got), show(test.want))
			}
			checkRanking(t, test.job, test.targets, ranked, excluded)
		})
	}
}

func show(r result) string {
	return "ranked:\n\t" + strings.Join(r.ranked, "\n\t") + "\nexcluded:\n\t" + strings.Join(r.excluded, "\n\t")
}

func TestRankExclusions(t *testing.T) {
	job := Job{DataSite: "rutgers", GPUs: 4, Software: map[string]string{"cryosparc": "4.6.2", "relion": "5.0"}}
	base := Target{ID: "psc/x", Site: "psc", GPUs: 8, GPUsFree: 8, Status: StatusAvailable, Reachable: true,
		Software: map[string]string{"cryosparc": "4.6.2", "relion": "5.0"}}
	tests := []struct {
		name   string
		change func(*Target)
		want   string
	}{
		{"unreachable", func(t *Target) { t.Reachable = false },
			"psc/x: unreachable: the broker of psc is down or cut off, so the target cannot take jobs now"},
		{"unreachable says nothing else", func(t *Target) { t.Reachable, t.Status, t.GPUsFree, t.Software = false, "offline", 0, nil },
			"psc/x: unreachable: the broker of psc is down or cut off, so the target cannot take jobs now"},
		{"maintenance", func(t *Target) { t.Status = "maintenance" },
			`psc/x: status "maintenance", not available`},
		{"no status", func(t *Target) { t.Status = "" },
			`psc/x: status "", not available`},
		{"too few free GPUs", func(t *Target) { t.GPUsFree = 2 },
			"psc/x: needs 4 GPUs, 2 free of 8"},
		{"too few GPUs", func(t *Target) { t.GPUs, t.GPUsFree = 2, 2 },
			"psc/x: needs 4 GPUs, has 2 in all"},
		{"missing software", func(t *Target) { delete(t.Software, "relion") },
			"psc/x: does not run relion, which the job needs (5.0)"},
		{"cryosparc mismatch", func(t *Target) { t.Software["cryosparc"] = "4.5.3" },
			"psc/x: runs cryosparc 4.5.3; the job needs 4.6.2 to match the master"},
		{"other mismatch", func(t *Target) { t.Software["relion"] = "5" },
			"psc/x: runs relion 5; the job needs exactly 5.0"},
		{"every reason", func(t *Target) { t.Status, t.GPUsFree, t.Software = "offline", 0, map[string]string{"relion": "4.1"} },
			`psc/x: status "offline", not available; needs 4 GPUs, 0 free of 8; does not run cryosparc, which the job needs (4.6.2); runs relion 4.1; the job needs exactly 5.0`},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			target := with(base, test.change)
			ranked, excluded := Rank(job, []Target{target}, fromRutgers, DefaultWeights())
			if len(ranked) != 0 || len(excluded) != 1 || excluded[0].Reason != test.want {
				t.Fatalf("Rank(%+v) = %+v, %+v; want it excluded with %q", target, ranked, excluded, test.want)
			}
			if !reflect.DeepEqual(excluded[0].Target, target) {
				t.Errorf("Rank excluded %+v, want the target itself %+v", excluded[0].Target, target)
			}
		})
	}
	// The base target itself runs the job.
	if ranked, _ := Rank(job, []Target{base}, fromRutgers, DefaultWeights()); len(ranked) != 1 {
		t.Errorf("Rank(base) ranked %d targets, want 1", len(ranked))
	}
}

func TestRankScores(t *testing.T) {
	job := Job{DataSite: "rutgers", GPUs: 4, Software: cryosparc("4.6.2")}
	ranked, _ := Rank(job, []Target{gpuWS1(), bridges2(), with(cloudlet(), func(t *Target) {
		t.Site, t.ID, t.GPUs, t.GPUsFree, t.Software = "far", "far/x", 8, 8, cryosparc("4.6.2")
	})},
		fromRutgers, DefaultWeights())
	// Estimates: psc 9.8 s of RTT + 30 s × 4/12; rutgers 30 s × 4/4; far
	// (RTT unknown) 30 s × 4/8.
	want := map[string]struct {
		score float64
		rtt   time.Duration
		has   bool
	}{
		"psc/bridges2-gpu": {50 + 50*60/(60+9.8+10), 9800 * time.Microsecond, true},
		"rutgers/gpu-ws1":  {50 + 50*60/(60+30.0), 0, true},
		"far/x":            {50 * 60 / (60 + 15.0), 0, false},
	}
	for _, r := range ranked {
		w := want[r.Target.ID]
		if math.Abs(r.Score-w.score) > 1e-9 || r.RTT != w.rtt || r.HasRTT != w.has {
			t.Errorf("Rank: %s score %v, RTT %v (%v), want %v, %v (%v)", r.Target.ID, r.Score, r.RTT, r.HasRTT, w.score, w.rtt, w.has)
		}
	}
	if len(ranked) != 3 {
		t.Fatalf("Rank ranked %d targets, want 3", len(ranked))
	}
}

func TestRankWeights(t *testing.T) {
	job := Job{DataSite: "rutgers", GPUs: 4}
	targets := []Target{gpuWS1(), bridges2()}
	order := func(w Weights) string {
		ranked, _ := Rank(job, targets, fromRutgers, w)
		var ids []string
		for _, r := range ranked {
			ids = append(ids, r.Target.ID)
		}
		return strings.Join(ids, " ")
	}
	for _, test := range []struct {
		name string
		w    Weights
		want string
	}{
		{"defaults", DefaultWeights(), "psc/bridges2-gpu rutgers/gpu-ws1"},
		{"zero means defaults", Weights{}, "psc/bridges2-gpu rutgers/gpu-ws1"},
		{"distance dear", Weights{RoundTrips: 10000}, "rutgers/gpu-ws1 psc/bridges2-gpu"},
		{"crowding ignored", Weights{Crowding: -1}, "rutgers/gpu-ws1 psc/bridges2-gpu"},
	} {
		if got := order(test.w); got != test.want {
			t.Errorf("Rank with %s weights %+v = %s, want %s", test.name, test.w, got, test.want)
		}
	}
}

func TestRankCallsRTTOncePerSite(t *testing.T) {
	calls := map[string]int{}
	rtt := func(site string) (time.Duration, bool) {
		calls[site]++
		if site == "bad" {
			return -time.Millisecond, true // a broken estimate counts as unknown
		}
		return 5 * time.Millisecond, true
	}
	var targets []Target
	for i, site := range []string{"psc", "psc", "bad", "psc", "rutgers", "bad"} {
		targets = append(targets, Target{ID: fmt.Sprintf("%s/t%d", site, i), Site: site, GPUs: 1, GPUsFree: 1, Status: StatusAvailable, Reachable: true})
	}
	ranked, _ := Rank(Job{DataSite: "rutgers", GPUs: 1}, targets, rtt, DefaultWeights())
	if want := map[string]int{"psc": 1, "bad": 1}; !maps.Equal(calls, want) {
		t.Errorf("Rank called rtt %v times per site, want %v (never for the data's own site)", calls, want)
	}
	for _, r := range ranked {
		if r.Target.Site == "bad" && r.HasRTT {
			t.Errorf("Rank: %s has RTT %v, want unknown for a negative estimate", r.Target.ID, r.RTT)
		}
	}
}

// checkRanking checks what Rank promises for any input: the targets are
// split into ranked and excluded without loss or duplication, the ranked
// ones are sorted by score (ties by ID), scores fall in their bands, every
// ranked target can run the job and every excluded one cannot, and each
// reason starts with its target's ID and is one sentence.
func checkRanking(t testing.TB, job Job, targets []Target, ranked []Ranked, excluded []Excluded) {
	t.Helper()
	var in, out []string
	for _, x := range targets {
		in = append(in, fmt.Sprintf("%+v", x))
	}
	for _, r := range ranked {
		out = append(out, fmt.Sprintf("%+v", r.Target))
	}
	for _, e := range excluded {
		out = append(out, fmt.Sprintf("%+v", e.Target))
	}
	slices.Sort(in)
	slices.Sort(out)
	if !slices.Equal(in, out) {
		t.Errorf("Rank(%+v): ranked and excluded targets\n%q\nwant a permutation of the input\n%q", job, out, in)
	}
	for i, r := range ranked {
		if i > 0 {
			prev := ranked[i-1]
			if prev.Score < r.Score || (prev.Score == r.Score && prev.Target.ID > r.Target.ID) {
				t.Errorf("Rank(%+v): %s (score %v) ranked after %s (score %v), want by score, then ID", job, r.Target.ID, r.Score, prev.Target.ID, prev.Score)
			}
		}
		if r.HasRTT && (r.Score <= 50 || r.Score > 100) || !r.HasRTT && (r.Score <= 0 || r.Score > 50) {
			t.Errorf("Rank(%+v): %s score %v with HasRTT %v, want (50, 100] with an RTT, (0, 50] without", job, r.Target.ID, r.Score, r.HasRTT)
		}
		if why := exclusions(job, max(job.GPUs, 0), r.Target); why != "" {
			t.Errorf("Rank(%+v) ranked %s, which cannot run it: %s", job, r.Target.ID, why)
		}
		if !strings.HasPrefix(r.Reason, r.Target.ID+": ") || strings.Contains(r.Reason, ". ") || strings.Contains(r.Reason, "\n") {
			t.Errorf("Rank(%+v): reason %q, want one sentence starting %q", job, r.Reason, r.Target.ID+": ")
		}
	}
	for i, e := range excluded {
		if i > 0 && excluded[i-1].Target.ID > e.Target.ID {
			t.Errorf("Rank(%+v): excluded %s after %s, want by ID", job, e.Target.ID, excluded[i-1].Target.ID)
		}
		if e.Reason == e.Target.ID+": " || !strings.HasPrefix(e.Reason, e.Target.ID+": ") {
			t.Errorf("Rank(%+v): %s excluded with reason %q, want its ID and why", job, e.Target.ID, e.Reason)
		}
	}
}

// TestRankProperties ranks random federations: on top of checkRanking,
// the result must not depend on the order of the targets, and Rank must
// not change its arguments.
func TestRankProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sites := []string{"rutgers", "psc", "fabric-dc", "nysbc", "pitt"}
	versions := []string{"4.5.3", "4.6.2", "5.0", "5.10"}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	for iter := range 500 {
		rtts := map[string]float64{}
		for _, s := range sites {
			if rng.IntN(4) > 0 {
				rtts[s] = float64(rng.IntN(5)) * 7.5 // coarse, so that ties happen
			}
		}
		var targets []Target
		for i := range rng.IntN(12) {
			site := pick(sites)
			gpus := rng.IntN(4) * 4
			sw := map[string]string{}
			for _, pkg := range []string{"cryosparc", "relion"} {
				if rng.IntN(3) > 0 {
					sw[pkg] = pick(versions)
				}
			}
			status := StatusAvailable
			if rng.IntN(6) == 0 {
				status = pick([]string{"maintenance", "offline"})
			}
			targets = append(targets, Target{
				ID: fmt.Sprintf("%s/t%d", site, i), Site: site, Kind: pick([]string{"local", "slurm"}),
				GPUs: gpus, GPUsFree: rng.IntN(gpus + 1), QueueWait: time.Duration(rng.IntN(3)) * time.Minute,
				Software: sw, Status: status, Reachable: rng.IntN(8) > 0,
			})
		}
		job := Job{DataSite: pick(sites), GPUs: rng.IntN(5), Software: map[string]string{}}
		if rng.IntN(2) == 0 {
			job.Software["cryosparc"] = pick(versions)
		}
		if rng.IntN(3) == 0 {
			job.Software["relion"] = pick([]string{">=5.0", "<5.0", "*", "5.10"})
		}
		if err := job.Validate(); err != nil {
			t.Fatalf("iteration %d: Validate(%+v) = %v", iter, job, err)
		}

		before := fmt.Sprintf("%+v %+v", job, targets)
		ranked, excluded := Rank(job, targets, rttFrom(rtts), DefaultWeights())
		if after := fmt.Sprintf("%+v %+v", job, targets); after != before {
			t.Fatalf("iteration %d: Rank changed its arguments:\n%s\nto\n%s", iter, before, after)
		}
		checkRanking(t, job, targets, ranked, excluded)

		shuffled := slices.Clone(targets)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		r2, e2 := Rank(job, shuffled, rttFrom(rtts), DefaultWeights())
		if !reflect.DeepEqual(summarize(ranked, excluded), summarize(r2, e2)) {
			t.Fatalf("iteration %d: Rank depends on the order of the targets:\n%s\nthen\n%s", iter, show(summarize(ranked, excluded)), show(summarize(r2, e2)))
		}
		if t.Failed() {
			t.Fatalf("iteration %d: job %+v, targets %+v", iter, job, targets)
		}
	}
}

func TestJobValidate(t *testing.T) {
	for _, test := range []struct {
		job  Job
		want string
	}{
		{Job{GPUs: 1, Software: map[string]string{"cryosparc": "4.6.2", "relion": ">=5.0", "ctffind": "*", "motioncor2": "", "gctf": "==1.18"}}, ""},
		{Job{GPUs: -1}, "a job needs 0 GPUs or more, not -1"},
		{Job{Software: map[string]string{"cryosparc": "~4.6"}}, "software cryosparc: give a version such as 4.6.2 (exactly that one), >=5.0, >5.0, <=5.0, <5.0, or * for any"},
		{Job{Software: map[string]string{"relion": ">="}}, "software relion: give a version such as 4.6.2 (exactly that one), >=5.0, >5.0, <=5.0, <5.0, or * for any"},
		{Job{Software: map[string]string{"cryosparc=4.6.2": ""}}, `software "cryosparc=4.6.2" is not a package name; give one such as cryosparc=4.6.2`},
	} {
		err := test.job.Validate()
		if test.want == "" {
			if err != nil {
				t.Errorf("%+v.Validate() = %v, want nil", test.job, err)
			}
			continue
		}
		if err == nil || err.Error() != test.want || !errors.Is(err, broker.ErrInvalid) {
			t.Errorf("%+v.Validate() = %v, want %q (invalid argument)", test.job, err, test.want)
		}
	}
}
