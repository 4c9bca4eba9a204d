// Package auditqueue is a site agent's durable queue of audit entries its
// broker has not yet acknowledged, in one bbolt file.
//
// [Queue] implements [audit.Queue]. An agent records each decision with Add
// before it acts, delivers the entries Pending returns to its broker, and
// calls Delivered once the broker has them. An agent that cannot reach its
// broker keeps working and its entries wait here, across restarts, until it
// can.
//
// # Numbering
//
// Add numbers entries 1, 2, … from a counter kept in the file, not from the
// entries it holds, so a number is never given twice: not after every entry
// was delivered and the queue is empty, and not after a restart. The broker
// ignores an entry whose number it has already recorded for this agent, so a
// reused number would make it drop a new entry without a word.
//
// The "entries" bucket holds each entry's JSON under its number as an 8-byte
// big-endian key, so a cursor walks them oldest first. The "meta" bucket
// holds the last number given and the last number delivered; the entries
// present are exactly the numbers between the two.
//
// # Durability
//
// Add and Delivered are each one bbolt read-write transaction, and bbolt
// fsyncs a commit before it returns. An entry whose Add returned a number
// therefore survives the agent being killed (kill -9) and the machine losing
// power, and an Add that was cut short leaves the file as it was. The
// guarantee holds where the disk honours fsync.
package auditqueue

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/labfed/labfed/broker/audit"
)

// Bucket and key names.
const (
	entriesBucket = "entries"
	metaBucket    = "meta"
	lastKey       = "last"      // the number the latest Add gave
	deliveredKey  = "delivered" // the highest number Delivered forgot
)

// lockTimeout bounds how long Open waits for another process to release
// the file: two agents sharing one queue would give the same number twice.
const lockTimeout = 5 * time.Second

// ErrNotAdded is returned by Delivered for a number the queue never gave.
// The caller's numbers came from somewhere else, such as a queue file that
// was replaced.
var ErrNotAdded = errors.New("auditqueue: delivered an entry this queue never added")

var _ audit.Queue = (*Queue)(nil)

// Queue is an audit.Queue in one bbolt file. It is safe for concurrent use;
// concurrent Adds are numbered in the order their transactions commit.
type Queue struct {
	db         *bolt.DB
	generation string
}

// Open opens the queue in the file at path, creating it (mode 0600) if it
// does not exist. Only one Queue may have a file open at a time.
func Open(path string) (*Queue, error) {
	return open(path, lockTimeout)
}

func open(path string, timeout time.Duration) (*Queue, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		// The fsync on commit is what makes an added entry durable.
		NoSync: false,
		// Skipping the free-list write saves a page per commit; opening
		// after an unclean shutdown rebuilds the list by a scan.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("auditqueue: open %s: another process has the queue open; stop it first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("auditqueue: open %s: %w", path, err)
	}
	var gen string
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{entriesBucket, metaBucket} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		meta := tx.Bucket([]byte(metaBucket))
		if g := meta.Get([]byte(generationKey)); g != nil {
			gen = string(g)
			return nil
		}
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		gen = hex.EncodeToString(b)
		return meta.Put([]byte(generationKey), []byte(gen))
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("auditqueue: open %s: %w", path, err)
	}
	return &Queue{db: db, generation: gen}, nil
}

// generationKey names the queue file's random identity in the meta bucket.
const generationKey = "generation"

// Generation is the queue file's random identity, made when the file was
// created. Numbers restart at 1 in a new file, so an agent sends its
// entries as SOURCE#GENERATION: the broker tells a new queue's entry 1
// from a redelivery of the old one's.
func (q *Queue) Generation() string { return q.generation }

// Close waits for transactions in progress and closes the file.
func (q *Queue) Close() error {
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("auditqueue: close: %w", err)
	}
	return nil
}

// Add stores e durably under the next number and returns the number. The
// stored entry's SourceSeq is that number. An error means e was not stored.
func (q *Queue) Add(e audit.Entry) (uint64, error) {
	var seq uint64
	err := q.db.Update(func(tx *bolt.Tx) error {
		entries, meta := buckets(tx)
		last, err := getUint(meta, lastKey)
		if err != nil {
			return err
		}
		seq = last + 1
		e.SourceSeq = seq
		val, err := json.Marshal(&e)
		if err != nil {
			return fmt.Errorf("encode entry: %w", err)
		}
		if err := entries.Put(encodeKey(seq), val); err != nil {
			return err
		}
		return putUint(meta, lastKey, seq)
	})
	if err != nil {
		return 0, fmt.Errorf("auditqueue: add %s entry: %w", e.Action, err)
	}
	return seq, nil
}

// Pending returns up to n undelivered entries, oldest first, each with
// SourceSeq set to its number. It returns none for n ≤ 0.
func (q *Queue) Pending(n int) ([]audit.Entry, error) {
	var out []audit.Entry
	err := q.db.View(func(tx *bolt.Tx) error {
		entries, _ := buckets(tx)
		c := entries.Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auditqueue: pending: %w", err)
	}
	return out, nil
}

// Delivered forgets every entry numbered up to and including seq, in one
// transaction. Numbers already forgotten are skipped, so repeating a call
// is harmless; a number beyond the last Add is ErrNotAdded.
func (q *Queue) Delivered(seq uint64) error {
	err := q.db.Update(func(tx *bolt.Tx) error {
		entries, meta := buckets(tx)
		last, err := getUint(meta, lastKey)
		if err != nil {
			return err
		}
		if seq > last {
			return fmt.Errorf("%w: entry %d, but the last added is %d", ErrNotAdded, seq, last)
		}
		delivered, err := getUint(meta, deliveredKey)
		if err != nil || seq <= delivered {
			return err
		}
		if err := deleteThrough(entries, seq); err != nil {
			return err
		}
		return putUint(meta, deliveredKey, seq)
	})
	if err != nil && !errors.Is(err, ErrNotAdded) {
		return fmt.Errorf("auditqueue: delivered through %d: %w", seq, err)
	}
	return err
}

// Len returns the number of undelivered entries.
func (q *Queue) Len() (int, error) {
	var n uint64
	err := q.db.View(func(tx *bolt.Tx) error {
		_, meta := buckets(tx)
		last, err := getUint(meta, lastKey)
		if err != nil {
			return err
		}
		delivered, err := getUint(meta, deliveredKey)
		n = last - delivered
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("auditqueue: len: %w", err)
	}
	return int(n), nil
}

// deleteThrough deletes the entries numbered up to seq.
func deleteThrough(b *bolt.Bucket, seq uint64) error {
	c := b.Cursor()
	// Take the first key again after each delete rather than calling
	// Next: a cursor can skip the entry after one it deleted
	// (etcd-io/bbolt#146).
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		n, err := decodeKey(k)
		if err != nil {
			return err
		}
		if n > seq {
			return nil
		}
		if err := c.Delete(); err != nil {
			return fmt.Errorf("delete entry %d: %w", n, err)
		}
	}
	return nil
}

// buckets returns the two buckets, which Open created.
func buckets(tx *bolt.Tx) (entries, meta *bolt.Bucket) {
	return tx.Bucket([]byte(entriesBucket)), tx.Bucket([]byte(metaBucket))
}

func decodeEntry(k, v []byte) (audit.Entry, error) {
	seq, err := decodeKey(k)
	if err != nil {
		return audit.Entry{}, err
	}
	var e audit.Entry
	// Unmarshal copies, so nothing in e points into the memory map.
	if err := json.Unmarshal(v, &e); err != nil {
		return audit.Entry{}, fmt.Errorf("entry %d is corrupt: %w", seq, err)
	}
	e.SourceSeq = seq
	return e, nil
}

func getUint(b *bolt.Bucket, key string) (uint64, error) {
	v := b.Get([]byte(key))
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%q is %d bytes, want 8: the file is corrupt", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func putUint(b *bolt.Bucket, key string, n uint64) error {
	return b.Put([]byte(key), encodeKey(n))
}

func encodeKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

func decodeKey(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("entry key is %d bytes, want 8: the file is corrupt", len(k))
	}
	return binary.BigEndian.Uint64(k), nil
}
