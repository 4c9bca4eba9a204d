package trust

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/directory"
)

// fakeSource serves a state the test changes; Watch pushes it on every
// change and heartbeats on demand.
type fakeSource struct {
	mu      sync.Mutex
	st      *State
	updates chan *State
	fetches atomic.Int32
	down    atomic.Bool
}

func newFakeSource(st *State) *fakeSource { return &fakeSource{st: st, updates: make(chan *State, 16)} }

func (f *fakeSource) set(st *State) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	f.updates <- st
}

func (f *fakeSource) Watch(ctx context.Context, fn func(*State)) error {
	if f.down.Load() {
		return errors.New("connection refused")
	}
	f.mu.Lock()
	st := f.st
	f.mu.Unlock()
	fn(st)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case st := <-f.updates:
			if f.down.Load() {
				return errors.New("connection reset")
			}
			fn(st)
		}
	}
}

func (f *fakeSource) Fetch(context.Context) (*State, error) {
	f.fetches.Add(1)
	if f.down.Load() {
		return nil, errors.New("connection refused")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	clk    *clock
	src    *fakeSource
	signer *capability.Signer
	key    capability.Key
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	key := capability.Key{KID: "psc-1-aa", Issuer: "psc-1", Public: pub, Status: directory.KeyActive, NotBefore: clk.now().Add(-time.Hour)}
	return &fixture{
		clk: clk, signer: capability.NewSigner(key.KID, key.Issuer, priv), key: key,
		src: newFakeSource(&State{Keys: []capability.Key{key}, Index: 10}),
	}
}

func (f *fixture) token(t *testing.T, jti, scope string) string {
	t.Helper()
	sc, err := capability.ParseScope(scope)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := f.signer.Sign(capability.Claims{Subject: "alice", Audience: "rutgers", ID: jti, IssuedAt: f.clk.now(), Scope: []capability.Scope{sc}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) open(t *testing.T, cache string) *Store {
	t.Helper()
	s, err := Open(Options{Site: "rutgers", Source: f.src, CacheFile: cache, Clock: f.clk.now, MaxStale: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func run(t *testing.T, s *Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func code(err error) string {
	var re *capability.RefusedError
	if errors.As(err, &re) {
		return re.Code
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return "accepted"
}

const (
	operate = "instrument.operate:rutgers/krios-g4"
	view    = "instrument.view:rutgers/krios-g4"
)

// TestStoreFollowsLocks: a lock that reaches the store refuses the token it
// covers at once, and a key revoked in the bundle refuses every token of
// that key.
func TestStoreFollowsLocks(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, filepath.Join(t.TempDir(), "trust.json"))
	run(t, s)
	waitFor(t, "first state", func() bool { return s.Index() == 10 })
	tok := f.token(t, "j1", operate)
	if _, err := s.Verify(tok, nil); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	lock := directory.Lock{ID: "lock-1", Kind: directory.LockJTI, Value: "j1", Reason: "laptop stolen", Created: f.clk.now(), Until: f.clk.now().Add(12 * time.Hour)}
	f.src.set(&State{Keys: []capability.Key{f.key}, Locks: []directory.Lock{lock}, Index: 11})
	waitFor(t, "the lock", func() bool { return s.Index() == 11 })
	if _, err := s.Verify(tok, nil); code(err) != capability.CodeRevoked {
		t.Fatalf("locked token: %s, want revoked", code(err))
	}
	if _, err := s.Verify(f.token(t, "j2", operate), nil); err != nil {
		t.Fatalf("another token refused by a jti lock: %v", err)
	}
	// A user lock covers the user's tokens issued up to the lock.
	old := f.token(t, "j3", view)
	ulock := directory.Lock{ID: "lock-2", Kind: directory.LockUser, Value: "alice", Created: f.clk.now(), Until: f.clk.now().Add(12 * time.Hour)}
	f.src.set(&State{Keys: []capability.Key{f.key}, Locks: []directory.Lock{lock, ulock}, Index: 12})
	waitFor(t, "the user lock", func() bool { return s.Index() == 12 })
	if _, err := s.Verify(old, nil); code(err) != capability.CodeRevoked {
		t.Fatalf("token of a locked user: %s, want revoked", code(err))
	}
	// A state older than the one held (a lagging broker) changes nothing.
	f.src.set(&State{Keys: []capability.Key{f.key}, Index: 9})
	time.Sleep(20 * time.Millisecond)
	if _, err := s.Verify(tok, nil); code(err) != capability.CodeRevoked {
		t.Fatalf("an older state lifted the lock: %s", code(err))
	}
	revoked := f.key
	revoked.Status = directory.KeyRevoked
	f.src.set(&State{Keys: []capability.Key{revoked}, Index: 13})
	waitFor(t, "the revoked key", func() bool { return s.Index() == 13 })
	if _, err := s.Verify(f.token(t, "j4", view), nil); code(err) != capability.CodeKeyRevoked {
		t.Fatalf("token of a revoked key: %s, want key-revoked", code(err))
	}
}

// TestStoreFailsClosed: without a word from the broker for longer than
// MaxStale, tokens that operate are refused and view tokens still work;
// contact restores both.
func TestStoreFailsClosed(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, "")
	run(t, s)
	waitFor(t, "first state", func() bool { return s.Index() == 10 })
	op, vw := f.token(t, "j1", operate), f.token(t, "j2", view)
	for _, tok := range []string{op, vw} {
		if _, err := s.Verify(tok, nil); err != nil {
			t.Fatalf("refused while in contact: %v", err)
		}
	}
	f.clk.add(31 * time.Second)
	_, err := s.Verify(op, nil)
	if code(err) != CodeBrokerLost {
		t.Fatalf("operate token after 31 s without the broker: %s, want %s", code(err), CodeBrokerLost)
	}
	t.Logf("refusal: %v", err)
	if _, err := s.Verify(vw, nil); err != nil {
		t.Fatalf("view token refused while the broker is away: %v", err)
	}
	f.src.set(&State{Keys: []capability.Key{f.key}, Index: 11}) // the broker speaks again
	waitFor(t, "contact", func() bool { _, since := s.Contact(); return since >= 0 && since < time.Second })
	if _, err := s.Verify(op, nil); err != nil {
		t.Fatalf("operate token refused after contact returned: %v", err)
	}
}

// TestStoreCache: a restarted verifier verifies from its cache file before
// it reaches the broker, but refuses operate tokens until it does; the
// file is private; a damaged or foreign cache is refused with a hint.
func TestStoreCache(t *testing.T) {
	f := newFixture(t)
	cache := filepath.Join(t.TempDir(), "trust.json")
	s := f.open(t, cache)
	run(t, s)
	waitFor(t, "first state", func() bool { return s.Index() == 10 })
	waitFor(t, "the cache file", func() bool { _, err := os.Stat(cache); return err == nil })
	if fi, _ := os.Stat(cache); fi.Mode().Perm() != 0o600 {
		t.Errorf("cache mode %v, want 0600", fi.Mode().Perm())
	}

	f.src.down.Store(true)
	again := f.open(t, cache)
	if _, err := again.Verify(f.token(t, "j1", view), nil); err != nil {
		t.Fatalf("view token refused from the cache: %v", err)
	}
	if _, err := again.Verify(f.token(t, "j2", operate), nil); code(err) != CodeBrokerLost {
		t.Fatalf("operate token before any contact: %s, want %s", code(err), CodeBrokerLost)
	}

	// A cache from another federation (a rebuilt one, or a foreign file)
	// with a higher index: the broker's first state replaces it.
	foreign := newFixture(t)
	foreign.src.st.Index = 50000
	fcache := filepath.Join(t.TempDir(), "foreign.json")
	fs := foreign.open(t, fcache)
	run(t, fs)
	waitFor(t, "the foreign cache", func() bool { _, err := os.Stat(fcache); return err == nil })
	f.src.down.Store(false)
	mixed, err := Open(Options{Site: "rutgers", Source: f.src, CacheFile: fcache, Clock: f.clk.now})
	if err != nil {
		t.Fatal(err)
	}
	run(t, mixed)
	waitFor(t, "the live state", func() bool { return mixed.Index() == 10 })
	// Same kid, other key: the broker's key is the one held now.
	if _, err := mixed.Verify(foreign.token(t, "j9", view), nil); code(err) != capability.CodeSignature {
		t.Errorf("token of the foreign cache's key: %s, want a signature refusal", code(err))
	}
	if _, err := mixed.Verify(f.token(t, "j10", operate), nil); err != nil {
		t.Errorf("token of the live key refused: %v", err)
	}

	if _, err := Open(Options{Site: "psc", Source: f.src, CacheFile: cache}); err == nil {
		t.Error("a cache of rutgers opened for psc")
	}
	if err := os.WriteFile(cache, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Site: "rutgers", Source: f.src, CacheFile: cache}); err == nil {
		t.Error("a damaged cache was accepted")
	}
}

// TestUnknownKidRefresh: a rotated key is picked up by the first token
// naming it (one refresh); a flood of forged kids costs at most one
// refresh per MinRefresh, and a kid found unknown is not asked about again.
func TestUnknownKidRefresh(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, "")
	run(t, s)
	waitFor(t, "first state", func() bool { return s.Index() == 10 })

	// Rotation: the broker now has a second key the stream has not sent.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	next := capability.Key{KID: "psc-1-bb", Issuer: "psc-1", Public: pub, Status: directory.KeyActive, NotBefore: f.clk.now().Add(-time.Minute)}
	f.src.mu.Lock()
	f.src.st = &State{Keys: []capability.Key{f.key, next}, Index: 11}
	f.src.mu.Unlock()
	f.signer = capability.NewSigner(next.KID, next.Issuer, priv)
	if _, err := s.Verify(f.token(t, "j1", operate), nil); err != nil {
		t.Fatalf("token of the new key refused: %v", err)
	}
	if n := f.src.fetches.Load(); n != 1 {
		t.Fatalf("%d refreshes for one new kid, want 1", n)
	}

	// A flood of forged kids inside one MinRefresh: at most one refresh.
	f.clk.add(2 * time.Second)
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			forged := capability.NewSigner(fmt.Sprintf("forged-%d", i%50), "psc-1", priv)
			tok, _ := forged.Sign(capability.Claims{Subject: "alice", Audience: "rutgers", ID: "x", IssuedAt: f.clk.now(), Scope: []capability.Scope{{Action: "instrument.view", Resource: mustScope(t, view).Resource}}})
			if _, err := s.Verify(tok, nil); code(err) != capability.CodeKIDUnknown {
				t.Errorf("forged kid: %s, want kid-unknown", code(err))
			}
		}()
	}
	wg.Wait()
	if n := f.src.fetches.Load(); n > 2 {
		t.Fatalf("500 forged tokens caused %d refreshes, want at most 1 more", n-1)
	}
	// The same forged kids after MinRefresh: still in the negative cache.
	before := f.src.fetches.Load()
	f.clk.add(2 * time.Second)
	forged := capability.NewSigner("forged-1", "psc-1", priv)
	tok, _ := forged.Sign(capability.Claims{Subject: "alice", Audience: "rutgers", ID: "x", IssuedAt: f.clk.now(), Scope: []capability.Scope{mustScope(t, view)}})
	if _, err := s.Verify(tok, nil); code(err) != capability.CodeKIDUnknown {
		t.Fatalf("forged kid: %s", code(err))
	}
	if after := f.src.fetches.Load(); after != before {
		t.Fatalf("a kid in the negative cache caused %d refreshes", after-before)
	}
}

func mustScope(t *testing.T, s string) capability.Scope {
	sc, err := capability.ParseScope(s)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}
