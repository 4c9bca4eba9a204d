package directory_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/storage/boltstate"
)

func entries(t *testing.T, d *directory.Directory, q directory.AuditQuery) []*audit.Entry {
	t.Helper()
	es, err := d.AuditEntries(q)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func actions(es []*audit.Entry) string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%d:%s:%s", e.Seq, e.Action, e.Decision))
	}
	return strings.Join(out, " ")
}

// TestAuditRecordsEveryCommand: each directory command, applied or refused,
// leaves one chained entry naming who, what, where and why.
func TestAuditRecordsEveryCommand(t *testing.T) {
	d := fixture(t) // 6 commands
	g := must(t, d, grant("user:alice", "rutgers/krios-g4", "instrument.operate")).(*directory.Grant)
	// Refused: overlapping grant. It changes no record, but is recorded.
	res := d.Apply(&directory.Command{Time: t0, Actor: "rhea", AddGrant: &directory.AddGrant{Subject: "user:alice", Resource: "rutgers/krios-g4", Actions: []string{"instrument.operate"}}})
	if res.Err == nil {
		t.Fatal("overlapping grant applied")
	}
	all := entries(t, d, directory.AuditQuery{})
	if got, want := actions(all), "1:site.add:allow 2:site.add:allow 3:user.add:allow 4:user.add:allow 5:project.add:allow 6:project.add_member:allow 7:grant.add:allow 8:grant.add:deny"; got != want {
		t.Fatalf("entries %s\nwant    %s", got, want)
	}
	e := all[6]
	if e.Actor != "admin" || e.Subject != "alice" || e.Resource != "rutgers/krios-g4" || e.Site != "rutgers" || len(e.Grants) != 1 || e.Grants[0] != g.ID || !e.Time.Equal(t0) {
		t.Errorf("grant entry %+v", e)
	}
	if r := all[7]; r.Actor != "rhea" || !strings.Contains(r.Reason, "overlapping") {
		t.Errorf("refusal entry %+v, want rhea's refusal with the reason", r)
	}
	if bad, why, n, err := d.VerifyAudit(); err != nil || why != nil || n != 8 {
		t.Errorf("VerifyAudit = %d %v %d %v, want an intact chain of 8", bad, why, n, err)
	}
	seq, hash, _ := d.AuditHead()
	if seq != 8 || hash != all[7].Hash || all[7].PrevHash != all[6].Hash {
		t.Errorf("head %d %s; last entry %+v", seq, hash, all[7])
	}
}

// TestAuditDeterministic: two replicas applying the same commands hold the
// same chain.
func TestAuditDeterministic(t *testing.T) {
	a, b := fixture(t), fixture(t)
	for _, d := range []*directory.Directory{a, b} {
		must(t, d, grant("user:bob", "psc/bridges2", "compute.create"))
	}
	_, ha, _ := a.AuditHead()
	_, hb, _ := b.AuditHead()
	if ha != hb || ha == "" {
		t.Errorf("audit heads differ: %s vs %s", ha, hb)
	}
}

// TestAppendAuditExactlyOnce: an agent's entries are appended in order;
// redelivered ones (same source, seq already recorded) are skipped; an
// invalid batch is refused whole.
func TestAppendAuditExactlyOnce(t *testing.T) {
	d := fixture(t)
	ent := func(seq uint64, action string) audit.Entry {
		return audit.Entry{Time: t0.Add(time.Duration(seq) * time.Minute), Actor: "alice", ActorSite: "rutgers", Action: action, Resource: "rutgers/krios-g4", Site: "rutgers", Decision: audit.Allow, Source: "rutgers/agent/agent-1", SourceSeq: seq}
	}
	must(t, d, &directory.Command{Actor: "rutgers/agent/agent-1", AppendAudit: &directory.AppendAudit{Entries: []audit.Entry{ent(1, audit.ActionSessionOpen), ent(2, audit.ActionSessionClose)}}})
	// The acknowledgement was lost: 2 comes again, with 3.
	must(t, d, &directory.Command{Actor: "rutgers/agent/agent-1", AppendAudit: &directory.AppendAudit{Entries: []audit.Entry{ent(2, audit.ActionSessionClose), ent(3, audit.ActionSessionOpen)}}})
	bad := ent(4, "")
	if res := d.Apply(&directory.Command{Time: t0, Actor: "rutgers/agent/agent-1", AppendAudit: &directory.AppendAudit{Entries: []audit.Entry{ent(4, audit.ActionSessionClose), bad}}}); res.Err == nil {
		t.Fatal("a batch with an entry without action was appended")
	}
	got := entries(t, d, directory.AuditQuery{Filter: audit.Filter{Resource: "rutgers/krios-g4"}})
	if s := actions(got); s != "7:session.open:allow 8:session.close:allow 9:session.open:allow" {
		t.Fatalf("agent entries: %s", s)
	}
	if got[2].SourceSeq != 3 {
		t.Errorf("last entry %+v", got[2])
	}
}

// TestAuditQueries: the indexes give the same answers as a full scan.
func TestAuditQueries(t *testing.T) {
	d := fixture(t)
	for i := range 30 {
		user := []string{"alice", "bob"}[i%2]
		must(t, d, &directory.Command{Time: t0.Add(time.Duration(i) * time.Hour), Actor: "rutgers/agent/a", AppendAudit: &directory.AppendAudit{Entries: []audit.Entry{{
			Time: t0.Add(time.Duration(i) * time.Hour), Actor: user, Action: audit.ActionSessionOpen, Resource: []string{"rutgers/krios-g4", "psc/bridges2", "rutgers/aquilos"}[i%3], Site: []string{"rutgers", "psc", "rutgers"}[i%3], Decision: audit.Allow,
		}}}})
	}
	for _, f := range []audit.Filter{
		{User: "alice"}, {Site: "psc"}, {Resource: "rutgers/krios-g4"}, {Since: t0.Add(10 * time.Hour), Until: t0.Add(20 * time.Hour)},
		{User: "bob", Since: t0.Add(5 * time.Hour), Until: t0.Add(25 * time.Hour)}, {Action: audit.ActionSessionOpen, Site: "rutgers"},
	} {
		var want []string
		for _, e := range entries(t, d, directory.AuditQuery{}) {
			if f.Match(e) {
				want = append(want, fmt.Sprint(e.Seq))
			}
		}
		var got []string
		for _, e := range entries(t, d, directory.AuditQuery{Filter: f}) {
			got = append(got, fmt.Sprint(e.Seq))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") || len(want) == 0 {
			t.Errorf("filter %+v: %v, want %v", f, got, want)
		}
		// Newest first, limited, after a sequence number.
		newest := entries(t, d, directory.AuditQuery{Filter: f, Newest: true, Limit: 2})
		if len(newest) != min(2, len(want)) || fmt.Sprint(newest[0].Seq) != want[len(want)-1] {
			t.Errorf("filter %+v newest: %v", f, actions(newest))
		}
		var first uint64
		fmt.Sscan(want[0], &first)
		rest := entries(t, d, directory.AuditQuery{Filter: f, After: first})
		if len(rest) != len(want)-1 {
			t.Errorf("filter %+v after %d: %d entries, want %d", f, first, len(rest), len(want)-1)
		}
	}
}

// TestVerifyAuditFindsTampering: a byte flipped in a stored entry, or the
// last entries removed, and VerifyAudit names the entry.
func TestVerifyAuditFindsTampering(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := boltstate.Create(path, directory.Buckets())
	if err != nil {
		t.Fatal(err)
	}
	d := directory.New(st)
	must(t, d, &directory.Command{AddSite: &directory.AddSite{Name: "rutgers", UIDRange: rng(200000, 200009), GIDRange: rng(200000, 200019)}})
	for _, n := range []string{"alice", "bob", "carol"} {
		must(t, d, &directory.Command{Actor: "coord", AddUser: &directory.AddUser{Name: n, Email: n + "@x.org", Home: "rutgers"}})
	}
	st.Close()

	// Change bob's entry (3) on disk: "bob" becomes "bog".
	tamper(t, path, func(b *bolt.Bucket) {
		k := []byte(fmt.Sprintf("%020d", 3))
		v := []byte(strings.Replace(string(b.Get(k)), `"subject":"bob"`, `"subject":"bog"`, 1))
		if err := b.Put(k, v); err != nil {
			t.Fatal(err)
		}
	})
	st, err = boltstate.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	d = directory.New(st)
	bad, why, _, err := d.VerifyAudit()
	if err != nil || bad != 3 || why == nil || !strings.Contains(why.Error(), "entry 3 does not match its hash") {
		t.Fatalf("VerifyAudit after a changed entry = %d, %v, %v; want entry 3", bad, why, err)
	}
	st.Close()

	// Remove the last entry.
	tamper(t, path, func(b *bolt.Bucket) {
		if err := b.Delete([]byte(fmt.Sprintf("%020d", 4))); err != nil {
			t.Fatal(err)
		}
	})
	st, err = boltstate.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bad, why, _, _ = directory.New(st).VerifyAudit()
	if bad != 3 || why == nil {
		t.Fatalf("VerifyAudit = %d, %v; the changed entry 3 comes first", bad, why)
	}
}

func tamper(t *testing.T, path string, fn func(*bolt.Bucket)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { fn(tx.Bucket([]byte("audit"))); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestArchiveAudit: archiving removes the oldest entries and their index
// keys, records the checkpoint, and the rest still verifies from it; a
// hash that does not match the log is refused and changes nothing.
func TestArchiveAudit(t *testing.T) {
	d := fixture(t) // entries 1..6
	all := entries(t, d, directory.AuditQuery{})
	if res := d.Apply(&directory.Command{Time: t0, Actor: "coord", ArchiveAudit: &directory.ArchiveAudit{From: 1, Through: 4, Hash: all[2].Hash}}); res.Err == nil {
		t.Fatal("an archive naming the wrong hash was applied")
	}
	must(t, d, &directory.Command{Actor: "coord", ArchiveAudit: &directory.ArchiveAudit{From: 1, Through: 4, Hash: all[3].Hash}})
	cp, err := d.AuditCheckpoint()
	if err != nil || cp.Seq != 4 || cp.Hash != all[3].Hash {
		t.Fatalf("checkpoint %+v, %v", cp, err)
	}
	rest := entries(t, d, directory.AuditQuery{})
	// 5, 6, the refused archive (7) and the archive itself (8).
	if got := actions(rest); got != "5:project.add:allow 6:project.add_member:allow 7:audit.archive:deny 8:audit.archive:allow" {
		t.Fatalf("after archiving: %s", got)
	}
	if es := entries(t, d, directory.AuditQuery{Filter: audit.Filter{User: "alice"}}); len(es) != 1 || es[0].Seq != 6 {
		t.Errorf("index still names archived entries: %s", actions(es))
	}
	if bad, why, n, err := d.VerifyAudit(); err != nil || why != nil || n != 4 {
		t.Errorf("VerifyAudit after archiving = %d %v %d %v", bad, why, n, err)
	}
	if res := d.Apply(&directory.Command{Time: t0, Actor: "coord", ArchiveAudit: &directory.ArchiveAudit{From: 1, Through: 3, Hash: all[2].Hash}}); res.Err == nil {
		t.Error("archiving entries already archived was applied")
	}
}

// TestAuditReviewCases: entries that arrive late (time order differs from
// sequence order) page without loss or repetition; a resource filter finds
// entries below the resource; submitted entries far from the command's
// time are refused; redelivered entries are not counted as recorded; an
// archive must start at the checkpoint.
func TestAuditReviewCases(t *testing.T) {
	d := fixture(t) // entries 1..6 at t0
	ag := func(seq uint64, at time.Time, res string) audit.Entry {
		return audit.Entry{Time: at, Actor: "alice", Action: audit.ActionSessionOpen, Resource: res, Site: "rutgers", Decision: audit.Allow, Source: "rutgers/agent/a", SourceSeq: seq}
	}
	now := t0.Add(3 * time.Hour)
	// 7 happened at +2h, 8 (delivered late) at +1h.
	v := must(t, d, &directory.Command{Time: now, Actor: "rutgers/agent/a", AppendAudit: &directory.AppendAudit{Entries: []audit.Entry{
		ag(1, t0.Add(2*time.Hour), "rutgers/raw/session-123"), ag(2, t0.Add(time.Hour), "rutgers/raw/session-124"),
	}}})
	if v != 2 {
		t.Errorf("recorded %v, want 2", v)
	}
	if v := must(t, d, &directory.Command{Time: now, Actor: "rutgers/agent/a", AppendAudit: &directory.AppendAudit{Entries: []audit.Entry{ag(2, t0.Add(time.Hour), "rutgers/raw/x")}}}); v != 0 {
		t.Errorf("a redelivered entry counted as recorded: %v", v)
	}
	f := audit.Filter{Since: t0.Add(30 * time.Minute)}
	var seqs []uint64
	for after := uint64(0); ; {
		es := entries(t, d, directory.AuditQuery{Filter: f, After: after, Limit: 1})
		if len(es) == 0 {
			break
		}
		seqs = append(seqs, es[0].Seq)
		after = es[0].Seq
	}
	if fmt.Sprint(seqs) != "[7 8]" {
		t.Errorf("paging from a time: %v, want [7 8]", seqs)
	}
	if es := entries(t, d, directory.AuditQuery{Filter: audit.Filter{Resource: "rutgers/raw"}}); actions(es) != "7:session.open:allow 8:session.open:allow" {
		t.Errorf("resource rutgers/raw: %s, want the two sessions below it", actions(es))
	}
	if es := entries(t, d, directory.AuditQuery{Filter: audit.Filter{Resource: "rutgers/raw/session-123"}}); len(es) != 1 || es[0].Seq != 7 {
		t.Errorf("resource rutgers/raw/session-123: %s", actions(es))
	}
	for _, at := range []time.Time{now.Add(10 * time.Minute), now.Add(-40 * 24 * time.Hour)} {
		if res := d.Apply(&directory.Command{Time: now, Actor: "rutgers/agent/a", AppendAudit: &directory.AppendAudit{Entries: []audit.Entry{ag(9, at, "rutgers/raw")}}}); res.Err == nil {
			t.Errorf("an entry timed %s appended at %s", at, now)
		}
	}
	all := entries(t, d, directory.AuditQuery{})
	if res := d.Apply(&directory.Command{Time: now, Actor: "coord", ArchiveAudit: &directory.ArchiveAudit{From: 2, Through: 4, Hash: all[3].Hash}}); res.Err == nil {
		t.Error("an archive that skips entry 1 was applied")
	}
}
