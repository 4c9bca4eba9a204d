package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/login"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// openBrowser shows the issuer's login page to the person. Tests and the
// demo scenario replace it with a programmatic browser.
var openBrowser = func(stderr io.Writer, url string) error {
	fmt.Fprintf(stderr, "Log in at this address (a browser is being opened):\n  %s\n", url)
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	default:
		if _, err := exec.LookPath("xdg-open"); err != nil {
			return nil // nothing to launch; the address is printed
		}
		cmd = exec.Command("xdg-open", url)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	_ = cmd.Start() // the printed address is enough when this fails
	return nil
}

// approveDevice shows the device flow's code; tests replace it.
var approveDevice = func(stderr io.Writer, uri, code, complete string) {
	fmt.Fprintf(stderr, "On any device, open\n  %s\nand enter the code %s", uri, code)
	if complete != "" {
		fmt.Fprintf(stderr, " (or open %s)", complete)
	}
	fmt.Fprintln(stderr)
}

func loginCommand() *cli.Command {
	return &cli.Command{
		Name:  "login",
		Usage: "log in with your institution's identity (OpenID Connect) and keep a session credential",
		Description: "Asks the broker which OpenID Connect issuers it accepts, runs the authorization\n" +
			"code flow with PKCE on a loopback redirect (or, with --device, the device flow for\n" +
			"hosts without a browser), and exchanges the ID token for a labfed session credential\n" +
			"that later commands send. The credential is written with mode 0600 to --session\n" +
			"(LABFED_SESSION). While it is valid it takes precedence over --cert; labfed logout\n" +
			"ends it.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "device", Usage: "use the device flow: show a code to enter on another device"},
			&cli.StringFlag{Name: "issuer", Usage: "the issuer `URL` to log in with, when the broker accepts several"},
			&cli.StringFlag{Name: "oidc-ca", Usage: "extra PEM roots `FILE` for the issuer's HTTPS (the demo's issuer)", EnvVars: []string{"LABFED_OIDC_CA"}},
			&cli.DurationFlag{Name: "wait", Value: 5 * time.Minute, Usage: "how long to wait for you to finish logging in"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return fmt.Errorf("unexpected argument %q; see labfed login --help", c.Args().First())
			}
			o, err := transportOptions(c) // a stale session must not get in the way
			if err != nil {
				return err
			}
			cl, err := client.Dial(c.String("addr"), o)
			if err != nil {
				return err
			}
			defer cl.Close()
			hc, err := issuerClient(c.String("oidc-ca"))
			if err != nil {
				return err
			}
			stderr := c.App.ErrWriter
			cred, err := runLogin(c.Context, cl, loginParams{
				issuer: c.String("issuer"), device: c.Bool("device"), wait: c.Duration("wait"), timeout: c.Duration("timeout"), http: hc,
				open:   func(url string) error { return openBrowser(stderr, url) },
				prompt: func(uri, code, complete string) { approveDevice(stderr, uri, code, complete) },
			})
			if err != nil {
				return err
			}
			cred.Broker = c.String("addr")
			if err := client.SaveCredential(c.String("session"), cred); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]any{"user": cred.User, "expires": cred.Expires.UTC().Format(time.RFC3339), "session": cred.Session})
			}
			_, err = fmt.Fprintf(c.App.Writer, "logged in as %s until %s (session %s)\n", cred.User, cred.Expires.Local().Format(time.RFC1123), cred.Session)
			return err
		},
	}
}

type loginParams struct {
	issuer        string
	device        bool
	wait, timeout time.Duration
	http          *http.Client
	// open shows the authorization URL (browser); prompt shows the device
	// flow's code.
	open   func(url string) error
	prompt func(uri, code, complete string)
}

// runLogin performs the OIDC flow the broker asks for and exchanges the ID
// token for a session credential.
func runLogin(ctx context.Context, cl *client.Client, p loginParams) (*client.Credential, error) {
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	lc, err := cl.Login.GetLoginConfig(rctx, &pb.GetLoginConfigRequest{})
	cancel()
	if err != nil {
		return nil, err
	}
	is, err := pickIssuer(lc, p.issuer)
	if err != nil {
		return nil, err
	}
	cfg := login.ClientConfig{Issuer: is.GetUrl(), ClientID: is.GetClientId(), HTTPClient: p.http}
	fctx, cancel := context.WithTimeout(ctx, p.wait)
	defer cancel()
	var idToken string
	if p.device {
		idToken, err = login.Device(fctx, cfg, p.prompt)
	} else {
		idToken, err = login.AuthCode(fctx, cfg, p.open)
	}
	if err != nil {
		return nil, fmt.Errorf("login with %s: %w", is.GetUrl(), err)
	}
	rctx, cancel = context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := cl.Login.Login(rctx, &pb.LoginRequest{IdToken: idToken})
	if err != nil {
		return nil, err
	}
	return &client.Credential{User: resp.GetUser(), Token: resp.GetToken(), Session: resp.GetSession(), Expires: resp.GetExpires().AsTime()}, nil
}

func pickIssuer(lc *pb.GetLoginConfigResponse, want string) (*pb.LoginIssuer, error) {
	if len(lc.GetIssuers()) == 0 {
		return nil, fmt.Errorf("the broker of site %s accepts no OIDC logins (no oidc.issuers in its config); ask its administrator or use another site's broker", lc.GetSite())
	}
	if want == "" {
		return lc.GetIssuers()[0], nil
	}
	var known []string
	for _, is := range lc.GetIssuers() {
		if is.GetUrl() == want {
			return is, nil
		}
		known = append(known, is.GetUrl())
	}
	return nil, fmt.Errorf("the broker does not accept issuer %s; it accepts %v", want, known)
}

// issuerClient trusts the system's roots plus, when given, the PEM file's.
func issuerClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return &http.Client{Timeout: 30 * time.Second}, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--oidc-ca: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--oidc-ca %s holds no PEM certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

func logoutCommand() *cli.Command {
	return &cli.Command{
		Name:  "logout",
		Usage: "end your session (or, with --user, every session of a user)",
		Description: "Without --user, ends the session credential labfed login wrote and deletes it.\n" +
			"With --user, a coordinator (or the user's site administrator) ends every session\n" +
			"of that user at once, for example when a laptop is lost.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "user", Usage: "end every session of user `NAME`"},
		},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			if u := c.String("user"); u != "" {
				resp, err := cl.Login.RevokeSessions(ctx, &pb.RevokeSessionsRequest{User: u})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.App.Writer, "ended %d session(s) of %s\n", resp.GetRevoked(), u)
				return err
			}
			path := c.String("session")
			if _, err := client.LoadCredential(path); err != nil {
				return err
			}
			if _, err := cl.Login.Logout(ctx, &pb.LogoutRequest{}); err != nil && !isUnauthenticated(err) {
				return err
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			_, err := fmt.Fprintln(c.App.Writer, "logged out")
			return err
		}),
	}
}

func whoamiCommand() *cli.Command {
	return &cli.Command{
		Name:  "whoami",
		Usage: "show who the broker takes you for and what you may do",
		Flags: []cli.Flag{jsonFlag()},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			w, err := cl.Login.WhoAmI(ctx, &pb.WhoAmIRequest{})
			if err != nil {
				return err
			}
			out := map[string]any{"user": w.GetUser(), "roles": w.GetRoles(), "method": w.GetMethod()}
			if w.GetCertificate() != "" {
				out["certificate"] = w.GetCertificate()
			}
			if w.GetExpires() != nil {
				out["expires"] = w.GetExpires().AsTime().UTC().Format(time.RFC3339)
				out["session"] = w.GetSession()
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			rows := [][]string{{"user", w.GetUser()}, {"roles", fmt.Sprint(w.GetRoles())}, {"method", w.GetMethod()}}
			if w.GetCertificate() != "" {
				rows = append(rows, []string{"certificate", w.GetCertificate()})
			}
			if w.GetExpires() != nil {
				rows = append(rows, []string{"expires", out["expires"].(string)})
			}
			return table(c.App.Writer, []string{"FIELD", "VALUE"}, rows)
		}),
	}
}

func isUnauthenticated(err error) bool { return status.Code(err) == codes.Unauthenticated }

type sessionJSON struct {
	Session string `json:"session"`
	User    string `json:"user"`
	Site    string `json:"site"`
	Via     string `json:"via"`
	Created string `json:"created"`
	Expires string `json:"expires"`
}

func userSessionsCommand() *cli.Command {
	return &cli.Command{
		Name:      "sessions",
		Usage:     "list the login sessions of a user (yours without NAME; everyone's for a coordinator)",
		ArgsUsage: "[NAME]",
		Flags:     []cli.Flag{jsonFlag()},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			if c.Args().Len() > 1 {
				return fmt.Errorf("give at most one user NAME; see labfed user sessions --help")
			}
			resp, err := cl.Login.ListSessions(ctx, &pb.ListSessionsRequest{User: c.Args().First()})
			if err != nil {
				return err
			}
			out := []sessionJSON{}
			var rows [][]string
			for _, s := range resp.GetSessions() {
				j := sessionJSON{Session: s.GetSession(), User: s.GetUser(), Site: s.GetSite(), Via: s.GetVia(), Created: tstr(s.GetCreated()), Expires: tstr(s.GetExpires())}
				out = append(out, j)
				rows = append(rows, []string{j.Session, j.User, j.Site, j.Via, j.Expires})
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			return table(c.App.Writer, []string{"SESSION", "USER", "SITE", "VIA", "EXPIRES"}, rows)
		}),
	}
}
