package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/client"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/rpc"
	pb "github.com/labfed/labfed/proto/labfed/v1"
	"github.com/labfed/labfed/storage/boltstate"
)

func auditFilterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "user", Usage: "entries by or about `USER`"},
		&cli.StringFlag{Name: "site", Usage: "entries about `SITE` or by someone from it"},
		&cli.StringFlag{Name: "resource", Usage: "entries about `RESOURCE` (site/name) or below it"},
		&cli.StringFlag{Name: "action", Usage: "only `ACTION` (token.issue, grant.add, login, session.open, …)"},
		&cli.StringFlag{Name: "decision", Usage: "allow or deny"},
		&cli.StringFlag{Name: "since", Usage: "from `TIME` (RFC 3339)"},
		&cli.StringFlag{Name: "until", Usage: "before `TIME` (RFC 3339)"},
	}
}

func auditRequest(c *cli.Context) (*pb.AuditQueryRequest, error) {
	r := &pb.AuditQueryRequest{User: c.String("user"), Site: c.String("site"), Resource: c.String("resource"), Action: c.String("action"), Decision: c.String("decision")}
	var err error
	if r.Since, err = parseTime("since", c.String("since")); err != nil {
		return nil, err
	}
	if r.Until, err = parseTime("until", c.String("until")); err != nil {
		return nil, err
	}
	if c.IsSet("limit") {
		if c.Int("limit") <= 0 {
			return nil, errors.New("--limit must be a positive number of entries")
		}
		r.Limit = uint32(c.Int("limit"))
	}
	return r, nil
}

// entryJSON is an audit entry as scripts read it (cli.md field names).
type entryJSON struct {
	Seq       uint64            `json:"seq"`
	Time      string            `json:"time"`
	Actor     string            `json:"actor"`
	ActorSite string            `json:"actor_site,omitempty"`
	Subject   string            `json:"subject,omitempty"`
	Action    string            `json:"action"`
	Resource  string            `json:"resource"`
	Site      string            `json:"site"`
	Decision  string            `json:"decision"`
	Reason    string            `json:"reason"`
	Details   map[string]string `json:"details,omitempty"`
	Grants    []string          `json:"grants,omitempty"`
	Token     string            `json:"token,omitempty"`
	Source    string            `json:"source,omitempty"`
	SourceSeq uint64            `json:"source_seq,omitempty"`
	Hash      string            `json:"hash"`
	PrevHash  string            `json:"prev_hash"`
}

func toEntryJSON(e *pb.AuditEntry) entryJSON {
	return entryJSON{
		Seq: e.GetSeq(), Time: e.GetTime().AsTime().UTC().Format("2006-01-02T15:04:05.000000000Z07:00"), Actor: e.GetActor(), ActorSite: e.GetActorSite(), Subject: e.GetSubject(),
		Action: e.GetAction(), Resource: e.GetResource(), Site: e.GetSite(), Decision: e.GetDecision(), Reason: e.GetReason(), Details: e.GetDetails(),
		Grants: e.GetGrants(), Token: e.GetToken(), Source: e.GetSource(), SourceSeq: e.GetSourceSeq(), Hash: e.GetHash(), PrevHash: e.GetPrevHash(),
	}
}

func entryRow(e *pb.AuditEntry) []string {
	who := e.GetActor()
	if e.GetSubject() != "" && e.GetSubject() != e.GetActor() {
		who += " → " + e.GetSubject()
	}
	return []string{strconv.FormatUint(e.GetSeq(), 10), tstr(e.GetTime()), who, e.GetAction(), dash(e.GetResource()), dash(e.GetSite()), e.GetDecision(), dash(e.GetReason())}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var entryHeader = []string{"SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "SITE", "DECISION", "REASON"}

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "read the federation's audit trail (researchers their own entries, site admins their sites', coordinators all)",
		Description: "Without --follow, prints the newest entries (at most --limit, default 100) that pass the\n" +
			"filters, oldest first. With --follow, prints new entries as they are committed until\n" +
			"interrupted (one JSON object per line with --json).",
		Flags: append(auditFilterFlags(),
			&cli.IntFlag{Name: "limit", Usage: "at most `N` entries (default 100)"},
			&cli.BoolFlag{Name: "follow", Usage: "stream new entries as they are committed"},
			jsonFlag()),
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			req, err := auditRequest(c)
			if err != nil {
				return err
			}
			ac := pb.NewAuditServiceClient(cl.Conn())
			if c.Bool("follow") {
				return followAudit(c, ac, req)
			}
			resp, err := ac.Query(ctx, req)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				out := []entryJSON{}
				for _, e := range resp.GetEntries() {
					out = append(out, toEntryJSON(e))
				}
				return printJSON(c.App.Writer, out)
			}
			var rows [][]string
			for _, e := range resp.GetEntries() {
				rows = append(rows, entryRow(e))
			}
			return table(c.App.Writer, entryHeader, rows)
		}),
		Subcommands: []*cli.Command{
			{
				Name:  "verify",
				Usage: "recompute the audit log's hash chain; exit 0 only when it is intact, else name the first bad entry",
				Description: "Asks the broker at --addr to check its copy of the log, or with --state checks a stopped\n" +
					"broker's state file (DATA_DIR/state.db) directly, without any broker.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "state", Usage: "check this bbolt `FILE` offline"},
					&cli.StringFlag{Name: "archive", Usage: "check an archive `FILE` written by labfed audit archive"},
					&cli.BoolFlag{Name: "all", Usage: "verify on every broker and compare their logs at the same entry (a replica whose log or state was changed stands out)"},
					jsonFlag(),
				},
				Action: func(c *cli.Context) error {
					if c.Args().Len() > 0 {
						return fmt.Errorf("unexpected argument %q; see %s --help", c.Args().First(), c.Command.HelpName)
					}
					var resp *pb.VerifyAuditResponse
					var err error
					if path := c.String("archive"); path != "" {
						return verifyArchiveFile(c, path)
					}
					if c.Bool("all") {
						return withClient(verifyAllReplicas)(c)
					}
					if path := c.String("state"); path != "" {
						resp, err = verifyStateFile(path)
					} else {
						err = withClient(func(_ *cli.Context, cl *client.Client, ctx context.Context) error {
							resp, err = pb.NewAuditServiceClient(cl.Conn()).Verify(ctx, &pb.VerifyAuditRequest{})
							return err
						})(c)
					}
					if err != nil {
						return err
					}
					if c.Bool("json") {
						if err := printJSON(c.App.Writer, map[string]any{"intact": resp.GetIntact(), "checked": resp.GetChecked(), "bad_seq": resp.GetBadSeq(), "reason": resp.GetReason(), "head_seq": resp.GetHeadSeq(), "head_hash": resp.GetHeadHash(), "checkpoint_seq": resp.GetCheckpointSeq(), "checkpoint_hash": resp.GetCheckpointHash()}); err != nil {
							return err
						}
					}
					if !resp.GetIntact() {
						return fmt.Errorf("audit chain broken at entry %d: %s", resp.GetBadSeq(), resp.GetReason())
					}
					if !c.Bool("json") {
						from := "the first entry"
						if resp.GetCheckpointSeq() > 0 {
							from = fmt.Sprintf("checkpoint %d %s", resp.GetCheckpointSeq(), resp.GetCheckpointHash())
						}
						fmt.Fprintf(c.App.Writer, "intact: %d entries from %s to head %d %s\n", resp.GetChecked(), from, resp.GetHeadSeq(), resp.GetHeadHash())
					}
					return nil
				},
			},
			{
				Name:  "archive",
				Usage: "move entries older than --before into --out (JSON lines) and out of the log, which keeps a checkpoint (coordinators)",
				Description: "Writes the entries to FILE (mode 0600, synced) first, then asks the leader to remove\n" +
					"them; the log keeps the last one's hash and is verified from it. labfed audit verify\n" +
					"--archive FILE checks the file on its own.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "before", Required: true, Usage: "archive entries older than `TIME` (RFC 3339)"},
					&cli.StringFlag{Name: "out", Required: true, Usage: "the archive `FILE` to create"},
				},
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					before, err := parseTime("before", c.String("before"))
					if err != nil {
						return err
					}
					n, cp, err := archiveAudit(ctx, pb.NewAuditServiceClient(cl.Conn()), before, c.String("out"))
					if err != nil {
						return err
					}
					if n == 0 {
						_, err = fmt.Fprintf(c.App.Writer, "nothing older than %s to archive\n", c.String("before"))
						return err
					}
					_, err = fmt.Fprintf(c.App.Writer, "%d entries archived to %s; the log now starts after entry %d (%s)\n", n, c.String("out"), cp.GetCheckpointSeq(), cp.GetCheckpointHash())
					return err
				}),
			},
			{
				Name:  "export",
				Usage: "write entries as JSON lines (one per entry, oldest first) for a SIEM",
				Flags: append(auditFilterFlags(), &cli.StringFlag{Name: "out", Usage: "write to `FILE` (mode 0600) instead of stdout"}),
				Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
					req, err := auditRequest(c)
					if err != nil {
						return err
					}
					w := c.App.Writer
					if path := c.String("out"); path != "" {
						f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
						if err != nil {
							return err
						}
						defer f.Close()
						w = f
					}
					n, err := exportAudit(ctx, pb.NewAuditServiceClient(cl.Conn()), req, w)
					if err != nil {
						return fmt.Errorf("export stopped after %d entries: %w", n, err)
					}
					if c.String("out") != "" {
						fmt.Fprintf(c.App.Writer, "%d entries written to %s\n", n, c.String("out"))
					}
					return nil
				}),
			},
		},
	}
}

// exportAudit pages through the log oldest first.
func exportAudit(ctx context.Context, ac pb.AuditServiceClient, req *pb.AuditQueryRequest, w io.Writer) (int, error) {
	enc := json.NewEncoder(w)
	req.Limit, req.After, req.Oldest = 1000, 0, true
	n := 0
	for {
		resp, err := ac.Query(ctx, req)
		if err != nil {
			return n, err
		}
		for _, e := range resp.GetEntries() {
			if err := enc.Encode(toEntryJSON(e)); err != nil {
				return n, err
			}
			n++
			req.After = e.GetSeq()
		}
		if len(resp.GetEntries()) < int(req.Limit) {
			return n, nil
		}
	}
}

func followAudit(c *cli.Context, ac pb.AuditServiceClient, req *pb.AuditQueryRequest) error {
	stream, err := ac.Follow(c.Context, req)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(c.App.Writer)
	for {
		e, err := stream.Recv()
		if err != nil {
			if c.Context.Err() != nil {
				return nil
			}
			return err
		}
		if c.Bool("json") {
			if err := enc.Encode(toEntryJSON(e)); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(c.App.Writer, strings.Join(entryRow(e), "  "))
	}
}

// archiveAudit exports the entries before a time into a new file, then has
// the log drop them, MaxArchive at a time. It walks the log in order from
// its first entry (the one after the checkpoint) and stops at the first
// entry not older than before: what is archived is always a run from the
// checkpoint, with nothing skipped.
func archiveAudit(ctx context.Context, ac pb.AuditServiceClient, before *timestamppb.Timestamp, path string) (int, *pb.ArchiveAuditResponse, error) {
	var entries []*audit.Entry
	req := &pb.AuditQueryRequest{Oldest: true, Limit: 1000}
	for {
		resp, err := ac.Query(ctx, req)
		if err != nil {
			return 0, nil, err
		}
		for _, pe := range resp.GetEntries() {
			e := rpc.EntryFromPB(pe)
			if !e.Time.Before(before.AsTime()) || (len(entries) > 0 && e.Seq != entries[len(entries)-1].Seq+1) {
				return finishArchive(ctx, ac, entries, path)
			}
			entries = append(entries, &e)
			req.After = e.Seq
		}
		if len(resp.GetEntries()) < int(req.Limit) {
			return finishArchive(ctx, ac, entries, path)
		}
	}
}

func finishArchive(ctx context.Context, ac pb.AuditServiceClient, entries []*audit.Entry, path string) (int, *pb.ArchiveAuditResponse, error) {
	if len(entries) == 0 {
		return 0, nil, nil
	}
	if err := audit.CreateArchive(path, entries); err != nil {
		return 0, nil, fmt.Errorf("write the archive: %w (nothing was removed from the log; give a new file)", err)
	}
	var resp *pb.ArchiveAuditResponse
	var err error
	for i := 0; i < len(entries); i += directory.MaxArchive {
		last := entries[min(i+directory.MaxArchive, len(entries))-1]
		if resp, err = ac.Archive(ctx, &pb.ArchiveAuditRequest{From: entries[i].Seq, Through: last.Seq, Hash: last.Hash}); err != nil {
			return 0, nil, fmt.Errorf("the archive %s is written, but removing the entries through %d failed: %w", path, last.Seq, err)
		}
	}
	return len(entries), resp, nil
}

func verifyArchiveFile(c *cli.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := audit.VerifyArchive(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, map[string]any{"intact": s.FirstBad == 0, "first": s.First, "last": s.Last, "entries": s.Entries, "prev_hash": s.PrevHash, "hash": s.Hash, "bad_seq": s.FirstBad, "reason": s.Reason}); err != nil {
			return err
		}
	}
	if s.FirstBad != 0 {
		return fmt.Errorf("archive chain broken at entry %d: %s", s.FirstBad, s.Reason)
	}
	if !c.Bool("json") {
		fmt.Fprintf(c.App.Writer, "intact: entries %d-%d; the log's checkpoint must be %s\n", s.First, s.Last, s.Hash)
	}
	return nil
}

// verifyAllReplicas has every broker verify its own log, then compares
// their hashes of the newest entry all of them hold: each chain may be
// intact on its own and still differ from the others, if a replica's log
// or state was changed before it applied it.
func verifyAllReplicas(c *cli.Context, cl *client.Client, ctx context.Context) error {
	peers, err := cl.Cluster.ListPeers(ctx, &pb.ListPeersRequest{})
	if err != nil {
		return err
	}
	opts, err := clientOptions(c)
	if err != nil {
		return err
	}
	type replica struct {
		id   string
		ac   pb.AuditServiceClient
		head uint64
	}
	var rs []*replica
	var common uint64 = ^uint64(0)
	for _, p := range peers.GetPeers() {
		if p.GetApiAddr() == "" {
			return fmt.Errorf("broker %s has no registered API address; cannot verify it", p.GetId())
		}
		pc, err := client.Dial(p.GetApiAddr(), opts)
		if err != nil {
			return err
		}
		defer pc.Close()
		r := &replica{id: p.GetId(), ac: pb.NewAuditServiceClient(pc.Conn())}
		v, err := r.ac.Verify(ctx, &pb.VerifyAuditRequest{})
		if err != nil {
			return fmt.Errorf("%s: %w", r.id, err)
		}
		if !v.GetIntact() {
			return fmt.Errorf("audit chain broken on %s at entry %d: %s", r.id, v.GetBadSeq(), v.GetReason())
		}
		r.head = v.GetHeadSeq()
		common = min(common, r.head)
		rs = append(rs, r)
	}
	hashes := map[string][]string{}
	for _, r := range rs {
		v, err := r.ac.Verify(ctx, &pb.VerifyAuditRequest{AtSeq: common})
		if err != nil {
			return fmt.Errorf("%s: %w", r.id, err)
		}
		hashes[v.GetAtHash()] = append(hashes[v.GetAtHash()], r.id)
	}
	if len(hashes) > 1 {
		var parts []string
		for h, ids := range hashes {
			parts = append(parts, fmt.Sprintf("%s on %s", short(h), strings.Join(ids, ",")))
		}
		slices.Sort(parts)
		return fmt.Errorf("the brokers' logs differ at entry %d: %s; the odd one out was changed", common, strings.Join(parts, "; "))
	}
	if c.Bool("json") {
		for h := range hashes {
			return printJSON(c.App.Writer, map[string]any{"intact": true, "brokers": len(rs), "seq": common, "hash": h})
		}
	}
	for h := range hashes {
		fmt.Fprintf(c.App.Writer, "intact on all %d brokers; they agree at entry %d (%s)\n", len(rs), common, h)
	}
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// verifyStateFile checks the chain in a broker's state file.
func verifyStateFile(path string) (*pb.VerifyAuditResponse, error) {
	st, err := boltstate.OpenReadOnly(path)
	if err != nil {
		return nil, fmt.Errorf("%v; give the state.db of a stopped broker (a running one holds it locked)", err)
	}
	defer st.Close()
	d := directory.New(st)
	bad, why, checked, err := d.VerifyAudit()
	if err != nil {
		return nil, err
	}
	resp := &pb.VerifyAuditResponse{Intact: why == nil, Checked: checked, BadSeq: bad}
	if why != nil {
		resp.Reason = why.Error()
	}
	if resp.HeadSeq, resp.HeadHash, err = d.AuditHead(); err != nil {
		return nil, err
	}
	cp, err := d.AuditCheckpoint()
	resp.CheckpointSeq, resp.CheckpointHash = cp.Seq, cp.Hash
	return resp, err
}

func usageCommand() *cli.Command {
	return &cli.Command{
		Name:  "usage",
		Usage: "instrument hours, GPU hours, sessions, jobs and tokens by site, user or project (administrators)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "by", Value: "site", Usage: "group by `site`, user or project"},
			&cli.StringFlag{Name: "since", Usage: "from `TIME` (RFC 3339)"},
			&cli.StringFlag{Name: "until", Usage: "before `TIME` (RFC 3339)"},
			&cli.BoolFlag{Name: "csv", Usage: "print CSV (for billing) instead of a table"},
			jsonFlag(),
		},
		Action: withClient(func(c *cli.Context, cl *client.Client, ctx context.Context) error {
			req := &pb.UsageRequest{By: c.String("by")}
			var err error
			if req.Since, err = parseTime("since", c.String("since")); err != nil {
				return err
			}
			if req.Until, err = parseTime("until", c.String("until")); err != nil {
				return err
			}
			if c.Bool("csv") && c.Bool("json") {
				return errors.New("give --csv or --json, not both")
			}
			resp, err := pb.NewAuditServiceClient(cl.Conn()).Usage(ctx, req)
			if err != nil {
				return err
			}
			rows := []audit.UsageRow{}
			for _, r := range resp.GetRows() {
				rows = append(rows, audit.UsageRow{Key: r.GetKey(), InstrumentHours: r.GetInstrumentHours(), GPUHours: r.GetGpuHours(), Sessions: r.GetSessions(), Jobs: r.GetJobs(), Tokens: r.GetTokens()})
			}
			switch {
			case c.Bool("json"):
				return printJSON(c.App.Writer, rows)
			case c.Bool("csv"):
				w := csv.NewWriter(c.App.Writer)
				w.Write([]string{"key", "instrument_hours", "gpu_hours", "sessions", "jobs", "tokens"})
				for _, r := range rows {
					w.Write(usageCells(r))
				}
				w.Flush()
				return w.Error()
			}
			var cells [][]string
			for _, r := range rows {
				cells = append(cells, usageCells(r))
			}
			return table(c.App.Writer, []string{strings.ToUpper(req.By), "INSTRUMENT HOURS", "GPU HOURS", "SESSIONS", "JOBS", "TOKENS"}, cells)
		}),
	}
}

func usageCells(r audit.UsageRow) []string {
	return []string{r.Key, strconv.FormatFloat(r.InstrumentHours, 'f', 2, 64), strconv.FormatFloat(r.GPUHours, 'f', 2, 64), strconv.FormatUint(r.Sessions, 10), strconv.FormatUint(r.Jobs, 10), strconv.FormatUint(r.Tokens, 10)}
}
