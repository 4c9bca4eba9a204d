// Package rpc adapts the directory and cluster to gRPC: it converts between
// proto and domain types, maps error kinds to status codes, and forwards
// requests that must run on the leader.
//
// # Forwarding
//
// Every handler runs locally first. When it fails with a
// *broker.NotLeaderError (a write, or a linearizable read, on a follower),
// the forwarding interceptor sends the same request to the leader and
// returns its answer. A forwarded request carries the labfed-forwarded
// header and is never forwarded again, so leadership changes cannot make a
// request loop; the client sees Unavailable and retries.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// Replica is what the RPC layer needs of a directory replica. Apply and Read
// return a *broker.NotLeaderError when they must run on the leader.
type Replica interface {
	Apply(ctx context.Context, cmd *directory.Command) (any, error)
	Read(ctx context.Context, stale bool, fn func(*directory.Directory) error) error
	Join(ctx context.Context, reg *directory.RegisterNode, voter bool, actor string) error
	RemovePeer(ctx context.Context, id, actor string) error
	Peers() ([]broker.Peer, error)
	Leader() (id, api string)
	IsLeader() bool
	Status() broker.NodeStatus
	Snapshot() error
}

// Config configures a Server.
type Config struct {
	Replica Replica
	// Peer returns the caller's verified federation certificate identity.
	// Nil only in development mode, where every caller without a session
	// credential may do anything.
	Peer func(ctx context.Context) (pki.Identity, error)
	// Login configures OIDC login; without Login.Verify, Login refuses.
	Login LoginConfig
	// Discovery is the node's gossip view; nil when it runs without one.
	Discovery Discovery
	// Signer signs capability tokens with this broker's key.
	Signer TokenSigner
	// Self names this broker as its certificate does (site/broker/node):
	// the source of the audit entries it records.
	Self string
	// Keys rotates this broker's signing key; nil when it cannot.
	Keys KeyRotator
	// Reporter changes this site's offer; nil without gossip.
	Reporter OfferReporter
	// GossipKeys rotates the gossip key; nil without encrypted gossip.
	GossipKeys GossipKeyring
	// Dial opens a connection to another broker for forwarding.
	Dial   func(addr string) (*grpc.ClientConn, error)
	Logger *slog.Logger
	// Now is the clock used to stamp commands, grant states and session
	// expiry; nil means time.Now.
	Now func() time.Time
}

// Server implements the DirectoryService and ClusterService.
type Server struct {
	pb.UnimplementedDirectoryServiceServer
	pb.UnimplementedClusterServiceServer
	pb.UnimplementedLoginServiceServer
	pb.UnimplementedDiscoveryServiceServer
	pb.UnimplementedTokenServiceServer
	pb.UnimplementedAuditServiceServer

	cfg   Config
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// streams counts the open streams per caller (openStream).
	streams map[string]int
}

// NewServer returns a server; register it with Register.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg, conns: map[string]*grpc.ClientConn{}}
}

// ServerOptions are the interceptors every gRPC server of the services
// needs: without them no access rule runs. Pass them to grpc.NewServer.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(s.UnaryInterceptor), grpc.ChainStreamInterceptor(s.StreamInterceptor)}
}

// Register adds the services to g.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterDirectoryServiceServer(g, s)
	pb.RegisterClusterServiceServer(g, s)
	pb.RegisterLoginServiceServer(g, s)
	pb.RegisterDiscoveryServiceServer(g, s)
	pb.RegisterTokenServiceServer(g, s)
	pb.RegisterAuditServiceServer(g, s)
}

// Close closes the forwarding connections.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a, c := range s.conns {
		c.Close()
		delete(s.conns, a)
	}
	return nil
}

const forwardedHeader = "labfed-forwarded"

// UnaryInterceptor authenticates the caller, checks the method's access
// rule, forwards requests that must run on the leader, and maps domain
// errors to status codes. Install it as the server's only unary
// interceptor.
func (s *Server) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx = s.markForwarded(ctx)
	resp, ctx, err := s.intercept(ctx, req, info, handler)
	var nl *broker.NotLeaderError
	if errors.As(err, &nl) && nl.LeaderAPI != "" && !isForwarded(ctx) {
		return s.forward(ctx, info.FullMethod, req, nl)
	}
	return resp, toStatus(err)
}

// intercept runs the access rule and the handler. It returns the context
// with the authenticated caller, which forwarding needs.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, context.Context, error) {
	r, ok := policy[info.FullMethod]
	if !ok {
		return nil, ctx, status.Errorf(codes.PermissionDenied, "%s has no access rule; refusing it", info.FullMethod)
	}
	if r.public {
		resp, err := handler(ctx, req)
		return resp, ctx, err
	}
	p, err := s.authenticate(ctx)
	if err != nil {
		return nil, ctx, err
	}
	ctx = withPrincipal(ctx, p)
	if r.write && !isForwarded(ctx) && !s.cfg.Replica.IsLeader() {
		id, api := s.cfg.Replica.Leader()
		return nil, ctx, &broker.NotLeaderError{LeaderID: id, LeaderAPI: api}
	}
	if r.check != nil {
		if err := r.check(s, ctx, p, req); err != nil {
			s.recordRefusal(ctx, p, info.FullMethod, err)
			return nil, ctx, err
		}
	}
	resp, err := handler(ctx, req)
	return resp, ctx, err
}

// recordRefusal audits an RPC its access rule refused. The request is
// refused whether or not the entry can be written; a failure is logged.
func (s *Server) recordRefusal(ctx context.Context, p *Principal, method string, refusal error) {
	if status.Code(toStatus(refusal)) != codes.PermissionDenied {
		return
	}
	e := actorEntry(p, audit.ActionAccessRefused, method[strings.LastIndex(method, "/")+1:], "")
	e.Decision, e.Reason = audit.Deny, status.Convert(toStatus(refusal)).Message()
	if err := s.record(ctx, e); err != nil {
		s.cfg.Logger.Warn("could not audit a refused request", "method", method, "by", p.Actor(), "err", err)
	}
}

type forwardedKey struct{}

// markForwarded records whether the request was forwarded by another
// broker of the federation. The labfed-forwarded header is believed only
// from a broker certificate of a node registered in the directory: from
// anyone else it would switch off forwarding and let a caller speak for
// others.
func (s *Server) markForwarded(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(forwardedHeader)
	if len(v) == 0 {
		return ctx
	}
	return context.WithValue(ctx, forwardedKey{}, len(v) == 1 && v[0] == "1" && s.fromMemberBroker(ctx))
}

func isForwarded(ctx context.Context) bool {
	v, _ := ctx.Value(forwardedKey{}).(bool)
	return v
}

// fromMemberBroker reports whether the caller is a broker node the
// directory knows under its certificate's site and name. In development
// mode there are no certificates, and every caller passes.
func (s *Server) fromMemberBroker(ctx context.Context) bool {
	if s.cfg.Peer == nil {
		return true
	}
	id, err := s.peer(ctx)
	if err != nil || id.Kind != pki.KindBroker {
		return false
	}
	var member bool
	_ = s.local(ctx, func(d *directory.Directory) error {
		n, err := d.Node(id.Name)
		member = err == nil && n.Site == id.Site
		return nil
	})
	return member
}

func (s *Server) forward(ctx context.Context, method string, req any, nl *broker.NotLeaderError) (any, error) {
	out, err := responseFor(method)
	if err != nil {
		return nil, err
	}
	conn, err := s.conn(nl.LeaderAPI)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot reach leader %s at %s: %v; retry", nl.LeaderID, nl.LeaderAPI, err)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	md.Set(forwardedHeader, "1")
	delete(md, actorHeader)
	if p, ok := PrincipalFrom(ctx); ok && p.Session == nil && p.Cert != nil {
		// The leader sees this broker's certificate; name the caller's.
		// A session travels in the authorization header, which the
		// leader checks itself; public methods have no caller to name.
		md.Set(actorHeader, p.Cert.String())
	}
	// Drop transport-level pseudo headers that must not be re-sent.
	for _, k := range []string{":authority", "content-type", "user-agent", "te"} {
		delete(md, k)
	}
	fctx := metadata.NewOutgoingContext(ctx, md)
	if err := conn.Invoke(fctx, method, req, out); err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
			if strings.HasPrefix(st.Message(), "connection error") {
				// No connection to the leader could be made, so the
				// request never left this node: safe to retry once a new
				// leader is elected.
				return nil, toStatus(broker.Errorf(broker.ErrUnavailable, "leader %s at %s cannot be reached (%s); retry", nl.LeaderID, nl.LeaderAPI, st.Message()))
			}
			return nil, status.Errorf(codes.Unavailable, "leader %s at %s did not answer (%s); the request may or may not have been applied", nl.LeaderID, nl.LeaderAPI, st.Message())
		}
		return nil, err
	}
	return out, nil
}

// responseFor returns an empty response message of a method
// ("/labfed.v1.DirectoryService/AddSite") to forward its request into.
func responseFor(method string) (proto.Message, error) {
	svc, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if ok {
		if d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc)); err == nil {
			if sd, isSvc := d.(protoreflect.ServiceDescriptor); isSvc {
				if md := sd.Methods().ByName(protoreflect.Name(name)); md != nil {
					if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName()); err == nil {
						return mt.New().Interface(), nil
					}
				}
			}
		}
	}
	return nil, status.Errorf(codes.Internal, "cannot forward %s: unknown method", method)
}

func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	if s.cfg.Dial == nil {
		return nil, errors.New("forwarding is not configured")
	}
	c, err := s.cfg.Dial(addr)
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// toStatus maps a domain error to a gRPC status at the edge.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch broker.KindOf(err) {
	case broker.ErrInvalid:
		code = codes.InvalidArgument
	case broker.ErrNotFound:
		code = codes.NotFound
	case broker.ErrExists:
		code = codes.AlreadyExists
	case broker.ErrPrecondition:
		code = codes.FailedPrecondition
	case broker.ErrExhausted:
		code = codes.ResourceExhausted
	case broker.ErrUnavailable:
		code = codes.Unavailable
	default:
		if errors.Is(err, context.DeadlineExceeded) {
			code = codes.DeadlineExceeded
		} else if errors.Is(err, context.Canceled) {
			code = codes.Canceled
		} else if errors.Is(err, broker.ErrAmbiguous) {
			code = codes.Unknown
		}
	}
	st := status.New(code, err.Error())
	if code == codes.Unavailable {
		// Tell clients the request had no effect and may be retried.
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(100 * time.Millisecond)}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// actor names the authenticated caller for the directory's records.
func (s *Server) actor(ctx context.Context) (string, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "request was not authenticated")
	}
	return p.Actor(), nil
}

// apply stamps and proposes a command.
func (s *Server) apply(ctx context.Context, cmd *directory.Command) (any, error) {
	actor, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	cmd.Time, cmd.Actor = s.cfg.Now().UTC(), actor
	if p := caller(ctx); p != nil && p.User != nil {
		// What the access rule relied on must still hold when the
		// command applies.
		cmd.Guard = &directory.Guard{User: p.User.Name, Roles: p.User.Roles, Target: p.target, TargetSite: p.targetSite}
	}
	return s.cfg.Replica.Apply(ctx, cmd)
}

func applyAs[T any](s *Server, ctx context.Context, cmd *directory.Command) (*T, error) {
	v, err := s.apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	t, ok := v.(*T)
	if !ok {
		return nil, fmt.Errorf("directory returned %T, want %T", v, t)
	}
	return t, nil
}

func (s *Server) read(ctx context.Context, ro *pb.ReadOptions, fn func(*directory.Directory) error) error {
	return s.cfg.Replica.Read(ctx, ro.GetStale(), fn)
}

// caller returns the authenticated caller; the interceptor guarantees one
// for every non-public method.
func caller(ctx context.Context) *Principal {
	p, _ := PrincipalFrom(ctx)
	return p
}

// ---- sites ----

func (s *Server) AddSite(ctx context.Context, r *pb.AddSiteRequest) (*pb.Site, error) {
	if r.GetUidRange() == nil || r.GetGidRange() == nil {
		return nil, broker.Errorf(broker.ErrInvalid, "site %s needs both a uid range and a gid range (--uid-range LO-HI --gid-range LO-HI)", r.GetName())
	}
	site, err := applyAs[directory.Site](s, ctx, &directory.Command{AddSite: &directory.AddSite{
		Name: r.GetName(), UIDRange: *rangeFromPB(r.GetUidRange()), GIDRange: *rangeFromPB(r.GetGidRange()),
	}})
	if err != nil {
		return nil, err
	}
	return siteToPB(site), nil
}

func (s *Server) UpdateSite(ctx context.Context, r *pb.UpdateSiteRequest) (*pb.Site, error) {
	if r.GetUidRange() == nil && r.GetGidRange() == nil {
		return nil, broker.Errorf(broker.ErrInvalid, "nothing to update for site %s; give --uid-range or --gid-range", r.GetName())
	}
	site, err := applyAs[directory.Site](s, ctx, &directory.Command{UpdateSite: &directory.UpdateSite{
		Name: r.GetName(), UIDRange: rangeFromPB(r.GetUidRange()), GIDRange: rangeFromPB(r.GetGidRange()),
	}})
	if err != nil {
		return nil, err
	}
	return siteToPB(site), nil
}

func (s *Server) ListSites(ctx context.Context, r *pb.ListSitesRequest) (*pb.ListSitesResponse, error) {
	resp := &pb.ListSitesResponse{}
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		sites, err := d.Sites()
		for _, st := range sites {
			resp.Sites = append(resp.Sites, siteToPB(st))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ---- users ----

func (s *Server) AddUser(ctx context.Context, r *pb.AddUserRequest) (*pb.User, error) {
	u, err := applyAs[directory.User](s, ctx, &directory.Command{AddUser: &directory.AddUser{
		Name: r.GetName(), Email: r.GetEmail(), Home: r.GetHome(), Identities: identitiesFromPB(r.GetIdentities()), Roles: r.GetRoles(),
	}})
	if err != nil {
		return nil, err
	}
	return userToPB(u), nil
}

func (s *Server) UpdateUser(ctx context.Context, r *pb.UpdateUserRequest) (*pb.User, error) {
	c := &directory.UpdateUser{Name: r.GetName(), Email: r.Email, Status: r.Status, AddIdentities: identitiesFromPB(r.GetAddIdentities()), RemoveIdentities: identitiesFromPB(r.GetRemoveIdentities())}
	if r.GetSetRoles() {
		roles := r.GetRoles()
		c.Roles = &roles
	}
	if c.Email == nil && c.Status == nil && c.Roles == nil && len(c.AddIdentities) == 0 && len(c.RemoveIdentities) == 0 {
		return nil, broker.Errorf(broker.ErrInvalid, "nothing to update for user %s; give --email, --role, --status, --identity or --remove-identity", r.GetName())
	}
	u, err := applyAs[directory.User](s, ctx, &directory.Command{UpdateUser: c})
	if err != nil {
		return nil, err
	}
	return userToPB(u), nil
}

func (s *Server) RemoveUser(ctx context.Context, r *pb.RemoveUserRequest) (*pb.User, error) {
	u, err := applyAs[directory.User](s, ctx, &directory.Command{RemoveUser: &directory.RemoveUser{Name: r.GetName()}})
	if err != nil {
		return nil, err
	}
	return userToPB(u), nil
}

func (s *Server) GetUser(ctx context.Context, r *pb.GetUserRequest) (*pb.User, error) {
	var out *pb.User
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		u, err := d.User(r.GetName())
		if err == nil {
			out = userToPB(u)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Server) ListUsers(ctx context.Context, r *pb.ListUsersRequest) (*pb.ListUsersResponse, error) {
	resp := &pb.ListUsersResponse{}
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		users, err := d.Users(r.GetIncludeRemoved())
		p := caller(ctx)
		for _, u := range users {
			if seesUser(p, u) {
				resp.Users = append(resp.Users, userToPB(u))
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ---- projects ----

func (s *Server) AddProject(ctx context.Context, r *pb.AddProjectRequest) (*pb.Project, error) {
	p, err := applyAs[directory.Project](s, ctx, &directory.Command{AddProject: &directory.AddProject{Name: r.GetName()}})
	if err != nil {
		return nil, err
	}
	return projectToPB(p), nil
}

func (s *Server) AddProjectMember(ctx context.Context, r *pb.ProjectMemberRequest) (*pb.Project, error) {
	p, err := applyAs[directory.Project](s, ctx, &directory.Command{AddMember: &directory.ProjectMember{Project: r.GetProject(), User: r.GetUser()}})
	if err != nil {
		return nil, err
	}
	return projectToPB(p), nil
}

func (s *Server) RemoveProjectMember(ctx context.Context, r *pb.ProjectMemberRequest) (*pb.Project, error) {
	p, err := applyAs[directory.Project](s, ctx, &directory.Command{RemoveMember: &directory.ProjectMember{Project: r.GetProject(), User: r.GetUser()}})
	if err != nil {
		return nil, err
	}
	return projectToPB(p), nil
}

func (s *Server) ListProjects(ctx context.Context, r *pb.ListProjectsRequest) (*pb.ListProjectsResponse, error) {
	resp := &pb.ListProjectsResponse{}
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		ps, err := d.Projects()
		who := caller(ctx)
		for _, p := range ps {
			if seesProject(who, p) {
				resp.Projects = append(resp.Projects, projectToPB(p))
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ---- grants ----

func (s *Server) AddGrant(ctx context.Context, r *pb.AddGrantRequest) (*pb.Grant, error) {
	g, err := applyAs[directory.Grant](s, ctx, &directory.Command{AddGrant: &directory.AddGrant{
		Subject: r.GetSubject(), Resource: r.GetResource(), Actions: r.GetActions(), From: fromTS(r.GetFrom()), Until: fromTSP(r.GetUntil()),
	}})
	if err != nil {
		return nil, err
	}
	return grantToPB(g, s.cfg.Now()), nil
}

func (s *Server) RevokeGrant(ctx context.Context, r *pb.RevokeGrantRequest) (*pb.Grant, error) {
	g, err := applyAs[directory.Grant](s, ctx, &directory.Command{RevokeGrant: &directory.RevokeGrant{ID: r.GetId(), Reason: r.GetReason()}})
	if err != nil {
		return nil, err
	}
	return grantToPB(g, s.cfg.Now()), nil
}

func (s *Server) ListGrants(ctx context.Context, r *pb.ListGrantsRequest) (*pb.ListGrantsResponse, error) {
	resp := &pb.ListGrantsResponse{}
	now := s.cfg.Now()
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		gs, err := d.Grants(directory.GrantFilter{Subject: r.GetSubject(), Resource: r.GetResource(), IncludeRevoked: r.GetIncludeRevoked()})
		p := caller(ctx)
		var mine []string
		if p.User != nil {
			mine = d.ProjectsOf(p.User.Name)
		}
		for _, g := range gs {
			if seesGrant(p, g, mine) {
				resp.Grants = append(resp.Grants, grantToPB(g, now))
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ---- accounts ----

func (s *Server) GetAccount(ctx context.Context, r *pb.GetAccountRequest) (*pb.Account, error) {
	var out *pb.Account
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		a, err := d.Account(r.GetUser(), r.GetSite())
		if err == nil {
			out = accountToPB(a)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Server) ListAccounts(ctx context.Context, r *pb.ListAccountsRequest) (*pb.ListAccountsResponse, error) {
	resp := &pb.ListAccountsResponse{}
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		as, err := d.Accounts(r.GetSite())
		p := caller(ctx)
		for _, a := range as {
			if seesAccount(p, a) {
				resp.Accounts = append(resp.Accounts, accountToPB(a))
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Server) PinAccount(ctx context.Context, r *pb.PinAccountRequest) (*pb.Account, error) {
	a, err := applyAs[directory.Account](s, ctx, &directory.Command{PinAccount: &directory.PinAccount{
		User: r.GetUser(), Site: r.GetSite(), UID: r.GetUid(), GID: r.GetGid(), Username: r.GetUsername(),
	}})
	if err != nil {
		return nil, err
	}
	return accountToPB(a), nil
}

// ---- cluster ----

func (s *Server) Join(ctx context.Context, r *pb.JoinRequest) (*pb.JoinResponse, error) {
	actor, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	// The joiner's certificate, also when another broker forwarded the
	// request: a broker joins only as itself.
	if id := caller(ctx).Cert; id != nil && (id.Kind != pki.KindBroker || id.Site != r.GetSite() || id.Name != r.GetId()) {
		return nil, status.Errorf(codes.PermissionDenied, "certificate %s may not join as node %s of site %s; a broker joins only under its own certificate's site and name", id, r.GetId(), r.GetSite())
	}
	reg := &directory.RegisterNode{
		Node:     directory.Node{ID: r.GetId(), Site: r.GetSite(), RaftAddr: r.GetRaftAddr(), APIAddr: r.GetApiAddr(), GossipAddr: r.GetGossipAddr()},
		UIDRange: rangeFromPB(r.GetUidRange()), GIDRange: rangeFromPB(r.GetGidRange()),
	}
	if err := s.cfg.Replica.Join(ctx, reg, !r.GetNonvoter(), actor); err != nil {
		return nil, err
	}
	return &pb.JoinResponse{}, nil
}

func (s *Server) RemovePeer(ctx context.Context, r *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {
	actor, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Replica.RemovePeer(ctx, r.GetId(), actor); err != nil {
		return nil, err
	}
	return &pb.RemovePeerResponse{}, nil
}

func (s *Server) ListPeers(ctx context.Context, r *pb.ListPeersRequest) (*pb.ListPeersResponse, error) {
	resp := &pb.ListPeersResponse{}
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		peers, err := s.cfg.Replica.Peers()
		for _, p := range peers {
			pp := &pb.Peer{Id: p.ID, Addr: p.Addr, Suffrage: p.Suffrage, Leader: p.Leader}
			if n, err := d.Node(p.ID); err == nil {
				pp.ApiAddr = n.APIAddr
			}
			resp.Peers = append(resp.Peers, pp)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := s.cfg.Replica.Status()
	var hash string
	err := s.cfg.Replica.Read(ctx, true, func(d *directory.Directory) (err error) {
		hash, err = d.Hash()
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pb.StatusResponse{
		Id: st.ID, Site: st.Site, State: st.State, LeaderId: st.LeaderID, AppliedIndex: st.AppliedIndex,
		CommitIndex: st.CommitIndex, LastSnapshotIndex: st.LastSnapshotIndex, StateHash: hash,
	}, nil
}

func (s *Server) Snapshot(ctx context.Context, _ *pb.SnapshotRequest) (*pb.SnapshotResponse, error) {
	if err := s.cfg.Replica.Snapshot(); err != nil {
		return nil, broker.Errorf(broker.ErrPrecondition, "snapshot failed: %v", err)
	}
	return &pb.SnapshotResponse{}, nil
}

// MapUser answers Open OnDemand's question: which local account at this
// site belongs to the person the portal logged in?
func (s *Server) MapUser(ctx context.Context, r *pb.MapUserRequest) (*pb.MapUserResponse, error) {
	if r.GetRemoteUser() == "" || r.GetSite() == "" {
		return nil, broker.Errorf(broker.ErrInvalid, "give the portal's REMOTE_USER and the site to map it at")
	}
	var out *pb.MapUserResponse
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		u, err := d.MapRemoteUser(r.GetRemoteUser())
		if err != nil {
			return err
		}
		if u.Status != directory.StatusActive {
			return broker.Errorf(broker.ErrPrecondition, "user %s is %s; ask your site administrator", u.Name, u.Status)
		}
		a, err := d.Account(u.Name, r.GetSite())
		if err != nil {
			return broker.Errorf(broker.ErrPrecondition, "user %s has no account at site %s yet; a grant at the site creates one", u.Name, r.GetSite())
		}
		if a.Status != directory.StatusActive {
			return broker.Errorf(broker.ErrPrecondition, "the account of %s at site %s is %s", u.Name, r.GetSite(), a.Status)
		}
		out = &pb.MapUserResponse{User: u.Name, Username: a.Username, Uid: a.UID}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
