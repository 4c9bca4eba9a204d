// Package raftls runs Raft's network transport over mutual TLS, the way
// Consul and Nomad do: a raft.StreamLayer whose listener accepts only TLS 1.3
// connections presenting a valid, unrevoked federation certificate of kind
// broker, and whose dialer presents ours and verifies the peer the same way.
//
// # Handshakes
//
// The listener completes each TLS handshake before Accept returns the
// connection, so Raft never reads a byte from an unauthenticated peer. The
// handshakes run concurrently, each under a deadline, so that one peer
// that connects and stays silent cannot hold up the others; a peer whose
// handshake fails is logged and dropped, and Accept keeps waiting for the
// next connection instead of returning an error, on which Raft's listener
// loop would back off.
//
// # What is verified
//
// Both ends check the chain to the federation CA, revocation and that the
// peer is a broker; neither checks which broker. Raft addresses servers by
// network address, and the mapping from address to broker lives in the
// directory Raft replicates, so any federation broker may speak Raft with
// any other; a broker that can reach a peer's Raft port can also
// impersonate another broker there.
package raftls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/labfed/labfed/broker/pki"
)

const (
	// HandshakeTimeout bounds an inbound TLS handshake.
	HandshakeTimeout = 10 * time.Second
	// maxHandshakes bounds the inbound handshakes in progress at once;
	// further connections wait in the kernel's accept queue.
	maxHandshakes = 64
	// maxPool and timeout configure the network transport as
	// raft.NewTCPTransport's callers in Consul and Nomad do.
	maxPool = 3
	timeout = 10 * time.Second
)

// NewTransport listens on bind and returns a Raft network transport over
// mutual TLS with b's certificate, admitting and dialing brokers only. The
// transport tells peers to reach it at advertise, which must not be an
// unspecified address (0.0.0.0); when advertise is nil the listener's own
// address is used.
func NewTransport(bind string, advertise net.Addr, b *pki.Bundle, logger hclog.Logger) (*raft.NetworkTransport, error) {
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "raft-net"})
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft advertise address %v is not one peers can dial; give the node's reachable IP address", advertise)
	}
	stream := newStreamLayer(ln, advertise, b.MutualServerConfig(pki.KindBroker), b.ClientConfig(pki.KindBroker), logger)
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: maxPool,
		Timeout: timeout,
		Logger:  logger,
	}), nil
}

// NewStreamLayer returns a stream layer that accepts connections from ln
// and completes a TLS handshake with server before handing each to Raft,
// and dials with client. Addr returns advertise. The configurations decide
// whom to admit; NewTransport uses pki.Bundle.MutualServerConfig and
// ClientConfig, each restricted to brokers. Closing the stream layer
// closes ln.
func NewStreamLayer(ln net.Listener, advertise net.Addr, server, client *tls.Config) raft.StreamLayer {
	return newStreamLayer(ln, advertise, server, client, hclog.NewNullLogger())
}

func newStreamLayer(ln net.Listener, advertise net.Addr, server, client *tls.Config, logger hclog.Logger) *streamLayer {
	if advertise == nil {
		advertise = ln.Addr()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &streamLayer{
		ln:        ln,
		advertise: advertise,
		server:    server,
		client:    client,
		log:       logger,
		ctx:       ctx,
		cancel:    cancel,
		accepted:  make(chan accepted),
		slots:     make(chan struct{}, maxHandshakes),
	}
	go s.acceptLoop()
	return s
}

type streamLayer struct {
	ln             net.Listener
	advertise      net.Addr
	server, client *tls.Config
	log            hclog.Logger

	ctx    context.Context // done once closed
	cancel context.CancelFunc
	// accepted carries handshaken connections, and the listener's errors,
	// to Accept. It is unbuffered, so that a listener error reaches Raft,
	// which backs off, before the next ln.Accept.
	accepted chan accepted
	slots    chan struct{} // one per handshake in progress

	closeOnce sync.Once
	closeErr  error
}

type accepted struct {
	conn net.Conn
	err  error
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) acceptLoop() {
	for {
		conn, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			s.Close()
			return
		}
		if err != nil {
			select {
			case s.accepted <- accepted{err: err}:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		select {
		case s.slots <- struct{}{}:
			go s.handshake(conn)
		case <-s.ctx.Done():
			conn.Close()
			return
		}
	}
}

// handshake completes conn's TLS handshake and passes it to Accept, or
// drops it.
func (s *streamLayer) handshake(conn net.Conn) {
	defer func() { <-s.slots }()
	ctx, cancel := context.WithTimeout(s.ctx, HandshakeTimeout)
	defer cancel()
	tc := tls.Server(conn, s.server)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		if errors.Is(err, io.EOF) || s.ctx.Err() != nil {
			// Probes, health checks and our own shutdown.
			s.log.Debug("raft connection closed before its TLS handshake completed", "remote", conn.RemoteAddr(), "error", err)
		} else {
			s.log.Warn("refused a raft connection: TLS handshake failed", "remote", conn.RemoteAddr(), "error", err)
		}
		return
	}
	select {
	case s.accepted <- accepted{conn: tc}:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection whose TLS handshake succeeded. It
// returns an error only when the listener fails or is closed.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case a := <-s.accepted:
		return a.conn, a.err
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the listener. Connections already
// returned by Accept stay open.
func (s *streamLayer) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.closeErr = s.ln.Close()
	})
	return s.closeErr
}

// Addr returns the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to address and completes a TLS handshake, both within
// timeout.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	return d.Dial("tcp", string(address))
}
