// Package boltstate is the bbolt store behind the federated directory.
//
// # Durability
//
// The directory's durable truth is the Raft log and its snapshots; this file
// is the working copy a replica applies them to. It is therefore opened
// without fsync (a commit costs page writes, not a disk flush) and recreated
// empty when a node starts, after which Raft restores the newest snapshot and
// replays the log. A crash can never leave a half-synced state file behind
// that a restart would trust.
//
// # Snapshots
//
// Snapshot pins a read transaction, so it sees one consistent state while
// applies continue, and streams the whole database file from it. Restore
// writes the stream to a new file beside the old one, checks it opens as a
// bbolt database with every bucket, and swaps it in under a write lock: a
// reader sees either the old state or the new one, never a mix.
package boltstate

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/labfed/labfed/broker/directory"
)

// Store is a directory.Store in one bbolt file.
type Store struct {
	path    string
	buckets []string

	mu sync.RWMutex // guards db against the swap in Restore
	db *bolt.DB
}

var _ directory.SnapshotStore = (*Store)(nil)

func options() *bolt.Options {
	return &bolt.Options{
		Timeout:        5 * time.Second,
		NoSync:         true,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// A large initial mapping keeps a growing file from having to
		// remap, which would wait for a snapshot's long read transaction.
		InitialMmapSize: 1 << 30,
	}
}

// Create makes a new, empty store at path, replacing any file there, with
// the given buckets.
func Create(path string, buckets []string) (*Store, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("boltstate: remove old state %s: %w", path, err)
	}
	db, err := openWithBuckets(path, buckets)
	if err != nil {
		return nil, err
	}
	return &Store{path: path, buckets: buckets, db: db}, nil
}

// OpenReadOnly opens an existing state file for reading, as it is: to
// inspect or verify a stopped broker's state (labfed audit verify --state).
// Updates fail.
func OpenReadOnly(path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("boltstate: %w", err)
	}
	o := options()
	o.ReadOnly = true
	db, err := bolt.Open(path, 0o600, o)
	if err != nil {
		return nil, fmt.Errorf("boltstate: open %s read-only: %w", path, err)
	}
	return &Store{path: path, db: db}, nil
}

func openWithBuckets(path string, buckets []string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, options())
	if err != nil {
		return nil, fmt.Errorf("boltstate: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstate: create buckets in %s: %w", path, err)
	}
	return db, nil
}

// Close closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

// View runs fn in a read transaction.
func (s *Store) View(fn func(directory.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// Update runs fn in a write transaction that commits only if fn returns nil.
func (s *Store) Update(fn func(directory.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

// Snapshot pins a consistent view of the state. The returned snapshot must be
// released; until then it holds a read transaction open.
func (s *Store) Snapshot() (directory.Snapshot, error) {
	s.mu.RLock()
	tx, err := s.db.Begin(false)
	if err != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("boltstate: begin snapshot: %w", err)
	}
	return &Snapshot{tx: tx, unlock: s.mu.RUnlock}, nil
}

// Snapshot is a consistent copy of the state being written out.
type Snapshot struct {
	once   sync.Once
	tx     *bolt.Tx
	unlock func()
}

// WriteTo streams the database file as of the snapshot.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) { return sn.tx.WriteTo(w) }

// Release ends the snapshot's read transaction. It is safe to call twice.
func (sn *Snapshot) Release() {
	sn.once.Do(func() {
		_ = sn.tx.Rollback()
		sn.unlock()
	})
}

// Restore replaces the whole state with the database streamed from r. On any
// error the old state stays in place.
func (s *Store) Restore(r io.Reader) error {
	tmp := s.path + ".restore"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("boltstate: restore: %w", err)
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("boltstate: restore: write %s: %w", tmp, err)
	}
	// Open the new file to check it is a database and give it any bucket an
	// older snapshot lacked, before the old state is touched.
	fresh, err := openWithBuckets(tmp, s.buckets)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("boltstate: restore: snapshot is not a valid state database: %w", err)
	}
	if err := fresh.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("boltstate: restore: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstate: restore: close old state: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		// Keep serving the old file.
		if db, oerr := bolt.Open(s.path, 0o600, options()); oerr == nil {
			s.db = db
		}
		return fmt.Errorf("boltstate: restore: swap in %s: %w", tmp, err)
	}
	db, err := bolt.Open(s.path, 0o600, options())
	if err != nil {
		return fmt.Errorf("boltstate: restore: reopen %s: %w", s.path, err)
	}
	s.db = db
	return nil
}

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(name string) *bolt.Bucket {
	return t.tx.Bucket([]byte(name))
}

func (t boltTx) Get(bucket, key string) []byte {
	b := t.bucket(bucket)
	if b == nil {
		return nil
	}
	return b.Get([]byte(key))
}

func (t boltTx) Put(bucket, key string, value []byte) error {
	b := t.bucket(bucket)
	if b == nil {
		return fmt.Errorf("boltstate: no bucket %q", bucket)
	}
	if value == nil {
		value = []byte{}
	}
	return b.Put([]byte(key), value)
}

func (t boltTx) Delete(bucket, key string) error {
	b := t.bucket(bucket)
	if b == nil {
		return nil
	}
	return b.Delete([]byte(key))
}

func (t boltTx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	b := t.bucket(bucket)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && len(k) >= len(p) && string(k[:len(p)]) == prefix; k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}

// Seek calls fn for each key from from onwards in key order (reverse:
// from from backwards, an empty from meaning the last key), until fn
// returns an error, which Seek returns.
func (t boltTx) Seek(bucket, from string, reverse bool, fn func(string, []byte) error) error {
	b := t.bucket(bucket)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k, v []byte
	switch {
	case !reverse:
		k, v = c.Seek([]byte(from))
	case from == "":
		k, v = c.Last()
	default:
		k, v = c.Seek([]byte(from))
		if k == nil {
			k, v = c.Last()
		} else if string(k) > from {
			k, v = c.Prev()
		}
	}
	for ; k != nil; k, v = step(c, reverse) {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}

func step(c *bolt.Cursor, reverse bool) ([]byte, []byte) {
	if reverse {
		return c.Prev()
	}
	return c.Next()
}
