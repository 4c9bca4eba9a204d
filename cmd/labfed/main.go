// Command labfed is the federated instrument broker: the broker daemon
// (serve), the demo federation (demo) and the client commands that talk to a
// broker.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/cmd/labfed/internal/node"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp(os.Stdout, os.Stderr)
	err := app.RunContext(ctx, interspersed(app, os.Args))
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "labfed: "+errorLine(err))
		os.Exit(1)
	}
}

// errorLine turns an error into the one line a user reads.
func errorLine(err error) string {
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK {
		msg := st.Message()
		switch st.Code() {
		case codes.Unavailable:
			if strings.Contains(msg, "error reading server preface") {
				msg = "the broker closed the connection at once: it speaks TLS, so drop --dev-insecure and give --ca (and --cert, --key)"
			} else if !strings.Contains(msg, "retry") {
				msg += "; is the broker running? check --addr or LABFED_ADDR"
			}
		case codes.DeadlineExceeded:
			msg = "the broker did not answer in time; check that it is running and has a leader (labfed raft peers)"
		}
		return oneLine(msg)
	}
	return oneLine(err.Error())
}

// oneLine joins the lines of a message with spaces.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", " "), "\n", " ")
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "labfed",
		Usage: "share scientific instruments, storage and compute across a federation of sites",
		Description: "labfed runs a broker node per institution (labfed serve) that keeps a Raft-replicated\n" +
			"directory of sites, users, projects, grants and per-site POSIX accounts. The other\n" +
			"commands talk to a broker given by --addr or LABFED_ADDR; `labfed demo` starts a\n" +
			"whole federation on loopback and writes the variables a client needs into env.sh.",
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Usage: "broker API address `HOST:PORT`", EnvVars: []string{"LABFED_ADDR"}, Value: "127.0.0.1:7100"},
			&cli.BoolFlag{Name: "dev-insecure", Usage: "talk to a broker run with --dev-insecure (no TLS)", EnvVars: []string{"LABFED_DEV_INSECURE"}},
			&cli.StringFlag{Name: "ca", Usage: "the federation CA certificate `FILE`", EnvVars: []string{"LABFED_CA"}},
			&cli.StringFlag{Name: "cert", Usage: "your federation certificate `FILE` (labfed ca issue)", EnvVars: []string{"LABFED_CERT"}},
			&cli.StringFlag{Name: "key", Usage: "the private key `FILE` of --cert", EnvVars: []string{"LABFED_KEY"}},
			&cli.StringFlag{Name: "session", Usage: "the session credential `FILE` labfed login writes and later commands send", EnvVars: []string{"LABFED_SESSION"}, Value: client.DefaultCredentialPath(), DefaultText: "$XDG_CONFIG_HOME/labfed/session.json"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up on a request after this long", Value: 15 * time.Second, EnvVars: []string{"LABFED_TIMEOUT"}},
		},
		Commands: []*cli.Command{
			serveCommand(),
			demoCommand(),
			initCommand(),
			caCommand(),
			oodCommand(),
			siteCommand(),
			userCommand(),
			projectCommand(),
			grantCommand(),
			accountCommand(),
			raftCommand(),
			membersCommand(),
			instrumentsCommand(),
			computeCommand(),
			placeCommand(),
			offerCommand(),
			keysCommand(),
			tokenCommand(),
			simCommand(),
			gossipCommand(),
			loginCommand(),
			logoutCommand(),
			whoamiCommand(),
			auditCommand(),
			usageCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints errors
		Action:         unknownCommand,
	}
	setUnknown(app.Commands)
	return app
}

// unknownCommand answers a command name that is not one of ours, instead
// of urfave/cli's "No help topic".
func unknownCommand(c *cli.Context) error {
	if c.Args().Len() == 0 {
		return cli.ShowAppHelp(c)
	}
	return fmt.Errorf("unknown command %q; see labfed --help for the commands", c.Args().First())
}

// setUnknown makes every command group report unknown subcommands clearly.
func setUnknown(cmds []*cli.Command) {
	for _, cmd := range cmds {
		if len(cmd.Subcommands) == 0 {
			continue
		}
		setUnknown(cmd.Subcommands)
		if cmd.Action != nil {
			continue // a command of its own, like audit, with subcommands beside it
		}
		name := cmd.Name
		cmd.Action = func(c *cli.Context) error {
			if c.Args().Len() == 0 {
				return cli.ShowSubcommandHelp(c)
			}
			return fmt.Errorf("unknown command %q for labfed %s; see labfed %s --help", c.Args().First(), name, name)
		}
	}
}

// dial connects to the broker named by the global flags.
func dial(c *cli.Context) (*client.Client, context.Context, context.CancelFunc, error) {
	opts, err := clientOptions(c)
	if err != nil {
		return nil, nil, nil, err
	}
	cl, err := client.Dial(c.String("addr"), opts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to %s: %w", c.String("addr"), err)
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	return cl, ctx, func() { cancel(); cl.Close() }, nil
}

// clientOptions turns the global flags into transport options and, when
// labfed login left an unexpired session credential, sends it: a login
// takes precedence over the certificate until labfed logout.
func clientOptions(c *cli.Context) (client.Options, error) {
	o, err := transportOptions(c)
	if err != nil {
		return o, err
	}
	cred, err := client.LoadCredential(c.String("session"))
	switch {
	case errors.Is(err, client.ErrNoCredential):
	case err != nil:
		return o, err
	case o.DevInsecure && !node.IsLoopback(c.String("addr")):
		// Never send a credential in the clear off this host.
	case time.Now().Before(cred.Expires):
		o.Session = cred.Token
	}
	return o, nil
}

// transportOptions turns the global flags into transport options.
func transportOptions(c *cli.Context) (client.Options, error) {
	if c.Bool("dev-insecure") {
		return client.Options{DevInsecure: true}, nil
	}
	ca, cert, key := globalString(c, "ca"), globalString(c, "cert"), globalString(c, "key")
	switch {
	case ca == "":
		return client.Options{}, errors.New("no federation CA given; pass --ca FILE (or LABFED_CA; labfed demo writes it into env.sh), or --dev-insecure for a development broker")
	case (cert == "") != (key == ""):
		return client.Options{}, errors.New("give --cert and --key together")
	case cert == "":
		t, err := pki.ClientConfigCAOnly(ca, pki.KindBroker)
		return client.Options{TLS: t}, err
	}
	b, err := pki.Load(pki.Files{CA: ca, Cert: cert, Key: key})
	if err != nil {
		return client.Options{}, err
	}
	return client.Options{TLS: b.ClientConfig(pki.KindBroker)}, nil
}

// withClient runs fn with a connected client.
func withClient(fn func(c *cli.Context, cl *client.Client, ctx context.Context) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.Args().Len() > 0 && !acceptsArgs(c) {
			return fmt.Errorf("unexpected argument %q; see %s --help", c.Args().First(), c.Command.HelpName)
		}
		cl, ctx, done, err := dial(c)
		if err != nil {
			return err
		}
		defer done()
		return fn(c, cl, ctx)
	}
}

func acceptsArgs(c *cli.Context) bool { return c.Command.ArgsUsage != "" }

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print exactly one JSON value on stdout"}
}

func staleFlag() cli.Flag {
	return &cli.BoolFlag{Name: "stale", Usage: "answer from the contacted node's local state without asking the leader (faster, may be behind)"}
}

func readOpts(c *cli.Context) *pb.ReadOptions { return &pb.ReadOptions{Stale: c.Bool("stale")} }

// printJSON writes v as one JSON value.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header with aligned columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// oneArg returns the single positional argument named what.
func oneArg(c *cli.Context, what string) (string, error) {
	switch c.Args().Len() {
	case 1:
		return c.Args().First(), nil
	case 0:
		return "", fmt.Errorf("missing %s; usage: %s %s", what, c.Command.HelpName, c.Command.ArgsUsage)
	}
	return "", fmt.Errorf("too many arguments; usage: %s %s", c.Command.HelpName, c.Command.ArgsUsage)
}

// interspersed moves a leaf command's positional arguments after its flags,
// so "labfed site add psc --uid-range …" parses as documented: urfave/cli
// v2 stops reading flags at the first positional argument.
func interspersed(app *cli.App, args []string) []string {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "--" {
			return args
		}
	}
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	cmds, flags := app.Commands, app.Flags
	i := 1
	// Walk global flags and command names down to the leaf command.
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			out = append(out, a)
			if takesValue(flags, a) && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
			continue
		}
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(a) {
				next = c
			}
		}
		if next == nil {
			break
		}
		out = append(out, a)
		cmds, flags = next.Subcommands, next.Flags
		i++
		if len(cmds) == 0 {
			break
		}
	}
	var positional, globals []string
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "-") && len(a) > 1 && !hasFlag(flags, a) && hasFlag(app.Flags, a):
			// A global flag given after the command ("labfed user list
			// --addr X") moves to the front, where the parser expects it.
			globals = append(globals, a)
			if takesValue(app.Flags, a) && i+1 < len(args) {
				globals = append(globals, args[i+1])
				i++
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			out = append(out, a)
			if takesValue(flags, a) {
				if i+1 == len(args) {
					// The flag lacks its value: leave it last, so the
					// parser says so instead of taking the "--" below.
					return out
				}
				out = append(out, args[i+1])
				i++
			}
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	if len(globals) > 0 {
		out = append(append([]string{out[0]}, globals...), out[1:]...)
	}
	return out
}

// hasFlag reports whether flag token a names one of flags.
func hasFlag(flags []cli.Flag, a string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// takesValue reports whether flag token a (like "--uid-range" or "-x")
// names a non-boolean flag given without "=value".
func takesValue(flags []cli.Flag, a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	name := strings.TrimLeft(a, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				_, isBool := f.(*cli.BoolFlag)
				return !isBool
			}
		}
	}
	return false
}

// globalString reads a global flag even when a subcommand has a flag of the
// same name (token revoke --key KID).
func globalString(c *cli.Context, name string) string {
	for _, x := range c.Lineage() {
		if x.Command != nil && slices.ContainsFunc(x.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), name) }) {
			continue
		}
		if v := x.String(name); v != "" {
			return v
		}
	}
	return ""
}
