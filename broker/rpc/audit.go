package rpc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// DefaultAuditLimit is how many entries a query returns without --limit.
const DefaultAuditLimit = 100

// record commits entries to the audit log through Raft and returns only
// once they are committed. An error means the decision they record must
// not take effect (fail closed).
func (s *Server) record(ctx context.Context, entries ...audit.Entry) error {
	// The same source whether the entry is applied here or sent to the
	// leader's Append, which names this broker by its certificate.
	source := s.cfg.Self
	for i := range entries {
		if entries[i].Time.IsZero() {
			entries[i].Time = s.cfg.Now().UTC()
		}
		if entries[i].Source == "" {
			entries[i].Source = source
		}
	}
	actor := "system"
	if p, ok := PrincipalFrom(ctx); ok {
		actor = p.Actor()
	}
	cmd := &directory.Command{Time: s.cfg.Now().UTC(), Actor: actor, AppendAudit: &directory.AppendAudit{Entries: entries}}
	_, err := s.cfg.Replica.Apply(ctx, cmd)
	var nl *broker.NotLeaderError
	if errors.As(err, &nl) && nl.LeaderAPI != "" {
		err = s.recordAtLeader(ctx, nl, entries)
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "the audit log cannot record this decision, so it is refused: %v", oneLine(err))
	}
	return nil
}

// recordAtLeader appends entries through the leader's Append, as this
// broker (its certificate is the source), not as the caller.
func (s *Server) recordAtLeader(ctx context.Context, nl *broker.NotLeaderError, entries []audit.Entry) error {
	conn, err := s.conn(nl.LeaderAPI)
	if err != nil {
		return err
	}
	req := &pb.AppendAuditRequest{}
	for i := range entries {
		req.Entries = append(req.Entries, EntryToPB(&entries[i]))
	}
	// A fresh outgoing context: no caller's credential or headers.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err = pb.NewAuditServiceClient(conn).Append(cctx, req)
	return err
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// actorEntry starts an entry for a decision about the caller.
func actorEntry(p *Principal, action, resource, site string) audit.Entry {
	e := audit.Entry{Actor: p.Actor(), Action: action, Resource: resource, Site: site, Decision: audit.Allow}
	switch {
	case p.User != nil:
		e.ActorSite = p.User.Home
	case p.Cert != nil:
		e.ActorSite = p.Cert.Site
	}
	return e
}

// auditVisible returns the rule of what p may read: coordinators all,
// site administrators their sites', everyone what concerns them.
func auditVisible(p *Principal) func(*audit.Entry) bool {
	if p.Coordinator() {
		return nil
	}
	var sites []string
	if p.User != nil {
		for _, r := range p.User.Roles {
			if site, ok := strings.CutPrefix(r, directory.RoleSiteAdminPrefix); ok {
				sites = append(sites, site)
			}
		}
	}
	return func(e *audit.Entry) bool {
		if p.User != nil && e.Concerns(p.User.Name) {
			return true
		}
		for _, s := range sites {
			if e.InSite(s) {
				return true
			}
		}
		return false
	}
}

func filterFromPB(r *pb.AuditQueryRequest) audit.Filter {
	f := audit.Filter{User: r.GetUser(), Site: r.GetSite(), Resource: r.GetResource(), Action: r.GetAction(), Decision: r.GetDecision()}
	if r.GetSince() != nil {
		f.Since = r.GetSince().AsTime()
	}
	if r.GetUntil() != nil {
		f.Until = r.GetUntil().AsTime()
	}
	return f
}

func validateQuery(r *pb.AuditQueryRequest) error {
	if d := r.GetDecision(); d != "" && d != audit.Allow && d != audit.Deny {
		return broker.Errorf(broker.ErrInvalid, "--decision %q: give allow or deny", d)
	}
	if r.GetSince() != nil && r.GetUntil() != nil && !r.GetSince().AsTime().Before(r.GetUntil().AsTime()) {
		return broker.Errorf(broker.ErrInvalid, "--since %s is not before --until %s", r.GetSince().AsTime().Format(time.RFC3339), r.GetUntil().AsTime().Format(time.RFC3339))
	}
	return nil
}

func (s *Server) Query(ctx context.Context, r *pb.AuditQueryRequest) (*pb.AuditQueryResponse, error) {
	if err := validateQuery(r); err != nil {
		return nil, err
	}
	p := caller(ctx)
	q := directory.AuditQuery{Filter: filterFromPB(r), Keep: auditVisible(p), After: r.GetAfter(), Limit: int(r.GetLimit())}
	if q.Keep != nil && !p.AnyAdmin() && p.User != nil && q.Filter.User == "" {
		// A researcher sees only entries about them: read just those.
		q.Filter.User = p.User.Name
	}
	if q.Limit == 0 {
		q.Limit = DefaultAuditLimit
	}
	// Without a starting point the newest entries are wanted, shown
	// oldest first.
	q.Newest = r.GetAfter() == 0 && !r.GetOldest()
	var es []*audit.Entry
	// Linearizable: what a caller just did is in the answer.
	err := s.cfg.Replica.Read(ctx, false, func(d *directory.Directory) (err error) {
		es, err = d.AuditEntries(q)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &pb.AuditQueryResponse{}
	for i := range es {
		e := es[i]
		if q.Newest {
			e = es[len(es)-1-i]
		}
		resp.Entries = append(resp.Entries, EntryToPB(e))
	}
	return resp, nil
}

// Follow streams entries as this broker applies them.
func (s *Server) Follow(r *pb.AuditQueryRequest, stream grpc.ServerStreamingServer[pb.AuditEntry]) error {
	ctx := stream.Context()
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "the server has no stream interceptor; refusing")
	}
	if err := validateQuery(r); err != nil {
		return err
	}
	n, _ := s.cfg.Replica.(Notifier)
	after := r.GetAfter()
	if after == 0 {
		if err := s.local(ctx, func(d *directory.Directory) (err error) { after, _, err = d.AuditHead(); return err }); err != nil {
			return err
		}
	}
	q := directory.AuditQuery{Filter: filterFromPB(r), Keep: auditVisible(p), Limit: 1000}
	for {
		var changed <-chan struct{}
		if n != nil {
			changed = n.Changed()
		}
		// Who may read what is decided again each round: a logout, an
		// ended session or a role taken away ends or narrows the stream.
		p, err := s.authenticate(ctx)
		if err != nil {
			return toStatus(err)
		}
		q.Keep = auditVisible(p)
		// Read the head first, then the entries up to it: entries
		// committed meanwhile are left for the next round, never skipped.
		var head uint64
		var es []*audit.Entry
		err = s.local(ctx, func(d *directory.Directory) (err error) {
			if head, _, err = d.AuditHead(); err != nil {
				return err
			}
			q.After, q.Through = after, head
			es, err = d.AuditEntries(q)
			return err
		})
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := stream.Send(EntryToPB(e)); err != nil {
				return err
			}
			after = e.Seq
		}
		if len(es) == q.Limit {
			continue
		}
		after = max(after, head) // nothing more the caller may see up to the head
		if changed == nil {
			t := make(chan struct{})
			time.AfterFunc(200*time.Millisecond, func() { close(t) })
			changed = t
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (s *Server) Verify(ctx context.Context, r *pb.VerifyAuditRequest) (*pb.VerifyAuditResponse, error) {
	resp := &pb.VerifyAuditResponse{}
	err := s.local(ctx, func(d *directory.Directory) error {
		if r.GetAtSeq() > 0 {
			e, err := d.AuditEntry(r.GetAtSeq())
			if err != nil {
				return err
			}
			resp.AtHash = e.Hash
		}
		bad, why, checked, err := d.VerifyAudit()
		if err != nil {
			return err
		}
		resp.Checked, resp.BadSeq, resp.Intact = checked, bad, why == nil
		if why != nil {
			resp.Reason = why.Error()
		}
		resp.HeadSeq, resp.HeadHash, err = d.AuditHead()
		if err != nil {
			return err
		}
		cp, err := d.AuditCheckpoint()
		resp.CheckpointSeq, resp.CheckpointHash = cp.Seq, cp.Hash
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Server) Archive(ctx context.Context, r *pb.ArchiveAuditRequest) (*pb.ArchiveAuditResponse, error) {
	cp, err := applyAs[directory.AuditCheckpoint](s, ctx, &directory.Command{ArchiveAudit: &directory.ArchiveAudit{From: r.GetFrom(), Through: r.GetThrough(), Hash: r.GetHash()}})
	if err != nil {
		return nil, err
	}
	return &pb.ArchiveAuditResponse{CheckpointSeq: cp.Seq, CheckpointHash: cp.Hash}, nil
}

// Append records a site agent's (or broker's) entries. The source is the
// caller's certificate, whatever the entries say.
func (s *Server) Append(ctx context.Context, r *pb.AppendAuditRequest) (*pb.AppendAuditResponse, error) {
	p := caller(ctx)
	if len(r.GetEntries()) == 0 {
		return nil, broker.Errorf(broker.ErrInvalid, "no audit entries to append")
	}
	if len(r.GetEntries()) > 1000 {
		return nil, broker.Errorf(broker.ErrInvalid, "%d entries in one request; send at most 1000", len(r.GetEntries()))
	}
	entries := make([]audit.Entry, len(r.GetEntries()))
	for i, pe := range r.GetEntries() {
		e := EntryFromPB(pe)
		if p.Cert != nil {
			e.Source = p.Cert.String() + queueGeneration(e.Source)
		}
		if p.Cert != nil && p.Cert.Kind == pki.KindAgent {
			// An agent speaks for its own site's sessions, mounts and jobs,
			// numbered so that redelivery is harmless.
			switch {
			case e.Site != p.Cert.Site:
				return nil, status.Errorf(codes.PermissionDenied, "the agent of %s records entries about %s only, not %q", p.Cert.Site, p.Cert.Site, e.Site)
			case !slices.Contains(audit.AgentActions, e.Action):
				return nil, status.Errorf(codes.PermissionDenied, "an agent records %s only, not %s", strings.Join(audit.AgentActions, ", "), e.Action)
			case e.SourceSeq == 0:
				return nil, broker.Errorf(broker.ErrInvalid, "entry %d has no source_seq; an agent numbers its entries (its queue does)", i+1)
			}
		}
		entries[i] = e
	}
	cmd := &directory.Command{AppendAudit: &directory.AppendAudit{Entries: entries}}
	v, err := s.apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	n, _ := v.(int)
	return &pb.AppendAuditResponse{Recorded: uint32(n)}, nil
}

// queueGeneration keeps the "#GENERATION" an agent appends to its source
// (its queue file's identity, storage/auditqueue), so numbering that
// restarts with a new queue file is not taken for redelivery. Anything
// else after '#' is dropped.
func queueGeneration(source string) string {
	_, gen, ok := strings.Cut(source, "#")
	if !ok || len(gen) == 0 || len(gen) > 32 || strings.Trim(gen, "0123456789abcdef") != "" {
		return ""
	}
	return "#" + gen
}

func (s *Server) Usage(ctx context.Context, r *pb.UsageRequest) (*pb.UsageResponse, error) {
	f := audit.Filter{}
	if r.GetSince() != nil {
		f.Since = r.GetSince().AsTime()
	}
	if r.GetUntil() != nil {
		f.Until = r.GetUntil().AsTime()
	}
	var rows []audit.UsageRow
	err := s.cfg.Replica.Read(ctx, false, func(d *directory.Directory) error {
		t, err := audit.NewTally(r.GetBy(), d.ProjectsOf)
		if err != nil {
			return broker.Errorf(broker.ErrInvalid, "%v", err)
		}
		q := directory.AuditQuery{Filter: f, Keep: auditVisible(caller(ctx))}
		if err := d.AuditEach(q, func(e *audit.Entry) error { t.Add(e); return ctx.Err() }); err != nil {
			return err
		}
		rows = t.Rows()
		return nil
	})
	if err != nil {
		return nil, err
	}
	resp := &pb.UsageResponse{}
	for _, u := range rows {
		resp.Rows = append(resp.Rows, &pb.UsageRow{Key: u.Key, InstrumentHours: u.InstrumentHours, GpuHours: u.GPUHours, Sessions: u.Sessions, Jobs: u.Jobs, Tokens: u.Tokens})
	}
	return resp, nil
}

// EntryToPB converts an entry to its wire form.
func EntryToPB(e *audit.Entry) *pb.AuditEntry {
	return &pb.AuditEntry{
		Seq: e.Seq, Time: timestamppb.New(e.Time), Actor: e.Actor, ActorSite: e.ActorSite, Subject: e.Subject, Action: e.Action,
		Resource: e.Resource, Site: e.Site, Decision: e.Decision, Reason: e.Reason, Details: e.Details, Grants: e.Grants, Token: e.Token,
		Source: e.Source, SourceSeq: e.SourceSeq, PrevHash: e.PrevHash, Hash: e.Hash,
	}
}

// EntryFromPB converts an entry from its wire form.
func EntryFromPB(p *pb.AuditEntry) audit.Entry {
	e := audit.Entry{
		Seq: p.GetSeq(), Actor: p.GetActor(), ActorSite: p.GetActorSite(), Subject: p.GetSubject(), Action: p.GetAction(),
		Resource: p.GetResource(), Site: p.GetSite(), Decision: p.GetDecision(), Reason: p.GetReason(), Details: p.GetDetails(), Grants: p.GetGrants(), Token: p.GetToken(),
		Source: p.GetSource(), SourceSeq: p.GetSourceSeq(), PrevHash: p.GetPrevHash(), Hash: p.GetHash(),
	}
	if p.GetTime() != nil {
		e.Time = p.GetTime().AsTime()
	}
	if len(e.Details) == 0 {
		e.Details = nil
	}
	return e
}
