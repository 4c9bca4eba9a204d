package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/labfed/labfed/cmd/labfed/internal/node"
)

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q is not one of debug, info, warn, error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run a broker node for the site described in a config file",
		Description: "Starts the node's Raft replica of the directory and its gRPC API.\n" +
			"The first node of a new federation runs with --bootstrap; every other node\n" +
			"runs with --join naming one or more existing nodes' API addresses. A node\n" +
			"restarting with its data_dir intact needs neither.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "site config `FILE` (see testdata/config/rutgers.yaml)", Required: true},
			&cli.BoolFlag{Name: "bootstrap", Usage: "start a new federation with this node as its first voter"},
			&cli.StringFlag{Name: "join", Usage: "join through existing nodes' API addresses `ADDR,…`"},
			&cli.BoolFlag{Name: "nonvoter", Usage: "join as a non-voting replica"},
			&cli.BoolFlag{Name: "dev-insecure", Usage: "development mode: no TLS, no authentication, loopback addresses only"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		},
		Action: func(c *cli.Context) error {
			if c.Bool("bootstrap") && c.String("join") != "" {
				return fmt.Errorf("give --bootstrap or --join, not both: a node either starts a federation or joins one")
			}
			cfg, err := node.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			log, err := newLogger(c.String("log-level"))
			if err != nil {
				return err
			}
			var join []string
			for _, a := range strings.Split(c.String("join"), ",") {
				if a = strings.TrimSpace(a); a != "" {
					join = append(join, a)
				}
			}
			n, err := node.Start(c.Context, node.Options{
				Config: cfg, Bootstrap: c.Bool("bootstrap"), Join: join, NonVoter: c.Bool("nonvoter"),
				DevInsecure: c.Bool("dev-insecure"), Logger: log,
			})
			if err != nil {
				return err
			}
			log.Info("serving", "site", cfg.Site, "node", cfg.Node, "api", n.Addr(), "raft", cfg.Listen.Raft)
			select {
			case <-c.Context.Done():
				log.Info("shutting down")
			case err := <-n.Done():
				if err != nil {
					n.Close()
					return fmt.Errorf("the API server stopped: %w", err)
				}
			}
			return n.Close()
		},
	}
}
