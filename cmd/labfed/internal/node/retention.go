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
// before: into a new file first (synced), then out of the log. It returns
// how many it archived.
func (n *Node) archiveOnce(ctx context.Context, before time.Time) (int, error) {
	d := n.replica.Directory()
	cp, err := d.AuditCheckpoint()
	if err != nil {
		return 0, err
	}
	es, err := d.AuditEntries(directory.AuditQuery{After: cp.Seq, Limit: directory.MaxArchive})
	if err != nil {
		return 0, err
	}
	// Consecutive from the checkpoint, while older than before.
	k := 0
	for k < len(es) && es[k].Seq == cp.Seq+uint64(k)+1 && es[k].Time.Before(before) {
		k++
	}
	if k == 0 {
		return 0, nil
	}
	es = es[:k]
	dir := n.cfg.Audit.ArchiveDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	path := filepath.Join(dir, fmt.Sprintf("audit-%020d-%020d.jsonl", es[0].Seq, es[k-1].Seq))
	if err := audit.CreateArchive(path, es); err != nil {
		return 0, err
	}
	last := es[k-1]
	_, err = n.replica.Apply(ctx, &directory.Command{Time: time.Now().UTC(), Actor: n.cfg.Site + "/broker/" + n.cfg.Node,
		ArchiveAudit: &directory.ArchiveAudit{Through: last.Seq, Hash: last.Hash}})
	if err != nil {
		// The file stays: harmless, and the next round writes a new one
		// from the same checkpoint.
		os.Rename(path, path+".unused")
		return 0, err
	}
	n.log.Info("audit retention: archived entries", "first", es[0].Seq, "last", last.Seq, "file", path)
	return k, nil
}
