// Package boltlog is a Raft log store and stable store in one bbolt file.
//
// [Store] implements [raft.LogStore] and [raft.StableStore] for
// github.com/hashicorp/raft. Log entries live in the "logs" bucket under
// their index as an 8-byte big-endian key, encoded in this package's own
// versioned binary format; the stable store's keys live in the "conf" bucket.
//
// # Durability
//
// Every call that changes the file (StoreLog, StoreLogs, DeleteRange, Set,
// SetUint64) is one bbolt read-write transaction, and bbolt fsyncs a commit
// before it returns: first the data pages, then the meta page that makes
// them visible. A write that has returned nil therefore survives the process
// being killed (kill -9) and the machine losing power, and a write that was
// cut short leaves the file as it was before that call. StoreLogs writes its
// whole batch in one transaction, so a batch costs one commit whatever its
// size, and after a crash either all of its entries are there or none are.
// The guarantee only holds where the disk honours fsync (see
// [Options.NoSync] for the test-only way to give it up).
//
// The free-page list is not written on commit (bbolt's NoFreelistSync): it
// saves a page write per commit, and in exchange opening the file after an
// unclean shutdown scans the file to rebuild the list.
//
// # Raft compatibility
//
// A missing log entry is reported as [raft.ErrLogNotFound] and a missing
// stable-store key as [ErrKeyNotFound], whose message is the "not found"
// raft compares error strings against. Store does not implement
// [raft.MonotonicLogStore]: entries are keyed by index, so it handles the
// gaps raft leaves after restoring a snapshot, and opting in would make raft
// delete the whole log after every snapshot install, which raft's own
// documentation warns is expensive for a BoltDB store.
package boltlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Bucket names.
const (
	logsBucket = "logs"
	confBucket = "conf"
)

// ErrKeyNotFound is returned by Get and GetUint64 for a key that has no
// value. Its message is "not found" because raft recognises a missing key by
// comparing the error's text with that string, as returned by
// [raft.InmemStore].
var ErrKeyNotFound = errors.New("not found")

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Options configures Open. The zero value syncs every commit and waits for
// the file lock indefinitely.
type Options struct {
	// Timeout bounds how long Open waits for the file lock, which another
	// open Store on the same file holds. Zero waits indefinitely. bbolt
	// retries the lock every 50ms, so a shorter Timeout gives up at once.
	Timeout time.Duration

	// NoSync skips the fsync on commit. It is for tests and benchmarks
	// only: with it a write that returned nil can be lost by a power
	// failure or an operating-system crash, which voids the guarantees raft
	// relies on.
	NoSync bool
}

// Store is a raft.LogStore and raft.StableStore in one bbolt file. It is safe
// for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens the store in the file at path, creating it if it does not exist.
// Only one Store may have a file open at a time: Open waits up to
// opts.Timeout for the file lock.
func Open(path string, opts Options) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.Timeout,
		NoSync:         opts.NoSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("boltlog: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{logsBucket, confBucket} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("boltlog: open %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close waits for transactions in progress and closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltlog: close: %w", err)
	}
	return nil
}

// FirstIndex returns the lowest index in the log, or 0 if the log is empty.
func (s *Store) FirstIndex() (uint64, error) {
	idx, err := s.edgeIndex(func(c *bolt.Cursor) ([]byte, []byte) { return c.First() })
	if err != nil {
		return 0, fmt.Errorf("boltlog: first index: %w", err)
	}
	return idx, nil
}

// LastIndex returns the highest index in the log, or 0 if the log is empty.
func (s *Store) LastIndex() (uint64, error) {
	idx, err := s.edgeIndex(func(c *bolt.Cursor) ([]byte, []byte) { return c.Last() })
	if err != nil {
		return 0, fmt.Errorf("boltlog: last index: %w", err)
	}
	return idx, nil
}

// edgeIndex returns the index under the key that move positions a cursor
// on, or 0 if there is none.
func (s *Store) edgeIndex(move func(*bolt.Cursor) ([]byte, []byte)) (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucket(tx, logsBucket)
		if err != nil {
			return err
		}
		k, _ := move(b.Cursor())
		if k == nil {
			return nil
		}
		idx, err = decodeKey(k)
		return err
	})
	return idx, err
}

// GetLog reads the entry at index into log. It returns raft.ErrLogNotFound,
// unwrapped, if there is none, and leaves log unchanged on any error.
func (s *Store) GetLog(index uint64, log *raft.Log) error {
	var got raft.Log
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucket(tx, logsBucket)
		if err != nil {
			return err
		}
		v := b.Get(encodeKey(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		// decodeLog copies what it keeps, so nothing in got points into
		// the memory map after the transaction ends.
		if err := decodeLog(v, &got); err != nil {
			return err
		}
		if got.Index != index {
			return fmt.Errorf("%w: entry under key %d has index %d", errCorrupt, index, got.Index)
		}
		return nil
	})
	if errors.Is(err, raft.ErrLogNotFound) {
		// Raft compares with ==.
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("boltlog: get log %d: %w", index, err)
	}
	*log = got
	return nil
}

// StoreLog stores one entry.
func (s *Store) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores entries in one transaction, so the batch costs one commit
// and is durable, all of it, when StoreLogs returns nil. An entry at an
// index already present replaces it.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	// Encode outside the transaction so the writer lock is held only for
	// the puts. bbolt keeps references to keys and values until commit, so
	// each gets its own slice.
	keys := make([][]byte, len(logs))
	vals := make([][]byte, len(logs))
	for i, l := range logs {
		if l == nil {
			return fmt.Errorf("boltlog: store logs: entry %d of %d is nil", i, len(logs))
		}
		keys[i] = encodeKey(l.Index)
		vals[i] = encodeLog(l)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, logsBucket)
		if err != nil {
			return err
		}
		for i := range keys {
			if err := b.Put(keys[i], vals[i]); err != nil {
				return fmt.Errorf("put index %d: %w", logs[i].Index, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltlog: store %d logs from index %d: %w", len(logs), logs[0].Index, err)
	}
	return nil
}

// DeleteRange deletes the entries with indexes from min to max, inclusive,
// in one transaction. Indexes with no entry are skipped.
func (s *Store) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	minKey := encodeKey(min)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, logsBucket)
		if err != nil {
			return err
		}
		c := b.Cursor()
		// Seek again after each delete rather than calling Next: a
		// cursor can skip the entry after one it deleted
		// (etcd-io/bbolt#146).
		for k, _ := c.Seek(minKey); k != nil; k, _ = c.Seek(minKey) {
			idx, err := decodeKey(k)
			if err != nil {
				return err
			}
			if idx > max {
				return nil
			}
			if err := c.Delete(); err != nil {
				return fmt.Errorf("delete index %d: %w", idx, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltlog: delete range %d-%d: %w", min, max, err)
	}
	return nil
}

// Set stores val under key. As with raft.InmemStore, a nil val leaves key
// with no value, so Get reports it not found; an empty, non-nil val is a
// value. Set and SetUint64 share one key space. key must not be empty: bbolt
// rejects empty keys (raft never uses one).
func (s *Store) Set(key []byte, val []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, confBucket)
		if err != nil {
			return err
		}
		if val == nil {
			return b.Delete(key)
		}
		return b.Put(key, val)
	})
	if err != nil {
		return fmt.Errorf("boltlog: set %q: %w", key, err)
	}
	return nil
}

// Get returns a copy of the value stored under key, or ErrKeyNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := bucket(tx, confBucket)
		if err != nil {
			return err
		}
		v := b.Get(key)
		if v == nil {
			return ErrKeyNotFound
		}
		// Non-nil even when empty, so an empty value is not mistaken
		// for a missing one.
		val = append([]byte{}, v...)
		return nil
	})
	if errors.Is(err, ErrKeyNotFound) {
		// Raft compares err.Error() with "not found", so no context.
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("boltlog: get %q: %w", key, err)
	}
	return val, nil
}

// SetUint64 stores val under key as 8 big-endian bytes.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(make([]byte, 0, 8), val))
}

// GetUint64 returns the number SetUint64 stored under key. For a missing key
// it returns 0 and ErrKeyNotFound, which raft treats as 0. (raft.InmemStore
// returns 0 and nil; raft accepts both.)
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("boltlog: get uint64 %q: value is %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func bucket(tx *bolt.Tx, name string) (*bolt.Bucket, error) {
	b := tx.Bucket([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("bucket %q missing", name)
	}
	return b, nil
}

func encodeKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), index)
}

func decodeKey(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("%w: log key is %d bytes, want 8", errCorrupt, len(k))
	}
	return binary.BigEndian.Uint64(k), nil
}
