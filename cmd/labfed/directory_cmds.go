package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/client"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// JSON shapes printed by --json. Field names are part of the CLI contract.

type siteJSON struct {
	Name     string `json:"name"`
	UIDRange string `json:"uid_range"`
	GIDRange string `json:"gid_range"`
	NextUID  uint32 `json:"next_uid"`
	NextGID  uint32 `json:"next_gid"`
}

// parseRangePB parses "LO-HI" into the proto range; what is "uid" or "gid".
func parseRangePB(what, s string) (*pb.IDRange, error) {
	r, err := broker.ParseRange(what, s)
	if err != nil {
		return nil, err
	}
	return &pb.IDRange{Lo: r.Lo, Hi: r.Hi}, nil
}

func rangeStr(r *pb.IDRange) string { return fmt.Sprintf("%d-%d", r.GetLo(), r.GetHi()) }

func siteOut(s *pb.Site) siteJSON {
	return siteJSON{Name: s.GetName(), UIDRange: rangeStr(s.GetUidRange()), GIDRange: rangeStr(s.GetGidRange()), NextUID: s.GetNextUid(), NextGID: s.GetNextGid()}
}

type identityJSON struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

type userJSON struct {
	Name       string         `json:"name"`
	Email      string         `json:"email"`
	Home       string         `json:"home"`
	Identities []identityJSON `json:"identities"`
	Roles      []string       `json:"roles"`
	Status     string         `json:"status"`
	Created    string         `json:"created"`
}

func tstr(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func tptr(t *timestamppb.Timestamp) *string {
	if t == nil {
		return nil
	}
	s := tstr(t)
	return &s
}

func userOut(u *pb.User) userJSON {
	ids := []identityJSON{}
	for _, id := range u.GetIdentities() {
		ids = append(ids, identityJSON{Issuer: id.GetIssuer(), Subject: id.GetSubject()})
	}
	return userJSON{Name: u.GetName(), Email: u.GetEmail(), Home: u.GetHome(), Identities: ids, Roles: nonNil(u.GetRoles()), Status: u.GetStatus(), Created: tstr(u.GetCreated())}
}

type projectJSON struct {
	Name    string   `json:"name"`
	Members []string `json:"members"`
}

func projectOut(p *pb.Project) projectJSON {
	return projectJSON{Name: p.GetName(), Members: nonNil(p.GetMembers())}
}

type grantJSON struct {
	ID        string   `json:"id"`
	Subject   string   `json:"subject"`
	Resource  string   `json:"resource"`
	Actions   []string `json:"actions"`
	From      string   `json:"from"`
	Until     *string  `json:"until"`
	Status    string   `json:"status"`
	GrantedBy string   `json:"granted_by"`
	RevokedAt *string  `json:"revoked_at,omitempty"`
	Reason    string   `json:"reason,omitempty"`
}

func grantOut(g *pb.Grant) grantJSON {
	return grantJSON{ID: g.GetId(), Subject: g.GetSubject(), Resource: g.GetResource(), Actions: nonNil(g.GetActions()),
		From: tstr(g.GetFrom()), Until: tptr(g.GetUntil()), Status: g.GetStatus(), GrantedBy: g.GetGrantedBy(), RevokedAt: tptr(g.GetRevokedAt()), Reason: g.GetReason()}
}

type accountJSON struct {
	User     string   `json:"user"`
	Site     string   `json:"site"`
	Username string   `json:"username"`
	UID      uint32   `json:"uid"`
	GID      uint32   `json:"gid"`
	Groups   []uint32 `json:"groups"`
	Pinned   bool     `json:"pinned"`
	Status   string   `json:"status"`
}

func accountOut(a *pb.Account) accountJSON {
	groups := a.GetGroups()
	if groups == nil {
		groups = []uint32{}
	}
	return accountJSON{User: a.GetUser(), Site: a.GetSite(), Username: a.GetUsername(), UID: a.GetUid(), GID: a.GetGid(), Groups: groups, Pinned: a.GetPinned(), Status: a.GetStatus()}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// show prints one record as JSON or as a key/value block.
func show(c *cli.Context, v any, human func() error) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, v)
	}
	return human()
}

// ---- site ----

func siteCommand() *cli.Command {
	return &cli.Command{
		Name:  "site",
		Usage: "manage the federation's sites and their POSIX id ranges",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a site with the uid and gid ranges its accounts are allocated from",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "uid-range", Usage: "uids to allocate, `LO-HI`", Required: true},
					&cli.StringFlag{Name: "gid-range", Usage: "gids to allocate, `LO-HI`", Required: true},
					jsonFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					name, err := oneArg(c, "site NAME")
					if err != nil {
						return err
					}
					ur, err := parseRangePB("uid", c.String("uid-range"))
					if err != nil {
						return err
					}
					gr, err := parseRangePB("gid", c.String("gid-range"))
					if err != nil {
						return err
					}
					s, err := cl.Directory.AddSite(ctx, &pb.AddSiteRequest{Name: name, UidRange: ur, GidRange: gr})
					if err != nil {
						return err
					}
					return show(c, siteOut(s), func() error {
						_, err := fmt.Fprintf(c.App.Writer, "added site %s (uids %s, gids %s)\n", s.GetName(), rangeStr(s.GetUidRange()), rangeStr(s.GetGidRange()))
						return err
					})
				}),
			},
			{
				Name:      "update",
				Usage:     "widen a site's uid or gid range (ranges never shrink)",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "uid-range", Usage: "new uid range `LO-HI`, containing the old one"},
					&cli.StringFlag{Name: "gid-range", Usage: "new gid range `LO-HI`, containing the old one"},
					jsonFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					name, err := oneArg(c, "site NAME")
					if err != nil {
						return err
					}
					req := &pb.UpdateSiteRequest{Name: name}
					if v := c.String("uid-range"); v != "" {
						if req.UidRange, err = parseRangePB("uid", v); err != nil {
							return err
						}
					}
					if v := c.String("gid-range"); v != "" {
						if req.GidRange, err = parseRangePB("gid", v); err != nil {
							return err
						}
					}
					s, err := cl.Directory.UpdateSite(ctx, req)
					if err != nil {
						return err
					}
					return show(c, siteOut(s), func() error {
						_, err := fmt.Fprintf(c.App.Writer, "site %s now allocates uids %s, gids %s\n", s.GetName(), rangeStr(s.GetUidRange()), rangeStr(s.GetGidRange()))
						return err
					})
				}),
			},
			{
				Name:  "list",
				Usage: "list sites",
				Flags: []cli.Flag{jsonFlag(), staleFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := cl.Directory.ListSites(ctx, &pb.ListSitesRequest{Read: readOpts(c)})
					if err != nil {
						return err
					}
					out := []siteJSON{}
					rows := [][]string{}
					for _, s := range resp.GetSites() {
						j := siteOut(s)
						out = append(out, j)
						rows = append(rows, []string{j.Name, j.UIDRange, j.GIDRange, strconv.Itoa(int(j.NextUID)), strconv.Itoa(int(j.NextGID))})
					}
					return show(c, out, func() error {
						return table(c.App.Writer, []string{"NAME", "UID RANGE", "GID RANGE", "NEXT UID", "NEXT GID"}, rows)
					})
				}),
			},
		},
	}
}

// ---- user ----

func parseIdentities(vals []string) ([]*pb.Identity, error) {
	var out []*pb.Identity
	for _, v := range vals {
		id, err := broker.ParseIdentity(v)
		if err != nil {
			return nil, err
		}
		out = append(out, &pb.Identity{Issuer: id.Issuer, Subject: id.Subject})
	}
	return out, nil
}

func printUser(c *cli.Context, u *pb.User) error {
	return show(c, userOut(u), func() error {
		j := userOut(u)
		var ids []string
		for _, id := range j.Identities {
			ids = append(ids, id.Issuer+"="+id.Subject)
		}
		return table(c.App.Writer, []string{"NAME", "EMAIL", "HOME", "ROLES", "STATUS", "IDENTITIES"},
			[][]string{{j.Name, j.Email, j.Home, strings.Join(j.Roles, ","), j.Status, strings.Join(ids, " ")}})
	})
}

func userCommand() *cli.Command {
	return &cli.Command{
		Name:  "user",
		Usage: "manage the federation's users",
		Subcommands: []*cli.Command{
			userImportCommand(),
			userSessionsCommand(),
			{
				Name:      "add",
				Usage:     "register a user with their email, home site and federated identities",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "email", Usage: "the user's email `ADDRESS`", Required: true},
					&cli.StringFlag{Name: "home", Usage: "the user's home `SITE`", Required: true},
					&cli.StringSliceFlag{Name: "identity", Usage: "an OIDC identity `ISSUER=SUBJECT` (repeatable)"},
					&cli.StringSliceFlag{Name: "role", Usage: "researcher, coordinator or site-admin:SITE (repeatable; default researcher)"},
					jsonFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					name, err := oneArg(c, "user NAME")
					if err != nil {
						return err
					}
					ids, err := parseIdentities(c.StringSlice("identity"))
					if err != nil {
						return err
					}
					u, err := cl.Directory.AddUser(ctx, &pb.AddUserRequest{Name: name, Email: c.String("email"), Home: c.String("home"), Identities: ids, Roles: c.StringSlice("role")})
					if err != nil {
						return err
					}
					return printUser(c, u)
				}),
			},
			{
				Name:      "update",
				Usage:     "change a user's email, roles or status, or add and remove identities",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "email", Usage: "new email `ADDRESS`"},
					&cli.StringSliceFlag{Name: "role", Usage: "replace the roles with these (repeatable)"},
					&cli.StringFlag{Name: "status", Usage: "active or suspended"},
					&cli.StringSliceFlag{Name: "identity", Usage: "add an OIDC identity `ISSUER=SUBJECT` (repeatable)"},
					&cli.StringSliceFlag{Name: "remove-identity", Usage: "take away an OIDC identity `ISSUER=SUBJECT` and end the sessions opened with it (repeatable)"},
					jsonFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					name, err := oneArg(c, "user NAME")
					if err != nil {
						return err
					}
					ids, err := parseIdentities(c.StringSlice("identity"))
					if err != nil {
						return err
					}
					gone, err := parseIdentities(c.StringSlice("remove-identity"))
					if err != nil {
						return err
					}
					req := &pb.UpdateUserRequest{Name: name, AddIdentities: ids, RemoveIdentities: gone}
					if c.IsSet("email") {
						v := c.String("email")
						req.Email = &v
					}
					if c.IsSet("status") {
						v := c.String("status")
						req.Status = &v
					}
					if c.IsSet("role") {
						req.Roles, req.SetRoles = c.StringSlice("role"), true
					}
					u, err := cl.Directory.UpdateUser(ctx, req)
					if err != nil {
						return err
					}
					return printUser(c, u)
				}),
			},
			{
				Name:      "remove",
				Usage:     "remove a user: revoke their grants and retire their accounts (names and numbers are never reused)",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{jsonFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					name, err := oneArg(c, "user NAME")
					if err != nil {
						return err
					}
					u, err := cl.Directory.RemoveUser(ctx, &pb.RemoveUserRequest{Name: name})
					if err != nil {
						return err
					}
					return show(c, userOut(u), func() error {
						_, err := fmt.Fprintf(c.App.Writer, "removed user %s\n", name)
						return err
					})
				}),
			},
			{
				Name:      "show",
				Usage:     "show one user",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{jsonFlag(), staleFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					name, err := oneArg(c, "user NAME")
					if err != nil {
						return err
					}
					u, err := cl.Directory.GetUser(ctx, &pb.GetUserRequest{Name: name, Read: readOpts(c)})
					if err != nil {
						return err
					}
					return printUser(c, u)
				}),
			},
			{
				Name:  "list",
				Usage: "list users",
				Flags: []cli.Flag{jsonFlag(), staleFlag(), &cli.BoolFlag{Name: "all", Usage: "include removed users"}},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := cl.Directory.ListUsers(ctx, &pb.ListUsersRequest{Read: readOpts(c), IncludeRemoved: c.Bool("all")})
					if err != nil {
						return err
					}
					out := []userJSON{}
					rows := [][]string{}
					for _, u := range resp.GetUsers() {
						j := userOut(u)
						out = append(out, j)
						rows = append(rows, []string{j.Name, j.Email, j.Home, strings.Join(j.Roles, ","), j.Status})
					}
					return show(c, out, func() error { return table(c.App.Writer, []string{"NAME", "EMAIL", "HOME", "ROLES", "STATUS"}, rows) })
				}),
			},
		},
	}
}

// ---- project ----

func projectCommand() *cli.Command {
	member := func(name, usage string, call func(context.Context, *client.Client, *pb.ProjectMemberRequest) (*pb.Project, error)) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: "PROJECT USER", Flags: []cli.Flag{jsonFlag()},
			Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
				if c.Args().Len() != 2 {
					return fmt.Errorf("usage: labfed project %s PROJECT USER", name)
				}
				p, err := call(ctx, cl, &pb.ProjectMemberRequest{Project: c.Args().Get(0), User: c.Args().Get(1)})
				if err != nil {
					return err
				}
				return show(c, projectOut(p), func() error {
					_, err := fmt.Fprintf(c.App.Writer, "project %s: %s\n", p.GetName(), strings.Join(p.GetMembers(), ", "))
					return err
				})
			}),
		}
	}
	return &cli.Command{
		Name:  "project",
		Usage: "manage projects, whose grants reach all their members",
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "create a project", ArgsUsage: "NAME", Flags: []cli.Flag{jsonFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					name, err := oneArg(c, "project NAME")
					if err != nil {
						return err
					}
					p, err := cl.Directory.AddProject(ctx, &pb.AddProjectRequest{Name: name})
					if err != nil {
						return err
					}
					return show(c, projectOut(p), func() error {
						_, err := fmt.Fprintf(c.App.Writer, "added project %s\n", name)
						return err
					})
				}),
			},
			member("add-member", "add a user to a project; they get the project's group at every site where they have an account", func(ctx context.Context, cl *client.Client, r *pb.ProjectMemberRequest) (*pb.Project, error) {
				return cl.Directory.AddProjectMember(ctx, r)
			}),
			member("remove-member", "remove a user from a project", func(ctx context.Context, cl *client.Client, r *pb.ProjectMemberRequest) (*pb.Project, error) {
				return cl.Directory.RemoveProjectMember(ctx, r)
			}),
			{
				Name: "list", Usage: "list projects", Flags: []cli.Flag{jsonFlag(), staleFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := cl.Directory.ListProjects(ctx, &pb.ListProjectsRequest{Read: readOpts(c)})
					if err != nil {
						return err
					}
					out := []projectJSON{}
					rows := [][]string{}
					for _, p := range resp.GetProjects() {
						out = append(out, projectOut(p))
						rows = append(rows, []string{p.GetName(), strings.Join(p.GetMembers(), ",")})
					}
					return show(c, out, func() error { return table(c.App.Writer, []string{"NAME", "MEMBERS"}, rows) })
				}),
			},
		},
	}
}

// ---- grant ----

func parseTime(flag, v string) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, fmt.Errorf("--%s %q is not an RFC 3339 time such as 2026-12-01T09:00:00Z", flag, v)
	}
	return timestamppb.New(t), nil
}

func grantCommand() *cli.Command {
	return &cli.Command{
		Name:  "grant",
		Usage: "manage grants: who may do what on which resource, when",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "grant a user or project actions on a resource; allocates POSIX accounts at the resource's site",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Usage: "grant to this `USER`"},
					&cli.StringFlag{Name: "project", Usage: "grant to every member of this `PROJECT`"},
					&cli.StringFlag{Name: "resource", Usage: "`SITE/NAME[/PATH]`, e.g. rutgers/krios-g4", Required: true},
					&cli.StringSliceFlag{Name: "actions", Usage: "comma-separated `ACTIONS`: " + strings.Join(broker.Actions(), ","), Required: true},
					&cli.StringFlag{Name: "from", Usage: "start `TIME` (RFC 3339; default now)"},
					&cli.StringFlag{Name: "until", Usage: "end `TIME` (RFC 3339; default no end)"},
					jsonFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					var subject string
					switch u, p := c.String("user"), c.String("project"); {
					case u != "" && p != "":
						return fmt.Errorf("give either --user or --project, not both")
					case u != "":
						subject = "user:" + u
					case p != "":
						subject = "project:" + p
					default:
						return fmt.Errorf("give --user USER or --project PROJECT to say who the grant is for")
					}
					from, err := parseTime("from", c.String("from"))
					if err != nil {
						return err
					}
					until, err := parseTime("until", c.String("until"))
					if err != nil {
						return err
					}
					var actions []string
					for _, a := range c.StringSlice("actions") {
						actions = append(actions, strings.Split(a, ",")...)
					}
					g, err := cl.Directory.AddGrant(ctx, &pb.AddGrantRequest{Subject: subject, Resource: c.String("resource"), Actions: actions, From: from, Until: until})
					if err != nil {
						return err
					}
					return show(c, grantOut(g), func() error {
						_, err := fmt.Fprintln(c.App.Writer, g.GetId())
						return err
					})
				}),
			},
			{
				Name:  "list",
				Usage: "list grants",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Usage: "only grants to this `USER`"},
					&cli.StringFlag{Name: "project", Usage: "only grants to this `PROJECT`"},
					&cli.StringFlag{Name: "resource", Usage: "only grants on this resource or below it"},
					&cli.BoolFlag{Name: "all", Usage: "include revoked grants"},
					jsonFlag(), staleFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					if c.String("user") != "" && c.String("project") != "" {
						return fmt.Errorf("give either --user or --project, not both")
					}
					req := &pb.ListGrantsRequest{Read: readOpts(c), Resource: c.String("resource"), IncludeRevoked: c.Bool("all")}
					if u := c.String("user"); u != "" {
						req.Subject = "user:" + u
					}
					if p := c.String("project"); p != "" {
						req.Subject = "project:" + p
					}
					resp, err := cl.Directory.ListGrants(ctx, req)
					if err != nil {
						return err
					}
					out := []grantJSON{}
					rows := [][]string{}
					for _, g := range resp.GetGrants() {
						j := grantOut(g)
						out = append(out, j)
						until := "-"
						if j.Until != nil {
							until = *j.Until
						}
						rows = append(rows, []string{j.ID, j.Subject, j.Resource, strings.Join(j.Actions, ","), j.From, until, j.Status})
					}
					return show(c, out, func() error {
						return table(c.App.Writer, []string{"ID", "SUBJECT", "RESOURCE", "ACTIONS", "FROM", "UNTIL", "STATUS"}, rows)
					})
				}),
			},
			{
				Name:      "revoke",
				Usage:     "revoke a grant now",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "reason", Usage: "why, for the record"}, jsonFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					id, err := oneArg(c, "grant ID")
					if err != nil {
						return err
					}
					g, err := cl.Directory.RevokeGrant(ctx, &pb.RevokeGrantRequest{Id: id, Reason: c.String("reason")})
					if err != nil {
						return err
					}
					return show(c, grantOut(g), func() error {
						_, err := fmt.Fprintf(c.App.Writer, "revoked %s\n", g.GetId())
						return err
					})
				}),
			},
		},
	}
}

// ---- account ----

func accountTable(c *cli.Context, accs []*pb.Account) error {
	rows := [][]string{}
	for _, a := range accs {
		var gs []string
		for _, g := range a.GetGroups() {
			gs = append(gs, strconv.Itoa(int(g)))
		}
		rows = append(rows, []string{a.GetUser(), a.GetSite(), a.GetUsername(), strconv.Itoa(int(a.GetUid())), strconv.Itoa(int(a.GetGid())), strings.Join(gs, ","), a.GetStatus()})
	}
	return table(c.App.Writer, []string{"USER", "SITE", "USERNAME", "UID", "GID", "GROUPS", "STATUS"}, rows)
}

func accountCommand() *cli.Command {
	return &cli.Command{
		Name:  "account",
		Usage: "show users' POSIX accounts at sites, and pin existing ones",
		Subcommands: []*cli.Command{
			{
				Name:  "show",
				Usage: "show a user's account at a site",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Required: true, Usage: "the `USER`"},
					&cli.StringFlag{Name: "site", Required: true, Usage: "the `SITE`"},
					jsonFlag(), staleFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					a, err := cl.Directory.GetAccount(ctx, &pb.GetAccountRequest{Read: readOpts(c), User: c.String("user"), Site: c.String("site")})
					if err != nil {
						return err
					}
					return show(c, accountOut(a), func() error { return accountTable(c, []*pb.Account{a}) })
				}),
			},
			{
				Name:  "list",
				Usage: "list the accounts at a site",
				Flags: []cli.Flag{&cli.StringFlag{Name: "site", Usage: "the `SITE` (default every site)"}, jsonFlag(), staleFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := cl.Directory.ListAccounts(ctx, &pb.ListAccountsRequest{Read: readOpts(c), Site: c.String("site")})
					if err != nil {
						return err
					}
					out := []accountJSON{}
					for _, a := range resp.GetAccounts() {
						out = append(out, accountOut(a))
					}
					return show(c, out, func() error { return accountTable(c, resp.GetAccounts()) })
				}),
			},
			{
				Name:  "pin",
				Usage: "import an existing uid (e.g. from LDAP) for a user at a site; conflicts are refused",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Required: true, Usage: "the `USER`"},
					&cli.StringFlag{Name: "site", Required: true, Usage: "the `SITE`"},
					&cli.UintFlag{Name: "uid", Required: true, Usage: "the existing `UID`"},
					&cli.UintFlag{Name: "gid", Usage: "the existing primary `GID` (default: allocate a user-private group)"},
					&cli.StringFlag{Name: "username", Usage: "the existing login `NAME` (default: the user's name)"},
					jsonFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					for _, f := range []string{"uid", "gid"} {
						// Converting to uint32 below must not wrap around.
						if v := c.Uint(f); uint64(v) > math.MaxUint32 {
							return fmt.Errorf("--%s %d cannot be pinned: it must be between %d and %d", f, v, broker.MinPosixID, broker.MaxPosixID)
						}
					}
					a, err := cl.Directory.PinAccount(ctx, &pb.PinAccountRequest{User: c.String("user"), Site: c.String("site"), Uid: uint32(c.Uint("uid")), Gid: uint32(c.Uint("gid")), Username: c.String("username")})
					if err != nil {
						return err
					}
					return show(c, accountOut(a), func() error { return accountTable(c, []*pb.Account{a}) })
				}),
			},
		},
	}
}

// ---- raft ----

type peerJSON struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

func raftCommand() *cli.Command {
	return &cli.Command{
		Name:  "raft",
		Usage: "inspect and change the Raft membership of the broker nodes",
		Subcommands: []*cli.Command{
			{
				Name: "peers", Usage: "list the Raft peers", Flags: []cli.Flag{jsonFlag(), staleFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					resp, err := cl.Cluster.ListPeers(ctx, &pb.ListPeersRequest{Read: readOpts(c)})
					if err != nil {
						return err
					}
					out := []peerJSON{}
					rows := [][]string{}
					for _, p := range resp.GetPeers() {
						out = append(out, peerJSON{ID: p.GetId(), Addr: p.GetAddr(), Suffrage: p.GetSuffrage(), Leader: p.GetLeader()})
						rows = append(rows, []string{p.GetId(), p.GetAddr(), p.GetSuffrage(), strconv.FormatBool(p.GetLeader())})
					}
					return show(c, out, func() error { return table(c.App.Writer, []string{"ID", "ADDR", "SUFFRAGE", "LEADER"}, rows) })
				}),
			},
			{
				Name: "remove-peer", Usage: "remove a node from the Raft configuration", ArgsUsage: "ID",
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					id, err := oneArg(c, "node ID")
					if err != nil {
						return err
					}
					if _, err := cl.Cluster.RemovePeer(ctx, &pb.RemovePeerRequest{Id: id}); err != nil {
						return err
					}
					_, err = fmt.Fprintf(c.App.Writer, "removed %s\n", id)
					return err
				}),
			},
			{
				Name: "status", Usage: "show the contacted node's replication state and state hash", Flags: []cli.Flag{jsonFlag()},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					st, err := cl.Cluster.Status(ctx, &pb.StatusRequest{})
					if err != nil {
						return err
					}
					j := map[string]any{
						"id": st.GetId(), "site": st.GetSite(), "state": st.GetState(), "leader_id": st.GetLeaderId(),
						"applied_index": st.GetAppliedIndex(), "commit_index": st.GetCommitIndex(),
						"last_snapshot_index": st.GetLastSnapshotIndex(), "state_hash": st.GetStateHash(),
					}
					return show(c, j, func() error {
						return table(c.App.Writer, []string{"ID", "STATE", "LEADER", "APPLIED", "COMMIT", "SNAPSHOT", "HASH"}, [][]string{{
							st.GetId(), st.GetState(), st.GetLeaderId(), strconv.FormatUint(st.GetAppliedIndex(), 10),
							strconv.FormatUint(st.GetCommitIndex(), 10), strconv.FormatUint(st.GetLastSnapshotIndex(), 10), st.GetStateHash()[:16]}})
					})
				}),
			},
			{
				Name: "snapshot", Usage: "make the contacted node take a Raft snapshot now",
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					if _, err := cl.Cluster.Snapshot(ctx, &pb.SnapshotRequest{}); err != nil {
						return err
					}
					_, err := fmt.Fprintln(c.App.Writer, "snapshot taken")
					return err
				}),
			},
		},
	}
}
