package rpc

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// A rule says who may call one RPC. Every RPC the server registers has
// exactly one; a method without a rule is refused (see TestPolicyCoversEveryRPC).
type rule struct {
	// public RPCs need no credential (looking up how to log in, logging
	// in).
	public bool
	// write RPCs change the directory; on a follower they are forwarded
	// to the leader before the rule is checked, so the decision is taken
	// on the newest state.
	write bool
	// check decides for an authenticated caller; nil lets any
	// authenticated caller in (handlers then show each caller only what
	// is theirs).
	check func(s *Server, ctx context.Context, p *Principal, req any) error
}

func denied(p *Principal, what, who string) error {
	return status.Errorf(codes.PermissionDenied, "%s may not %s; that needs %s", p, what, who)
}

func coordinatorOnly(what string) func(*Server, context.Context, *Principal, any) error {
	return func(_ *Server, _ context.Context, p *Principal, _ any) error {
		if !p.Coordinator() {
			return denied(p, what, "the coordinator role")
		}
		return nil
	}
}

func anyAdmin(what string) func(*Server, context.Context, *Principal, any) error {
	return func(_ *Server, _ context.Context, p *Principal, _ any) error {
		if !p.AnyAdmin() {
			return denied(p, what, "a site administrator or coordinator role")
		}
		return nil
	}
}

func brokerOnly(what string) func(*Server, context.Context, *Principal, any) error {
	return func(_ *Server, _ context.Context, p *Principal, _ any) error {
		if !p.Broker() {
			return denied(p, what, "a broker certificate")
		}
		return nil
	}
}

// siteAdminOf lets in the administrators of the site a request names.
func siteAdminOf(what string, site func(req any) string) func(*Server, context.Context, *Principal, any) error {
	return func(_ *Server, _ context.Context, p *Principal, req any) error {
		if st := site(req); !p.AdminOf(st) {
			return denied(p, fmt.Sprintf("%s at site %s", what, st), "site-admin:"+st+" or coordinator")
		}
		return nil
	}
}

// assignable reports whether a site administrator of home may hand out
// roles: researcher and their own site's administration, nothing more.
func assignable(home string, roles []string) bool {
	for _, r := range roles {
		if r != directory.RoleResearcher && r != directory.RoleSiteAdminPrefix+home {
			return false
		}
	}
	return true
}

var policy = map[string]rule{
	pb.DirectoryService_AddSite_FullMethodName:    {write: true, check: coordinatorOnly("add sites")},
	pb.DirectoryService_UpdateSite_FullMethodName: {write: true, check: coordinatorOnly("change sites")},
	pb.DirectoryService_ListSites_FullMethodName:  {},

	pb.DirectoryService_AddUser_FullMethodName:    {write: true, check: checkAddUser},
	pb.DirectoryService_UpdateUser_FullMethodName: {write: true, check: checkChangeUser},
	pb.DirectoryService_RemoveUser_FullMethodName: {write: true, check: checkChangeUser},
	pb.DirectoryService_GetUser_FullMethodName:    {check: checkGetUser},
	pb.DirectoryService_ListUsers_FullMethodName:  {},

	pb.DirectoryService_AddProject_FullMethodName:          {write: true, check: coordinatorOnly("create projects")},
	pb.DirectoryService_AddProjectMember_FullMethodName:    {write: true, check: coordinatorOnly("change project membership")},
	pb.DirectoryService_RemoveProjectMember_FullMethodName: {write: true, check: coordinatorOnly("change project membership")},
	pb.DirectoryService_ListProjects_FullMethodName:        {},

	pb.DirectoryService_AddGrant_FullMethodName:    {write: true, check: checkAddGrant},
	pb.DirectoryService_RevokeGrant_FullMethodName: {write: true, check: checkRevokeGrant},
	pb.DirectoryService_ListGrants_FullMethodName:  {},

	pb.DirectoryService_GetAccount_FullMethodName:   {check: checkGetAccount},
	pb.DirectoryService_ListAccounts_FullMethodName: {},
	pb.DirectoryService_PinAccount_FullMethodName: {write: true, check: siteAdminOf("pin accounts", func(r any) string {
		return r.(*pb.PinAccountRequest).GetSite()
	})},
	pb.DirectoryService_MapUser_FullMethodName: {check: checkMapUser},

	// The trust bundle is public within the federation; a broker
	// publishes its own key (PublishKey takes the issuer from the
	// certificate); coordinators revoke.
	pb.DirectoryService_ListKeys_FullMethodName:   {},
	pb.DirectoryService_PublishKey_FullMethodName: {write: true, check: brokerOnly("publish signing keys")},
	pb.DirectoryService_RevokeKey_FullMethodName:  {write: true, check: coordinatorOnly("revoke signing keys")},
	// A broker's own key is rotated on that broker, by its site's
	// administrators or a coordinator.
	pb.DirectoryService_RotateKey_FullMethodName: {check: func(s *Server, _ context.Context, p *Principal, _ any) error {
		if site := s.cfg.Login.Site; !p.AdminOf(site) {
			return denied(p, "rotate the signing key of a broker of "+site, "site-admin:"+site+" or coordinator")
		}
		return nil
	}},

	pb.ClusterService_Join_FullMethodName:       {check: brokerOnly("join the federation")},
	pb.ClusterService_RemovePeer_FullMethodName: {check: coordinatorOnly("remove Raft peers")},
	pb.ClusterService_ListPeers_FullMethodName:  {},
	pb.ClusterService_Status_FullMethodName:     {},
	pb.ClusterService_Snapshot_FullMethodName:   {check: coordinatorOnly("force Raft snapshots")},

	// What the federation offers is visible to everyone in it.
	pb.DiscoveryService_ListMembers_FullMethodName:     {},
	pb.DiscoveryService_ListInstruments_FullMethodName: {},
	pb.DiscoveryService_ListCompute_FullMethodName:     {},
	pb.DiscoveryService_Place_FullMethodName:           {},
	pb.DiscoveryService_GossipKeys_FullMethodName:      {check: coordinatorOnly("rotate the gossip key")},
	pb.DiscoveryService_ReportStatus_FullMethodName: {check: func(_ *Server, _ context.Context, p *Principal, req any) error {
		site, _, _ := strings.Cut(req.(*pb.ReportStatusRequest).GetId(), "/")
		if !p.AdminOf(site) && !p.AgentOf(site) {
			return denied(p, "change what site "+site+" offers", "the site's agent, site-admin:"+site+" or coordinator")
		}
		return nil
	}},

	// Issue decides itself (authz.Decide) who gets what; anyone
	// authenticated may ask.
	pb.TokenService_Issue_FullMethodName:     {},
	pb.TokenService_Revoke_FullMethodName:    {write: true, check: checkRevoke},
	pb.TokenService_ListLocks_FullMethodName: {},
	// Verifiers (agents, the CLI) follow keys and locks; both are public
	// within the federation, as ListKeys and ListLocks are.
	pb.TokenService_WatchTrust_FullMethodName: {},
	pb.TokenService_GetTrust_FullMethodName:   {},

	// The audit trail: every authenticated caller reads what concerns
	// them (Query and Follow filter per caller); agents and brokers append
	// (as themselves); administrators verify and report usage.
	pb.AuditService_Query_FullMethodName:  {},
	pb.AuditService_Follow_FullMethodName: {},
	pb.AuditService_Verify_FullMethodName: {check: anyAdmin("verify the audit log")},
	pb.AuditService_Append_FullMethodName: {write: true, check: func(_ *Server, _ context.Context, p *Principal, _ any) error {
		if p.Cert == nil || p.User != nil || (p.Cert.Kind != pki.KindAgent && p.Cert.Kind != pki.KindBroker) {
			if p.Method != MethodDevelopment {
				return denied(p, "append audit entries", "a site agent or broker certificate")
			}
		}
		return nil
	}},
	pb.AuditService_Usage_FullMethodName:   {check: anyAdmin("report usage")},
	pb.AuditService_Archive_FullMethodName: {write: true, check: coordinatorOnly("archive the audit log")},

	pb.LoginService_GetLoginConfig_FullMethodName: {public: true},
	pb.LoginService_Login_FullMethodName:          {public: true},
	pb.LoginService_WhoAmI_FullMethodName:         {},
	pb.LoginService_Logout_FullMethodName:         {},
	pb.LoginService_RevokeSessions_FullMethodName: {write: true, check: checkSessionsOf},
	pb.LoginService_ListSessions_FullMethodName:   {check: checkSessionsOf},
}

func checkAddUser(_ *Server, _ context.Context, p *Principal, req any) error {
	r := req.(*pb.AddUserRequest)
	if p.Coordinator() {
		return nil
	}
	if !p.AdminOf(r.GetHome()) {
		return denied(p, "register users of site "+r.GetHome(), "site-admin:"+r.GetHome()+" or coordinator")
	}
	if !assignable(r.GetHome(), r.GetRoles()) {
		return denied(p, "give roles "+strings.Join(r.GetRoles(), ", "), "the coordinator role (site administrators give researcher and site-admin:"+r.GetHome()+")")
	}
	return nil
}

// checkChangeUser covers UpdateUser and RemoveUser: coordinators, and the
// administrators of the user's home site for users who are not
// coordinators themselves.
func checkChangeUser(s *Server, ctx context.Context, p *Principal, req any) error {
	if p.Coordinator() {
		return nil
	}
	name := req.(interface{ GetName() string }).GetName()
	if !p.AnyAdmin() {
		// Refuse before looking anything up, so refusals do not tell
		// which users exist or where they are homed.
		return denied(p, "change users", "site-admin of their home site or coordinator")
	}
	u, err := s.siteAdminTarget(ctx, p, name)
	if err != nil {
		return err
	}
	if r, ok := req.(*pb.UpdateUserRequest); ok && r.GetSetRoles() && !assignable(u.Home, r.GetRoles()) {
		return denied(p, "give roles "+strings.Join(r.GetRoles(), ", "), "the coordinator role (site administrators give researcher and site-admin:"+u.Home+")")
	}
	return nil
}

func checkGetUser(_ *Server, _ context.Context, p *Principal, req any) error {
	if name := req.(*pb.GetUserRequest).GetName(); !p.Is(name) && !p.AnyAdmin() {
		return denied(p, "look up user "+name, "a site administrator or coordinator role (anyone may look up themselves)")
	}
	return nil
}

func resourceSite(resource string) (string, error) {
	r, err := broker.ParseResource(resource)
	if err != nil {
		return "", err
	}
	return r.Site, nil
}

func checkAddGrant(_ *Server, _ context.Context, p *Principal, req any) error {
	site, err := resourceSite(req.(*pb.AddGrantRequest).GetResource())
	if err != nil {
		return err
	}
	if !p.AdminOf(site) {
		return denied(p, "grant access to resources of site "+site, "site-admin:"+site+" or coordinator")
	}
	return nil
}

func checkRevokeGrant(s *Server, ctx context.Context, p *Principal, req any) error {
	id := req.(*pb.RevokeGrantRequest).GetId()
	if !p.AnyAdmin() {
		return denied(p, "revoke grants", "a site administrator or coordinator role")
	}
	var g *directory.Grant
	if err := s.local(ctx, func(d *directory.Directory) (err error) { g, err = d.Grant(id); return err }); err != nil {
		return err
	}
	site, err := resourceSite(g.Resource)
	if err != nil {
		return err
	}
	if !p.AdminOf(site) {
		return denied(p, "revoke grant "+id+" on "+g.Resource, "site-admin:"+site+" or coordinator")
	}
	return nil
}

func checkGetAccount(_ *Server, _ context.Context, p *Principal, req any) error {
	r := req.(*pb.GetAccountRequest)
	if !p.Is(r.GetUser()) && !p.AdminOf(r.GetSite()) && !p.AgentOf(r.GetSite()) {
		return denied(p, fmt.Sprintf("see the account of %s at site %s", r.GetUser(), r.GetSite()), "site-admin:"+r.GetSite()+", the site's agent, or coordinator (anyone may see their own)")
	}
	return nil
}

func checkMapUser(_ *Server, _ context.Context, p *Principal, req any) error {
	site := req.(*pb.MapUserRequest).GetSite()
	if !p.AdminOf(site) && !p.AgentOf(site) {
		return denied(p, "map portal users at site "+site, "the site's agent certificate, site-admin:"+site+" or coordinator")
	}
	return nil
}

// checkSessionsOf covers listing and revoking sessions: coordinators for
// everyone, site administrators for their site's users, anyone for
// themselves.
func checkSessionsOf(s *Server, ctx context.Context, p *Principal, req any) error {
	user := req.(interface{ GetUser() string }).GetUser()
	if p.Coordinator() || (user != "" && p.Is(user)) {
		return nil
	}
	if user == "" {
		if _, ok := req.(*pb.ListSessionsRequest); ok && p.User != nil {
			return nil // the handler lists only the caller's own
		}
		return denied(p, "act on everyone's sessions", "the coordinator role")
	}
	if !p.AnyAdmin() {
		return denied(p, "act on other users' sessions", "site-admin of their home site or coordinator")
	}
	_, err := s.siteAdminTarget(ctx, p, user)
	return err
}

// siteAdminTarget checks that a site administrator (not a coordinator) may
// act on user: the user is homed at a site p administers and holds no role
// beyond what that site's administrators may give, so no site admin can
// touch a coordinator or another site's administrator. The check is
// repeated when the command applies (see directory.Guard), so a promotion
// racing with the request cannot slip through.
func (s *Server) siteAdminTarget(ctx context.Context, p *Principal, name string) (*directory.User, error) {
	var u *directory.User
	if err := s.local(ctx, func(d *directory.Directory) (err error) { u, err = d.User(name); return err }); err != nil {
		return nil, err
	}
	if !p.AdminOf(u.Home) || !assignable(u.Home, u.Roles) {
		return nil, denied(p, "act on user "+name, "site-admin:"+u.Home+" or coordinator (site administrators act only on their site's researchers and administrators)")
	}
	p.target, p.targetSite = u.Name, u.Home
	return u, nil
}

// ---- what each caller sees in lists ----

// seesUser reports whether a list shows user u to the caller.
func seesUser(p *Principal, u *directory.User) bool { return p.AnyAdmin() || p.Is(u.Name) }

func seesProject(p *Principal, pr *directory.Project) bool {
	return p.AnyAdmin() || (p.User != nil && slices.Contains(pr.Members, p.User.Name))
}

// seesGrant: administrators of the resource's site, and the people the
// grant reaches.
func seesGrant(p *Principal, g *directory.Grant, myProjects []string) bool {
	if site, err := resourceSite(g.Resource); err == nil && p.AdminOf(site) {
		return true
	}
	if p.User == nil {
		return false
	}
	kind, name, _ := strings.Cut(g.Subject, ":")
	return (kind == "user" && name == p.User.Name) || (kind == "project" && slices.Contains(myProjects, name))
}

func seesAccount(p *Principal, a *directory.Account) bool {
	return p.AdminOf(a.Site) || p.AgentOf(a.Site) || p.Is(a.User)
}
