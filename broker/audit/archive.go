package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// An archive is a run of consecutive entries as JSON lines, oldest first,
// each with its hashes: it verifies on its own, and its last hash is the
// checkpoint the log keeps after removing those entries.

// WriteArchive writes entries as JSON lines. They must be consecutive.
func WriteArchive(w io.Writer, entries []*Entry) error {
	enc := json.NewEncoder(w)
	for i, e := range entries {
		if i > 0 && e.Seq != entries[i-1].Seq+1 {
			return fmt.Errorf("archive: entry %d does not follow %d", e.Seq, entries[i-1].Seq)
		}
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

// ArchiveSummary describes a verified archive.
type ArchiveSummary struct {
	First, Last    uint64
	PrevHash, Hash string // before the first entry; of the last
	Entries        int
	FirstBad       uint64 // 0 when every entry checks
	Reason         string
}

// VerifyArchive reads an archive and checks its chain: each entry's hash
// is its content's, and each names the previous one's. The first entry's
// previous hash is taken on trust; compare it with the archive before.
func VerifyArchive(r io.Reader) (ArchiveSummary, error) {
	var s ArchiveSummary
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxEntrySize*4)
	line := 0
	for sc.Scan() {
		line++
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			s.FirstBad, s.Reason = s.Last+1, fmt.Sprintf("line %d is not an entry: %v", line, err)
			return s, nil
		}
		if s.Entries == 0 {
			s.First, s.PrevHash = e.Seq, e.PrevHash
			s.Last, s.Hash = e.Seq-1, e.PrevHash
		}
		if err := Check(s.Last, s.Hash, &e); err != nil {
			s.FirstBad, s.Reason = e.Seq, err.Error()
			return s, nil
		}
		s.Last, s.Hash = e.Seq, e.Hash
		s.Entries++
	}
	return s, sc.Err()
}

// CreateArchive writes entries to a new file at path (mode 0600; an
// existing file is never replaced) and syncs it and its directory, so the
// archive is on disk before the log lets go of the entries.
func CreateArchive(path string, entries []*Entry) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = WriteArchive(f, entries)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
