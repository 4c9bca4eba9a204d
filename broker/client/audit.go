package client

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker/audit"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// AuditSink is the broker as the receiver of an agent's audit entries
// (audit.Shipper delivers to it).
func (c *Client) AuditSink() audit.Sink { return auditSink{pb.NewAuditServiceClient(c.conn)} }

type auditSink struct{ c pb.AuditServiceClient }

func (s auditSink) Append(ctx context.Context, entries []audit.Entry) error {
	req := &pb.AppendAuditRequest{}
	for _, e := range entries {
		req.Entries = append(req.Entries, &pb.AuditEntry{
			Time: timestamppb.New(e.Time), Actor: e.Actor, ActorSite: e.ActorSite, Subject: e.Subject, Action: e.Action,
			Resource: e.Resource, Site: e.Site, Decision: e.Decision, Reason: e.Reason, Details: e.Details, Grants: e.Grants,
			Token: e.Token, Source: e.Source, SourceSeq: e.SourceSeq,
		})
	}
	_, err := s.c.Append(ctx, req)
	return err
}
