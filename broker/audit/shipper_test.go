package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const shipSource = "rutgers/agent/agent-1"

// memQueue is an in-memory Queue with the numbering rules of the durable
// one: numbers from 1, never reused, Delivered idempotent.
type memQueue struct {
	mu      sync.Mutex
	entries []Entry // undelivered, oldest first, SourceSeq set
	last    uint64

	addErr        error // when set, Add fails with it
	deliveredErrs int   // the next Delivered calls that fail without forgetting
}

var _ Queue = (*memQueue)(nil)

func (q *memQueue) Add(e Entry) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.addErr != nil {
		return 0, q.addErr
	}
	q.last++
	e.SourceSeq = q.last
	q.entries = append(q.entries, e)
	return q.last, nil
}

func (q *memQueue) Pending(n int) ([]Entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n = max(0, min(n, len(q.entries)))
	return append([]Entry(nil), q.entries[:n]...), nil
}

func (q *memQueue) Delivered(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if seq > q.last {
		return fmt.Errorf("delivered %d, but the last added is %d", seq, q.last)
	}
	if q.deliveredErrs > 0 {
		q.deliveredErrs--
		return errors.New("disk full")
	}
	for len(q.entries) > 0 && q.entries[0].SourceSeq <= seq {
		q.entries = q.entries[1:]
	}
	return nil
}

// numbered returns the last number Add gave.
func (q *memQueue) numbered() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.last
}

func (q *memQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// fakeSink is the broker as far as delivery goes. Like the directory, it
// keeps an entry only if its SourceSeq is above the last it kept for that
// Source, so a redelivered entry is dropped.
type fakeSink struct {
	mu       sync.Mutex
	batches  [][]Entry // every batch applied, redeliveries included
	kept     []Entry   // the entries kept after de-duplication
	last     map[string]uint64
	down     bool // refuse batches, applying nothing
	loseAcks int  // apply the next loseAcks batches, then report failure
}

var _ Sink = (*fakeSink)(nil)

func (s *fakeSink) Append(ctx context.Context, entries []Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("broker unreachable")
	}
	if s.last == nil {
		s.last = make(map[string]uint64)
	}
	s.batches = append(s.batches, append([]Entry(nil), entries...))
	for _, e := range entries {
		if e.SourceSeq > s.last[e.Source] {
			s.kept = append(s.kept, e)
			s.last[e.Source] = e.SourceSeq
		}
	}
	if s.loseAcks > 0 {
		s.loseAcks--
		return errors.New("connection reset before the acknowledgement")
	}
	return nil
}

func (s *fakeSink) set(down bool, loseAcks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down, s.loseAcks = down, loseAcks
}

// got returns copies of the batches applied and the entries kept.
func (s *fakeSink) got() (batches [][]Entry, kept []Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]Entry(nil), s.batches...), append([]Entry(nil), s.kept...)
}

// shipEntry is the i-th entry a test records; its details name i.
func shipEntry(i int) Entry {
	return Entry{
		Time:     time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		Actor:    "alice",
		Action:   ActionSessionOpen,
		Resource: "rutgers/cryoem-1",
		Site:     "rutgers",
		Decision: Allow,
		Details:  map[string]string{"i": strconv.Itoa(i)},
	}
}

// fastShipping makes a Shipper retry within milliseconds. The hour-long interval
// means only Record and Flush wake it, so tests show that they do.
func fastShipping() ShipperOptions {
	return ShipperOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Interval: time.Hour}
}

// startShipper runs a new Shipper until the returned stop is called or the
// test ends.
func startShipper(t testing.TB, q Queue, sink Sink, opts ShipperOptions) (*Shipper, func()) {
	t.Helper()
	s := NewShipper(shipSource, q, sink, opts)
	return s, runShipper(t, s)
}

// runShipper runs s until the returned stop is called or the test ends, and checks
// that Run returned because it was stopped.
func runShipper(t testing.TB, s *Shipper) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func recordN(t testing.TB, s *Shipper, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := s.Record(shipEntry(i)); err != nil {
			t.Fatalf("Record(entry %d) = %v, want nil", i, err)
		}
	}
}

func flushShipper(t testing.TB, s *Shipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush() = %v, want nil", err)
	}
}

// waitUntil polls cond until it holds, failing the test after 10s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
	}
}

// checkShipped checks that the sink kept entries 1 to n once each, in order,
// stamped with the shipper's source.
func checkShipped(t testing.TB, kept []Entry, n int) {
	t.Helper()
	if len(kept) != n {
		t.Fatalf("sink kept %d entries, want %d", len(kept), n)
	}
	for i, e := range kept {
		want := uint64(i + 1)
		if e.SourceSeq != want || e.Source != shipSource || e.Details["i"] != strconv.Itoa(i+1) {
			t.Fatalf("kept[%d] = source %q seq %d entry %s, want source %q seq %d entry %d",
				i, e.Source, e.SourceSeq, e.Details["i"], shipSource, want, i+1)
		}
	}
}

// checkBatches checks the raw delivery: each batch holds consecutive
// numbers, at most limit of them, and starts no later than right after the
// highest number delivered before it, so the broker never sees a gap even
// when it sees an entry twice.
func checkBatches(t testing.TB, batches [][]Entry, limit int) {
	t.Helper()
	var highest uint64
	for b, batch := range batches {
		if len(batch) == 0 || len(batch) > limit {
			t.Fatalf("batch %d has %d entries, want 1-%d", b, len(batch), limit)
		}
		if first := batch[0].SourceSeq; first == 0 || first > highest+1 {
			t.Fatalf("batch %d starts at entry %d after entries up to %d were delivered, want at most %d", b, first, highest, highest+1)
		}
		for i := 1; i < len(batch); i++ {
			if batch[i].SourceSeq != batch[i-1].SourceSeq+1 {
				t.Fatalf("batch %d has entry %d after entry %d, want consecutive numbers", b, batch[i].SourceSeq, batch[i-1].SourceSeq)
			}
		}
		highest = max(highest, batch[len(batch)-1].SourceSeq)
	}
}

func checkShipperStats(t testing.TB, s *Shipper, want ShipperStats) {
	t.Helper()
	if got := s.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestShipperDeliversInOrder(t *testing.T) {
	q, sink := &memQueue{}, &fakeSink{}
	// Record before Run starts: the backlog goes in full batches.
	s := NewShipper(shipSource, q, sink, fastShipping())
	recordN(t, s, 1, 600)
	runShipper(t, s)
	flushShipper(t, s)

	batches, kept := sink.got()
	checkShipped(t, kept, 600)
	checkBatches(t, batches, MaxBatch)
	if want := (600 + MaxBatch - 1) / MaxBatch; len(batches) != want {
		t.Errorf("sink got %d batches, want %d of at most %d", len(batches), want, MaxBatch)
	}
	if q.Len() != 0 {
		t.Errorf("queue holds %d entries after Flush, want 0", q.Len())
	}
	checkShipperStats(t, s, ShipperStats{Delivered: 600})
}

func TestShipperConcurrentRecords(t *testing.T) {
	q, sink := &memQueue{}, &fakeSink{}
	opts := fastShipping()
	opts.BatchSize = 16
	s, _ := startShipper(t, q, sink, opts)

	const writers, each = 4, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := shipEntry(i)
				e.Actor = fmt.Sprintf("user-%d", w)
				if err := s.Record(e); err != nil {
					t.Errorf("Record(user-%d entry %d) = %v, want nil", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	flushShipper(t, s)

	batches, kept := sink.got()
	checkBatches(t, batches, 16)
	if len(kept) != writers*each {
		t.Fatalf("sink kept %d entries, want %d", len(kept), writers*each)
	}
	// Each writer's entries arrive in the order it recorded them.
	next := map[string]int{}
	for i, e := range kept {
		if e.SourceSeq != uint64(i+1) {
			t.Fatalf("kept[%d].SourceSeq = %d, want %d", i, e.SourceSeq, i+1)
		}
		if got, want := e.Details["i"], strconv.Itoa(next[e.Actor]); got != want {
			t.Fatalf("kept[%d] is %s's entry %s, want entry %s", i, e.Actor, got, want)
		}
		next[e.Actor]++
	}
}

func TestShipperSinkDownThenBack(t *testing.T) {
	q, sink := &memQueue{}, &fakeSink{down: true}
	s, _ := startShipper(t, q, sink, fastShipping())
	recordN(t, s, 1, 50)
	waitUntil(t, "three failed deliveries", func() bool { return s.Stats().Failures >= 3 })
	if _, kept := sink.got(); len(kept) != 0 || q.Len() != 50 {
		t.Fatalf("with the sink down: sink kept %d entries and the queue holds %d, want 0 and 50", len(kept), q.Len())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := s.Flush(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "broker unreachable") {
		t.Errorf("Flush() with the sink down = %v, want context.DeadlineExceeded naming the sink's error", err)
	}

	sink.set(false, 0)
	flushShipper(t, s)
	recordN(t, s, 51, 60)
	flushShipper(t, s)

	batches, kept := sink.got()
	checkShipped(t, kept, 60)
	checkBatches(t, batches, MaxBatch)
	if got := s.Stats().Delivered; got != 60 {
		t.Errorf("Stats().Delivered = %d, want 60", got)
	}
}

func TestShipperRedelivery(t *testing.T) {
	tests := []struct {
		name          string
		loseAcks      int // batches the sink applies but reports failed
		deliveredErrs int // Delivered calls that fail after the sink applied
	}{
		{name: "sink loses acknowledgements", loseAcks: 3},
		{name: "queue fails to forget", deliveredErrs: 3},
		{name: "both", loseAcks: 2, deliveredErrs: 2},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			q, sink := &memQueue{deliveredErrs: test.deliveredErrs}, &fakeSink{loseAcks: test.loseAcks}
			opts := fastShipping()
			opts.BatchSize = 8
			s := NewShipper(shipSource, q, sink, opts)
			recordN(t, s, 1, 40)
			runShipper(t, s)
			flushShipper(t, s)

			batches, kept := sink.got()
			checkShipped(t, kept, 40)
			checkBatches(t, batches, 8)
			redelivered := test.loseAcks + test.deliveredErrs
			if want := 40/8 + redelivered; len(batches) != want {
				t.Errorf("sink got %d batches, want %d (5 and %d again)", len(batches), want, redelivered)
			}
			checkShipperStats(t, s, ShipperStats{Delivered: 40, Failures: uint64(redelivered)})
		})
	}
}

func TestShipperRestart(t *testing.T) {
	// The first shipper's acknowledgements are all lost: the sink has
	// every entry, the queue still holds them all.
	q, sink := &memQueue{}, &fakeSink{loseAcks: 1 << 30}
	s1, stop := startShipper(t, q, sink, fastShipping())
	recordN(t, s1, 1, 30)
	waitUntil(t, "the sink to keep all 30 entries", func() bool { _, kept := sink.got(); return len(kept) == 30 })
	stop()
	if q.Len() != 30 {
		t.Fatalf("queue holds %d entries after lost acknowledgements, want 30", q.Len())
	}

	sink.set(false, 0)
	s2, _ := startShipper(t, q, sink, fastShipping())
	flushShipper(t, s2)
	recordN(t, s2, 31, 35)
	flushShipper(t, s2)

	batches, kept := sink.got()
	checkShipped(t, kept, 35)
	checkBatches(t, batches, MaxBatch)
	if got := s2.Stats().Delivered; got != 35 {
		t.Errorf("restarted Stats().Delivered = %d, want 35", got)
	}
}

func TestShipperRecordRefuses(t *testing.T) {
	huge := shipEntry(1)
	huge.Details = map[string]string{"x": strings.Repeat("x", MaxEntrySize)}
	tests := []struct {
		name   string
		edit   func(*Entry)
		addErr error
		want   string
	}{
		{name: "no actor", edit: func(e *Entry) { e.Actor = "" }, want: "no actor"},
		{name: "no action", edit: func(e *Entry) { e.Action = "" }, want: "no action"},
		{name: "bad decision", edit: func(e *Entry) { e.Decision = "maybe" }, want: "not allow or deny"},
		{name: "no time", edit: func(e *Entry) { e.Time = time.Time{} }, want: "no time"},
		{name: "too large", edit: func(e *Entry) { *e = huge }, want: "larger than"},
		{name: "queue fails", edit: func(*Entry) {}, addErr: errors.New("disk full"), want: "disk full"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			q, sink := &memQueue{addErr: test.addErr}, &fakeSink{}
			s, _ := startShipper(t, q, sink, fastShipping())
			e := shipEntry(1)
			test.edit(&e)
			err := s.Record(e)
			if err == nil || !strings.Contains(err.Error(), test.want) {
				t.Errorf("Record() = %v, want an error containing %q", err, test.want)
			}
			if test.addErr != nil && !errors.Is(err, test.addErr) {
				t.Errorf("Record() = %v, want it to wrap %v", err, test.addErr)
			}
			if q.Len() != 0 || q.numbered() != 0 {
				t.Errorf("after a refused Record the queue holds %d entries and gave %d numbers, want 0 and 0", q.Len(), q.numbered())
			}
		})
	}
}

func TestShipperInterval(t *testing.T) {
	q, sink := &memQueue{}, &fakeSink{}
	opts := fastShipping()
	opts.Interval = 5 * time.Millisecond
	s := NewShipper(shipSource, q, sink, opts)
	firstPass := s.pass
	runShipper(t, s)
	<-firstPass
	// Added behind the shipper's back after its first pass, so only the
	// interval finds them.
	for i := 1; i <= 5; i++ {
		e := shipEntry(i)
		e.Source = shipSource
		if _, err := q.Add(e); err != nil {
			t.Fatalf("Add(entry %d) = %v, want nil", i, err)
		}
	}
	waitUntil(t, "the interval to deliver 5 entries", func() bool { _, kept := sink.got(); return len(kept) == 5 })
	_, kept := sink.got()
	checkShipped(t, kept, 5)
}

func TestShipperRunOnce(t *testing.T) {
	s, _ := startShipper(t, &memQueue{}, &fakeSink{}, fastShipping())
	waitUntil(t, "Run to start", s.running.Load)
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run() = %v, want an already running error", err)
	}
}

func TestShipperFlushWithoutRun(t *testing.T) {
	q := &memQueue{}
	s := NewShipper(shipSource, q, &fakeSink{}, fastShipping())
	recordN(t, s, 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "start Run") {
		t.Errorf("Flush() without Run = %v, want context.DeadlineExceeded saying to start Run", err)
	}
}

func TestNextBackoff(t *testing.T) {
	const lo, hi = DefaultMinBackoff, DefaultMaxBackoff
	tests := []struct {
		name string
		last time.Duration
		want time.Duration
	}{
		{name: "first failure", last: 0, want: 100 * time.Millisecond},
		{name: "doubles", last: 100 * time.Millisecond, want: 200 * time.Millisecond},
		{name: "doubles again", last: 1600 * time.Millisecond, want: 3200 * time.Millisecond},
		{name: "capped", last: 3200 * time.Millisecond, want: 5 * time.Second},
		{name: "stays capped", last: 5 * time.Second, want: 5 * time.Second},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			if got := nextBackoff(test.last, lo, hi); got != test.want {
				t.Errorf("nextBackoff(%v, %v, %v) = %v, want %v", test.last, lo, hi, got, test.want)
			}
		})
	}
}

func TestShipperOptionsDefaults(t *testing.T) {
	got := ShipperOptions{BatchSize: 1000}.withDefaults()
	if got.Logger == nil || got.BatchSize != MaxBatch || got.MinBackoff != 100*time.Millisecond ||
		got.MaxBackoff != 5*time.Second || got.Interval != time.Second {
		t.Errorf("withDefaults() = batch %d, backoff %v-%v, interval %v, logger %v; want 256, 100ms-5s, 1s, a logger",
			got.BatchSize, got.MinBackoff, got.MaxBackoff, got.Interval, got.Logger)
	}
}
