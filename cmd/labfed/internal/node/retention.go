package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/directory"
)

// archiveLoop moves audit entries older than the retention into archive
// files, on the leader only, every ArchiveEvery, until ctx ends.
func (n *Node) archiveLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.Audit.ArchiveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.replica.IsLeader() {
			continue
		}
		for {
			k, err := n.archiveOnce(ctx, time.Now().Add(-n.cfg.Audit.Retention))
			if err != nil {
				n.log.Warn("audit retention: could not archive", "err", err)
			}
			if err != nil || k < directory.MaxArchive {
				break
			}
		}
	}
}

// archiveOnce archives up to MaxArchive consecutive entries older than
// before, from the checkpoint on: into a new file first (synced), then out
// of the log. It returns how many it archived.
func (n *Node) archiveOnce(ctx context.Context, before time.Time) (int, error) {
	d := n.replica.Directory()
	cp, err := d.AuditCheckpoint()
	if err != nil {
		return 0, err
	}
	var es []*audit.Entry
	for len(es) < directory.MaxArchive {
		page, err := d.AuditEntries(directory.AuditQuery{After: cp.Seq + uint64(len(es)), Limit: 1000})
		if err != nil {
			return 0, err
		}
		for _, e := range page {
			if e.Seq != cp.Seq+uint64(len(es))+1 || !e.Time.Before(before) || len(es) == directory.MaxArchive {
				page = nil
				break
			}
			es = append(es, e)
		}
		if len(page) < 1000 {
			break
		}
	}
	if len(es) == 0 {
		return 0, nil
	}
	dir := n.cfg.Audit.ArchiveDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	first, last := es[0], es[len(es)-1]
	path := filepath.Join(dir, fmt.Sprintf("audit-%020d-%020d.jsonl", first.Seq, last.Seq))
	if err := audit.CreateArchive(path, es); err != nil {
		return 0, err
	}
	_, err = n.replica.Apply(ctx, &directory.Command{Time: time.Now().UTC(), Actor: n.cfg.Site + "/broker/" + n.cfg.Node,
		ArchiveAudit: &directory.ArchiveAudit{From: first.Seq, Through: last.Seq, Hash: last.Hash}})
	if err != nil {
		// The outcome may be unknown (a timeout, a lost leadership): the
		// file is kept unless the log still holds the entries.
		if now, cerr := d.AuditCheckpoint(); cerr == nil && now.Seq < first.Seq {
			os.Rename(path, path+".unused")
		}
		return 0, err
	}
	n.log.Info("audit retention: archived entries", "first", first.Seq, "last", last.Seq, "file", path)
	return len(es), nil
}
