package boltstate_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/storage/boltstate"
)

func create(tb testing.TB, name string) *boltstate.Store {
	tb.Helper()
	s, err := boltstate.Create(filepath.Join(tb.TempDir(), name), []string{"a", "b"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func put(tb testing.TB, s *boltstate.Store, bucket, k, v string) {
	tb.Helper()
	if err := s.Update(func(tx directory.Tx) error { return tx.Put(bucket, k, []byte(v)) }); err != nil {
		tb.Fatal(err)
	}
}

func get(s *boltstate.Store, bucket, k string) string {
	var v string
	_ = s.View(func(tx directory.Tx) error { v = string(tx.Get(bucket, k)); return nil })
	return v
}

func keys(s *boltstate.Store, bucket, prefix string) string {
	var ks []string
	_ = s.View(func(tx directory.Tx) error {
		return tx.ForEach(bucket, prefix, func(k string, _ []byte) error { ks = append(ks, k); return nil })
	})
	return strings.Join(ks, ",")
}

func TestForEachPrefix(t *testing.T) {
	s := create(t, "s.db")
	for _, k := range []string{"al", "alice\x00psc", "alice\x00rutgers", "alicia", "bob\x00psc"} {
		put(t, s, "a", k, "1")
	}
	tests := []struct{ prefix, want string }{
		{"", "al,alice\x00psc,alice\x00rutgers,alicia,bob\x00psc"},
		{"alice\x00", "alice\x00psc,alice\x00rutgers"},
		{"bob\x00", "bob\x00psc"},
		{"zed", ""},
	}
	for _, test := range tests {
		if got := keys(s, "a", test.prefix); got != test.want {
			t.Errorf("ForEach(a, %q) = %q, want %q", test.prefix, got, test.want)
		}
	}
}

// TestSnapshotIsConsistent takes a snapshot while writers keep changing two
// keys together; the restored copy must hold a matching pair.
func TestSnapshotIsConsistent(t *testing.T) {
	s := create(t, "s.db")
	put(t, s, "a", "x", "0")
	put(t, s, "b", "y", "0")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := fmt.Sprint(i)
			_ = s.Update(func(tx directory.Tx) error {
				if err := tx.Put("a", "x", []byte(v)); err != nil {
					return err
				}
				return tx.Put("b", "y", []byte(v))
			})
		}
	}()
	for range 20 {
		snap, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := snap.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		snap.Release()
		snap.Release() // harmless twice
		r := create(t, "r.db")
		if err := r.Restore(&buf); err != nil {
			t.Fatal(err)
		}
		if x, y := get(r, "a", "x"), get(r, "b", "y"); x != y {
			t.Errorf("restored snapshot has x=%s y=%s, want equal", x, y)
		}
	}
	close(stop)
	wg.Wait()
}

// TestRestoreGarbageKeepsState feeds Restore something that is not a
// database: it must fail and leave the old state readable.
func TestRestoreGarbageKeepsState(t *testing.T) {
	s := create(t, "s.db")
	put(t, s, "a", "k", "v")
	err := s.Restore(strings.NewReader(strings.Repeat("not a database ", 1000)))
	if err == nil {
		t.Fatal("Restore(garbage) = nil, want an error")
	}
	if got := get(s, "a", "k"); got != "v" {
		t.Errorf("after failed restore Get(a, k) = %q, want v", got)
	}
	put(t, s, "a", "k2", "v2") // still writable
}

// TestRestoreReplaces checks that restore replaces everything, including
// keys the old state had and the snapshot lacks.
func TestRestoreReplaces(t *testing.T) {
	src := create(t, "src.db")
	put(t, src, "a", "new", "1")
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := create(t, "dst.db")
	put(t, dst, "a", "old", "1")
	if err := dst.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := keys(dst, "a", ""); got != "new" {
		t.Errorf("keys after restore = %q, want %q", got, "new")
	}
}
