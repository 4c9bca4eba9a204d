package rpc

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tsp(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return ts(*t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime().UTC()
}

func fromTSP(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime().UTC()
	return &v
}

func rangeToPB(r broker.Range) *pb.IDRange { return &pb.IDRange{Lo: r.Lo, Hi: r.Hi} }

func rangeFromPB(r *pb.IDRange) *broker.Range {
	if r == nil {
		return nil
	}
	return &broker.Range{Lo: r.Lo, Hi: r.Hi}
}

func siteToPB(s *directory.Site) *pb.Site {
	return &pb.Site{Name: s.Name, UidRange: rangeToPB(s.UIDRange), GidRange: rangeToPB(s.GIDRange), NextUid: s.NextUID, NextGid: s.NextGID, Created: ts(s.Created)}
}

func identitiesToPB(ids []broker.Identity) []*pb.Identity {
	out := make([]*pb.Identity, len(ids))
	for i, id := range ids {
		out[i] = &pb.Identity{Issuer: id.Issuer, Subject: id.Subject}
	}
	return out
}

func identitiesFromPB(ids []*pb.Identity) []broker.Identity {
	var out []broker.Identity
	for _, id := range ids {
		out = append(out, broker.Identity{Issuer: id.GetIssuer(), Subject: id.GetSubject()})
	}
	return out
}

func userToPB(u *directory.User) *pb.User {
	return &pb.User{Name: u.Name, Email: u.Email, Home: u.Home, Identities: identitiesToPB(u.Identities), Roles: u.Roles, Status: u.Status, Created: ts(u.Created), Removed: tsp(u.Removed)}
}

func projectToPB(p *directory.Project) *pb.Project {
	return &pb.Project{Name: p.Name, Members: p.Members, Created: ts(p.Created)}
}

func grantToPB(g *directory.Grant, now time.Time) *pb.Grant {
	return &pb.Grant{
		Id: g.ID, Subject: g.Subject, Resource: g.Resource, Actions: g.Actions,
		From: ts(g.From), Until: tsp(g.Until), GrantedBy: g.GrantedBy, Created: ts(g.Created),
		Status: g.StateAt(now), RevokedBy: g.RevokedBy, RevokedAt: tsp(g.RevokedAt), Reason: g.Reason,
	}
}

func accountToPB(a *directory.Account) *pb.Account {
	return &pb.Account{User: a.User, Site: a.Site, Username: a.Username, Uid: a.UID, Gid: a.GID, Groups: a.Groups, Pinned: a.Pinned, Status: a.Status, Created: ts(a.Created)}
}
