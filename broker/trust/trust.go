// Package trust keeps a verifier's copy of the federation's trust bundle
// and revocation locks, and verifies capability tokens against it offline.
//
// A Store follows its broker's WatchTrust stream: the whole state arrives
// first and again after every change, with heartbeats in between. Each new
// state is written to a cache file, so a restarted agent verifies at once
// from disk. A token naming a kid the Store does not know triggers one
// refresh (single-flight, at most one per MinRefresh, and a kid still
// unknown afterwards is not asked about again for NegativeTTL), so a
// rotated key is picked up at once and a flood of forged kids cannot
// hammer the broker.
//
// A Store that has not heard from its broker for longer than MaxStale no
// longer knows whether a lock was written meanwhile. It then fails
// closed: it refuses every token that allows changing something
// (instrument.operate, storage.modify, compute.create, …) and still honours
// unexpired read-only tokens (instrument.view, storage.read).
package trust

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/directory"
)

// State is the trust state a broker serves: its signing keys and the
// revocation locks in force, read at a directory index.
type State struct {
	Keys  []capability.Key
	Locks []directory.Lock
	Index uint64
}

// Source is a verifier's broker.
type Source interface {
	// Watch follows the broker's trust state until ctx ends or the stream
	// breaks: fn receives each full state, and nil for a heartbeat.
	Watch(ctx context.Context, fn func(st *State)) error
	// Fetch reads the state once.
	Fetch(ctx context.Context) (*State, error)
}

// Defaults.
const (
	DefaultMaxStale    = 30 * time.Second
	DefaultMinRefresh  = time.Second
	DefaultNegativeTTL = 30 * time.Second
	// fetchTimeout bounds the refresh an unknown kid waits for.
	fetchTimeout = 2 * time.Second
	// maxNegative bounds the negative cache; when full it is cleared.
	maxNegative = 4096
)

// CodeBrokerLost is the refusal code of a token refused because the Store
// lost contact with its broker (fail closed).
const CodeBrokerLost = "broker-lost"

// Options configure a Store.
type Options struct {
	// Site is the site whose tokens are verified (their aud).
	Site   string
	Source Source
	// CacheFile keeps the last state across restarts; empty for none.
	CacheFile string
	// MaxStale is how long without a word from the broker the Store still
	// accepts tokens that change something; zero means DefaultMaxStale.
	MaxStale time.Duration
	// MinRefresh and NegativeTTL bound refreshes for unknown kids.
	MinRefresh, NegativeTTL time.Duration
	// OnChange, if set, runs after each new state is taken up, e.g. to
	// end the sessions whose tokens a new lock covers.
	OnChange func()
	Clock    func() time.Time
	Logger   *slog.Logger
}

// Store is a verifier's trust state. It is safe for concurrent use.
type Store struct {
	o        Options
	verifier *capability.Verifier

	mu      sync.RWMutex
	keys    map[string]capability.Key
	locks   []directory.Lock
	index   uint64
	contact time.Time // last message from the broker
	online  bool      // a Watch stream is open
	// fromCache: the state came from the cache file. Indexes count only
	// within one federation, so the first state from the broker replaces
	// it whatever its index (a cache of a rebuilt federation, or a
	// foreign one, must not hide the real state).
	fromCache bool
	saveMu    sync.Mutex // cache writes, in index order

	refreshMu   sync.Mutex
	inflight    chan struct{} // closed when the running refresh ends
	lastRefresh time.Time
	negative    map[string]time.Time
	fetches     int // refreshes run, for tests and metrics
}

// Open returns a Store with the state of its cache file, if any. It does
// not contact the broker: call Run for that.
func Open(o Options) (*Store, error) {
	if err := broker.ValidateName("site", o.Site); err != nil {
		return nil, err
	}
	if o.Source == nil {
		return nil, errors.New("trust: no source; give the broker connection")
	}
	if o.MaxStale <= 0 {
		o.MaxStale = DefaultMaxStale
	}
	if o.MinRefresh <= 0 {
		o.MinRefresh = DefaultMinRefresh
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = DefaultNegativeTTL
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{o: o, keys: map[string]capability.Key{}, negative: map[string]time.Time{}}
	s.verifier = capability.NewVerifier(o.Site, s, capability.WithClock(o.Clock), capability.WithRevoked(s.Revoked))
	if o.CacheFile != "" {
		st, err := readCache(o.CacheFile, o.Site)
		if err != nil {
			return nil, err
		}
		if st != nil {
			s.take(st, false)
			s.fromCache = true
		}
	}
	return s, nil
}

// Run follows the broker until ctx ends, reconnecting with backoff.
func (s *Store) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := s.o.Clock()
		err := s.o.Source.Watch(ctx, func(st *State) {
			s.mu.Lock()
			s.online, s.contact = true, s.o.Clock()
			s.mu.Unlock()
			if st != nil {
				s.take(st, true)
			}
		})
		s.mu.Lock()
		s.online = false
		s.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if s.o.Clock().Sub(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		s.o.Logger.Warn("lost the trust stream from the broker; reconnecting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// take installs st unless it is older than what the Store holds (a
// reconnect to a broker that lags behind must not undo a lock).
func (s *Store) take(st *State, save bool) {
	s.mu.Lock()
	if st.Index < s.index && !(save && s.fromCache) {
		s.mu.Unlock()
		return
	}
	if save {
		s.fromCache = false
	}
	keys := make(map[string]capability.Key, len(st.Keys))
	for _, k := range st.Keys {
		keys[k.KID] = k
	}
	changed := st.Index != s.index || !maps(keys, s.keys) || !slices.EqualFunc(st.Locks, s.locks, sameLock)
	s.keys, s.locks, s.index = keys, slices.Clone(st.Locks), st.Index
	s.mu.Unlock()
	if !changed {
		return
	}
	if save && s.o.CacheFile != "" {
		s.save()
	}
	s.refreshMu.Lock()
	clear(s.negative)
	s.refreshMu.Unlock()
	if s.o.OnChange != nil {
		s.o.OnChange()
	}
}

// save writes the state the Store holds now (not the one just taken,
// which a concurrent take may have overtaken), so the file never goes
// back.
func (s *Store) save() {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.RLock()
	st := &State{Index: s.index, Locks: slices.Clone(s.locks)}
	for _, k := range s.keys {
		st.Keys = append(st.Keys, k)
	}
	s.mu.RUnlock()
	slices.SortFunc(st.Keys, func(a, b capability.Key) int { return strings.Compare(a.KID, b.KID) })
	if err := writeCache(s.o.CacheFile, s.o.Site, st); err != nil {
		s.o.Logger.Warn("could not write the trust cache", "file", s.o.CacheFile, "err", err)
	}
}

func maps(a, b map[string]capability.Key) bool {
	if len(a) != len(b) {
		return false
	}
	for kid, x := range a {
		y, ok := b[kid]
		if !ok || x.Issuer != y.Issuer || x.Status != y.Status || !x.Public.Equal(y.Public) || !x.NotBefore.Equal(y.NotBefore) || !x.NotAfter.Equal(y.NotAfter) {
			return false
		}
	}
	return true
}

func sameLock(a, b directory.Lock) bool {
	return a.ID == b.ID && a.Kind == b.Kind && a.Value == b.Value && a.Created.Equal(b.Created) && a.Until.Equal(b.Until)
}

// Key implements capability.Bundle. An unknown kid triggers one refresh
// from the broker (see the package comment); Key then blocks for at most
// a couple of seconds.
func (s *Store) Key(kid string) (capability.Key, bool) {
	s.mu.RLock()
	k, ok := s.keys[kid]
	s.mu.RUnlock()
	if ok {
		return k, true
	}
	s.refreshFor(kid)
	s.mu.RLock()
	k, ok = s.keys[kid]
	s.mu.RUnlock()
	return k, ok
}

func (s *Store) refreshFor(kid string) {
	now := s.o.Clock()
	s.refreshMu.Lock()
	if t, ok := s.negative[kid]; ok && now.Sub(t) < s.o.NegativeTTL {
		s.refreshMu.Unlock()
		return
	}
	wait := s.inflight
	if wait == nil {
		if now.Sub(s.lastRefresh) < s.o.MinRefresh {
			// Too soon after the last refresh: remember the kid as unknown
			// so it does not come back for another.
			s.remember(kid, now)
			s.refreshMu.Unlock()
			return
		}
		wait = make(chan struct{})
		s.inflight, s.lastRefresh = wait, now
		s.fetches++
		go s.refresh(wait)
	}
	s.refreshMu.Unlock()
	<-wait
	s.mu.RLock()
	_, ok := s.keys[kid]
	s.mu.RUnlock()
	if !ok {
		s.refreshMu.Lock()
		s.remember(kid, s.o.Clock())
		s.refreshMu.Unlock()
	}
}

func (s *Store) remember(kid string, t time.Time) {
	if len(s.negative) >= maxNegative {
		clear(s.negative)
	}
	s.negative[kid] = t
}

func (s *Store) refresh(done chan struct{}) {
	defer func() {
		s.refreshMu.Lock()
		s.inflight = nil
		s.refreshMu.Unlock()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	if err := s.Refresh(ctx); err != nil {
		s.o.Logger.Warn("could not refresh the trust bundle for an unknown key", "err", err)
	}
}

// Refresh reads the state from the broker once and takes it up.
func (s *Store) Refresh(ctx context.Context) error {
	st, err := s.o.Source.Fetch(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.contact = s.o.Clock()
	s.mu.Unlock()
	s.take(st, true)
	return nil
}

// Fetches reports how many refreshes unknown kids have caused.
func (s *Store) Fetches() int {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	return s.fetches
}

// Revoked reports whether a lock the Store holds covers c, and which.
func (s *Store) Revoked(c *capability.Claims) (string, bool) {
	now := s.o.Clock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := range s.locks {
		l := &s.locks[i]
		if l.Covers(c.ID, c.Subject, c.IssuedAt, now) {
			return fmt.Sprintf("revoked by lock %s on %s %s (%s)", l.ID, l.Kind, l.Value, orNone(l.Reason)), true
		}
	}
	return "", false
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

// Contact reports when the Store last heard from its broker and how long
// ago that was; a zero time means never since it was opened.
func (s *Store) Contact() (last time.Time, since time.Duration) {
	s.mu.RLock()
	last = s.contact
	s.mu.RUnlock()
	if last.IsZero() {
		return last, -1
	}
	return last, s.o.Clock().Sub(last)
}

// Index is the directory index of the state the Store holds.
func (s *Store) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

// Verify checks token like capability.Verifier.Verify against the Store's
// bundle and locks, and fails closed for tokens that change something
// when the broker has been out of reach for longer than MaxStale.
func (s *Store) Verify(token string, want *capability.Scope) (*capability.Claims, error) {
	c, err := s.verifier.Verify(token, want)
	if err != nil {
		return nil, err
	}
	if err := s.CheckContact(c); err != nil {
		return nil, err
	}
	return c, nil
}

// CheckContact refuses c if it allows changing something and the broker
// has not been heard from within MaxStale. Sessions opened earlier call
// it again to learn whether to go on.
func (s *Store) CheckContact(c *capability.Claims) error {
	last, since := s.Contact()
	if since >= 0 && since <= s.o.MaxStale {
		return nil
	}
	for _, sc := range c.Scope {
		if !ReadOnly(sc.Action) {
			what := "since this verifier started"
			if !last.IsZero() {
				what = fmt.Sprintf("for %s", since.Round(time.Second))
			}
			return &capability.RefusedError{Code: CodeBrokerLost, Reason: fmt.Sprintf(
				"no word from the broker %s (limit %s), so a revocation may have been missed: %s tokens are refused until it is back; view tokens still work",
				what, s.o.MaxStale, sc.Action)}
		}
	}
	return nil
}

// ReadOnly reports whether action only observes (and so may still be
// honoured when revocations cannot be heard).
func ReadOnly(action string) bool {
	return action == broker.ActionInstrumentView || action == broker.ActionStorageRead
}

// ---- cache file ----

type cacheFile struct {
	Site  string           `json:"site"`
	Index uint64           `json:"index"`
	Keys  []cacheKey       `json:"keys"`
	Locks []directory.Lock `json:"locks"`
}

type cacheKey struct {
	KID       string    `json:"kid"`
	Issuer    string    `json:"issuer"`
	Public    []byte    `json:"public"`
	Status    string    `json:"status"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

func readCache(path, site string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read trust cache: %w", err)
	}
	var f cacheFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("trust cache %s is damaged (%v); delete it and it is fetched again from the broker", path, err)
	}
	if f.Site != site {
		return nil, fmt.Errorf("trust cache %s belongs to site %s, not %s; give this verifier its own cache file", path, f.Site, site)
	}
	st := &State{Index: f.Index, Locks: f.Locks}
	for _, k := range f.Keys {
		if len(k.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("trust cache %s: key %s is damaged; delete the file and it is fetched again", path, k.KID)
		}
		st.Keys = append(st.Keys, capability.Key{KID: k.KID, Issuer: k.Issuer, Public: k.Public, Status: k.Status, NotBefore: k.NotBefore, NotAfter: k.NotAfter})
	}
	return st, nil
}

// writeCache replaces the cache file atomically (mode 0600).
func writeCache(path, site string, st *State) error {
	f := cacheFile{Site: site, Index: st.Index, Locks: st.Locks}
	for _, k := range st.Keys {
		f.Keys = append(f.Keys, cacheKey{KID: k.KID, Issuer: k.Issuer, Public: k.Public, Status: k.Status, NotBefore: k.NotBefore, NotAfter: k.NotAfter})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".trust-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
