package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// MaxBatch bounds the entries of one Sink.Append.
// 128 entries of at most MaxEntrySize stay well under gRPC's 4 MiB.
const MaxBatch = 128

// Defaults of ShipperOptions.
const (
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	DefaultInterval   = time.Second
)

// ShipperOptions configures a Shipper. The zero value ships batches of
// MaxBatch, waits DefaultMinBackoff after a failure, doubling up to
// DefaultMaxBackoff, looks at the queue every DefaultInterval, and logs
// nothing.
type ShipperOptions struct {
	// Logger receives delivery failures and recoveries. Nil discards them.
	Logger *slog.Logger
	// BatchSize bounds the entries of one Append; 0, or more than
	// MaxBatch, means MaxBatch.
	BatchSize int
	// MinBackoff is the wait after the first failure in a row; each
	// further failure doubles it, up to MaxBackoff. A successful Append
	// starts over.
	MinBackoff, MaxBackoff time.Duration
	// Interval is how often Run looks at the queue without being woken,
	// which picks up entries added to the queue other than by Record.
	Interval time.Duration
}

func (o ShipperOptions) withDefaults() ShipperOptions {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BatchSize <= 0 || o.BatchSize > MaxBatch {
		o.BatchSize = MaxBatch
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	return o
}

// ShipperStats counts what a Shipper has done since it was created.
type ShipperStats struct {
	// Delivered counts entries the sink accepted and the queue forgot.
	// An entry the sink received again after a lost acknowledgement
	// counts once.
	Delivered uint64
	// Failures counts delivery attempts that failed and will be retried.
	Failures uint64
}

// A Shipper records an agent's entries in its durable Queue and delivers
// them, in order, to the broker's Sink.
//
// Record is safe for concurrent use and does not wait for the broker: an
// agent whose broker is down keeps working, and its entries wait in the
// queue. Run is the one delivery loop; delivery in order, one batch at a
// time, is what lets the broker drop a redelivered entry by its SourceSeq.
type Shipper struct {
	source string
	queue  Queue
	sink   Sink
	opts   ShipperOptions
	log    *slog.Logger

	wake    chan struct{} // buffered: a pending wake-up for Run
	running atomic.Bool

	delivered atomic.Uint64
	failures  atomic.Uint64

	mu      sync.Mutex
	pass    chan struct{} // closed when Run finishes a delivery pass
	lastErr error         // the latest failed pass's error, nil after a success
}

// NewShipper returns a Shipper that stamps entries with source (the agent's
// identity, such as rutgers/agent/agent-1), keeps them in q and delivers
// them to s once Run is running. It panics if source is empty or q or s is
// nil: the broker tells agents apart by source, and nothing could be
// delivered without both ends.
func NewShipper(source string, q Queue, s Sink, opts ShipperOptions) *Shipper {
	if source == "" || q == nil || s == nil {
		panic("audit: NewShipper needs a source, a queue and a sink")
	}
	opts = opts.withDefaults()
	return &Shipper{
		source: source,
		queue:  q,
		sink:   s,
		opts:   opts,
		log:    opts.Logger.With("source", source),
		wake:   make(chan struct{}, 1),
		pass:   make(chan struct{}),
	}
}

// Record validates e, stamps it with the Shipper's source and stores it in
// the queue, then wakes Run. It returns once the entry is durable, without
// waiting for the broker. An error means nothing was recorded, and the
// action e records must be refused: an action the audit log cannot hold
// does not happen.
func (s *Shipper) Record(e Entry) error {
	e.Source = s.source
	// As the broker will see it (with its number), so that the broker
	// never refuses what the queue took.
	probe := e
	probe.SourceSeq = math.MaxUint64
	if err := probe.Validate(); err != nil {
		return fmt.Errorf("audit: not recorded: %w", err)
	}
	if _, err := s.queue.Add(e); err != nil {
		return fmt.Errorf("audit: could not queue %s entry; refuse the action and check the agent's queue file: %w", e.Action, err)
	}
	s.poke()
	return nil
}

// Run delivers the queue's entries to the sink until ctx is done, then
// returns ctx.Err(). It delivers at once, then whenever Record or Flush
// wakes it or Interval passes. After a failure it waits MinBackoff,
// doubling up to MaxBackoff while failures continue, and does not let
// Record wake it early, so a broker that is down is not hammered. Only one
// Run may be in progress per Shipper; a second returns an error at once.
// Run one Shipper per queue, for the same reason.
func (s *Shipper) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("audit: this shipper is already running; start Run once")
	}
	defer s.running.Store(false)
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()

	var backoff time.Duration
	for {
		progressed, err := s.deliver(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			backoff = 0
		}
		s.endPass(err)
		if err != nil {
			backoff = nextBackoff(backoff, s.opts.MinBackoff, s.opts.MaxBackoff)
			s.failed(err, backoff)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		case <-tick.C:
		}
	}
}

// deliver ships pending entries one batch at a time until the queue is
// empty or a step fails. progressed reports whether the sink accepted a
// batch, which resets the backoff.
func (s *Shipper) deliver(ctx context.Context) (progressed bool, err error) {
	for ctx.Err() == nil {
		batch, err := s.queue.Pending(s.opts.BatchSize)
		if err != nil {
			return progressed, fmt.Errorf("read the queue: %w", err)
		}
		if len(batch) == 0 {
			return progressed, nil
		}
		if err := checkOrder(batch); err != nil {
			return progressed, err
		}
		first, last := batch[0].SourceSeq, batch[len(batch)-1].SourceSeq
		if err := s.sink.Append(ctx, batch); err != nil {
			return progressed, fmt.Errorf("deliver entries %d-%d: %w", first, last, err)
		}
		progressed = true
		// If this fails the entries stay queued and go again; the
		// broker ignores them the second time.
		if err := s.queue.Delivered(last); err != nil {
			return progressed, fmt.Errorf("forget delivered entries %d-%d: %w", first, last, err)
		}
		s.delivered.Add(uint64(len(batch)))
	}
	return progressed, ctx.Err()
}

// checkOrder refuses a batch whose numbers do not rise: the broker drops an
// entry numbered at or below one it has, so shipping it would lose entries.
func checkOrder(batch []Entry) error {
	var prev uint64
	for _, e := range batch {
		if e.SourceSeq <= prev {
			return fmt.Errorf("the queue returned entry %d after entry %d; its numbering is broken, so nothing more is delivered", e.SourceSeq, prev)
		}
		prev = e.SourceSeq
	}
	return nil
}

// failed counts and logs a failed pass.
func (s *Shipper) failed(err error, retryIn time.Duration) {
	n := s.failures.Add(1)
	s.log.Warn("audit delivery to the broker failed; entries stay queued", "err", err, "retry_in", retryIn, "failures", n)
}

// endPass records how a delivery pass ended and wakes Flush, which checks
// the queue again.
func (s *Shipper) endPass(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && s.lastErr != nil {
		s.log.Info("audit delivery to the broker resumed", "delivered", s.delivered.Load())
	}
	s.lastErr = err
	close(s.pass)
	s.pass = make(chan struct{})
}

// poke wakes Run if it is waiting; a wake-up already pending covers this one.
func (s *Shipper) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Flush waits until the queue is empty, for tests and for an agent shutting
// down. It needs Run to be running, and under a steady stream of Records it
// may not return before ctx is done; then it says why entries remain.
func (s *Shipper) Flush(ctx context.Context) error {
	for {
		// Take the pass channel before looking at the queue, so a pass
		// that ends after the look wakes us.
		s.mu.Lock()
		pass := s.pass
		s.mu.Unlock()
		pending, err := s.queue.Pending(1)
		if err != nil {
			return fmt.Errorf("audit: flush: read the queue: %w", err)
		}
		if len(pending) == 0 {
			return nil
		}
		s.poke()
		select {
		case <-pass:
		case <-ctx.Done():
			return s.flushError(ctx)
		}
	}
}

func (s *Shipper) flushError(ctx context.Context) error {
	s.mu.Lock()
	lastErr := s.lastErr
	s.mu.Unlock()
	if lastErr != nil {
		return fmt.Errorf("audit: entries still wait for the broker, which last failed with %v: %w", lastErr, ctx.Err())
	}
	if !s.running.Load() {
		return fmt.Errorf("audit: entries still wait for the broker and the shipper is not running; start Run: %w", ctx.Err())
	}
	return fmt.Errorf("audit: entries still wait for the broker: %w", ctx.Err())
}

// Stats returns the Shipper's counters.
func (s *Shipper) Stats() ShipperStats {
	return ShipperStats{Delivered: s.delivered.Load(), Failures: s.failures.Load()}
}

// nextBackoff returns the wait after one more failure: lo after the first,
// then twice the last, up to hi.
func nextBackoff(last, lo, hi time.Duration) time.Duration {
	if last <= 0 {
		return lo
	}
	return min(2*last, hi)
}

// sleep waits d, or until ctx is done; it reports whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
