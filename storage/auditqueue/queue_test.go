package auditqueue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/labfed/labfed/broker/audit"
)

// openQueue opens the queue at path and, when the test ends, closes it and
// checks the file's invariant on a fresh open.
func openQueue(t testing.TB, path string) *Queue {
	t.Helper()
	q, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%q) = %v, want nil", path, err)
	}
	t.Cleanup(func() {
		mustDo(t, q.Close(), "Close()")
		checkFile(t, path)
	})
	return q
}

// checkFile checks that the entries in the file at path are exactly those
// numbered after the last delivered up to the last added, each under its
// own number.
func checkFile(t testing.TB, path string) {
	t.Helper()
	q, err := open(path, time.Second)
	if err != nil {
		t.Errorf("open(%q) to check it = %v, want nil", path, err)
		return
	}
	defer q.Close()
	err = q.db.View(func(tx *bolt.Tx) error {
		entries, meta := buckets(tx)
		last, err := getUint(meta, lastKey)
		if err != nil {
			return err
		}
		delivered, err := getUint(meta, deliveredKey)
		if err != nil {
			return err
		}
		want := delivered + 1
		err = entries.ForEach(func(k, v []byte) error {
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			if e.SourceSeq != want {
				return fmt.Errorf("entry %d where entry %d belongs", e.SourceSeq, want)
			}
			want++
			return nil
		})
		if err == nil && want != last+1 {
			err = fmt.Errorf("entries end at %d, but the last added is %d", want-1, last)
		}
		return err
	})
	if err != nil {
		t.Errorf("queue file %s: %v", path, err)
	}
}

func mustDo(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s = %v, want nil", what, err)
	}
}

// testEntry is the i-th entry a test adds; its details name i.
func testEntry(i int) audit.Entry {
	return audit.Entry{
		Time:     time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		Actor:    "alice",
		Action:   audit.ActionSessionOpen,
		Resource: "rutgers/cryoem-1",
		Site:     "rutgers",
		Decision: audit.Allow,
		Details:  map[string]string{"i": strconv.Itoa(i)},
	}
}

func add(t testing.TB, q *Queue, i int, want uint64) {
	t.Helper()
	if got, err := q.Add(testEntry(i)); got != want || err != nil {
		t.Fatalf("Add(entry %d) = %d, %v, want %d, nil", i, got, err, want)
	}
}

// checkPending checks that the queue holds entries from to to, oldest
// first, entry i under number i and stamped with source.
func checkPending(t testing.TB, q *Queue, source string, from, to int) {
	t.Helper()
	got, err := q.Pending(1000)
	if err != nil {
		t.Fatalf("Pending(1000) = %v, want nil", err)
	}
	if want := to - from + 1; len(got) != want {
		t.Fatalf("Pending(1000) returned %d entries, want %d", len(got), want)
	}
	for k, e := range got {
		i := from + k
		want := testEntry(i)
		want.Source, want.SourceSeq = source, uint64(i)
		if !bytes.Equal(e.Canonical(), want.Canonical()) {
			t.Fatalf("Pending(1000)[%d] = %s, want %s", k, e.Canonical(), want.Canonical())
		}
	}
	if n, err := q.Len(); n != len(got) || err != nil {
		t.Errorf("Len() = %d, %v, want %d, nil", n, err, len(got))
	}
}

func TestOrder(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "audit.db"))
	checkPending(t, q, "", 1, 0)
	for i := 1; i <= 10; i++ {
		add(t, q, i, uint64(i))
	}
	checkPending(t, q, "", 1, 10)

	tests := []struct {
		n    int
		want int
	}{
		{n: -1, want: 0},
		{n: 0, want: 0},
		{n: 3, want: 3},
		{n: 10, want: 10},
		{n: 11, want: 10},
	}
	for _, test := range tests {
		got, err := q.Pending(test.n)
		if len(got) != test.want || err != nil {
			t.Errorf("Pending(%d) = %d entries, %v, want %d, nil", test.n, len(got), err, test.want)
		}
		for k, e := range got {
			if e.SourceSeq != uint64(k+1) {
				t.Errorf("Pending(%d)[%d].SourceSeq = %d, want %d", test.n, k, e.SourceSeq, k+1)
			}
		}
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	openQueue(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("Stat(%q) = %v, want nil", path, err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode of %s = %v, want -rw-------", path, got)
	}
}

func TestNumberingNeverReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	q := openQueue(t, path)
	add(t, q, 1, 1)
	add(t, q, 2, 2)
	add(t, q, 3, 3)
	mustDo(t, q.Close(), "Close()")

	// Across a restart.
	q = openQueue(t, path)
	add(t, q, 4, 4)
	checkPending(t, q, "", 1, 4)

	// After every entry was delivered, the queue is empty; the next
	// number still follows the last.
	mustDo(t, q.Delivered(4), "Delivered(4)")
	checkPending(t, q, "", 1, 0)
	add(t, q, 5, 5)
	checkPending(t, q, "", 5, 5)

	// And after both.
	mustDo(t, q.Delivered(5), "Delivered(5)")
	mustDo(t, q.Close(), "Close()")
	q = openQueue(t, path)
	checkPending(t, q, "", 1, 0)
	add(t, q, 6, 6)
	checkPending(t, q, "", 6, 6)
}

func TestDelivered(t *testing.T) {
	tests := []struct {
		name    string
		calls   []uint64 // Delivered calls in order, after adding entries 1-5
		wantErr bool     // from the last call
		from    int      // first entry left
	}{
		{name: "none", calls: []uint64{0}, from: 1},
		{name: "some", calls: []uint64{3}, from: 4},
		{name: "all", calls: []uint64{5}, from: 6},
		{name: "twice", calls: []uint64{3, 3}, from: 4},
		{name: "an earlier number again", calls: []uint64{3, 2}, from: 4},
		{name: "one by one", calls: []uint64{1, 2, 3}, from: 4},
		{name: "beyond the last added", calls: []uint64{2, 6}, wantErr: true, from: 3},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			q := openQueue(t, filepath.Join(t.TempDir(), "audit.db"))
			for i := 1; i <= 5; i++ {
				add(t, q, i, uint64(i))
			}
			var err error
			for _, seq := range test.calls {
				err = q.Delivered(seq)
			}
			last := test.calls[len(test.calls)-1]
			if test.wantErr != (err != nil) || (test.wantErr && !errors.Is(err, ErrNotAdded)) {
				t.Errorf("Delivered(%d) = %v, want error %v", last, err, test.wantErr)
			}
			checkPending(t, q, "", test.from, 5)
		})
	}
}

func TestReopenKeepsUndelivered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	q := openQueue(t, path)
	for i := 1; i <= 5; i++ {
		add(t, q, i, uint64(i))
	}
	mustDo(t, q.Delivered(2), "Delivered(2)")
	mustDo(t, q.Close(), "Close()")

	q = openQueue(t, path)
	checkPending(t, q, "", 3, 5)
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	openQueue(t, path)
	_, err := open(path, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "another process has the queue open") {
		t.Errorf("open(%q) while open = %v, want an error saying another process has it", path, err)
	}
}

func TestConcurrentAdds(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "audit.db"))
	const writers, each = 8, 25
	got := make([][]uint64, writers) // the numbers each writer was given
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := testEntry(i)
				e.Actor = fmt.Sprintf("user-%d", w)
				n, err := q.Add(e)
				if err != nil {
					t.Errorf("Add(user-%d entry %d) = %v, want nil", w, i, err)
					return
				}
				got[w] = append(got[w], n)
			}
		})
	}
	wg.Wait()

	// Each number went to one writer, each writer's numbers rise, and
	// the entry under each number is the one its writer added.
	owner := make(map[uint64]string)
	for w, nums := range got {
		for i, n := range nums {
			if i > 0 && n <= nums[i-1] {
				t.Errorf("user-%d was given %d after %d, want rising numbers", w, n, nums[i-1])
			}
			if prev, ok := owner[n]; ok {
				t.Errorf("number %d was given to %s and user-%d", n, prev, w)
			}
			owner[n] = fmt.Sprintf("user-%d/%d", w, i)
		}
	}
	pending, err := q.Pending(1000)
	if err != nil || len(pending) != writers*each {
		t.Fatalf("Pending(1000) = %d entries, %v, want %d, nil", len(pending), err, writers*each)
	}
	for k, e := range pending {
		if want := uint64(k + 1); e.SourceSeq != want {
			t.Fatalf("Pending(1000)[%d].SourceSeq = %d, want %d", k, e.SourceSeq, want)
		}
		if got, want := e.Actor+"/"+e.Details["i"], owner[e.SourceSeq]; got != want {
			t.Errorf("entry %d is %s, want %s", e.SourceSeq, got, want)
		}
	}
}

// The crash test runs this test binary again as a writer (TestHelperProcess
// with these variables set) and kills it with SIGKILL while it adds.
const (
	writerPathEnv  = "AUDITQUEUE_CRASH_WRITER_PATH"
	writerRoundEnv = "AUDITQUEUE_CRASH_WRITER_ROUND"
)

// The writer delivers through 10 entries before each number that is a
// multiple of crashDeliverEvery, right after that number's Add.
const (
	crashDeliverEvery = 50
	crashKeep         = 10
)

// crashEntry is the writer's i-th entry in a round.
func crashEntry(round, i int) audit.Entry {
	e := testEntry(i)
	e.Source = "crash"
	e.Details["round"] = strconv.Itoa(round)
	return e
}

// TestHelperProcess is the writer the crash test kills. Run on its own it
// does nothing. The writer opens the queue and adds entries forever,
// reporting each call on stdout only after it returned:
//
//	add N I        Add(crashEntry(round, I)) returned N
//	delivered N    Delivered(N) returned nil
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(writerPathEnv)
	if path == "" {
		return
	}
	if err := crashWriter(path, os.Getenv(writerRoundEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

func crashWriter(path, roundText string) error {
	round, err := strconv.Atoi(roundText)
	if err != nil {
		return err
	}
	q, err := Open(path)
	if err != nil {
		return err
	}
	// A safety net: the parent kills us long before this.
	deadline := time.Now().Add(20 * time.Second)
	for i := 1; time.Now().Before(deadline); i++ {
		n, err := q.Add(crashEntry(round, i))
		if err != nil {
			return err
		}
		if _, err := fmt.Printf("add %d %d\n", n, i); err != nil {
			return err // the parent has gone
		}
		if n%crashDeliverEvery == 0 {
			if err := q.Delivered(n - crashKeep); err != nil {
				return err
			}
			fmt.Printf("delivered %d\n", n-crashKeep)
		}
	}
	return fmt.Errorf("not killed within 20s")
}

// crashAcks is what the writers reported done, over all rounds.
type crashAcks struct {
	added     map[uint64]string // number → "round/i"
	lastAdded uint64
	delivered uint64
	roundMin  uint64 // the lowest number added in the latest round
}

// TestCrashSafety kills a writer at a random moment, several times over the
// same file, and after each kill checks that every entry the writer was
// given a number for is there, intact, unless a delivery removed it, and
// that the next writer's numbers start above every number in the file.
//
// SIGKILL leaves the kernel's page cache alone, so this checks bbolt's
// commit protocol and this package's use of it, not that fsync reaches the
// disk; only pulling the power checks that.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	path := filepath.Join(t.TempDir(), "audit.db")
	acks := crashAcks{added: make(map[uint64]string)}
	var fileLast uint64
	for round := 1; round <= 3; round++ {
		// Kill 0-200ms after the first add, so some rounds kill the
		// first Add or Delivered and others a later one.
		delay := time.Duration(rng.Int64N(int64(200 * time.Millisecond)))
		runAndKill(t, path, round, delay, &acks)
		t.Logf("round %d: killed %v after the first add; acked adds %d-%d, delivered through %d",
			round, delay, acks.roundMin, acks.lastAdded, acks.delivered)
		if acks.roundMin <= fileLast {
			t.Errorf("round %d: first number given = %d, want above %d, the last in the file", round, acks.roundMin, fileLast)
		}
		fileLast = checkCrashedQueue(t, path, round, &acks)
	}
}

// runAndKill starts a writer on path, kills it delay after its first add,
// and adds what it reported to acks.
func runAndKill(t testing.TB, path string, round int, delay time.Duration, acks *crashAcks) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), writerPathEnv+"="+path, writerRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("StdoutPipe() = %v, want nil", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the writer = %v, want nil", err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	acks.roundMin = 0
	record := func(line string) {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "add":
			n, _ := strconv.ParseUint(f[1], 10, 64)
			acks.added[n] = fmt.Sprintf("%d/%s", round, f[2])
			acks.lastAdded = max(acks.lastAdded, n)
			if acks.roundMin == 0 {
				acks.roundMin = n
			}
		case len(f) == 2 && f[0] == "delivered":
			n, _ := strconv.ParseUint(f[1], 10, 64)
			acks.delivered = max(acks.delivered, n)
		}
		// Anything else is the testing package's output.
	}

	var kill <-chan time.Time
	timeout := time.After(5 * time.Second)
	for kill == nil {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("round %d: writer exited before its first add; stderr:\n%s", round, stderr.Bytes())
			}
			record(line)
			if acks.roundMin != 0 {
				kill = time.After(delay)
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("round %d: writer did not add within 5s; stderr:\n%s", round, stderr.Bytes())
		}
	}
	for kill != nil {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("round %d: writer exited before it was killed; stderr:\n%s", round, stderr.Bytes())
			}
			record(line)
		case <-kill:
			kill = nil
		}
	}
	// Kill sends SIGKILL on Unix. Lines written before it are still in
	// the pipe; read them all before Wait closes it.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("killing the writer = %v, want nil", err)
	}
	for line := range lines {
		record(line)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatalf("round %d: writer exited cleanly, want killed; stderr:\n%s", round, stderr.Bytes())
	}
}

// checkCrashedQueue opens the queue a writer was killed writing, checks it
// against what the writers acknowledged, and returns the highest number in
// it.
func checkCrashedQueue(t testing.TB, path string, round int, acks *crashAcks) uint64 {
	t.Helper()
	checkFile(t, path)
	q, err := Open(path)
	if err != nil {
		t.Fatalf("round %d: Open() after kill = %v, want nil", round, err)
	}
	defer func() { mustDo(t, q.Close(), "Close()") }()
	pending, err := q.Pending(1 << 20)
	if err != nil {
		t.Fatalf("round %d: Pending() after kill = %v, want nil", round, err)
	}
	if len(pending) == 0 {
		t.Fatalf("round %d: queue is empty after kill, want entries %d-%d at least", round, acks.delivered+1, acks.lastAdded)
	}
	first, last := pending[0].SourceSeq, pending[len(pending)-1].SourceSeq
	if last < acks.lastAdded {
		t.Errorf("round %d: last entry = %d, want at least the acknowledged %d", round, last, acks.lastAdded)
	}
	if first <= acks.delivered {
		t.Errorf("round %d: first entry = %d, want above the acknowledged delivery through %d", round, first, acks.delivered)
	}
	// An unacknowledged Delivered may have happened too, but only right
	// after an acknowledged Add of a multiple of crashDeliverEvery.
	maxDelivered := acks.delivered
	if m := acks.lastAdded / crashDeliverEvery * crashDeliverEvery; m > 0 {
		maxDelivered = max(maxDelivered, m-crashKeep)
	}
	if first > maxDelivered+1 {
		t.Errorf("round %d: first entry = %d, want at most %d: entries no delivery removed are gone", round, first, maxDelivered+1)
	}
	for _, e := range pending {
		got := e.Details["round"] + "/" + e.Details["i"]
		if want, ok := acks.added[e.SourceSeq]; ok && got != want {
			t.Errorf("round %d: entry %d is round/i %s, want %s", round, e.SourceSeq, got, want)
		}
		if e.Source != "crash" || e.Validate() != nil {
			t.Errorf("round %d: entry %d = %s, want a valid entry from the writer", round, e.SourceSeq, e.Canonical())
		}
	}
	return last
}

const agentSource = "rutgers/agent/agent-1"

// dedupSink is the broker as far as delivery goes: it keeps an entry only
// if its SourceSeq is above the last it kept for that Source.
type dedupSink struct {
	mu       sync.Mutex
	received int // entries applied, redeliveries included
	kept     []audit.Entry
	last     map[string]uint64
	down     bool
	loseAcks bool // apply every batch, then report failure
}

func (s *dedupSink) Append(ctx context.Context, entries []audit.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("broker unreachable")
	}
	if s.last == nil {
		s.last = make(map[string]uint64)
	}
	for _, e := range entries {
		s.received++
		if e.SourceSeq > s.last[e.Source] {
			s.kept = append(s.kept, e)
			s.last[e.Source] = e.SourceSeq
		}
	}
	if s.loseAcks {
		return errors.New("connection reset before the acknowledgement")
	}
	return nil
}

func (s *dedupSink) heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down, s.loseAcks = false, false
}

func (s *dedupSink) got() (received int, kept []audit.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received, append([]audit.Entry(nil), s.kept...)
}

// runShipper runs a Shipper on q until the returned stop is called.
func runShipper(t testing.TB, q *Queue, sink audit.Sink) (*audit.Shipper, func()) {
	t.Helper()
	s := audit.NewShipper(agentSource, q, sink, audit.ShipperOptions{
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// TestShipperRestart records entries while the broker is unreachable or
// loses every acknowledgement, stops the agent, and checks that a new
// Shipper on the reopened queue file delivers every entry exactly once.
func TestShipperRestart(t *testing.T) {
	tests := []struct {
		name     string
		sink     *dedupSink
		wantKept int // before the restart
	}{
		{name: "broker down", sink: &dedupSink{down: true}, wantKept: 0},
		{name: "acknowledgements lost", sink: &dedupSink{loseAcks: true}, wantKept: 20},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			q := openQueue(t, path)
			s, stop := runShipper(t, q, test.sink)
			for i := 1; i <= 20; i++ {
				mustDo(t, s.Record(testEntry(i)), "Record()")
			}
			waitFor(t, "failed deliveries", func() bool {
				_, kept := test.sink.got()
				return s.Stats().Failures >= 2 && len(kept) == test.wantKept
			})
			stop()
			mustDo(t, q.Close(), "Close()")

			test.sink.heal()
			q = openQueue(t, path)
			checkPending(t, q, agentSource, 1, 20)
			s, _ = runShipper(t, q, test.sink)
			flush(t, s)
			for i := 21; i <= 25; i++ {
				mustDo(t, s.Record(testEntry(i)), "Record()")
			}
			flush(t, s)

			received, kept := test.sink.got()
			checkKept(t, kept, 25)
			if received < 25+test.wantKept {
				t.Errorf("sink received %d entries, want at least %d", received, 25+test.wantKept)
			}
			if got := s.Stats().Delivered; got != 25 {
				t.Errorf("restarted Stats().Delivered = %d, want 25", got)
			}
			checkPending(t, q, agentSource, 1, 0)
		})
	}
}

func flush(t testing.TB, s *audit.Shipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mustDo(t, s.Flush(ctx), "Flush()")
}

// checkKept checks that the sink kept entries 1 to n once each, in order.
func checkKept(t testing.TB, kept []audit.Entry, n int) {
	t.Helper()
	if len(kept) != n {
		t.Fatalf("sink kept %d entries, want %d", len(kept), n)
	}
	for k, e := range kept {
		want := testEntry(k + 1)
		want.Source, want.SourceSeq = agentSource, uint64(k+1)
		if !bytes.Equal(e.Canonical(), want.Canonical()) {
			t.Fatalf("kept[%d] = %s, want %s", k, e.Canonical(), want.Canonical())
		}
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
	}
}

// TestGeneration: a queue file keeps its identity across reopening; a new
// file has another, so a broker tells its entry 1 from the old file's.
func TestGeneration(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.db")
	q := openQueue(t, path)
	g := q.Generation()
	if len(g) != 16 {
		t.Fatalf("generation %q, want 16 hex digits", g)
	}
	q.Close()
	if again := openQueue(t, path).Generation(); again != g {
		t.Errorf("reopened queue has generation %q, want %q", again, g)
	}
	if other := openQueue(t, filepath.Join(dir, "other.db")).Generation(); other == g {
		t.Errorf("a new queue file has the same generation %q", g)
	}
}
