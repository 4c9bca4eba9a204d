package raftls

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/labfed/labfed/broker/pki"
)

// federation is a CA saved in a temporary directory, with a CRL file its
// bundles watch.
type federation struct {
	dir     string
	ca      *pki.CA
	caFile  string
	crlFile string
	n       int
}

func newFederation(t testing.TB, name string) *federation {
	t.Helper()
	ca, err := pki.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &federation{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.crt"), crlFile: filepath.Join(dir, "crl.pem")}
	if err := ca.Save(f.caFile, filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	return f
}

// bundle issues a certificate for site/kind/name and loads it.
func (f *federation) bundle(t testing.TB, kind, name string) *pki.Bundle {
	t.Helper()
	id := pki.Identity{Site: "site", Kind: kind, Name: name}
	certPEM, keyPEM, err := f.ca.Issue(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.n++
	files := pki.Files{
		CA:   f.caFile,
		Cert: filepath.Join(f.dir, fmt.Sprintf("%d.crt", f.n)),
		Key:  filepath.Join(f.dir, fmt.Sprintf("%d.key", f.n)),
		CRL:  f.crlFile,
	}
	if err := os.WriteFile(files.Cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := pki.Load(files)
	if err != nil {
		t.Fatalf("Load(%v): %v", id, err)
	}
	return b
}

// revoke puts b's certificate on the federation's CRL. Bundles loaded
// afterwards see it at once.
func (f *federation) revoke(t testing.TB, b *pki.Bundle) {
	t.Helper()
	if err := f.ca.Revoke(f.crlFile, b.Certificate().Leaf.SerialNumber); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects the logs of a test's nodes and prints them if the test
// fails; printing as they come could outlive the test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogs(t testing.TB) *logBuffer {
	t.Helper()
	l := new(logBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", l)
		}
	})
	return l
}

func (l *logBuffer) logger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: l})
}

// countFSM records the commands it applies.
type countFSM struct {
	mu      sync.Mutex
	applied []string
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return nil
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *countFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

func (f *countFSM) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.applied...)
}

type nopSnapshot struct{}

func (nopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (nopSnapshot) Release()                             {}

// node is a Raft server with in-memory stores on a raftls transport.
type node struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	trans *raft.NetworkTransport
	raft  *raft.Raft
	fsm   *countFSM
}

// newNode starts a Raft server holding b's certificate, on loopback. It is
// shut down when the test ends.
func newNode(t testing.TB, logs *logBuffer, b *pki.Bundle) *node {
	t.Helper()
	name := b.Identity().Name
	trans, err := NewTransport("127.0.0.1:0", nil, b, logs.logger(name+"-net"))
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(name)
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.Logger = logs.logger(name)
	store := raft.NewInmemStore()
	n := &node{id: c.LocalID, addr: trans.LocalAddr(), trans: trans, fsm: new(countFSM)}
	n.raft, err = raft.NewRaft(c, n.fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		trans.Close()
		t.Fatalf("NewRaft: %v", err)
	}
	t.Cleanup(func() {
		if err := n.raft.Shutdown().Error(); err != nil {
			t.Errorf("Shutdown(%s): %v", n.id, err)
		}
		trans.Close()
	})
	return n
}

// newCluster starts a Raft cluster of brokers of f, bootstrapped with all of
// them as voters, and waits for a leader.
func newCluster(t testing.TB, logs *logBuffer, f *federation, size int) []*node {
	t.Helper()
	var nodes []*node
	var conf raft.Configuration
	for i := range size {
		n := newNode(t, logs, f.bundle(t, pki.KindBroker, fmt.Sprintf("broker-%d", i)))
		nodes = append(nodes, n)
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.addr})
	}
	for _, n := range nodes {
		if err := n.raft.BootstrapCluster(conf).Error(); err != nil {
			t.Fatalf("BootstrapCluster: %v", err)
		}
	}
	leader(t, nodes)
	return nodes
}

// leader waits until one node leads and the others follow it.
func leader(t testing.TB, nodes []*node) *node {
	t.Helper()
	var l *node
	waitFor(t, 10*time.Second, "a leader the others follow", func() bool {
		l = nil
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				if l != nil {
					return false
				}
				l = n
			}
		}
		if l == nil {
			return false
		}
		for _, n := range nodes {
			if _, id := n.raft.LeaderWithID(); id != l.id {
				return false
			}
		}
		return true
	})
	return l
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
