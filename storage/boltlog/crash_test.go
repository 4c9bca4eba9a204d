package boltlog

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The crash test runs this test binary again as a writer (TestHelperProcess
// with these variables set) and kills it with SIGKILL while it writes.
const (
	writerPathEnv = "BOLTLOG_CRASH_WRITER_PATH"
	writerTermEnv = "BOLTLOG_CRASH_WRITER_TERM"
)

// The writer's behaviour, which the checks rely on.
const (
	crashMaxBatch      = 32  // StoreLogs gets 1 to crashMaxBatch entries
	crashTruncateEvery = 20  // batches between prefix deletions
	crashKeep          = 500 // entries a prefix deletion leaves
	crashTermKey       = "CurrentTerm"
)

// crashPayload is the data of the entry at index: a few hundred bytes
// whose contents depend on the index, so a read can be checked.
func crashPayload(index uint64) []byte {
	n := 64 + int(index%512)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(index>>(8*(i%8))) ^ byte(i)
	}
	return b
}

// TestHelperProcess is the writer the crash test kills. Run on its own it
// does nothing. The writer opens the store, sets the term, then appends
// batches forever, now and then deleting a prefix, and reports each
// operation on stdout only after it has returned:
//
//	term T      SetUint64(CurrentTerm, T) returned nil
//	append N    StoreLogs of a batch ending at index N returned nil
//	delete N    DeleteRange(first, N) returned nil
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(writerPathEnv)
	if path == "" {
		return
	}
	if err := crashWriter(path, os.Getenv(writerTermEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

func crashWriter(path, termText string) error {
	term, err := strconv.ParseUint(termText, 10, 64)
	if err != nil {
		return err
	}
	s, err := Open(path, Options{Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	if err := s.SetUint64([]byte(crashTermKey), term); err != nil {
		return err
	}
	fmt.Printf("term %d\n", term)
	last, err := s.LastIndex()
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(term, uint64(time.Now().UnixNano())))
	// A safety net: the parent kills us long before this.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		n := 1 + rng.Uint64N(crashMaxBatch)
		logs := make([]*raft.Log, n)
		for i := range logs {
			last++
			logs[i] = &raft.Log{Index: last, Term: term, Type: raft.LogCommand, Data: crashPayload(last), AppendedAt: time.Now()}
		}
		if err := s.StoreLogs(logs); err != nil {
			return err
		}
		if _, err := fmt.Printf("append %d\n", last); err != nil {
			return err // the parent has gone
		}
		if rng.IntN(crashTruncateEvery) == 0 && last > crashKeep {
			first, err := s.FirstIndex()
			if err != nil {
				return err
			}
			if err := s.DeleteRange(first, last-crashKeep); err != nil {
				return err
			}
			fmt.Printf("delete %d\n", last-crashKeep)
		}
	}
	return fmt.Errorf("not killed within 20s")
}

// acked is what a writer reported done before it was killed.
type acked struct {
	term    uint64 // 0 if not reported
	append  uint64 // highest index appended
	deleted uint64 // highest index a reported prefix deletion removed
}

// TestCrashSafety kills a writer at a random moment, several times over the
// same file, and after each kill checks that everything the writer
// reported done is in the file and that the file is consistent.
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
	path := filepath.Join(t.TempDir(), "raft.db")
	var prev acked
	for round := uint64(1); round <= 4; round++ {
		// Kill 0-300ms after the first append, so some rounds kill
		// the first batch and others a later one.
		delay := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		got := runAndKill(t, path, round, delay)
		t.Logf("round %d: killed %v after the first append; acked term %d, append %d, delete %d",
			round, delay, got.term, got.append, got.deleted)
		// Deletions acknowledged in earlier rounds still count.
		got.deleted = max(got.deleted, prev.deleted)
		checkCrashedStore(t, path, round, got)
		prev = got
	}
}

// runAndKill starts a writer on path, kills it delay after its first
// append, and returns what it reported.
func runAndKill(t testing.TB, path string, term uint64, delay time.Duration) acked {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), writerPathEnv+"="+path, writerTermEnv+"="+strconv.FormatUint(term, 10))
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

	var got acked
	record := func(line string) {
		verb, num, ok := strings.Cut(line, " ")
		n, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil {
			return // not ours, such as the testing package's output
		}
		switch verb {
		case "term":
			got.term = n
		case "append":
			got.append = n
		case "delete":
			got.deleted = n
		}
	}

	// Wait for the first append, then let the writer run for delay.
	var kill <-chan time.Time
	timeout := time.After(5 * time.Second)
	for kill == nil {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("writer exited before its first append; stderr:\n%s", stderr.Bytes())
			}
			record(line)
			if got.append != 0 {
				kill = time.After(delay)
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("writer did not append within 5s; stderr:\n%s", stderr.Bytes())
		}
	}
	for kill != nil {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("writer exited before it was killed; stderr:\n%s", stderr.Bytes())
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
		t.Fatalf("writer exited cleanly, want killed; stderr:\n%s", stderr.Bytes())
	}
	return got
}

// checkCrashedStore opens the store a writer was killed writing and checks
// it against what the writer acknowledged.
func checkCrashedStore(t testing.TB, path string, round uint64, want acked) {
	t.Helper()
	s, err := Open(path, Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("round %d: Open() after kill = %v, want nil", round, err)
	}
	defer func() { mustDo(t, s.Close(), "Close()") }()

	if want.term != 0 {
		if got, err := s.GetUint64([]byte(crashTermKey)); got != want.term || err != nil {
			t.Errorf("round %d: GetUint64(%s) = %d, %v, want %d, nil", round, crashTermKey, got, err, want.term)
		}
	}
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatalf("round %d: FirstIndex() = %v, want nil", round, err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatalf("round %d: LastIndex() = %v, want nil", round, err)
	}
	if last < want.append {
		t.Errorf("round %d: LastIndex() = %d, want at least the acknowledged %d", round, last, want.append)
	}
	// An acknowledged deletion happened. An unacknowledged one may have:
	// the writer deletes only right after acknowledging an append, up to
	// crashKeep entries before it.
	if first <= want.deleted {
		t.Errorf("round %d: FirstIndex() = %d, want above the acknowledged deletion through %d", round, first, want.deleted)
	}
	maxDeleted := want.deleted
	if want.append > crashKeep {
		maxDeleted = max(maxDeleted, want.append-crashKeep)
	}
	if first > maxDeleted+1 {
		t.Errorf("round %d: FirstIndex() = %d, want at most %d: entries no deletion removed are gone", round, first, maxDeleted+1)
	}
	// Every entry from first to last is there and intact.
	for i := first; i <= last && i != 0; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("round %d: GetLog(%d) in %d-%d = %v, want nil", round, i, first, last, err)
		}
		if l.Index != i || l.Term == 0 || l.Term > round || !bytes.Equal(l.Data, crashPayload(i)) {
			t.Fatalf("round %d: GetLog(%d) = index %d, term %d, data crc %08x, want index %d, term 1-%d, data crc %08x",
				round, i, l.Index, l.Term, crc32.ChecksumIEEE(l.Data), i, round, crc32.ChecksumIEEE(crashPayload(i)))
		}
	}
}
