package node

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// TestAuditScoping: a researcher reads the entries about them, a site
// administrator their site's, a coordinator everything; filters narrow
// within that.
func TestAuditScoping(t *testing.T) {
	tn := authzFixture(t)
	coord := tn.sessionConn(t, tn.session(t, "alice", false))
	ctx := callCtx(t)
	// Something at psc, so pete has entries to see, and a refusal of rita.
	if _, err := dir(coord).AddGrant(ctx, &pb.AddGrantRequest{Subject: "user:tina", Resource: "psc/bridges2", Actions: []string{broker.ActionComputeCreate}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dir(tn.sessionConn(t, tn.session(t, "rita", false))).AddSite(ctx, &pb.AddSiteRequest{Name: "nope"}); err == nil {
		t.Fatal("a researcher added a site")
	}
	read := func(who string, req *pb.AuditQueryRequest) []*pb.AuditEntry {
		req.Limit = 1000
		r, err := pb.NewAuditServiceClient(tn.sessionConn(t, tn.session(t, who, false))).Query(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		return r.GetEntries()
	}
	all := read("alice", &pb.AuditQueryRequest{})
	for _, tc := range []struct {
		who  string
		keep func(*pb.AuditEntry) bool
	}{
		{"rita", func(e *pb.AuditEntry) bool { return e.GetActor() == "rita" || e.GetSubject() == "rita" }},
		{"rhea", func(e *pb.AuditEntry) bool {
			return e.GetActor() == "rhea" || e.GetSubject() == "rhea" || e.GetSite() == "rutgers" || e.GetActorSite() == "rutgers"
		}},
		{"pete", func(e *pb.AuditEntry) bool {
			return e.GetActor() == "pete" || e.GetSubject() == "pete" || e.GetSite() == "psc" || e.GetActorSite() == "psc"
		}},
	} {
		var want []uint64
		for _, e := range all {
			if tc.keep(e) {
				want = append(want, e.GetSeq())
			}
		}
		var got []uint64
		for _, e := range read(tc.who, &pb.AuditQueryRequest{}) {
			if e.GetSeq() <= all[len(all)-1].GetSeq() { // reading logs in: later entries
				got = append(got, e.GetSeq())
			}
		}
		if len(want) == 0 || (tc.who != "rhea" && len(want) == len(all)) || !equalSeqs(got, want) {
			t.Errorf("%s sees %v, want %v (of %d)", tc.who, got, want, len(all))
		}
	}
	// rita's refusal is there, for her and by the filter.
	refused := read("rita", &pb.AuditQueryRequest{Decision: "deny"})
	if len(refused) != 1 || refused[0].GetAction() != "access.refused" || refused[0].GetResource() != "AddSite" {
		t.Errorf("rita's refusals: %v", refused)
	}
	// A researcher asking about someone else gets nothing of theirs.
	if es := read("rita", &pb.AuditQueryRequest{User: "tina"}); len(es) != 0 {
		t.Errorf("rita reads tina's entries: %v", es)
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFollowEndsWithTheSession: a researcher's audit stream ends once her
// session is revoked, rather than going on under the old decision.
func TestFollowEndsWithTheSession(t *testing.T) {
	tn := authzFixture(t)
	tok := tn.session(t, "rita", false)
	stream, err := pb.NewAuditServiceClient(tn.sessionConn(t, tok)).Follow(callCtx(t), &pb.AuditQueryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	coord := lgn(tn.sessionConn(t, tn.session(t, "alice", false)))
	if _, err := coord.RevokeSessions(callCtx(t), &pb.RevokeSessionsRequest{User: "rita"}); err != nil {
		t.Fatal(err)
	}
	// The revocation is itself an entry about rita: the stream wakes, finds
	// the session gone, and ends.
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("stream ended with %v, want Unauthenticated", err)
		}
		return
	}
}
