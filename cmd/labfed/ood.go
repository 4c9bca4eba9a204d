package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// callerSite is the site of the client's own certificate, the default
// site of commands that act "here".
func callerSite(c *cli.Context) (string, error) {
	if s := c.String("site"); s != "" {
		return s, nil
	}
	if c.String("cert") != "" {
		b, err := pki.Load(pki.Files{CA: c.String("ca"), Cert: c.String("cert"), Key: c.String("key")})
		if err != nil {
			return "", err
		}
		return b.Identity().Site, nil
	}
	return "", errors.New("no site: give --site, or a certificate (--cert) whose site is used")
}

func oodCommand() *cli.Command {
	return &cli.Command{
		Name:  "ood",
		Usage: "Open OnDemand integration",
		Subcommands: []*cli.Command{
			{
				Name:      "user-map",
				Usage:     "print this site's local username for a portal login (for user_map_cmd in ood_portal.yml)",
				ArgsUsage: "REMOTE_USER",
				Description: "REMOTE_USER is the email address or OIDC subject the portal authenticated,\n" +
					"URL-encoded as Open OnDemand passes it. On success the username is the only\n" +
					"thing printed; an unknown or suspended user, or one without an account at\n" +
					"the site, prints nothing on stdout and exits non-zero. Example:\n" +
					"  user_map_cmd: \"/usr/local/bin/labfed ood user-map\"",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "site", Usage: "map at this `SITE` (default: the site of --cert)"},
					jsonFlag(),
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					raw, err := oneArg(c, "REMOTE_USER")
					if err != nil {
						return err
					}
					// PathUnescape, not QueryUnescape: '+' is common in
					// email addresses and must survive.
					remote, err := url.PathUnescape(raw)
					if err != nil {
						return fmt.Errorf("REMOTE_USER %q is not valid URL encoding", raw)
					}
					site, err := callerSite(c)
					if err != nil {
						return err
					}
					r, err := cl.Directory.MapUser(ctx, &pb.MapUserRequest{RemoteUser: strings.TrimSpace(remote), Site: site})
					if err != nil {
						return err
					}
					return show(c, map[string]any{"user": r.GetUser(), "username": r.GetUsername(), "uid": r.GetUid(), "site": site}, func() error {
						_, err := fmt.Fprintln(c.App.Writer, r.GetUsername())
						return err
					})
				}),
			},
		},
	}
}

// importRow is one line of a user-mapping CSV and what became of it.
type importRow struct {
	Row       int    `json:"row"`
	Email     string `json:"email"`
	LocalUser string `json:"local_user"`
	User      string `json:"user,omitempty"`
	UID       uint32 `json:"uid,omitempty"`
	GID       uint32 `json:"gid,omitempty"`
	Status    string `json:"status"` // pinned, skipped, error
	Error     string `json:"error,omitempty"`
}

// passwdEntry is a line of a passwd-format file.
type passwdEntry struct{ uid, gid uint32 }

func readPasswd(path string) (map[string]passwdEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]passwdEntry{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < 4 {
			return nil, fmt.Errorf("%s:%d: not a passwd line (name:x:uid:gid:…)", path, n)
		}
		uid, err1 := strconv.ParseUint(fields[2], 10, 32)
		gid, err2 := strconv.ParseUint(fields[3], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s:%d: uid or gid is not a number", path, n)
		}
		out[fields[0]] = passwdEntry{uint32(uid), uint32(gid)}
	}
	return out, sc.Err()
}

// importMappings pins an account for every row of an "email,local_user[,uid]"
// file, reporting each row. It stops at nothing: every row gets a verdict.
func importMappings(ctx context.Context, d pb.DirectoryServiceClient, in io.Reader, site string, passwd map[string]passwdEntry) ([]importRow, error) {
	users, err := d.ListUsers(ctx, &pb.ListUsersRequest{})
	if err != nil {
		return nil, err
	}
	byEmail := map[string]string{}
	for _, u := range users.GetUsers() {
		byEmail[strings.ToLower(u.GetEmail())] = u.GetName()
	}
	r := csv.NewReader(in)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	r.TrimLeadingSpace = true
	var rows []importRow
	for n := 1; ; n++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		row := importRow{Row: n, Status: "error"}
		var pe *csv.ParseError
		switch {
		case err == nil:
			row.Row, _ = r.FieldPos(0)
		case errors.As(err, &pe):
			row.Row = pe.StartLine
		}
		rows = append(rows, row)
		cur := &rows[len(rows)-1]
		if err != nil {
			cur.Error = "not valid CSV: " + err.Error()
			continue
		}
		if len(rec) < 2 || len(rec) > 3 {
			cur.Error = fmt.Sprintf("has %d columns; want email,local_user or email,local_user,uid", len(rec))
			continue
		}
		cur.Email, cur.LocalUser = strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1])
		if len(rows) == 1 && strings.EqualFold(cur.Email, "email") {
			cur.Status = "skipped"
			cur.Error = "header row"
			continue
		}
		if err := broker.ValidateEmail(cur.Email); err != nil {
			cur.Error = err.Error()
			continue
		}
		if err := broker.ValidateUsername(cur.LocalUser); err != nil {
			cur.Error = err.Error()
			continue
		}
		user, ok := byEmail[strings.ToLower(cur.Email)]
		if !ok {
			cur.Error = fmt.Sprintf("no federation user has email %s; add them with labfed user add", cur.Email)
			continue
		}
		cur.User = user
		if len(rec) == 3 {
			uid, err := strconv.ParseUint(strings.TrimSpace(rec[2]), 10, 32)
			if err != nil {
				cur.Error = fmt.Sprintf("uid %q is not a number", rec[2])
				continue
			}
			cur.UID = uint32(uid)
		}
		if p, ok := passwd[cur.LocalUser]; ok {
			if cur.UID != 0 && cur.UID != p.uid {
				cur.Error = fmt.Sprintf("the row says uid %d but the passwd file says %d", cur.UID, p.uid)
				continue
			}
			cur.UID, cur.GID = p.uid, p.gid
		}
		if cur.UID == 0 {
			cur.Error = fmt.Sprintf("no uid for %s: give a passwd file with --passwd or a third column", cur.LocalUser)
			continue
		}
		a, err := d.PinAccount(ctx, &pb.PinAccountRequest{User: user, Site: site, Uid: cur.UID, Gid: cur.GID, Username: cur.LocalUser})
		if err != nil {
			cur.Error = status.Convert(err).Message()
			continue
		}
		cur.GID, cur.Status, cur.Error = a.GetGid(), "pinned", ""
	}
	return rows, nil
}

func userImportCommand() *cli.Command {
	return &cli.Command{
		Name:  "import",
		Usage: "import a portal's email,local_user mapping file, pinning each user's existing account at a site",
		Description: "Each row is email,local_user or email,local_user,uid (a header row is skipped).\n" +
			"uids (and primary gids) are looked up in --passwd when given. Every row is\n" +
			"reported: pinned, skipped, or the reason it could not be taken. Importing the\n" +
			"same file twice is harmless. Exits non-zero if any row failed.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "csv", Required: true, Usage: "the mapping `FILE`"},
			&cli.StringFlag{Name: "site", Usage: "the `SITE` the local users belong to (default: the site of --cert)"},
			&cli.StringFlag{Name: "passwd", Usage: "a passwd-format `FILE` to look up uids and gids"},
			jsonFlag(),
		},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			site, err := callerSite(c)
			if err != nil {
				return err
			}
			var passwd map[string]passwdEntry
			if p := c.String("passwd"); p != "" {
				if passwd, err = readPasswd(p); err != nil {
					return err
				}
			}
			f, err := os.Open(c.String("csv"))
			if err != nil {
				return err
			}
			defer f.Close()
			rows, err := importMappings(ctx, cl.Directory, f, site, passwd)
			if err != nil {
				return err
			}
			failed := 0
			report := [][]string{}
			for _, r := range rows {
				if r.Status == "error" {
					failed++
				}
				uid := ""
				if r.UID != 0 {
					uid = strconv.Itoa(int(r.UID))
				}
				report = append(report, []string{strconv.Itoa(r.Row), r.Email, r.LocalUser, r.User, uid, r.Status, r.Error})
			}
			if rows == nil {
				rows = []importRow{}
			}
			err = show(c, rows, func() error {
				return table(c.App.Writer, []string{"ROW", "EMAIL", "LOCAL USER", "USER", "UID", "STATUS", "WHY"}, report)
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d rows could not be imported; see the report above", failed, len(rows))
			}
			return nil
		}),
	}
}
