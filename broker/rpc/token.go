package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/authz"
	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// TokenSigner is this broker's capability signing key.
type TokenSigner interface {
	KID() string
	Sign(capability.Claims) (string, error)
}

func (s *Server) Issue(ctx context.Context, r *pb.IssueTokenRequest) (*pb.IssueTokenResponse, error) {
	if s.cfg.Signer == nil {
		return nil, broker.Errorf(broker.ErrPrecondition, "this broker has no signing key")
	}
	scope, err := capability.ParseScope(r.GetScope())
	if err != nil {
		return nil, err
	}
	var ttl time.Duration
	if r.GetTtl() != "" {
		if ttl, err = time.ParseDuration(r.GetTtl()); err != nil || ttl <= 0 {
			return nil, broker.Errorf(broker.ErrInvalid, "--ttl %q is not a positive duration such as 15m", r.GetTtl())
		}
	}
	p := caller(ctx)
	user := r.GetUser()
	switch {
	case user == "" && p.User == nil:
		return nil, status.Errorf(codes.InvalidArgument, "%s is not a person; name the user the token is for (--user)", p)
	case user == "":
		user = p.User.Name
	case !p.Is(user) && !p.AdminOf(scope.Resource.Site):
		err := denied(p, "issue tokens on behalf of "+user, "site-admin:"+scope.Resource.Site+" or coordinator")
		e := actorEntry(p, audit.ActionTokenIssue, scope.Resource.ID(), scope.Resource.Site)
		e.Subject, e.Decision, e.Reason = user, audit.Deny, status.Convert(toStatus(err)).Message()
		if rerr := s.record(ctx, e); rerr != nil {
			s.cfg.Logger.Warn("could not audit a refused token request", "by", p.Actor(), "err", rerr)
		}
		return nil, err
	}
	now := s.cfg.Now().UTC()
	var in authz.Input
	var posix *capability.POSIX
	var keyEnd time.Time
	var lockRefusal string
	// A linearizable read: a grant revoked a moment ago must not count.
	err = s.cfg.Replica.Read(ctx, false, func(d *directory.Directory) error {
		e, err := d.Entitlements(user, scope.Resource.Site, s.cfg.Signer.KID(), now)
		if err != nil {
			return err
		}
		// A key turns retiring the moment its successor is published,
		// while a rotation waits for the successor to reach every broker:
		// until then the old key signs, its tokens ending by its own end.
		k := e.Key
		if k == nil || (k.Status != directory.KeyActive && k.Status != directory.KeyRetiring) {
			return broker.Errorf(broker.ErrUnavailable, "this broker's signing key %s is not yet active in the trust bundle; retry in a moment", s.cfg.Signer.KID())
		}
		if k.Status == directory.KeyRetiring && k.NotAfter != nil {
			keyEnd = *k.NotAfter
			if keyEnd.Before(now.Add(time.Hour)) {
				// A rotation that never finished: refuse rather than hand
				// out tokens about to die with their key.
				return broker.Errorf(broker.ErrUnavailable, "this broker's signing key %s is retiring and no successor signs yet; run labfed keys rotate on it", k.KID)
			}
		}
		in = authz.Input{User: user, Action: scope.Action, Resource: scope.Resource, Now: now, TTL: ttl}
		in.UserStatus = e.User.Status
		if n := len(e.UserLocks); n > 0 {
			l := e.UserLocks[n-1]
			lockRefusal = fmt.Sprintf("the tokens of %s are revoked until %s (%s); ask a coordinator", user, l.Until.Format(time.RFC3339), orNone(l.Reason))
			return nil
		}
		in.Projects = e.Projects
		for _, g := range e.Grants {
			res, err := broker.ParseResource(g.Resource)
			if err != nil {
				continue
			}
			in.Grants = append(in.Grants, authz.Grant{ID: g.ID, Subject: g.Subject, Resource: res, Actions: g.Actions, From: g.From, Until: g.Until, Revoked: g.Status == directory.GrantRevoked})
		}
		if a := e.Account; a != nil && a.Status == directory.StatusActive {
			in.HasAccount = true
			posix = &capability.POSIX{User: a.Username, UID: a.UID, GID: a.GID, Groups: a.Groups}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	dec := authz.Decide(in)
	if lockRefusal != "" {
		dec = authz.Decision{Reason: lockRefusal}
	}
	entry := actorEntry(p, audit.ActionTokenIssue, scope.Resource.ID(), scope.Resource.Site)
	entry.Subject, entry.Time = user, now
	entry.Details = map[string]string{"scope": scope.String()}
	if !dec.Allowed {
		s.cfg.Logger.Info("token refused", "user", user, "scope", scope.String(), "reason", dec.Reason, "by", p.Actor())
		entry.Decision, entry.Reason = audit.Deny, dec.Reason
		if err := s.record(ctx, entry); err != nil {
			return nil, status.Errorf(codes.PermissionDenied, "%s (and the refusal could not be recorded: %v)", dec.Reason, status.Convert(err).Message())
		}
		return nil, status.Error(codes.PermissionDenied, dec.Reason)
	}
	if !keyEnd.IsZero() && dec.Expiry.After(keyEnd) {
		dec.Expiry = keyEnd
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return nil, err
	}
	c := capability.Claims{
		Subject: user, Audience: scope.Resource.Site, ID: hex.EncodeToString(jti),
		IssuedAt: now, NotBefore: dec.NotBefore, Expiry: dec.Expiry, Scope: []capability.Scope{scope}, POSIX: posix, Grants: dec.Grants,
	}
	tok, err := s.cfg.Signer.Sign(c)
	if err != nil {
		return nil, err
	}
	// The token leaves only once its issue is in the audit log.
	entry.Token, entry.Grants = c.ID, dec.Grants
	entry.Details["expires"] = dec.Expiry.UTC().Format(time.RFC3339)
	entry.Details["kid"] = s.cfg.Signer.KID()
	if err := s.record(ctx, entry); err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("token issued", "user", user, "scope", scope.String(), "jti", c.ID, "grants", dec.Grants, "by", p.Actor())
	return &pb.IssueTokenResponse{Token: tok, Jti: c.ID, Expires: timestamppb.New(dec.Expiry)}, nil
}

func lockToPB(l *directory.Lock) *pb.Lock {
	return &pb.Lock{Id: l.ID, Kind: l.Kind, Value: l.Value, Reason: l.Reason, Created: timestamppb.New(l.Created), Until: timestamppb.New(l.Until), By: l.By}
}

func (s *Server) Revoke(ctx context.Context, r *pb.RevokeTokensRequest) (*pb.RevokeTokensResponse, error) {
	n := 0
	for _, v := range []string{r.GetJti(), r.GetUser(), r.GetKey()} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, broker.Errorf(broker.ErrInvalid, "give exactly one of --jti, --user or --key")
	}
	if r.GetKey() != "" {
		if _, err := applyAs[directory.SigningKey](s, ctx, &directory.Command{RevokeKey: &directory.RevokeKey{KID: r.GetKey(), Reason: r.GetReason()}}); err != nil {
			return nil, err
		}
		return &pb.RevokeTokensResponse{}, nil
	}
	c := &directory.AddLock{Kind: directory.LockJTI, Value: r.GetJti(), Reason: r.GetReason()}
	if r.GetUser() != "" {
		c.Kind, c.Value = directory.LockUser, r.GetUser()
	}
	l, err := applyAs[directory.Lock](s, ctx, &directory.Command{AddLock: c})
	if err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("revocation lock", "id", l.ID, "kind", l.Kind, "value", l.Value, "by", l.By)
	return &pb.RevokeTokensResponse{Lock: lockToPB(l)}, nil
}

func (s *Server) ListLocks(ctx context.Context, _ *pb.ListLocksRequest) (*pb.ListLocksResponse, error) {
	resp := &pb.ListLocksResponse{}
	now := s.cfg.Now()
	err := s.local(ctx, func(d *directory.Directory) error {
		ls, err := d.Locks(now)
		for _, l := range ls {
			resp.Locks = append(resp.Locks, lockToPB(l))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// checkRevoke: coordinators revoke anything; a user's own tokens may be
// revoked by them and their home site's administrators; a single token by
// any site administrator; keys only by coordinators.
func checkRevoke(s *Server, ctx context.Context, p *Principal, req any) error {
	r := req.(*pb.RevokeTokensRequest)
	switch {
	case p.Coordinator():
		return nil
	case r.GetKey() != "":
		return denied(p, "revoke signing keys", "the coordinator role")
	case r.GetJti() != "":
		if !p.AnyAdmin() {
			return denied(p, "revoke tokens by id", "a site administrator or coordinator role")
		}
		return nil
	case p.Is(r.GetUser()):
		return nil
	case !p.AnyAdmin():
		return denied(p, "revoke other users' tokens", "site-admin of their home site or coordinator")
	}
	var u *directory.User
	if err := s.local(ctx, func(d *directory.Directory) (err error) { u, err = d.User(r.GetUser()); return err }); err != nil {
		return err
	}
	if !p.AdminOf(u.Home) {
		return denied(p, "revoke the tokens of "+u.Name, "site-admin:"+u.Home+" or coordinator")
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
