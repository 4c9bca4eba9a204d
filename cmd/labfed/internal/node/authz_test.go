package node

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/broker/rpc"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// The credentials of the matrix, in the order each RPC is tried with them:
// refusals first, so an allowed call cannot change what a later refusal
// sees.
const (
	credNone = iota
	credExpired
	credResearcher
	credOtherAdmin // site-admin of psc, acting on rutgers
	credSiteAdmin  // site-admin of rutgers
	credCoordinator
	numCreds
)

var credNames = [numCreds]string{"no credential", "expired credential", "researcher", "site-admin of another site", "site-admin", "coordinator"}

// credUsers are the directory users behind each session credential.
var credUsers = [numCreds]string{"", "rita", "rita", "pete", "rhea", "alice"}

// authzFixture: alice (coordinator, from the bootstrap), rhea
// (site-admin:rutgers), pete (site-admin:psc), rita (researcher at
// rutgers, with a grant and so an account there), tina (researcher at
// rutgers), project cryo-lab with rita.
func authzFixture(t *testing.T) *tlsNode {
	t.Helper()
	tn := startTLSFederation(t)
	r := &pb.IDRange{Lo: 300000, Hi: 309999}
	coord := tn.sessionConn(t, tn.session(t, "alice", false))
	d := pb.NewDirectoryServiceClient(coord)
	ctx := callCtx(t)
	steps := []func() error{
		func() error {
			_, err := d.AddSite(ctx, &pb.AddSiteRequest{Name: "psc", UidRange: r, GidRange: r})
			return err
		},
		addUser(ctx, d, "rhea", "rutgers", "site-admin:rutgers"),
		addUser(ctx, d, "pete", "psc", "site-admin:psc"),
		addUser(ctx, d, "rita", "rutgers"),
		addUser(ctx, d, "tina", "rutgers"),
		func() error {
			_, err := d.AddProject(ctx, &pb.AddProjectRequest{Name: "cryo-lab"})
			return err
		},
		func() error {
			_, err := d.AddProjectMember(ctx, &pb.ProjectMemberRequest{Project: "cryo-lab", User: "rita"})
			return err
		},
		func() error {
			_, err := d.AddGrant(ctx, &pb.AddGrantRequest{Subject: "user:rita", Resource: "rutgers/krios-g4", Actions: []string{broker.ActionInstrumentView}})
			return err
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("fixture step %d: %v", i, err)
		}
	}
	waitUntil(t, 10*time.Second, "the node's signing key is active", func() error {
		k, err := tn.n.Replica().Directory().SigningKey(tn.n.keys.KID())
		if err == nil && k.Status != directory.KeyActive {
			err = fmt.Errorf("key %s is %s", k.KID, k.Status)
		}
		return err
	})
	return tn
}

func addUser(ctx context.Context, d pb.DirectoryServiceClient, name, home string, roles ...string) func() error {
	return func() error {
		_, err := d.AddUser(ctx, &pb.AddUserRequest{Name: name, Email: name + "@example.org", Home: home, Roles: roles})
		return err
	}
}

// session creates a session credential for user straight through Raft,
// as Login does after verifying an ID token; an expired one ended an hour
// ago.
func (tn *tlsNode) session(t testing.TB, user string, expired bool) string {
	t.Helper()
	tok, err := rpc.NewSessionToken()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	cmd := &directory.Command{Time: now, Actor: "test", CreateSession: &directory.CreateSession{
		Session: directory.Session{ID: rpc.SessionDigest(tok), User: user, Site: "rutgers", Expires: now.Add(time.Hour)},
	}}
	if expired {
		cmd.Time, cmd.CreateSession.Session.Expires = now.Add(-2*time.Hour), now.Add(-time.Hour)
	}
	if _, err := tn.n.Replica().Apply(context.Background(), cmd); err != nil {
		t.Fatalf("create session for %s: %v", user, err)
	}
	return tok
}

// sessionConn is a connection with the CA alone that sends tok (if any)
// with every call, as the CLI does after labfed login.
func (tn *tlsNode) sessionConn(t testing.TB, tok string) *grpc.ClientConn {
	t.Helper()
	return tn.sessionConnAt(t, tn.n.Addr(), tok)
}

// sessionConnAt is sessionConn to the node at addr.
func (tn *tlsNode) sessionConnAt(t testing.TB, addr, tok string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(anonTLS(t, tn.fed.caFile)))}
	if tok != "" {
		opts = append(opts, grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), method, req, reply, cc, o...)
		}), grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), desc, cc, method, o...)
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// call is one RPC of the matrix. tag is unique per (RPC, credential), so
// allowed writes never collide with each other.
type call struct {
	method string
	// setup prepares what the call acts on, as the coordinator, and
	// returns what do is then given instead of the tag (if not empty).
	setup func(t *testing.T, d pb.DirectoryServiceClient, tag string) string
	do    func(ctx context.Context, conn *grpc.ClientConn, tag string) error
	// allowed lists the credentials that pass the access rule.
	allowed []int
	// okCode is the outcome of an allowed call; OK unless set.
	okCode codes.Code
}

var (
	anyone  = []int{credNone, credExpired, credResearcher, credOtherAdmin, credSiteAdmin, credCoordinator}
	anyUser = []int{credResearcher, credOtherAdmin, credSiteAdmin, credCoordinator}
	admins  = []int{credOtherAdmin, credSiteAdmin, credCoordinator}
	rutAdm  = []int{credSiteAdmin, credCoordinator}
	coordOK = []int{credCoordinator}
)

func dir(c *grpc.ClientConn) pb.DirectoryServiceClient { return pb.NewDirectoryServiceClient(c) }
func cls(c *grpc.ClientConn) pb.ClusterServiceClient   { return pb.NewClusterServiceClient(c) }
func lgn(c *grpc.ClientConn) pb.LoginServiceClient     { return pb.NewLoginServiceClient(c) }

func ignore[T any](_ T, err error) error { return err }

func matrix() []call {
	return []call{
		{method: "AddSite", allowed: coordOK, do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
			r := &pb.IDRange{Lo: 700000, Hi: 700999}
			return ignore(dir(c).AddSite(ctx, &pb.AddSiteRequest{Name: "site-" + tag, UidRange: r, GidRange: r}))
		}},
		{method: "UpdateSite", allowed: coordOK, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).UpdateSite(ctx, &pb.UpdateSiteRequest{Name: "rutgers", UidRange: &pb.IDRange{Lo: 200000, Hi: 219999}}))
		}},
		{method: "ListSites", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).ListSites(ctx, &pb.ListSitesRequest{}))
		}},
		{method: "AddUser", allowed: rutAdm, do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
			return ignore(dir(c).AddUser(ctx, &pb.AddUserRequest{Name: "u" + tag, Email: "u" + tag + "@rutgers.edu", Home: "rutgers"}))
		}},
		{method: "UpdateUser", allowed: rutAdm, do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
			email := "tina" + tag + "@rutgers.edu"
			return ignore(dir(c).UpdateUser(ctx, &pb.UpdateUserRequest{Name: "tina", Email: &email}))
		}},
		{method: "RemoveUser", allowed: rutAdm,
			setup: func(t *testing.T, d pb.DirectoryServiceClient, tag string) string {
				if err := addUser(callCtx(t), d, "rm"+tag, "rutgers")(); err != nil {
					t.Fatal(err)
				}
				return ""
			},
			do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
				return ignore(dir(c).RemoveUser(ctx, &pb.RemoveUserRequest{Name: "rm" + tag}))
			}},
		{method: "GetUser", allowed: admins, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).GetUser(ctx, &pb.GetUserRequest{Name: "tina"}))
		}},
		{method: "ListUsers", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).ListUsers(ctx, &pb.ListUsersRequest{}))
		}},
		{method: "AddProject", allowed: coordOK, do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
			return ignore(dir(c).AddProject(ctx, &pb.AddProjectRequest{Name: "p" + tag}))
		}},
		{method: "AddProjectMember", allowed: coordOK, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).AddProjectMember(ctx, &pb.ProjectMemberRequest{Project: "cryo-lab", User: "tina"}))
		}},
		{method: "RemoveProjectMember", allowed: coordOK,
			setup: func(t *testing.T, d pb.DirectoryServiceClient, tag string) string {
				ctx := callCtx(t)
				if _, err := d.AddProject(ctx, &pb.AddProjectRequest{Name: "rp" + tag}); err != nil {
					t.Fatal(err)
				}
				if _, err := d.AddProjectMember(ctx, &pb.ProjectMemberRequest{Project: "rp" + tag, User: "rita"}); err != nil {
					t.Fatal(err)
				}
				return ""
			},
			do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
				return ignore(dir(c).RemoveProjectMember(ctx, &pb.ProjectMemberRequest{Project: "rp" + tag, User: "rita"}))
			}},
		{method: "ListProjects", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).ListProjects(ctx, &pb.ListProjectsRequest{}))
		}},
		{method: "AddGrant", allowed: rutAdm, do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
			return ignore(dir(c).AddGrant(ctx, &pb.AddGrantRequest{Subject: "user:tina", Resource: "rutgers/res" + tag, Actions: []string{broker.ActionInstrumentView}}))
		}},
		{method: "RevokeGrant", allowed: rutAdm,
			setup: func(t *testing.T, d pb.DirectoryServiceClient, tag string) string {
				g, err := d.AddGrant(callCtx(t), &pb.AddGrantRequest{Subject: "user:tina", Resource: "rutgers/rv" + tag, Actions: []string{broker.ActionInstrumentView}})
				if err != nil {
					t.Fatal(err)
				}
				return g.GetId()
			},
			do: func(ctx context.Context, c *grpc.ClientConn, id string) error {
				return ignore(dir(c).RevokeGrant(ctx, &pb.RevokeGrantRequest{Id: id}))
			}},
		{method: "ListGrants", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).ListGrants(ctx, &pb.ListGrantsRequest{}))
		}},
		{method: "GetAccount", allowed: []int{credResearcher, credSiteAdmin, credCoordinator}, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).GetAccount(ctx, &pb.GetAccountRequest{User: "rita", Site: "rutgers"}))
		}},
		{method: "ListAccounts", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).ListAccounts(ctx, &pb.ListAccountsRequest{Site: "rutgers"}))
		}},
		{method: "PinAccount", allowed: rutAdm,
			setup: func(t *testing.T, d pb.DirectoryServiceClient, tag string) string {
				if err := addUser(callCtx(t), d, "pin"+tag, "rutgers")(); err != nil {
					t.Fatal(err)
				}
				return ""
			},
			do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
				var uid uint32
				fmt.Sscan(strings.TrimLeft(tag, "abcdefghijklmnopqrstuvwxyz"), &uid)
				return ignore(dir(c).PinAccount(ctx, &pb.PinAccountRequest{User: "pin" + tag, Site: "rutgers", Uid: 5000 + uid}))
			}},
		{method: "MapUser", allowed: rutAdm, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).MapUser(ctx, &pb.MapUserRequest{RemoteUser: "rita@example.org", Site: "rutgers"}))
		}},

		// People never join Raft: only brokers do.
		{method: "Join", allowed: nil, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(cls(c).Join(ctx, &pb.JoinRequest{Id: "rutgers-9", Site: "rutgers", RaftAddr: "127.0.0.1:1", ApiAddr: "127.0.0.1:2"}))
		}},
		{method: "RemovePeer", allowed: coordOK, okCode: codes.NotFound, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(cls(c).RemovePeer(ctx, &pb.RemovePeerRequest{Id: "no-such-node"}))
		}},
		{method: "ListPeers", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(cls(c).ListPeers(ctx, &pb.ListPeersRequest{}))
		}},
		{method: "Status", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(cls(c).Status(ctx, &pb.StatusRequest{}))
		}},
		{method: "Snapshot", allowed: coordOK, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(cls(c).Snapshot(ctx, &pb.SnapshotRequest{}))
		}},

		{method: "ListMembers", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewDiscoveryServiceClient(c).ListMembers(ctx, &pb.ListMembersRequest{}))
		}},
		{method: "ListInstruments", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewDiscoveryServiceClient(c).ListInstruments(ctx, &pb.ListInstrumentsRequest{}))
		}},
		{method: "ListCompute", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewDiscoveryServiceClient(c).ListCompute(ctx, &pb.ListComputeRequest{Near: "rutgers"}))
		}},
		{method: "Place", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewDiscoveryServiceClient(c).Place(ctx, &pb.PlaceRequest{DataSite: "rutgers", Gpus: 1}))
		}},

		{method: "GossipKeys", allowed: coordOK, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewDiscoveryServiceClient(c).GossipKeys(ctx, &pb.GossipKeysRequest{Op: "list"}))
		}},
		// The test node offers nothing: past the rule, the handler says so.
		{method: "ReportStatus", allowed: rutAdm, okCode: codes.NotFound, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			st := "available"
			return ignore(pb.NewDiscoveryServiceClient(c).ReportStatus(ctx, &pb.ReportStatusRequest{Id: "rutgers/krios-g4", Status: &st}))
		}},
		{method: "ListKeys", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).ListKeys(ctx, &pb.ListKeysRequest{}))
		}},
		// Only brokers publish keys, each its own: no person may.
		{method: "PublishKey", allowed: nil, do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
			return ignore(dir(c).PublishKey(ctx, &pb.PublishKeyRequest{Kid: "k-" + tag, Public: make([]byte, 32)}))
		}},
		{method: "RevokeKey", allowed: coordOK, okCode: codes.NotFound, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).RevokeKey(ctx, &pb.RevokeKeyRequest{Kid: "no-such-key"}))
		}},
		// Anyone may ask; the decision is authz.Decide's. rita holds a view
		// grant; pete administers another site and may not ask for her.
		{method: "Issue", allowed: []int{credResearcher, credSiteAdmin, credCoordinator}, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewTokenServiceClient(c).Issue(ctx, &pb.IssueTokenRequest{Scope: "instrument.view:rutgers/krios-g4", User: "rita"}))
		}},
		{method: "Revoke", allowed: admins, do: func(ctx context.Context, c *grpc.ClientConn, tag string) error {
			return ignore(pb.NewTokenServiceClient(c).Revoke(ctx, &pb.RevokeTokensRequest{Jti: "jti-" + tag}))
		}},
		{method: "ListLocks", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewTokenServiceClient(c).ListLocks(ctx, &pb.ListLocksRequest{}))
		}},
		// The stream is checked by the stream interceptor, like the unary
		// calls: the first message or the refusal.
		{method: "WatchTrust", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			stream, err := pb.NewTokenServiceClient(c).WatchTrust(ctx, &pb.WatchTrustRequest{})
			if err != nil {
				return err
			}
			return ignore(stream.Recv())
		}},
		{method: "GetTrust", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewTokenServiceClient(c).GetTrust(ctx, &pb.GetTrustRequest{}))
		}},
		// The node under test is a rutgers broker: its own site's
		// administrators may rotate its key.
		{method: "RotateKey", allowed: rutAdm, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(dir(c).RotateKey(ctx, &pb.RotateKeyRequest{}))
		}},
		// Everyone reads what concerns them; administrators verify and
		// report; only agents and brokers append.
		{method: "Query", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewAuditServiceClient(c).Query(ctx, &pb.AuditQueryRequest{}))
		}},
		{method: "Follow", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			stream, err := pb.NewAuditServiceClient(c).Follow(ctx, &pb.AuditQueryRequest{After: 1})
			if err != nil {
				return err
			}
			return ignore(stream.Recv())
		}},
		{method: "Verify", allowed: admins, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewAuditServiceClient(c).Verify(ctx, &pb.VerifyAuditRequest{}))
		}},
		{method: "Append", allowed: nil, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewAuditServiceClient(c).Append(ctx, &pb.AppendAuditRequest{Entries: []*pb.AuditEntry{{Actor: "x", Action: "session.open", Decision: "allow", Time: timestamppb.Now()}}}))
		}},
		// Past the rule, an archive not starting at the checkpoint is refused.
		{method: "Archive", allowed: coordOK, okCode: codes.FailedPrecondition, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewAuditServiceClient(c).Archive(ctx, &pb.ArchiveAuditRequest{Through: 999999, Hash: "x"}))
		}},
		{method: "Usage", allowed: admins, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(pb.NewAuditServiceClient(c).Usage(ctx, &pb.UsageRequest{By: "site"}))
		}},
		{method: "GetLoginConfig", allowed: anyone, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(lgn(c).GetLoginConfig(ctx, &pb.GetLoginConfigRequest{}))
		}},
		// This node has no OIDC issuer configured: everyone reaches the
		// handler, which says so. Login itself is covered with a real
		// issuer in the login tests.
		{method: "Login", allowed: anyone, okCode: codes.FailedPrecondition, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(lgn(c).Login(ctx, &pb.LoginRequest{IdToken: "x.y.z"}))
		}},
		{method: "WhoAmI", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(lgn(c).WhoAmI(ctx, &pb.WhoAmIRequest{}))
		}},
		{method: "Logout", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(lgn(c).Logout(ctx, &pb.LogoutRequest{}))
		}},
		{method: "RevokeSessions", allowed: rutAdm, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(lgn(c).RevokeSessions(ctx, &pb.RevokeSessionsRequest{User: "tina"}))
		}},
		{method: "ListSessions", allowed: anyUser, do: func(ctx context.Context, c *grpc.ClientConn, _ string) error {
			return ignore(lgn(c).ListSessions(ctx, &pb.ListSessionsRequest{}))
		}},
	}
}

// TestRoleMatrix calls every RPC of the API with each kind of credential and
// checks it gets exactly the allowed outcome: Unauthenticated without a
// valid credential, PermissionDenied for a role that may not, and the
// call's normal result for a role that may.
func TestRoleMatrix(t *testing.T) {
	tn := authzFixture(t)
	coord := dir(tn.sessionConn(t, tn.session(t, "alice", false)))
	covered := map[string]bool{}
	for _, c := range matrix() {
		covered[c.method] = true
		t.Run(c.method, func(t *testing.T) {
			for cred := range numCreds {
				tag := fmt.Sprintf("%s%d", strings.ToLower(c.method[:1]), cred)
				arg := tag
				if c.setup != nil {
					if a := c.setup(t, coord, tag); a != "" {
						arg = a
					}
				}
				tok := ""
				switch cred {
				case credNone:
				case credExpired:
					tok = tn.session(t, credUsers[cred], true)
				default:
					tok = tn.session(t, credUsers[cred], false)
				}
				err := c.do(callCtx(t), tn.sessionConn(t, tok), arg)
				want := codes.PermissionDenied
				switch {
				case slices.Contains(c.allowed, cred):
					want = codes.OK
					if c.okCode != codes.OK {
						want = c.okCode
					}
				case cred == credNone || cred == credExpired:
					want = codes.Unauthenticated
				}
				if got := status.Code(err); got != want {
					t.Errorf("%s with %s = %v, want %v", c.method, credNames[cred], err, want)
				}
			}
		})
	}
	// Every method the server registers is in the matrix.
	for _, fd := range []protoreflect.FileDescriptor{pb.File_labfed_v1_directory_proto, pb.File_labfed_v1_login_proto, pb.File_labfed_v1_discovery_proto, pb.File_labfed_v1_token_proto, pb.File_labfed_v1_audit_proto} {
		for i := range fd.Services().Len() {
			ms := fd.Services().Get(i).Methods()
			for j := range ms.Len() {
				if name := string(ms.Get(j).Name()); !covered[name] {
					t.Errorf("RPC %s is not in the role matrix", name)
				}
			}
		}
	}
}

// TestListsShowOnlyWhatTheCallerMaySee checks the filtering of list RPCs
// that every role may call.
func TestListsShowOnlyWhatTheCallerMaySee(t *testing.T) {
	tn := authzFixture(t)
	ctx := callCtx(t)
	coord := dir(tn.sessionConn(t, tn.session(t, "alice", false)))
	if _, err := coord.AddGrant(ctx, &pb.AddGrantRequest{Subject: "user:tina", Resource: "psc/bridges2", Actions: []string{broker.ActionComputeCreate}}); err != nil {
		t.Fatal(err)
	}
	names := func(who string) (users, grants, accounts, projects []string) {
		d := dir(tn.sessionConn(t, tn.session(t, who, false)))
		us, err := d.ListUsers(ctx, &pb.ListUsersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us.GetUsers() {
			users = append(users, u.GetName())
		}
		gs, err := d.ListGrants(ctx, &pb.ListGrantsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs.GetGrants() {
			grants = append(grants, g.GetSubject()+"@"+g.GetResource())
		}
		for _, site := range []string{"rutgers", "psc"} {
			as, err := d.ListAccounts(ctx, &pb.ListAccountsRequest{Site: site})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range as.GetAccounts() {
				accounts = append(accounts, a.GetUser()+"@"+a.GetSite())
			}
		}
		ps, err := d.ListProjects(ctx, &pb.ListProjectsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps.GetProjects() {
			projects = append(projects, p.GetName())
		}
		return
	}
	for _, tc := range []struct {
		who                               string
		users, grants, accounts, projects string
	}{
		{"rita", "rita", "user:rita@rutgers/krios-g4", "rita@rutgers", "cryo-lab"},
		{"tina", "tina", "user:tina@psc/bridges2", "tina@psc", ""},
		// pete administers psc: everyone's names, psc's grants and accounts.
		{"pete", "alice pete rhea rita tina", "user:tina@psc/bridges2", "tina@psc", "cryo-lab"},
		{"alice", "alice pete rhea rita tina", "user:rita@rutgers/krios-g4 user:tina@psc/bridges2", "rita@rutgers tina@psc", "cryo-lab"},
	} {
		u, g, a, p := names(tc.who)
		for _, f := range []struct{ what, got, want string }{
			{"users", strings.Join(u, " "), tc.users},
			{"grants", strings.Join(g, " "), tc.grants},
			{"accounts", strings.Join(a, " "), tc.accounts},
			{"projects", strings.Join(p, " "), tc.projects},
		} {
			if f.got != f.want {
				t.Errorf("%s sees %s %q, want %q", tc.who, f.what, f.got, f.want)
			}
		}
	}
}

// TestCertificatePrincipals checks callers that authenticate with a
// certificate: an administrator's names a directory user of its own site,
// whose roles apply; an agent acts for its site only; a broker may join
// but not administer.
func TestCertificatePrincipals(t *testing.T) {
	tn := authzFixture(t)
	conn := func(id pki.Identity) pb.DirectoryServiceClient {
		return dir(dialTLS(t, tn.n.Addr(), clientTLS(t, tn.fed.issue(t, id))))
	}
	ctx := callCtx(t)
	r := &pb.IDRange{Lo: 800000, Hi: 800999}
	for _, tc := range []struct {
		name string
		id   pki.Identity
		do   func(d pb.DirectoryServiceClient) error
		want codes.Code
		msg  string
	}{
		{"admin cert of the coordinator", pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "alice"},
			func(d pb.DirectoryServiceClient) error {
				return ignore(d.AddSite(ctx, &pb.AddSiteRequest{Name: "cert-site", UidRange: r, GidRange: r}))
			}, codes.OK, ""},
		{"admin cert of a researcher", pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "rita"},
			func(d pb.DirectoryServiceClient) error {
				return ignore(d.AddSite(ctx, &pb.AddSiteRequest{Name: "cert-site2", UidRange: r, GidRange: r}))
			}, codes.PermissionDenied, "user rita (researcher) may not add sites"},
		{"admin cert naming a user of another site", pki.Identity{Site: "psc", Kind: pki.KindAdmin, Name: "alice"},
			func(d pb.DirectoryServiceClient) error { return ignore(d.ListSites(ctx, &pb.ListSitesRequest{})) }, codes.PermissionDenied, "names no directory user alice of site psc"},
		{"admin cert naming nobody", pki.Identity{Site: "rutgers", Kind: pki.KindAdmin, Name: "ghost"},
			func(d pb.DirectoryServiceClient) error { return ignore(d.ListSites(ctx, &pb.ListSitesRequest{})) }, codes.PermissionDenied, "names no directory user ghost"},
		{"agent maps its own site's users", pki.Identity{Site: "rutgers", Kind: pki.KindAgent, Name: "agent-1"},
			func(d pb.DirectoryServiceClient) error {
				return ignore(d.MapUser(ctx, &pb.MapUserRequest{RemoteUser: "rita@example.org", Site: "rutgers"}))
			}, codes.OK, ""},
		{"agent of another site", pki.Identity{Site: "psc", Kind: pki.KindAgent, Name: "agent-1"},
			func(d pb.DirectoryServiceClient) error {
				return ignore(d.MapUser(ctx, &pb.MapUserRequest{RemoteUser: "rita@example.org", Site: "rutgers"}))
			}, codes.PermissionDenied, "certificate psc/agent/agent-1 may not map portal users at site rutgers"},
		{"agent cannot grant", pki.Identity{Site: "rutgers", Kind: pki.KindAgent, Name: "agent-1"},
			func(d pb.DirectoryServiceClient) error {
				return ignore(d.AddGrant(ctx, &pb.AddGrantRequest{Subject: "user:rita", Resource: "rutgers/x", Actions: []string{"instrument.view"}}))
			}, codes.PermissionDenied, "may not grant"},
		{"broker cannot administer", pki.Identity{Site: "psc", Kind: pki.KindBroker, Name: "psc-1"},
			func(d pb.DirectoryServiceClient) error {
				return ignore(d.AddUser(ctx, &pb.AddUserRequest{Name: "evil", Email: "evil@example.org", Home: "psc"}))
			}, codes.PermissionDenied, "certificate psc/broker/psc-1 may not register users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(conn(tc.id))
			if status.Code(err) != tc.want || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("= %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
	t.Run("agent lists its site's accounts, not another's", func(t *testing.T) {
		d := conn(pki.Identity{Site: "rutgers", Kind: pki.KindAgent, Name: "agent-2"})
		as, err := d.ListAccounts(ctx, &pb.ListAccountsRequest{Site: "rutgers"})
		if err != nil || len(as.GetAccounts()) != 1 {
			t.Errorf("ListAccounts(rutgers) = %v, %v; want rita's", as, err)
		}
		if _, err := d.GetAccount(ctx, &pb.GetAccountRequest{User: "tina", Site: "psc"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("GetAccount(tina@psc) by the rutgers agent = %v, want PermissionDenied", err)
		}
	})
}

// TestBootstrapCredential checks what the bootstrap leaves behind: the first
// coordinator in the directory and their session credential in a file only
// its owner can read, which works.
func TestBootstrapCredential(t *testing.T) {
	tn := startTLSFederation(t)
	path := tn.cfg.Bootstrap.Credential
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("bootstrap credential: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap credential %s has mode %04o, want 0600", path, fi.Mode().Perm())
	}
	cred, err := client.LoadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	who, err := lgn(tn.sessionConn(t, cred.Token)).WhoAmI(callCtx(t), &pb.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if who.GetUser() != "alice" || !slices.Equal(who.GetRoles(), []string{"coordinator"}) || who.GetMethod() != "session" {
		t.Errorf("WhoAmI with the bootstrap credential = %v, want alice, coordinator, session", who)
	}
	if until := time.Until(who.GetExpires().AsTime()); until < 23*time.Hour || until > 24*time.Hour {
		t.Errorf("bootstrap credential lives %v, want 24h", until)
	}
	// Logging out ends it everywhere.
	if _, err := lgn(tn.sessionConn(t, cred.Token)).Logout(callCtx(t), &pb.LogoutRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = lgn(tn.sessionConn(t, cred.Token)).WhoAmI(callCtx(t), &pb.WhoAmIRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("WhoAmI after logout = %v, want Unauthenticated", err)
	}
}

// TestForwardingHeadersBelievedOnlyFromMembers checks that the headers a
// follower sets when it forwards a request are believed only from a broker
// the directory knows: a broker certificate that never joined cannot speak
// for a coordinator.
func TestForwardingHeadersBelievedOnlyFromMembers(t *testing.T) {
	tn := authzFixture(t)
	outsider := dir(dialTLS(t, tn.n.Addr(), clientTLS(t, tn.fed.issue(t, pki.Identity{Site: "psc", Kind: pki.KindBroker, Name: "psc-9"}))))
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "labfed-forwarded", "1", "labfed-actor", "rutgers/admin/alice")
	_, err := outsider.UpdateUser(ctx, &pb.UpdateUserRequest{Name: "tina", SetRoles: true, Roles: []string{"coordinator"}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "certificate psc/broker/psc-9 may not") {
		t.Errorf("UpdateUser through a non-member broker naming the coordinator = %v, want refused as psc-9", err)
	}
	// The member broker (the node itself) is believed.
	member := dir(dialTLS(t, tn.n.Addr(), clientTLS(t, tn.fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"}))))
	if _, err := member.UpdateUser(ctx, &pb.UpdateUserRequest{Name: "tina", SetRoles: true, Roles: []string{"researcher"}}); err != nil {
		t.Errorf("UpdateUser forwarded by a member broker for the coordinator = %v", err)
	}
	// Two callers named at once is refused outright.
	two := metadata.AppendToOutgoingContext(callCtx(t), "labfed-forwarded", "1", "labfed-actor", "rutgers/admin/alice", "labfed-actor", "rutgers/admin/rita")
	if _, err := member.ListSites(two, &pb.ListSitesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("two labfed-actor headers = %v, want Unauthenticated", err)
	}
}

// TestSiteAdminsCannotReachAbove checks that a site administrator cannot act
// on a coordinator homed at their site, and that refusals to researchers do
// not tell which users exist.
func TestSiteAdminsCannotReachAbove(t *testing.T) {
	tn := authzFixture(t)
	coordTok := tn.session(t, "alice", false)
	rhea := lgn(tn.sessionConn(t, tn.session(t, "rhea", false)))
	if _, err := rhea.RevokeSessions(callCtx(t), &pb.RevokeSessionsRequest{User: "alice"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("site admin ends the coordinator's sessions = %v, want PermissionDenied", err)
	}
	if _, err := rhea.ListSessions(callCtx(t), &pb.ListSessionsRequest{User: "alice"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("site admin lists the coordinator's sessions = %v, want PermissionDenied", err)
	}
	if _, err := lgn(tn.sessionConn(t, coordTok)).WhoAmI(callCtx(t), &pb.WhoAmIRequest{}); err != nil {
		t.Errorf("coordinator's session after the refused revocation = %v", err)
	}
	// A site admin's own researchers are in reach.
	if _, err := rhea.RevokeSessions(callCtx(t), &pb.RevokeSessionsRequest{User: "tina"}); err != nil {
		t.Errorf("site admin ends a researcher's sessions = %v", err)
	}

	rita := tn.sessionConn(t, tn.session(t, "rita", false))
	email := "x@example.org"
	var msgs []string
	for _, name := range []string{"pete", "no-such-user"} {
		_, err := dir(rita).UpdateUser(callCtx(t), &pb.UpdateUserRequest{Name: name, Email: &email})
		msgs = append(msgs, status.Convert(err).Message())
		_, err = lgn(rita).ListSessions(callCtx(t), &pb.ListSessionsRequest{User: name})
		msgs = append(msgs, status.Convert(err).Message())
	}
	if msgs[0] != msgs[2] || msgs[1] != msgs[3] {
		t.Errorf("refusals to a researcher differ between an existing and a missing user:\n%s", strings.Join(msgs, "\n"))
	}
}
