package raftls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/labfed/labfed/broker/pki"
)

func TestClusterReplicates(t *testing.T) {
	t.Parallel()
	logs := newLogs(t)
	nodes := newCluster(t, logs, newFederation(t, "cryo-em"), 3)
	l := leader(t, nodes)
	if err := l.raft.Apply([]byte("hello"), 5*time.Second).Error(); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, n := range nodes {
		waitFor(t, 5*time.Second, fmt.Sprintf("hello applied on %s", n.id), func() bool {
			return slices.Equal(n.fsm.commands(), []string{"hello"})
		})
	}
}

// TestOutsiderCannotJoin adds as a voter a node whose certificate the
// federation must refuse and checks that it never becomes a working
// member, cannot disrupt the leader, and cannot speak Raft either way.
func TestOutsiderCannotJoin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		outsider func(t testing.TB, fed *federation) *pki.Bundle
	}{
		{"another CA", func(t testing.TB, _ *federation) *pki.Bundle {
			return newFederation(t, "rogue").bundle(t, pki.KindBroker, "outsider")
		}},
		{"revoked", func(t testing.TB, fed *federation) *pki.Bundle {
			b := fed.bundle(t, pki.KindBroker, "outsider")
			fed.revoke(t, b) // before the cluster's bundles load the CRL
			return b
		}},
		{"agent", func(t testing.TB, fed *federation) *pki.Bundle {
			return fed.bundle(t, pki.KindAgent, "outsider")
		}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()
			logs := newLogs(t)
			fed := newFederation(t, "cryo-em")
			outsider := newNode(t, logs, test.outsider(t, fed))
			nodes := newCluster(t, logs, fed, 3)
			l := leader(t, nodes)
			term := l.raft.CurrentTerm()

			// The configuration change commits: three of four voters is
			// a quorum without the outsider.
			if err := l.raft.AddVoter(outsider.id, outsider.addr, 0, 5*time.Second).Error(); err != nil {
				t.Fatalf("AddVoter(%s): %v", outsider.id, err)
			}
			for i := range 3 {
				if err := l.raft.Apply(fmt.Appendf(nil, "cmd-%d", i), 5*time.Second).Error(); err != nil {
					t.Fatalf("Apply: %v", err)
				}
			}
			want := []string{"cmd-0", "cmd-1", "cmd-2"}
			for _, n := range nodes {
				waitFor(t, 5*time.Second, fmt.Sprintf("commands applied on %s", n.id), func() bool {
					return slices.Equal(n.fsm.commands(), want)
				})
			}

			// The outsider cannot disrupt the cluster by speaking first,
			// even with a term far ahead and a leadership transfer.
			vote := &raft.RequestVoteRequest{
				RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(outsider.id), Addr: []byte(outsider.addr)},
				Term:               term + 100,
				LastLogIndex:       1 << 40,
				LastLogTerm:        term + 100,
				LeadershipTransfer: true,
			}
			if err := outsider.trans.RequestVote(l.id, l.addr, vote, new(raft.RequestVoteResponse)); err == nil {
				t.Errorf("RequestVote from the outsider to the leader = nil, want an error")
			}
			appendReq := &raft.AppendEntriesRequest{RPCHeader: vote.RPCHeader, Term: term + 100}
			if err := outsider.trans.AppendEntries(l.id, l.addr, appendReq, new(raft.AppendEntriesResponse)); err == nil {
				t.Errorf("AppendEntries from the outsider to the leader = nil, want an error")
			}
			// Nor can the cluster reach it.
			vote = &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(l.id), Addr: []byte(l.addr)}, Term: term}
			if err := l.trans.RequestVote(outsider.id, outsider.addr, vote, new(raft.RequestVoteResponse)); err == nil {
				t.Errorf("RequestVote from the leader to the outsider = nil, want an error")
			}

			// Give the leader's replication to the outsider a few
			// heartbeats' worth of retries.
			time.Sleep(time.Second)
			if got := outsider.raft.LastIndex(); got != 0 {
				t.Errorf("outsider LastIndex() = %d, want 0", got)
			}
			if got := outsider.fsm.commands(); len(got) != 0 {
				t.Errorf("outsider applied %q, want nothing", got)
			}
			if now := leader(t, nodes); now != l || l.raft.CurrentTerm() != term {
				t.Errorf("leader = %s in term %d, want %s still leading in term %d", now.id, l.raft.CurrentTerm(), l.id, term)
			}
			if !strings.Contains(logs.String(), "refused a raft connection") {
				t.Errorf("no refused handshake was logged")
			}
		})
	}
}

// responder answers every RPC arriving at trans, granting votes.
func responder(t testing.TB, trans raft.Transport) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case rpc := <-trans.Consumer():
				switch rpc.Command.(type) {
				case *raft.RequestVoteRequest:
					rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
				case *raft.AppendEntriesRequest:
					rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
				default:
					rpc.Respond(nil, errors.New("unexpected RPC"))
				}
			case <-done:
				return
			}
		}
	}()
}

// TestPlaintextRefused checks that Raft's plain TCP transport and a raftls
// transport cannot talk to each other in either direction, while each
// talks to its own kind.
func TestPlaintextRefused(t *testing.T) {
	t.Parallel()
	logs := newLogs(t)
	fed := newFederation(t, "cryo-em")
	var secure, plain []*raft.NetworkTransport
	for i := range 2 {
		s, err := NewTransport("127.0.0.1:0", nil, fed.bundle(t, pki.KindBroker, fmt.Sprintf("tls-%d", i)), logs.logger("tls"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, 5*time.Second, logs.logger("plain"))
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range []*raft.NetworkTransport{s, p} {
			t.Cleanup(func() { tr.Close() })
			responder(t, tr)
		}
		secure, plain = append(secure, s), append(plain, p)
	}
	tests := []struct {
		name     string
		from, to *raft.NetworkTransport
		wantOK   bool
	}{
		{"tls to tls", secure[0], secure[1], true},
		{"plain to plain", plain[0], plain[1], true},
		{"plain to tls", plain[0], secure[1], false},
		{"tls to plain", secure[0], plain[1], false},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte(test.from.LocalAddr())}
			to := test.to.LocalAddr()
			start := time.Now()
			var vote raft.RequestVoteResponse
			err := test.from.RequestVote("peer", to, &raft.RequestVoteRequest{RPCHeader: hdr, Term: 1}, &vote)
			if got := err == nil && vote.Granted; got != test.wantOK {
				t.Errorf("RequestVote succeeded = %v (%v), want %v", got, err, test.wantOK)
			}
			var app raft.AppendEntriesResponse
			err = test.from.AppendEntries("peer", to, &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 1}, &app)
			if got := err == nil && app.Success; got != test.wantOK {
				t.Errorf("AppendEntries succeeded = %v (%v), want %v", got, err, test.wantOK)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the RPCs took %v; a refusal should be prompt, not a timeout", d)
			}
		})
	}
}

// TestAcceptSkipsBadPeers checks the stream layer alone: connections that
// fail their handshake, or never start one, neither reach Raft nor hold up
// a good connection behind them, and Accept reports no error for them.
func TestAcceptSkipsBadPeers(t *testing.T) {
	t.Parallel()
	fed := newFederation(t, "cryo-em")
	server := fed.bundle(t, pki.KindBroker, "server")
	client := fed.bundle(t, pki.KindBroker, "client")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	advertise := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 7000}
	s := NewStreamLayer(ln, advertise, server.MutualServerConfig(pki.KindBroker), server.ClientConfig(pki.KindBroker))
	t.Cleanup(func() { s.Close() })
	if got := s.Addr(); got != advertise {
		t.Errorf("Addr() = %v, want %v", got, advertise)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	results := make(chan result, 10)
	go func() {
		for {
			c, err := s.Accept()
			results <- result{c, err}
			if err != nil {
				return
			}
		}
	}()
	addr := ln.Addr().String()

	// A peer that connects and says nothing goes first.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond)

	bad := []struct {
		name string
		dial func() error
	}{
		{"plaintext", func() error {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = io.WriteString(c, "\x00raft plaintext request")
			return err
		}},
		{"another CA", func() error {
			rogue := newFederation(t, "rogue").bundle(t, pki.KindBroker, "client")
			return dialAndWrite(addr, rogue.ClientConfig())
		}},
		{"agent", func() error {
			return dialAndWrite(addr, fed.bundle(t, pki.KindAgent, "gw").ClientConfig(pki.KindBroker))
		}},
	}
	start := time.Now()
	for _, b := range bad {
		// The client side may or may not notice; what matters is what
		// Accept returns.
		b.dial()
	}

	good := NewStreamLayer(newListener(t), nil, client.MutualServerConfig(pki.KindBroker), client.ClientConfig(pki.KindBroker))
	t.Cleanup(func() { good.Close() })
	c, err := good.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-results:
		if r.err != nil {
			t.Fatalf("Accept() = %v, want the good connection", r.err)
		}
		if d := time.Since(start); d > HandshakeTimeout/2 {
			t.Errorf("the bad connections and the good one took %v to handle; the silent one held them up", d)
		}
		tc, ok := r.conn.(*tls.Conn)
		if !ok {
			t.Fatalf("Accept() returned a %T, want a *tls.Conn", r.conn)
		}
		if id, err := pki.PeerIdentity(tc.ConnectionState()); err != nil || id != client.Identity() {
			t.Errorf("PeerIdentity = %v, %v; want %v", id, err, client.Identity())
		}
		buf := make([]byte, 4)
		r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(r.conn, buf); err != nil || string(buf) != "ping" {
			t.Errorf("read %q, %v; want ping", buf, err)
		}
		r.conn.Close()
	case <-time.After(HandshakeTimeout / 2):
		t.Fatalf("Accept() returned nothing within %v", HandshakeTimeout/2)
	}
	select {
	case r := <-results:
		t.Fatalf("Accept() = %v, %v; want nothing more", r.conn, r.err)
	case <-time.After(200 * time.Millisecond):
	}

	// Close ends Accept and the silent peer's pending handshake.
	if err := s.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	select {
	case r := <-results:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Errorf("Accept() after Close = %v, %v; want net.ErrClosed", r.conn, r.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("Accept() did not return after Close")
	}
	silent.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("silent peer read = %v, want its connection closed", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func newListener(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dialAndWrite makes a TLS connection and writes to it, so that a TLS 1.3
// server gets to judge the client's certificate.
func dialAndWrite(addr string, cfg *tls.Config) error {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "x"); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}

func TestNewTransportRefusesUnspecifiedAdvertise(t *testing.T) {
	t.Parallel()
	b := newFederation(t, "cryo-em").bundle(t, pki.KindBroker, "b")
	for _, adv := range []net.Addr{&net.TCPAddr{IP: net.IPv4zero, Port: 7000}, &net.TCPAddr{Port: 7000}} {
		if tr, err := NewTransport("127.0.0.1:0", adv, b, nil); err == nil {
			tr.Close()
			t.Errorf("NewTransport(advertise %v) = nil error, want one", adv)
		}
	}
	tr, err := NewTransport("127.0.0.1:0", nil, b, nil)
	if err != nil {
		t.Fatalf("NewTransport(advertise nil) = %v", err)
	}
	defer tr.Close()
	if a := tr.LocalAddr(); !strings.HasPrefix(string(a), "127.0.0.1:") {
		t.Errorf("LocalAddr() = %q, want the listener's loopback address", a)
	}
}
