package boltlog

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

const benchPayload = 256 // bytes of Data per entry

// BenchmarkRawFdatasync is the physical limit for a durable write: rewrite
// one 4 KiB block in place and flush it.
func BenchmarkRawFdatasync(b *testing.B) {
	f := openSyncFile(b, b.TempDir())
	block := make([]byte, 4096)
	for b.Loop() {
		if _, err := f.WriteAt(block, 0); err != nil {
			b.Fatalf("WriteAt() = %v, want nil", err)
		}
		if err := datasync(f); err != nil {
			b.Fatalf("fdatasync = %v, want nil", err)
		}
	}
}

// BenchmarkStoreLogs times one StoreLogs call of batch entries.
func BenchmarkStoreLogs(b *testing.B) {
	for _, batch := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := openBenchStore(b, b.TempDir())
			next := newLogBatch(batch)
			b.SetBytes(int64(batch * benchPayload))
			for b.Loop() {
				if err := s.StoreLogs(next()); err != nil {
					b.Fatalf("StoreLogs() = %v, want nil", err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/log")
		})
	}
}

func BenchmarkGetLog(b *testing.B) {
	const n = 10000
	s := openBenchStore(b, b.TempDir())
	if err := s.StoreLogs(newLogBatch(n)()); err != nil {
		b.Fatalf("StoreLogs(%d logs) = %v, want nil", n, err)
	}
	var l raft.Log
	var i uint64
	for b.Loop() {
		if err := s.GetLog(i%n+1, &l); err != nil {
			b.Fatalf("GetLog(%d) = %v, want nil", i%n+1, err)
		}
		i++
	}
}

// BenchmarkStoreLogsVsFdatasync measures the raw fdatasync loop and then
// StoreLogs of one entry on the same disk in the same run, and reports
// x_fdatasync: raw fdatasync ns/op divided by StoreLogs ns/op, the fraction
// of the physical limit a single-entry append reaches.
func BenchmarkStoreLogsVsFdatasync(b *testing.B) {
	dir := b.TempDir()
	raw := rawFdatasyncNs(b, dir, 200)

	s := openBenchStore(b, dir)
	next := newLogBatch(1)
	for b.Loop() {
		if err := s.StoreLogs(next()); err != nil {
			b.Fatalf("StoreLogs() = %v, want nil", err)
		}
	}
	store := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(raw, "fdatasync-ns/op")
	b.ReportMetric(raw/store, "x_fdatasync")
}

// rawFdatasyncNs returns the mean time, in nanoseconds, of n rounds of
// rewriting a 4 KiB block at offset 0 of a file in dir and fdatasyncing it.
func rawFdatasyncNs(tb testing.TB, dir string, n int) float64 {
	tb.Helper()
	f := openSyncFile(tb, dir)
	block := make([]byte, 4096)
	start := time.Now()
	for range n {
		if _, err := f.WriteAt(block, 0); err != nil {
			tb.Fatalf("WriteAt() = %v, want nil", err)
		}
		if err := datasync(f); err != nil {
			tb.Fatalf("fdatasync = %v, want nil", err)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// openSyncFile creates a file in dir holding one synced 4 KiB block, so
// rewriting the block changes no metadata fdatasync has to flush.
func openSyncFile(tb testing.TB, dir string) *os.File {
	tb.Helper()
	f, err := os.CreateTemp(dir, "fdatasync-*")
	if err != nil {
		tb.Fatalf("CreateTemp() = %v, want nil", err)
	}
	tb.Cleanup(func() { f.Close() })
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		tb.Fatalf("Write() = %v, want nil", err)
	}
	if err := f.Sync(); err != nil {
		tb.Fatalf("Sync() = %v, want nil", err)
	}
	return f
}

// openBenchStore opens a Store with production options in dir.
func openBenchStore(tb testing.TB, dir string) *Store {
	tb.Helper()
	s, err := Open(filepath.Join(dir, "raft.db"), Options{Timeout: time.Second})
	if err != nil {
		tb.Fatalf("Open() = %v, want nil", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// newLogBatch returns a function giving the next batch of n entries with
// benchPayload bytes of data each, indexes continuing from the last batch.
// It reuses the entries, which StoreLogs does not keep.
func newLogBatch(n int) func() []*raft.Log {
	logs := make([]*raft.Log, n)
	data := make([]byte, benchPayload)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
	}
	var index uint64
	return func() []*raft.Log {
		for _, l := range logs {
			index++
			l.Index = index
		}
		return logs
	}
}
