package directory_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/storage/boltstate"
)

// The audit fixture: entries over one year from 1000 users at 5 sites on
// 50 resources, as the sites' agents would ship them.
var (
	benchSites     = []string{"rutgers", "psc", "ncsa", "tacc", "sdsc"}
	benchYearStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

const (
	benchUsers        = 1000
	benchResPerSite   = 10
	benchYear         = 365 * 24 * time.Hour
	benchMonth        = 30 * 24 * time.Hour
	benchPerCommand   = 1000 // entries in one AppendAudit
	benchPerBatch     = 50   // commands in one ApplyBatch
	benchDefaultN     = 1_000_000
	benchDefaultShort = 50_000
)

func benchUser(u int) string { return fmt.Sprintf("user-%04d", u) }

// benchAuditN is the number of entries to build: LABFED_AUDIT_N, else 1M
// (50k with -short).
func benchAuditN(tb testing.TB) int {
	tb.Helper()
	if s := os.Getenv("LABFED_AUDIT_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < benchPerCommand {
			tb.Fatalf("LABFED_AUDIT_N=%q is not a number of entries of at least %d", s, benchPerCommand)
		}
		return n
	}
	if testing.Short() {
		return benchDefaultShort
	}
	return benchDefaultN
}

// auditGen makes a deterministic stream of agent-shipped entries. Times
// rise through the year with jitter, as entries reach the log roughly in
// the order they happen.
type auditGen struct {
	r      *rand.Rand
	n, i   int
	srcSeq map[string]uint64
}

func newAuditGen(n int) *auditGen {
	return &auditGen{r: rand.New(rand.NewPCG(1, 2)), n: n, srcSeq: map[string]uint64{}}
}

// command returns one AppendAudit of up to k entries from one site's agent.
func (g *auditGen) command(k int) *directory.Command {
	site := benchSites[g.r.IntN(len(benchSites))]
	agent := site + "/agent/agent-1"
	step := benchYear / time.Duration(g.n)
	es := make([]audit.Entry, 0, k)
	for ; len(es) < k; g.i++ {
		u := g.r.IntN(benchUsers)
		e := audit.Entry{
			Time:      benchYearStart.Add(time.Duration(g.i)*step + time.Duration(g.r.Int64N(int64(step)+1))),
			Actor:     benchUser(u),
			ActorSite: benchSites[u%len(benchSites)],
			Resource:  fmt.Sprintf("%s/res-%02d", site, g.r.IntN(benchResPerSite)),
			Site:      site,
			Decision:  audit.Allow,
			Source:    agent,
		}
		switch x := g.r.IntN(10); {
		case x < 3: // the agent acts for the user
			e.Actor, e.Subject, e.Action = agent, benchUser(u), audit.ActionMount
		case x < 5:
			e.Action = audit.ActionSessionOpen
			e.Details = map[string]string{"session": fmt.Sprintf("%012x", g.r.Uint64()>>16)}
		case x < 7:
			e.Action = audit.ActionSessionClose
			e.Details = map[string]string{audit.DetailSeconds: strconv.Itoa(g.r.IntN(36000)), audit.DetailEnded: "closed"}
		case x < 9:
			e.Action = audit.ActionJobSubmit
			e.Grants = []string{fmt.Sprintf("g-%d", g.r.IntN(5000))}
		default:
			e.Action = audit.ActionJobFinish
			e.Details = map[string]string{audit.DetailSeconds: strconv.Itoa(g.r.IntN(86400)), audit.DetailGPUs: strconv.Itoa(g.r.IntN(8))}
		}
		if g.r.IntN(20) == 0 {
			e.Decision, e.Reason = audit.Deny, "no grant covers "+e.Resource
		}
		g.srcSeq[agent]++
		e.SourceSeq = g.srcSeq[agent]
		es = append(es, e)
	}
	return &directory.Command{Time: es[len(es)-1].Time, Actor: agent, AppendAudit: &directory.AppendAudit{Entries: es}}
}

// buildAudit appends n generated entries to d in batches of commands.
//
// The batches start small and double: bbolt splits a node only when a
// transaction commits, so a large first transaction would insert every
// index key into one ever-growing node, each insert moving the keys after
// it (quadratic: 10 s for the first 50,000 entries on its own).
func buildAudit(tb testing.TB, d *directory.Directory, n int) {
	tb.Helper()
	g := newAuditGen(n)
	for batch := 1; g.i < n; batch = min(2*batch, benchPerBatch) {
		var cmds []*directory.Command
		for len(cmds) < batch && g.i < n {
			cmds = append(cmds, g.command(min(benchPerCommand, n-g.i)))
		}
		res, err := d.ApplyBatch(cmds)
		if err != nil {
			tb.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil {
				tb.Fatalf("ApplyBatch: command %d: %v", i, r.Err)
			}
		}
	}
}

// copyState writes a consistent copy of st to path and opens it with bbolt
// directly: the store holds its own file locked.
func copyState(tb testing.TB, st *boltstate.Store, path string) *bolt.DB {
	tb.Helper()
	sn, err := st.Snapshot()
	if err != nil {
		tb.Fatal(err)
	}
	defer sn.Release()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = sn.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// rawScanNs is the best of reps full cursor scans of the audit bucket in
// one read transaction, touching every value.
func rawScanNs(tb testing.TB, db *bolt.DB, want, reps int) float64 {
	tb.Helper()
	best := time.Duration(1<<63 - 1)
	for range reps {
		var n, bytes int
		start := time.Now()
		_ = db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte("audit")).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				n++
				bytes += len(v)
			}
			return nil
		})
		best = min(best, time.Since(start))
		if n != want || bytes == 0 {
			tb.Fatalf("raw scan read %d entries (%d bytes), want %d", n, bytes, want)
		}
	}
	return float64(best.Nanoseconds())
}

// rawReadNs is the time of one Get of a random audit entry, in one read
// transaction as a query makes its reads.
func rawReadNs(tb testing.TB, db *bolt.DB, entries, reads int) float64 {
	tb.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	keys := make([][]byte, reads)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "%020d", 1+r.IntN(entries))
	}
	var bytes int
	start := time.Now()
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		for _, k := range keys {
			bytes += len(b.Get(k))
		}
		return nil
	})
	per := float64(time.Since(start).Nanoseconds()) / float64(reads)
	if bytes == 0 {
		tb.Fatal("raw reads found no entries")
	}
	return per
}

// BenchmarkAuditQueryOneUserMonth: one user's entries over one month, out
// of a year of entries, through the user index. Compared, in the same run,
// with a raw bbolt scan of the whole log (x_raw_scan: how many times
// faster than reading everything) and with one raw bbolt point read per
// entry returned (x_raw_read: 1 would be the index costing nothing).
func BenchmarkAuditQueryOneUserMonth(b *testing.B) {
	n := benchAuditN(b)
	// Sub-benchmarks share the fixture: the parent runs once.
	dir := b.TempDir()
	path := filepath.Join(dir, "state.db")
	st, err := boltstate.Create(path, directory.Buckets())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d := directory.New(st)
	start := time.Now()
	buildAudit(b, d, n)
	took := time.Since(start)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d entries in %v (%.0f entries/s); state file %.0f MiB", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), float64(fi.Size())/(1<<20))
	raw := copyState(b, st, filepath.Join(dir, "copy.db"))

	// The queries, each with what it returns and how many entries of the
	// user's the index makes it read.
	type query struct {
		q                  directory.AuditQuery
		returned, examined int
	}
	r := rand.New(rand.NewPCG(5, 6))
	qs := make([]query, 64)
	for i := range qs {
		user := benchUser(r.IntN(benchUsers))
		since := benchYearStart.Add(time.Duration(r.IntN(12)) * benchMonth)
		qs[i].q = directory.AuditQuery{Filter: audit.Filter{User: user, Since: since, Until: since.Add(benchMonth)}}
		got, err := d.AuditEntries(qs[i].q)
		if err != nil {
			b.Fatal(err)
		}
		all, err := d.AuditEntries(directory.AuditQuery{Filter: audit.Filter{User: user}})
		if err != nil {
			b.Fatal(err)
		}
		want := 0
		for _, e := range all {
			if qs[i].q.Filter.Match(e) {
				want++
			}
		}
		if len(got) != want {
			b.Fatalf("AuditEntries(%+v) = %d entries; %d of the user's match", qs[i].q.Filter, len(got), want)
		}
		qs[i].returned, qs[i].examined = len(got), len(all)
	}

	b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
		scan := rawScanNs(b, raw, n, 3)
		read := rawReadNs(b, raw, n, 100_000)
		var i, returned, examined int
		for b.Loop() {
			q := qs[i%len(qs)]
			got, err := d.AuditEntries(q.q)
			if err != nil || len(got) != q.returned {
				b.Fatalf("AuditEntries(%+v) = %d entries, %v; want %d", q.q.Filter, len(got), err, q.returned)
			}
			returned += q.returned
			examined += q.examined
			i++
		}
		b.StopTimer()
		per := float64(b.Elapsed().Nanoseconds()) / float64(i)
		// Measure the limits again after the run and average, so a change
		// in the machine's load shows in both figures.
		scan = (scan + rawScanNs(b, raw, n, 3)) / 2
		read = (read + rawReadNs(b, raw, n, 100_000)) / 2
		b.ReportMetric(float64(returned)/float64(i), "returned/op")
		b.ReportMetric(float64(examined)/float64(i), "examined/op")
		b.ReportMetric(scan, "raw_scan_ns")
		b.ReportMetric(read, "raw_read_ns")
		b.ReportMetric(scan/per, "x_raw_scan")
		b.ReportMetric(read*float64(returned)/float64(i)/per, "x_raw_read")
	})
}

// BenchmarkAuditAppend: appending agent entries, one command at a time
// through Apply, 1 or 100 entries per command. Compared with a directory
// write (AddUser of a new name, which also writes its own audit entry)
// applied the same number of times in the same run: x_dir_write is append
// ns per command over directory-write ns per command.
//
// The reference is not AddLock: every AddLock decodes every live lock to
// prune the lapsed ones, so its cost grows with the number of locks.
func BenchmarkAuditAppend(b *testing.B) {
	for _, k := range []int{1, 100} {
		b.Run(fmt.Sprintf("entries=%d", k), func(b *testing.B) {
			// Generate the commands first: only applying them is timed.
			g := newAuditGen(1 << 30)
			cmds := make([]*directory.Command, b.N)
			for i := range cmds {
				cmds[i] = g.command(k)
			}
			d := newDir(b)
			b.ResetTimer()
			for _, c := range cmds {
				if res := d.Apply(c); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
			b.StopTimer()
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)

			ref := newDir(b)
			must(b, ref, &directory.Command{AddSite: &directory.AddSite{Name: "rutgers", UIDRange: rng(200000, 299999), GIDRange: rng(200000, 299999)}})
			for i := range cmds {
				name := fmt.Sprintf("user-%08d", i)
				cmds[i] = &directory.Command{Time: benchYearStart.Add(time.Duration(i) * time.Second), Actor: "admin",
					AddUser: &directory.AddUser{Name: name, Email: name + "@rutgers.edu", Home: "rutgers"}}
			}
			start := time.Now()
			for _, c := range cmds {
				if res := ref.Apply(c); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
			dirPer := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			b.ReportMetric(float64(k)*1e9/per, "entries/s")
			b.ReportMetric(dirPer, "dir_write_ns")
			b.ReportMetric(per/dirPer, "x_dir_write")
		})
	}
}
