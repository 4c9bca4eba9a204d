package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
	"github.com/labfed/labfed/storage/auditqueue"
)

// TestAgentEntriesSurviveLostBroker: an agent records a session's entries
// while its broker is down; they wait in its bbolt queue and reach the
// log after the broker returns, in order, exactly once, chained after the
// directory's own entries.
func TestAgentEntriesSurviveLostBroker(t *testing.T) {
	f := newTrustFixture(t)
	cl, err := client.Dial(f.rut2.Addr(), client.Options{TLS: clientTLS(t, f.fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindAgent, Name: "agent-1"})), RetryFor: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	q, err := auditqueue.Open(filepath.Join(t.TempDir(), "audit-queue.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	ship := audit.NewShipper("rutgers/agent/agent-1#"+q.Generation(), q, cl.AuditSink(), audit.ShipperOptions{MaxBackoff: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ship.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	session := func(i int, action string) audit.Entry {
		e := audit.Entry{Time: time.Now().UTC(), Actor: "rita", ActorSite: "rutgers", Action: action, Resource: "rutgers/krios-g4", Site: "rutgers", Decision: audit.Allow,
			Details: map[string]string{"session": fmt.Sprint("s-", i)}}
		if action == audit.ActionSessionClose {
			e.Details[audit.DetailSeconds] = "1800"
		}
		return e
	}
	if err := ship.Record(session(0, audit.ActionSessionOpen)); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := ship.Flush(fctx); err != nil {
		t.Fatalf("flush while the broker is up: %v", err)
	}

	// The broker goes away in the middle of the session (again and again
	// in the long run of make integ).
	outages := 1
	if os.Getenv("LABFED_INTEG") != "" {
		outages = 10
	}
	want := []string{"session.open s-0"}
	next := 1
	for range outages {
		f.rut2.Close()
		for range 5 {
			for _, a := range []string{audit.ActionSessionClose, audit.ActionSessionOpen} {
				if err := ship.Record(session(next, a)); err != nil {
					t.Fatal(err)
				}
				want = append(want, fmt.Sprintf("%s s-%d", a, next))
			}
			next++
		}
		time.Sleep(500 * time.Millisecond) // deliveries fail meanwhile
		if n, err := q.Len(); err != nil || n != 10 {
			t.Fatalf("%d entries queued while the broker is down (%v), want 10", n, err)
		}
		f.rut2 = startTLS(t, Options{Config: f.rut2Cfg})
		fctx, fcancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := ship.Flush(fctx)
		fcancel()
		if err != nil {
			t.Fatalf("flush after the broker returned: %v", err)
		}
	}

	coord := pb.NewAuditServiceClient(f.sessionConn(t, f.session(t, "alice", false)))
	resp, err := coord.Query(callCtx(t), &pb.AuditQueryRequest{Resource: "rutgers/krios-g4", Oldest: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range resp.GetEntries() {
		if e.GetSource() == "rutgers/agent/agent-1#"+q.Generation() {
			got = append(got, e.GetAction()+" "+e.GetDetails()["session"])
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("agent entries in the log:\n%v\nwant\n%v", got, want)
	}
	v, err := pb.NewAuditServiceClient(f.sessionConn(t, f.session(t, "alice", false))).Verify(callCtx(t), &pb.VerifyAuditRequest{})
	if err != nil || !v.GetIntact() {
		t.Fatalf("verify = %v, %v", v, err)
	}
	t.Logf("%d agent entries delivered in order after the broker returned; chain of %d entries intact", len(got), v.GetChecked())
}
