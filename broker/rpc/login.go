package rpc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// IDToken is what a verified OIDC ID token says about the person.
type IDToken struct {
	Issuer, Subject, Email string
	Expiry                 time.Time
}

// LoginConfig configures OIDC login on a broker.
type LoginConfig struct {
	// Site is the broker's site, recorded in the sessions it creates.
	Site string
	// Issuers are the OIDC issuers and client ids the CLI may log in with.
	Issuers []*pb.LoginIssuer
	// SessionTTL is the lifetime of a session credential (default 8h).
	SessionTTL time.Duration
	// Verify checks an ID token's signature, issuer, audience and expiry.
	Verify func(ctx context.Context, raw string) (IDToken, error)
}

// DefaultSessionTTL is a working day, like Teleport's default certificate
// lifetime: long enough not to interrupt a microscope session, short
// enough that a leaked credential dies the same day.
const DefaultSessionTTL = 8 * time.Hour

func (s *Server) sessionTTL() time.Duration {
	if s.cfg.Login.SessionTTL > 0 {
		return s.cfg.Login.SessionTTL
	}
	return DefaultSessionTTL
}

func (s *Server) GetLoginConfig(context.Context, *pb.GetLoginConfigRequest) (*pb.GetLoginConfigResponse, error) {
	return &pb.GetLoginConfigResponse{Site: s.cfg.Login.Site, Issuers: s.cfg.Login.Issuers, SessionTtl: s.sessionTTL().String()}, nil
}

// NewSessionToken returns a fresh session credential: 256 random bits.
func NewSessionToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return SessionTokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func (s *Server) Login(ctx context.Context, r *pb.LoginRequest) (*pb.LoginResponse, error) {
	if s.cfg.Login.Verify == nil {
		return nil, status.Error(codes.FailedPrecondition, "this broker has no OIDC issuer configured (oidc.issuers in its config); log in through another site's broker")
	}
	if len(r.GetIdToken()) > 16<<10 {
		return nil, status.Error(codes.InvalidArgument, "the ID token is larger than 16 KiB; that is not an ID token")
	}
	tok, err := s.cfg.Login.Verify(ctx, r.GetIdToken())
	if err != nil {
		if broker.KindOf(err) == broker.ErrUnavailable {
			return nil, err
		}
		return nil, status.Errorf(codes.Unauthenticated, "ID token refused: %v", err)
	}
	id := broker.Identity{Issuer: tok.Issuer, Subject: tok.Subject}
	var u *directory.User
	err = s.local(ctx, func(d *directory.Directory) (err error) { u, err = d.UserByIdentity(id); return err })
	if broker.KindOf(err) == broker.ErrNotFound {
		if !s.cfg.Replica.IsLeader() && !isForwarded(ctx) {
			// The identity may have been registered a moment ago.
			lid, api := s.cfg.Replica.Leader()
			return nil, &broker.NotLeaderError{LeaderID: lid, LeaderAPI: api}
		}
		const refusal = "not registered in the federation; ask your site administrator"
		s.recordLoginRefusal(ctx, audit.Entry{Actor: "oidc:" + id.Issuer + "#" + id.Subject, Reason: refusal})
		return nil, status.Error(codes.PermissionDenied, refusal)
	}
	if err != nil {
		return nil, err
	}
	if u.Status != directory.StatusActive {
		refusal := fmt.Sprintf("user %s is %s; ask your site administrator", u.Name, u.Status)
		s.recordLoginRefusal(ctx, audit.Entry{Actor: u.Name, ActorSite: u.Home, Subject: u.Name, Reason: refusal})
		return nil, status.Error(codes.PermissionDenied, refusal)
	}
	secret, err := NewSessionToken()
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	loginID, err := loginDigest(r.GetIdToken())
	if err != nil {
		return nil, err
	}
	cmd := &directory.Command{Time: now, Actor: u.Name, CreateSession: &directory.CreateSession{
		Session: directory.Session{
			ID: SessionDigest(secret), User: u.Name, Site: s.cfg.Login.Site, Via: &id, Expires: now.Add(s.sessionTTL()),
		},
		LoginID: loginID, LoginExpires: tok.Expiry,
	}}
	v, err := s.cfg.Replica.Apply(ctx, cmd)
	if broker.KindOf(err) == broker.ErrExists {
		return nil, status.Error(codes.Unauthenticated, "ID token refused: it was already used to log in; run labfed login again")
	}
	if err != nil {
		return nil, err
	}
	sess := v.(*directory.Session)
	s.cfg.Logger.Info("login", "user", u.Name, "issuer", id.Issuer, "session", sess.Short())
	return &pb.LoginResponse{Token: secret, User: u.Name, Expires: timestamppb.New(sess.Expires), Session: sess.Short()}, nil
}

// recordLoginRefusal audits a login refused after its ID token verified.
// The login is refused either way; a failure to record is logged.
func (s *Server) recordLoginRefusal(ctx context.Context, e audit.Entry) {
	e.Action, e.Decision, e.Site = audit.ActionLogin, audit.Deny, s.cfg.Login.Site
	if err := s.record(ctx, e); err != nil {
		s.cfg.Logger.Warn("could not audit a refused login", "actor", e.Actor, "err", err)
	}
}

// loginDigest identifies an ID token by what its issuer signed, the
// decoded claims, not by its encoding: base64url leaves spare bits in each
// segment's last character and ECDSA signatures have a mirror image, so one
// token has many spellings that all verify, and a digest of the raw string
// would let a captured token log in once per spelling.
func loginDigest(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", status.Error(codes.Unauthenticated, "ID token refused: not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", status.Error(codes.Unauthenticated, "ID token refused: payload is not base64url")
	}
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:]), nil
}

func (s *Server) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	p := caller(ctx)
	out := &pb.WhoAmIResponse{Method: p.Method}
	if p.User != nil {
		out.User = p.User.Name
		out.Roles = p.User.Roles
		if len(out.Roles) == 0 {
			out.Roles = []string{directory.RoleResearcher}
		}
	}
	if p.Cert != nil {
		out.Certificate = p.Cert.String()
	}
	if p.Session != nil {
		out.Expires = timestamppb.New(p.Session.Expires)
		out.Session = p.Session.Short()
	}
	return out, nil
}

func (s *Server) Logout(ctx context.Context, _ *pb.LogoutRequest) (*pb.LogoutResponse, error) {
	p := caller(ctx)
	if p.Session == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "you are authenticated by %s, not a session; there is nothing to log out of", p.Method)
	}
	if _, err := s.apply(ctx, &directory.Command{RevokeSessions: &directory.RevokeSessions{ID: p.Session.ID}}); err != nil {
		return nil, err
	}
	return &pb.LogoutResponse{}, nil
}

func (s *Server) RevokeSessions(ctx context.Context, r *pb.RevokeSessionsRequest) (*pb.RevokeSessionsResponse, error) {
	if r.GetUser() == "" {
		return nil, status.Error(codes.InvalidArgument, "name the user whose sessions to end (--user)")
	}
	v, err := s.apply(ctx, &directory.Command{RevokeSessions: &directory.RevokeSessions{User: r.GetUser()}})
	if err != nil {
		return nil, err
	}
	return &pb.RevokeSessionsResponse{Revoked: uint32(v.(int))}, nil
}

func (s *Server) ListSessions(ctx context.Context, r *pb.ListSessionsRequest) (*pb.ListSessionsResponse, error) {
	user := r.GetUser()
	if p := caller(ctx); user == "" && !p.Coordinator() {
		user = p.User.Name
	}
	resp := &pb.ListSessionsResponse{}
	now := s.cfg.Now()
	err := s.local(ctx, func(d *directory.Directory) error {
		ss, err := d.Sessions(user)
		for _, x := range ss {
			if x.ExpiredAt(now) {
				continue
			}
			ls := &pb.LoginSession{Session: x.Short(), User: x.User, Site: x.Site, Created: timestamppb.New(x.Created), Expires: timestamppb.New(x.Expires)}
			if x.Via != nil {
				ls.Via = x.Via.String()
			}
			resp.Sessions = append(resp.Sessions, ls)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}
