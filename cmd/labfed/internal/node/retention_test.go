package node

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/labfed/labfed/broker/audit"
	"github.com/labfed/labfed/broker/pki"
)

// TestAuditRetention: with a retention configured, the leader moves old
// entries into archive files and the log keeps verifying from its
// checkpoint, which is the last archived entry's hash.
func TestAuditRetention(t *testing.T) {
	fed := newTLSFed(t, "cryo-em")
	cfg := tlsTestConfig(t, "rutgers", "rutgers-1", fed.issue(t, pki.Identity{Site: "rutgers", Kind: pki.KindBroker, Name: "rutgers-1"}))
	cfg.Audit.Retention, cfg.Audit.ArchiveEvery = time.Second, 200*time.Millisecond
	n := startTLS(t, Options{Config: cfg, Bootstrap: true})
	waitLeaderWithSite(t, n, "rutgers")
	d := n.Replica().Directory()
	var files []string
	waitUntil(t, 15*time.Second, "entries archived", func() error {
		cp, err := d.AuditCheckpoint()
		if err != nil {
			return err
		}
		files, _ = filepath.Glob(filepath.Join(cfg.Audit.ArchiveDir, "audit-*.jsonl"))
		if cp.Seq == 0 || len(files) == 0 {
			return fmt.Errorf("checkpoint %d, files %v", cp.Seq, files)
		}
		return nil
	})
	cp, _ := d.AuditCheckpoint()
	var last audit.ArchiveSummary
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := audit.VerifyArchive(f)
		f.Close()
		if err != nil || s.FirstBad != 0 {
			t.Fatalf("archive %s: %+v, %v", path, s, err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("archive mode %v", fi.Mode().Perm())
		}
		if s.Last > last.Last {
			last = s
		}
	}
	if files[0] == "" || last.Hash == "" {
		t.Fatal("no archive")
	}
	// The newest archive ends at the log's checkpoint (or an earlier one,
	// if another round ran since).
	cp2, _ := d.AuditCheckpoint()
	if cp2.Seq < last.Last || (cp2.Seq == last.Last && cp2.Hash != last.Hash) || cp.Seq == 0 {
		t.Errorf("checkpoint %+v, newest archive ends at %d %s", cp2, last.Last, last.Hash)
	}
	if bad, why, _, err := d.VerifyAudit(); err != nil || why != nil {
		t.Errorf("VerifyAudit after archiving = %d %v %v", bad, why, err)
	}
	t.Logf("archived through %d into %d files", cp2.Seq, len(files))
}
