package audit

import "context"

// Queue is an agent's durable queue of entries its broker has not yet
// acknowledged. Implementations keep entries across crashes (storage/
// auditqueue keeps them in bbolt).
type Queue interface {
	// Add stores e durably and returns the number it was given: 1, 2, …,
	// in order, never reused, even after Delivered and a restart. An
	// error means e was not stored, and the action it records must be
	// refused.
	Add(e Entry) (uint64, error)
	// Pending returns up to n undelivered entries, oldest first, each with
	// SourceSeq set to its number.
	Pending(n int) ([]Entry, error)
	// Delivered forgets every entry numbered up to and including seq.
	Delivered(seq uint64) error
}

// Sink is the broker as the receiver of an agent's entries. Append must be
// idempotent per (Source, SourceSeq): the directory ignores an entry whose
// SourceSeq it has already recorded for that Source, so redelivery after a
// lost acknowledgement never duplicates one.
type Sink interface {
	Append(ctx context.Context, entries []Entry) error
}
