package boltlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open(%q) = %v, want nil", path, err)
	}
	want := span(1, 100, 1)
	want[99].AppendedAt = appendedAt
	want[99].Extensions = []byte("ext")
	mustDo(t, s.StoreLogs(want[:50]), "StoreLogs(1-50)")
	mustDo(t, s.StoreLogs(want[50:]), "StoreLogs(51-100)")
	mustDo(t, s.DeleteRange(1, 10), "DeleteRange(1, 10)")
	mustDo(t, s.SetUint64([]byte("CurrentTerm"), 9), "SetUint64")
	mustDo(t, s.Set([]byte("LastVoteCand"), []byte("n3")), "Set")
	mustDo(t, s.Close(), "Close()")

	s, err = Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open(%q) again = %v, want nil", path, err)
	}
	defer func() { mustDo(t, s.Close(), "Close()") }()
	if got, err := s.FirstIndex(); got != 11 || err != nil {
		t.Errorf("FirstIndex() = %d, %v, want 11, nil", got, err)
	}
	if got, err := s.LastIndex(); got != 100 || err != nil {
		t.Errorf("LastIndex() = %d, %v, want 100, nil", got, err)
	}
	for _, w := range want {
		var got raft.Log
		err := s.GetLog(w.Index, &got)
		switch {
		case w.Index <= 10 && err != raft.ErrLogNotFound:
			t.Errorf("GetLog(%d) = %v, want raft.ErrLogNotFound", w.Index, err)
		case w.Index > 10 && err != nil:
			t.Errorf("GetLog(%d) = %v, want nil", w.Index, err)
		case w.Index > 10 && !sameLog(got, *w):
			t.Errorf("GetLog(%d) = %s, want %s", w.Index, fmtLog(got), fmtLog(*w))
		}
	}
	if got, err := s.GetUint64([]byte("CurrentTerm")); got != 9 || err != nil {
		t.Errorf("GetUint64(CurrentTerm) = %d, %v, want 9, nil", got, err)
	}
	if got, err := s.Get([]byte("LastVoteCand")); string(got) != "n3" || err != nil {
		t.Errorf("Get(LastVoteCand) = %q, %v, want \"n3\", nil", got, err)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open(%q) = %v, want nil", path, err)
	}
	defer func() { mustDo(t, s.Close(), "Close()") }()

	start := time.Now()
	s2, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatalf("second Open(%q) = nil, want a lock timeout", path)
	}
	if !errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("second Open(%q) = %v, want one wrapping bbolt's ErrTimeout", path, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open(%q) took %v, want about the 50ms timeout", path, d)
	}
}

func TestOpenNotBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	if err := os.WriteFile(path, []byte("this is not a bbolt file, not even close to one............"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, Options{Timeout: time.Second}); err == nil {
		s.Close()
		t.Errorf("Open(%q) of a non-bbolt file = nil, want an error", path)
	}
}

func TestMissingKeyErrors(t *testing.T) {
	s := openTestStore(t)
	if v, err := s.Get([]byte("absent")); v != nil || err == nil || err.Error() != "not found" || !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Get(absent) = %q, %v, want nil, ErrKeyNotFound (\"not found\")", v, err)
	}
	if v, err := s.GetUint64([]byte("absent")); v != 0 || err == nil || err.Error() != "not found" || !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("GetUint64(absent) = %d, %v, want 0, ErrKeyNotFound (\"not found\")", v, err)
	}
	var l raft.Log
	if err := s.GetLog(1, &l); err != raft.ErrLogNotFound {
		t.Errorf("GetLog(1) = %v, want raft.ErrLogNotFound itself", err)
	}
}

func TestGetUint64WrongSize(t *testing.T) {
	s := openTestStore(t)
	mustDo(t, s.Set([]byte("k"), []byte("abc")), "Set(k, abc)")
	if v, err := s.GetUint64([]byte("k")); err == nil || errors.Is(err, ErrKeyNotFound) {
		t.Errorf("GetUint64(k) of a 3-byte value = %d, %v, want a size error", v, err)
	}
}

func TestGetLogCorrupt(t *testing.T) {
	valid := encodeLog(&raft.Log{Index: 7, Term: 1, Data: []byte("data")})
	wrongIndex := encodeLog(&raft.Log{Index: 8, Term: 1})
	for _, tc := range []struct {
		name string
		val  []byte
	}{
		{"empty", []byte{}},
		{"one byte", []byte{formatV1}},
		{"truncated", valid[:len(valid)-1]},
		{"unknown version", append([]byte{9}, valid[1:]...)},
		{"trailing byte", append(append([]byte{}, valid...), 0)},
		{"index differs from key", wrongIndex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			putRaw(t, s, logsBucket, encodeKey(7), tc.val)
			l := raft.Log{Index: 99}
			err := s.GetLog(7, &l)
			if err == nil || err == raft.ErrLogNotFound || !errors.Is(err, errCorrupt) {
				t.Errorf("GetLog(7) of %x = %v, want an error wrapping errCorrupt", tc.val, err)
			}
			if l.Index != 99 {
				t.Errorf("GetLog(7) of %x changed log to %s, want it untouched", tc.val, fmtLog(l))
			}
		})
	}
}

func TestCorruptKey(t *testing.T) {
	s := openTestStore(t)
	putRaw(t, s, logsBucket, []byte("short"), []byte("x"))
	if got, err := s.FirstIndex(); err == nil {
		t.Errorf("FirstIndex() with a 5-byte key = %d, nil, want an error", got)
	}
	if err := s.DeleteRange(0, 1<<63); err == nil {
		t.Errorf("DeleteRange() over a 5-byte key = nil, want an error")
	}
}

func TestStoreLogsNilEntry(t *testing.T) {
	s := openTestStore(t)
	logs := span(1, 3, 1)
	logs[1] = nil
	if err := s.StoreLogs(logs); err == nil {
		t.Errorf("StoreLogs() with a nil entry = nil, want an error")
	}
	if got, err := s.LastIndex(); got != 0 || err != nil {
		t.Errorf("LastIndex() after the rejected batch = %d, %v, want 0, nil", got, err)
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "raft.db"), Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open() = %v, want nil", err)
	}
	mustDo(t, s.Close(), "Close()")
	var l raft.Log
	for name, err := range map[string]error{
		"StoreLogs":   s.StoreLogs(span(1, 1, 1)),
		"GetLog":      s.GetLog(1, &l),
		"DeleteRange": s.DeleteRange(1, 2),
		"Set":         s.Set([]byte("k"), []byte("v")),
	} {
		if err == nil || err == raft.ErrLogNotFound {
			t.Errorf("%s after Close = %v, want an error", name, err)
		}
	}
	if _, err := s.FirstIndex(); err == nil {
		t.Errorf("FirstIndex() after Close = nil error, want one")
	}
}

// TestNotMonotonic pins the decision, explained in the package comment, not
// to implement raft.MonotonicLogStore.
func TestNotMonotonic(t *testing.T) {
	if _, ok := any(&Store{}).(raft.MonotonicLogStore); ok {
		t.Errorf("*Store implements raft.MonotonicLogStore; see the package comment before changing that")
	}
}

func TestConcurrentUse(t *testing.T) {
	s := openTestStore(t)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			base := uint64(w*100 + 1)
			for i := range uint64(10) {
				if err := s.StoreLogs(span(base+i*5, base+i*5+4, 1)); err != nil {
					t.Errorf("StoreLogs() = %v, want nil", err)
					return
				}
				var l raft.Log
				if err := s.GetLog(base+i*5, &l); err != nil {
					t.Errorf("GetLog(%d) = %v, want nil", base+i*5, err)
					return
				}
				key := []byte("k" + strconv.Itoa(w))
				if err := s.SetUint64(key, i); err != nil {
					t.Errorf("SetUint64() = %v, want nil", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, err := s.LastIndex(); got != 350 || err != nil {
		t.Errorf("LastIndex() = %d, %v, want 350, nil", got, err)
	}
}

// TestRaft runs a one-node raft cluster on a Store, restarts it on the same
// file, and checks the restarted node applies everything again.
func TestRaft(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft")
	}
	path := filepath.Join(t.TempDir(), "raft.db")
	const n = 20

	s, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open() = %v, want nil", err)
	}
	r, fsm := startRaft(t, s)
	cfg := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "n1"}}}
	if err := r.BootstrapCluster(cfg).Error(); err != nil {
		t.Fatalf("BootstrapCluster() = %v, want nil", err)
	}
	waitLeader(t, r)
	for i := range n {
		if err := r.Apply(fmt.Appendf(nil, "cmd %d", i), time.Second).Error(); err != nil {
			t.Fatalf("Apply(%d) = %v, want nil", i, err)
		}
	}
	if got := fsm.count(); got != n {
		t.Fatalf("applied %d commands, want %d", got, n)
	}
	mustDo(t, r.Shutdown().Error(), "Shutdown()")
	mustDo(t, s.Close(), "Close()")

	s, err = Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open() again = %v, want nil", err)
	}
	defer func() { mustDo(t, s.Close(), "Close()") }()
	if ok, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore()); !ok || err != nil {
		t.Fatalf("HasExistingState() = %t, %v, want true, nil", ok, err)
	}
	r, fsm = startRaft(t, s)
	defer func() { mustDo(t, r.Shutdown().Error(), "Shutdown()") }()
	waitLeader(t, r)
	if err := r.Barrier(time.Second).Error(); err != nil {
		t.Fatalf("Barrier() = %v, want nil", err)
	}
	if got := fsm.count(); got != n {
		t.Errorf("after restart applied %d commands, want %d", got, n)
	}
}

func startRaft(t testing.TB, s *Store) (*raft.Raft, *countFSM) {
	t.Helper()
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.LogOutput = io.Discard
	_, trans := raft.NewInmemTransport("n1")
	fsm := &countFSM{}
	r, err := raft.NewRaft(conf, fsm, s, s, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatalf("NewRaft() = %v, want nil", err)
	}
	return r, fsm
}

func waitLeader(t testing.TB, r *raft.Raft) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatalf("State() = %v after 5s, want Leader", r.State())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countFSM counts the commands applied to it.
type countFSM struct {
	mu sync.Mutex
	n  int
}

func (f *countFSM) Apply(l *raft.Log) any {
	if l.Type == raft.LogCommand {
		f.mu.Lock()
		f.n++
		f.mu.Unlock()
	}
	return nil
}

func (f *countFSM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("not supported") }
func (f *countFSM) Restore(io.ReadCloser) error         { return errors.New("not supported") }

func mustDo(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s = %v, want nil", what, err)
	}
}

// putRaw writes val under key in bucket, bypassing the encoding.
func putRaw(t testing.TB, s *Store, bucket string, key, val []byte) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put(key, val) })
	if err != nil {
		t.Fatalf("put %q in %s = %v, want nil", key, bucket, err)
	}
}

// TestDeleteRangeLarge deletes a range spanning many pages, where a bbolt
// cursor that deletes and then moves on can skip entries.
func TestDeleteRangeLarge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max uint64
		first    uint64
		last     uint64
	}{
		{"prefix", 1, 4000, 4001, 5000},
		{"suffix", 1001, 5000, 1, 1000},
		{"all", 1, 5000, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t)
			mustDo(t, s.StoreLogs(span(1, 5000, 1)), "StoreLogs(1-5000)")
			mustDo(t, s.DeleteRange(tc.min, tc.max), fmt.Sprintf("DeleteRange(%d, %d)", tc.min, tc.max))
			if got, err := s.FirstIndex(); got != tc.first || err != nil {
				t.Errorf("FirstIndex() = %d, %v, want %d, nil", got, err, tc.first)
			}
			if got, err := s.LastIndex(); got != tc.last || err != nil {
				t.Errorf("LastIndex() = %d, %v, want %d, nil", got, err, tc.last)
			}
			var l raft.Log
			for i := uint64(1); i <= 5000; i++ {
				err := s.GetLog(i, &l)
				if deleted := tc.min <= i && i <= tc.max; deleted && err != raft.ErrLogNotFound {
					t.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
				} else if !deleted && err != nil {
					t.Fatalf("GetLog(%d) = %v, want nil", i, err)
				}
			}
		})
	}
}
