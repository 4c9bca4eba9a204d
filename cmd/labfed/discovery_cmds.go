package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/cmd/labfed/internal/node"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// rttJSON rounds a coordinate estimate for people and scripts; nil when
// there is none yet.
func rttJSON(v float64, ok bool) *float64 {
	if !ok {
		return nil
	}
	r := math.Round(v*100) / 100
	return &r
}

func rttText(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
}

type memberJSON struct {
	Name   string   `json:"name"`
	Site   string   `json:"site"`
	Addr   string   `json:"addr"`
	Status string   `json:"status"`
	RTTms  *float64 `json:"rtt_ms"`
}

func membersCommand() *cli.Command {
	return &cli.Command{
		Name:  "members",
		Usage: "list the federation's broker nodes as gossip sees them, with estimated round-trip times",
		Flags: []cli.Flag{jsonFlag()},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			resp, err := cl.Discovery.ListMembers(ctx, &pb.ListMembersRequest{})
			if err != nil {
				return err
			}
			out := []memberJSON{}
			var rows [][]string
			for _, m := range resp.GetMembers() {
				out = append(out, memberJSON{Name: m.GetName(), Site: m.GetSite(), Addr: m.GetAddr(), Status: m.GetStatus(), RTTms: rttJSON(m.GetRttMs(), m.GetHasRtt())})
				rows = append(rows, []string{m.GetName(), m.GetSite(), m.GetAddr(), m.GetStatus(), rttText(m.GetRttMs(), m.GetHasRtt())})
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			return table(c.App.Writer, []string{"NAME", "SITE", "ADDR", "STATUS", "RTT"}, rows)
		}),
	}
}

type instrumentJSON struct {
	ID     string `json:"id"`
	Site   string `json:"site"`
	Type   string `json:"type"`
	Model  string `json:"model"`
	Status string `json:"status"`
}

func instrumentsCommand() *cli.Command {
	return &cli.Command{
		Name:  "instruments",
		Usage: "list the instruments every site offers, with their status",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "type", Usage: "only instruments of this `TYPE` (TEM, FIB, …)"},
			&cli.StringFlag{Name: "site", Usage: "only this `SITE`'s instruments"},
			&cli.StringFlag{Name: "status", Usage: "only instruments in this `STATUS` (available, in_session, maintenance, offline, unreachable)"},
			jsonFlag(),
		},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			resp, err := cl.Discovery.ListInstruments(ctx, &pb.ListInstrumentsRequest{Type: c.String("type"), Site: c.String("site"), Status: c.String("status")})
			if err != nil {
				return err
			}
			out := []instrumentJSON{}
			var rows [][]string
			for _, in := range resp.GetInstruments() {
				out = append(out, instrumentJSON{ID: in.GetId(), Site: in.GetSite(), Type: in.GetType(), Model: in.GetModel(), Status: in.GetStatus()})
				rows = append(rows, []string{in.GetId(), in.GetType(), in.GetModel(), in.GetStatus()})
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			return table(c.App.Writer, []string{"ID", "TYPE", "MODEL", "STATUS"}, rows)
		}),
	}
}

// parseSoftware reads repeated NAME=VERSION flags.
func parseSoftware(vals []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vals {
		k, ver, ok := strings.Cut(v, "=")
		if !ok || k == "" || ver == "" {
			return nil, fmt.Errorf("--software %q is not NAME=VERSION; give one such as cryosparc=4.6.2", v)
		}
		if old, dup := out[k]; dup && old != ver {
			return nil, fmt.Errorf("--software names %s twice (%s and %s); give one version", k, old, ver)
		}
		out[k] = ver
	}
	return out, nil
}

// jobNeeds reads the --gpus and --software flags compute and place share.
func jobNeeds(c *cli.Context) (int32, map[string]string, error) {
	sw, err := parseSoftware(c.StringSlice("software"))
	if err != nil {
		return 0, nil, err
	}
	if c.Int("gpus") < 0 {
		return 0, nil, fmt.Errorf("--gpus %d is negative", c.Int("gpus"))
	}
	return int32(c.Int("gpus")), sw, nil
}

type computeJSON struct {
	ID         string            `json:"id"`
	Site       string            `json:"site"`
	Kind       string            `json:"kind"`
	GPUs       int32             `json:"gpus"`
	GPUsFree   int32             `json:"gpus_free"`
	QueueWaitS float64           `json:"queue_wait_s"`
	Software   map[string]string `json:"software"`
	Status     string            `json:"status"`
	// RTTms is there only with --near: a number, or null before the
	// coordinates have an estimate.
	RTTms any `json:"rtt_ms,omitempty"`
}

func softwareText(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func computeCommand() *cli.Command {
	return &cli.Command{
		Name:  "compute",
		Usage: "list the compute targets every site offers: free GPUs, queue wait, software versions",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "near", Usage: "estimate each target's round-trip time from `SITE`"},
			&cli.IntFlag{Name: "gpus", Usage: "only targets with at least `N` free GPUs"},
			&cli.StringSliceFlag{Name: "software", Usage: "only targets running `NAME=VERSION` (repeatable)"},
			jsonFlag(),
		},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			gpus, sw, err := jobNeeds(c)
			if err != nil {
				return err
			}
			resp, err := cl.Discovery.ListCompute(ctx, &pb.ListComputeRequest{Near: c.String("near"), Gpus: gpus, Software: sw})
			if err != nil {
				return err
			}
			out := []computeJSON{}
			var rows [][]string
			for _, t := range resp.GetTargets() {
				j := computeJSON{ID: t.GetId(), Site: t.GetSite(), Kind: t.GetKind(), GPUs: t.GetGpus(), GPUsFree: t.GetGpusFree(), QueueWaitS: t.GetQueueWaitS(), Software: t.GetSoftware(), Status: t.GetStatus()}
				if j.Software == nil {
					j.Software = map[string]string{}
				}
				if c.String("near") != "" {
					j.RTTms = rttJSON(t.GetRttMs(), t.GetHasRtt())
				}
				out = append(out, j)
				rows = append(rows, []string{t.GetId(), t.GetKind(), fmt.Sprintf("%d/%d", t.GetGpusFree(), t.GetGpus()), fmt.Sprintf("%.0fs", t.GetQueueWaitS()), softwareText(t.GetSoftware()), t.GetStatus(), rttText(t.GetRttMs(), t.GetHasRtt())})
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			return table(c.App.Writer, []string{"ID", "KIND", "GPUS FREE", "QUEUE", "SOFTWARE", "STATUS", "RTT"}, rows)
		}),
	}
}

type placementJSON struct {
	Target     string   `json:"target"`
	Eligible   bool     `json:"eligible"`
	Score      float64  `json:"score"`
	RTTms      *float64 `json:"rtt_ms"`
	QueueWaitS float64  `json:"queue_wait_s"`
	GPUsFree   int32    `json:"gpus_free"`
	Reason     string   `json:"reason"`
}

func placeCommand() *cli.Command {
	return &cli.Command{
		Name:  "place",
		Usage: "rank the compute targets for an analytics job, and say why",
		Description: "Ranks every compute target that can run the job by estimated round-trip time to\n" +
			"the data's site, queue wait and free GPUs, best first, each with a sentence saying\n" +
			"why. Targets that cannot run it (too few GPUs, other software versions, broker\n" +
			"unreachable) follow, with eligible false and the reason. With --json, an array.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-site", Usage: "the `SITE` that holds the job's data", Required: true},
			&cli.IntFlag{Name: "gpus", Usage: "GPUs the job needs", Value: 1},
			&cli.StringSliceFlag{Name: "software", Usage: "software the job needs, `NAME=VERSION` (repeatable; e.g. cryosparc=4.6.2 to match the master)"},
			jsonFlag(),
		},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			gpus, sw, err := jobNeeds(c)
			if err != nil {
				return err
			}
			resp, err := cl.Discovery.Place(ctx, &pb.PlaceRequest{DataSite: c.String("data-site"), Gpus: gpus, Software: sw})
			if err != nil {
				return err
			}
			out := []placementJSON{}
			for _, p := range resp.GetRanked() {
				out = append(out, placementJSON{Target: p.GetTarget(), Eligible: true, Score: math.Round(p.GetScore()*1000) / 1000, RTTms: rttJSON(p.GetRttMs(), p.GetHasRtt()), QueueWaitS: p.GetQueueWaitS(), GPUsFree: p.GetGpusFree(), Reason: p.GetReason()})
			}
			for _, e := range resp.GetExcluded() {
				out = append(out, placementJSON{Target: e.GetTarget(), Reason: e.GetReason()})
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, out)
			}
			for i, p := range resp.GetRanked() {
				fmt.Fprintf(c.App.Writer, "%d. %s\n", i+1, p.GetReason())
			}
			if len(resp.GetRanked()) == 0 {
				fmt.Fprintln(c.App.Writer, "no compute target can run this job")
			}
			for _, e := range resp.GetExcluded() {
				fmt.Fprintf(c.App.Writer, "-  %s\n", e.GetReason())
			}
			return nil
		}),
	}
}

func gossipCommand() *cli.Command {
	return &cli.Command{
		Name:  "gossip",
		Usage: "manage the federation's gossip encryption",
		Subcommands: []*cli.Command{gossipKeysCommand(), {
			Name:      "keygen",
			Usage:     "write a new gossip keyring FILE (one fresh AES-256 key, mode 0600) for gossip.keyring",
			ArgsUsage: "FILE",
			Action: func(c *cli.Context) error {
				path, err := oneArg(c, "keyring FILE")
				if err != nil {
					return err
				}
				if err := node.NewGossipKeyring(path); err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.App.Writer, "wrote %s; give the same file to every site (gossip.keyring)\n", path)
				return err
			},
		}},
	}
}

// gossipKeysCommand rotates the gossip key the way Serf's keyring command
// does: install the new key everywhere, make it the primary, remove the old.
func gossipKeysCommand() *cli.Command {
	op := func(name, usage string) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: "KEY",
			Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
				key, err := oneArg(c, "base64 KEY")
				if err != nil {
					return err
				}
				return printKeys(c, cl, ctx, name, key)
			}),
		}
	}
	return &cli.Command{
		Name:  "keys",
		Usage: "rotate the gossip encryption key without downtime (coordinators)",
		Description: "Rotation: labfed gossip keys install NEW on one broker (it tells every member),\n" +
			"then labfed gossip keys use NEW, then labfed gossip keys remove OLD. Each member\n" +
			"applies the change and rewrites its gossip.keyring file, so restarts keep it.",
		Subcommands: []*cli.Command{
			op("install", "add a key every member accepts (still encrypting with the primary)"),
			op("use", "make an installed key the primary that encrypts"),
			op("remove", "remove a key that is not the primary"),
			{
				Name:  "list",
				Usage: "show the fingerprints of the answering broker's keys, the primary first",
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					return printKeys(c, cl, ctx, "list", "")
				}),
			},
		},
	}
}

func printKeys(c *cli.Context, cl *client.Client, ctx context.Context, op, key string) error {
	resp, err := cl.Discovery.GossipKeys(ctx, &pb.GossipKeysRequest{Op: op, Key: key})
	if err != nil {
		return err
	}
	w := c.App.Writer
	if op != "list" {
		fmt.Fprintf(w, "%s: %d of %d members applied it\n", op, resp.GetAcked(), resp.GetMembers())
		for _, f := range resp.GetFailed() {
			fmt.Fprintf(w, "  not applied by %s\n", f)
		}
	}
	for i, fp := range resp.GetFingerprints() {
		role := ""
		if i == 0 {
			role = " (primary)"
		}
		fmt.Fprintf(w, "key %s%s\n", fp, role)
	}
	if len(resp.GetFailed()) > 0 {
		return fmt.Errorf("%d member(s) did not apply the %s; repeat it once they are back", len(resp.GetFailed()), op)
	}
	return nil
}

func offerCommand() *cli.Command {
	return &cli.Command{
		Name:  "offer",
		Usage: "change what this site offers (its agent does this as sessions and jobs come and go)",
		Subcommands: []*cli.Command{{
			Name:      "set",
			Usage:     "set an instrument's or compute target's status, free GPUs or queue wait; gossip spreads it",
			ArgsUsage: "SITE/NAME",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "status", Usage: "available, in_session, maintenance or offline"},
				&cli.IntFlag{Name: "gpus-free", Usage: "free GPUs of a compute target"},
				&cli.DurationFlag{Name: "queue-wait", Usage: "expected queue wait of a compute target, such as 10m"},
			},
			Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
				id, err := oneArg(c, "SITE/NAME")
				if err != nil {
					return err
				}
				req := &pb.ReportStatusRequest{Id: id}
				if c.IsSet("status") {
					v := c.String("status")
					req.Status = &v
				}
				if c.IsSet("gpus-free") {
					v := int32(c.Int("gpus-free"))
					req.GpusFree = &v
				}
				if c.IsSet("queue-wait") {
					v := c.Duration("queue-wait").Seconds()
					req.QueueWaitS = &v
				}
				if _, err := cl.Discovery.ReportStatus(ctx, req); err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.App.Writer, "%s updated; every site sees it within seconds\n", id)
				return err
			}),
		}},
	}
}
