package boltlog

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// logStableStore is what raft gets from either implementation.
type logStableStore interface {
	raft.LogStore
	raft.StableStore
}

// Keys the conformance cases use. Set and SetUint64 keys are kept apart:
// raft.InmemStore keeps them in separate maps while Store, like
// raft-boltdb, has one key space, and raft never mixes them.
var (
	bytesKeys  = []string{"LastVoteCand", "empty", "nil", "absent"}
	uint64Keys = []string{"CurrentTerm", "LastVoteTerm", "absent"}
)

// op changes a store. Every op must succeed on both implementations.
type op struct {
	name string
	do   func(logStableStore) error
}

func storeLogs(logs ...*raft.Log) op {
	return op{fmt.Sprintf("StoreLogs(%d logs)", len(logs)), func(s logStableStore) error { return s.StoreLogs(logs) }}
}

func storeLog(l *raft.Log) op {
	return op{fmt.Sprintf("StoreLog(%d)", l.Index), func(s logStableStore) error { return s.StoreLog(l) }}
}

func deleteRange(min, max uint64) op {
	return op{fmt.Sprintf("DeleteRange(%d, %d)", min, max), func(s logStableStore) error { return s.DeleteRange(min, max) }}
}

func set(key string, val []byte) op {
	return op{fmt.Sprintf("Set(%q, %q)", key, val), func(s logStableStore) error { return s.Set([]byte(key), val) }}
}

func setUint64(key string, val uint64) op {
	return op{fmt.Sprintf("SetUint64(%q, %d)", key, val), func(s logStableStore) error { return s.SetUint64([]byte(key), val) }}
}

// span returns logs from..to, inclusive, in term, each with distinct data.
func span(from, to, term uint64) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, &raft.Log{
			Index: i,
			Term:  term,
			Type:  raft.LogCommand,
			Data:  fmt.Appendf(nil, "entry %d term %d", i, term),
		})
	}
	return logs
}

// indexes returns the indexes in the inclusive ranges given as from, to pairs.
func indexes(bounds ...uint64) []uint64 {
	var out []uint64
	for i := 0; i+1 < len(bounds); i += 2 {
		for j := bounds[i]; j <= bounds[i+1]; j++ {
			out = append(out, j)
		}
	}
	return out
}

// appendedAt is a fixed time with nanoseconds and a non-local zone, so a
// round trip has to keep the instant, not the representation.
var appendedAt = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("X", 5*3600))

var conformanceCases = []struct {
	name        string
	ops         []op
	wantFirst   uint64
	wantLast    uint64
	wantPresent []uint64          // every other index probed must be missing
	wantBytes   map[string]string // every other key in bytesKeys must be missing
	wantUint64  map[string]uint64 // every other key in uint64Keys must read as 0
}{
	{
		name: "empty",
	},
	{
		name:        "StoreLog one",
		ops:         []op{storeLog(span(1, 1, 1)[0])},
		wantFirst:   1,
		wantLast:    1,
		wantPresent: indexes(1, 1),
	},
	{
		name:        "StoreLog several",
		ops:         []op{storeLog(span(1, 1, 1)[0]), storeLog(span(2, 2, 1)[0]), storeLog(span(3, 3, 2)[0])},
		wantFirst:   1,
		wantLast:    3,
		wantPresent: indexes(1, 3),
	},
	{
		name:        "StoreLogs batch",
		ops:         []op{storeLogs(span(1, 10, 1)...)},
		wantFirst:   1,
		wantLast:    10,
		wantPresent: indexes(1, 10),
	},
	{
		name:        "StoreLogs batches",
		ops:         []op{storeLogs(span(1, 5, 1)...), storeLogs(span(6, 10, 2)...)},
		wantFirst:   1,
		wantLast:    10,
		wantPresent: indexes(1, 10),
	},
	{
		name: "StoreLogs empty batch",
		ops:  []op{storeLogs()},
	},
	{
		name:        "StoreLogs not starting at 1",
		ops:         []op{storeLogs(span(42, 50, 3)...)},
		wantFirst:   42,
		wantLast:    50,
		wantPresent: indexes(42, 50),
	},
	{
		name: "all fields round trip",
		ops: []op{storeLogs(
			&raft.Log{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("conf"), Extensions: []byte("ext"), AppendedAt: appendedAt},
			&raft.Log{Index: 2, Term: 1, Type: raft.LogNoop},
			&raft.Log{Index: 3, Term: 2, Type: raft.LogBarrier, Data: []byte{}, Extensions: []byte{}},
			&raft.Log{Index: 4, Term: math.MaxUint64, Type: raft.LogType(200), Data: bytes.Repeat([]byte{0, 0xff}, 5000)},
			&raft.Log{Index: 5, Term: 2, Type: raft.LogCommand, AppendedAt: time.Unix(0, 1)},
			&raft.Log{Index: 6, Term: 2, Type: raft.LogCommand, AppendedAt: time.Unix(-1, 999999999)},
		)},
		wantFirst:   1,
		wantLast:    6,
		wantPresent: indexes(1, 6),
	},
	{
		name:        "StoreLogs overwrites",
		ops:         []op{storeLogs(span(1, 5, 1)...), storeLogs(span(4, 5, 2)...)},
		wantFirst:   1,
		wantLast:    5,
		wantPresent: indexes(1, 5),
	},
	{
		name:        "conflicting suffix replaced",
		ops:         []op{storeLogs(span(1, 5, 1)...), deleteRange(4, 5), storeLogs(span(4, 7, 2)...)},
		wantFirst:   1,
		wantLast:    7,
		wantPresent: indexes(1, 7),
	},
	{
		name:        "DeleteRange prefix",
		ops:         []op{storeLogs(span(1, 10, 1)...), deleteRange(1, 4)},
		wantFirst:   5,
		wantLast:    10,
		wantPresent: indexes(5, 10),
	},
	{
		name:        "DeleteRange prefix twice",
		ops:         []op{storeLogs(span(1, 10, 1)...), deleteRange(1, 4), deleteRange(5, 8)},
		wantFirst:   9,
		wantLast:    10,
		wantPresent: indexes(9, 10),
	},
	{
		name:        "DeleteRange prefix from below first",
		ops:         []op{storeLogs(span(5, 10, 1)...), deleteRange(1, 6)},
		wantFirst:   7,
		wantLast:    10,
		wantPresent: indexes(7, 10),
	},
	{
		name:        "DeleteRange suffix",
		ops:         []op{storeLogs(span(1, 10, 1)...), deleteRange(7, 10)},
		wantFirst:   1,
		wantLast:    6,
		wantPresent: indexes(1, 6),
	},
	{
		name:        "DeleteRange suffix past last",
		ops:         []op{storeLogs(span(1, 10, 1)...), deleteRange(8, 20)},
		wantFirst:   1,
		wantLast:    7,
		wantPresent: indexes(1, 7),
	},
	{
		name: "DeleteRange all",
		ops:  []op{storeLogs(span(1, 10, 1)...), deleteRange(1, 10)},
	},
	{
		name: "DeleteRange on empty",
		ops:  []op{deleteRange(1, 10)},
	},
	{
		name:        "DeleteRange all then StoreLogs",
		ops:         []op{storeLogs(span(1, 10, 1)...), deleteRange(1, 10), storeLogs(span(21, 25, 3)...)},
		wantFirst:   21,
		wantLast:    25,
		wantPresent: indexes(21, 25),
	},
	{
		name:        "gap after snapshot restore",
		ops:         []op{storeLogs(span(1, 5, 1)...), storeLogs(span(100, 102, 4)...)},
		wantFirst:   1,
		wantLast:    102,
		wantPresent: indexes(1, 5, 100, 102),
	},
	{
		name:        "DeleteRange prefix across gap",
		ops:         []op{storeLogs(span(1, 5, 1)...), storeLogs(span(100, 102, 4)...), deleteRange(1, 100)},
		wantFirst:   101,
		wantLast:    102,
		wantPresent: indexes(101, 102),
	},
	{
		name:      "Set Get",
		ops:       []op{set("LastVoteCand", []byte("node-1"))},
		wantBytes: map[string]string{"LastVoteCand": "node-1"},
	},
	{
		name:      "Set overwrites",
		ops:       []op{set("LastVoteCand", []byte("node-1")), set("LastVoteCand", []byte("n2"))},
		wantBytes: map[string]string{"LastVoteCand": "n2"},
	},
	{
		name:      "Set empty value",
		ops:       []op{set("empty", []byte{})},
		wantBytes: map[string]string{"empty": ""},
	},
	{
		name: "Set nil value",
		ops:  []op{set("nil", nil)},
	},
	{
		name: "Set nil value clears",
		ops:  []op{set("nil", []byte("x")), set("nil", nil)},
	},
	{
		name:       "SetUint64 GetUint64",
		ops:        []op{setUint64("CurrentTerm", 7), setUint64("LastVoteTerm", math.MaxUint64)},
		wantUint64: map[string]uint64{"CurrentTerm": 7, "LastVoteTerm": math.MaxUint64},
	},
	{
		name:       "SetUint64 overwrites",
		ops:        []op{setUint64("CurrentTerm", 7), setUint64("CurrentTerm", 8)},
		wantUint64: map[string]uint64{"CurrentTerm": 8},
	},
	{
		name: "SetUint64 zero",
		ops:  []op{setUint64("CurrentTerm", 0)},
	},
	{
		name: "logs and stable store together",
		ops: []op{
			setUint64("CurrentTerm", 2), setUint64("LastVoteTerm", 2), set("LastVoteCand", []byte("n1")),
			storeLogs(span(1, 3, 1)...), storeLogs(span(4, 6, 2)...), deleteRange(1, 2),
		},
		wantFirst:   3,
		wantLast:    6,
		wantPresent: indexes(3, 6),
		wantBytes:   map[string]string{"LastVoteCand": "n1"},
		wantUint64:  map[string]uint64{"CurrentTerm": 2, "LastVoteTerm": 2},
	},
}

// TestConformance runs each case against raft.InmemStore and Store and
// checks that raft would see the same thing from both, and what it should.
func TestConformance(t *testing.T) {
	for _, tc := range conformanceCases {
		t.Run(tc.name, func(t *testing.T) {
			inmem := observe(t, raft.NewInmemStore(), tc.ops)
			bolt := observe(t, openTestStore(t), tc.ops)

			want := observation{
				first:  tc.wantFirst,
				last:   tc.wantLast,
				logs:   map[uint64]raft.Log{},
				bytes:  map[string]string{},
				uint64: map[string]uint64{},
			}
			for _, i := range tc.wantPresent {
				want.logs[i] = inmem.logs[i] // contents are compared with inmem below
			}
			for _, k := range bytesKeys {
				if v, ok := tc.wantBytes[k]; ok {
					want.bytes[k] = v
				} else {
					want.bytes[k] = notFound
				}
			}
			for _, k := range uint64Keys {
				want.uint64[k] = tc.wantUint64[k]
			}

			compare(t, "InmemStore", inmem, want)
			compare(t, "Store", bolt, inmem)
		})
	}
}

// notFound stands for a "not found" error in an observation.
const notFound = "<not found>"

// observation is what raft could learn from a store, normalised the way
// raft's callers read it: GetLog's raft.ErrLogNotFound compared with ==,
// Get's and GetUint64's "not found" compared by text, with GetUint64's
// value taken as 0.
type observation struct {
	first, last uint64
	logs        map[uint64]raft.Log // only found entries
	bytes       map[string]string   // value, or notFound
	uint64      map[string]uint64
}

// probeIndexes is every index the cases touch, and then some.
func probeIndexes() []uint64 {
	return append(indexes(0, 130), math.MaxUint64-1, math.MaxUint64)
}

// observe applies ops to s and reads back everything a case can change.
func observe(t testing.TB, s logStableStore, ops []op) observation {
	t.Helper()
	for _, o := range ops {
		if err := o.do(s); err != nil {
			t.Fatalf("%T.%s = %v, want nil", s, o.name, err)
		}
	}
	var obs observation
	var err error
	if obs.first, err = s.FirstIndex(); err != nil {
		t.Fatalf("%T.FirstIndex() = _, %v, want nil error", s, err)
	}
	if obs.last, err = s.LastIndex(); err != nil {
		t.Fatalf("%T.LastIndex() = _, %v, want nil error", s, err)
	}
	obs.logs = map[uint64]raft.Log{}
	for _, i := range probeIndexes() {
		var l raft.Log
		switch err := s.GetLog(i, &l); {
		case err == nil:
			obs.logs[i] = l
		case err == raft.ErrLogNotFound: // raft compares with ==, so Store must too
		default:
			t.Fatalf("%T.GetLog(%d) = %v, want nil or raft.ErrLogNotFound", s, i, err)
		}
	}
	obs.bytes = map[string]string{}
	for _, k := range bytesKeys {
		v, err := s.Get([]byte(k))
		switch {
		case err == nil && v == nil:
			t.Fatalf("%T.Get(%q) = nil, nil, want a non-nil value or an error", s, k)
		case err == nil:
			obs.bytes[k] = string(v)
		case err.Error() == "not found":
			obs.bytes[k] = notFound
		default:
			t.Fatalf("%T.Get(%q) = _, %v, want nil or \"not found\"", s, k, err)
		}
	}
	obs.uint64 = map[string]uint64{}
	for _, k := range uint64Keys {
		v, err := s.GetUint64([]byte(k))
		if err != nil && err.Error() != "not found" {
			t.Fatalf("%T.GetUint64(%q) = _, %v, want nil or \"not found\"", s, k, err)
		}
		obs.uint64[k] = v
	}
	return obs
}

// compare reports how got, read from the store called name, differs from
// want.
func compare(t testing.TB, name string, got, want observation) {
	t.Helper()
	if got.first != want.first {
		t.Errorf("%s.FirstIndex() = %d, want %d", name, got.first, want.first)
	}
	if got.last != want.last {
		t.Errorf("%s.LastIndex() = %d, want %d", name, got.last, want.last)
	}
	for _, i := range probeIndexes() {
		g, gotOK := got.logs[i]
		w, wantOK := want.logs[i]
		switch {
		case gotOK && !wantOK:
			t.Errorf("%s.GetLog(%d) = %s, want raft.ErrLogNotFound", name, i, fmtLog(g))
		case !gotOK && wantOK:
			t.Errorf("%s.GetLog(%d) = raft.ErrLogNotFound, want %s", name, i, fmtLog(w))
		case gotOK && !sameLog(g, w):
			t.Errorf("%s.GetLog(%d) = %s, want %s", name, i, fmtLog(g), fmtLog(w))
		}
	}
	for _, k := range bytesKeys {
		if got.bytes[k] != want.bytes[k] {
			t.Errorf("%s.Get(%q) = %q, want %q", name, k, got.bytes[k], want.bytes[k])
		}
	}
	for _, k := range uint64Keys {
		if got.uint64[k] != want.uint64[k] {
			t.Errorf("%s.GetUint64(%q) = %d, want %d", name, k, got.uint64[k], want.uint64[k])
		}
	}
}

// sameLog reports whether a and b hold the same entry: equal fields, the
// same instant, and nil slices where the other has nil ones.
func sameLog(a, b raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		sameBytes(a.Data, b.Data) && sameBytes(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt) && a.AppendedAt.IsZero() == b.AppendedAt.IsZero()
}

func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

func fmtLog(l raft.Log) string {
	q := func(b []byte) string {
		if b == nil {
			return "nil"
		}
		if len(b) > 32 {
			return fmt.Sprintf("%q...(%d bytes)", b[:32], len(b))
		}
		return fmt.Sprintf("%q", b)
	}
	at := "zero"
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("{Index:%d Term:%d Type:%v Data:%s Extensions:%s AppendedAt:%s}",
		l.Index, l.Term, l.Type, q(l.Data), q(l.Extensions), at)
}

// openTestStore opens a Store in a new file that is closed when the test
// ends.
func openTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "raft.db"), Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("Open() = %v, want nil", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
	return s
}
