package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/broker/rpc"
	"github.com/labfed/labfed/federation/gossip"
	"github.com/labfed/labfed/federation/raftls"
	"github.com/labfed/labfed/federation/replica"
	pb "github.com/labfed/labfed/proto/labfed/v1"
	"github.com/labfed/labfed/storage/boltlog"
	"github.com/labfed/labfed/storage/boltstate"
)

// Options start a node.
type Options struct {
	Config *Config
	// Bootstrap starts a new federation with this node as its first voter.
	Bootstrap bool
	// Join lists API addresses of existing nodes to join through.
	Join     []string
	NonVoter bool
	// DevInsecure runs without TLS or authentication. It is refused unless
	// every listener is on loopback.
	DevInsecure bool
	Logger      *slog.Logger
	// Raft tunes Raft's configuration (tests shorten timeouts).
	Raft func(*raft.Config)
	// Gossip tunes the gossip configuration (tests shorten intervals).
	Gossip func(*gossip.Config)
}

// Node is a running broker node.
type Node struct {
	cfg     *Config
	log     *slog.Logger
	replica *replica.Replica
	server  *rpc.Server
	grpc    *grpc.Server
	lis     net.Listener
	done    chan error
	// stopJoin ends the background join loop on Close.
	stopJoin context.CancelFunc
	dial     func(addr string) (*grpc.ClientConn, error)
	gossip   *gossip.Node
	jwks     *jwksServer // the trust bundle for outside verifiers (jwks.go)
	// keys is this broker's capability signing key.
	keys *signingKeys

	closeOnce sync.Once
	closeErr  error
}

// Start opens the node's stores, starts Raft and the gRPC API, and (with
// Join) asks an existing node to add it. It returns once the API is
// serving; joining continues in the background until it succeeds.
func Start(ctx context.Context, o Options) (*Node, error) {
	c := o.Config
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("node", c.Node)
	if o.NonVoter && len(o.Join) == 0 {
		return nil, errors.New("--nonvoter only applies when joining; give --join ADDR too")
	}
	var bundle *pki.Bundle
	if o.DevInsecure {
		for _, a := range []string{c.Listen.API, c.Listen.Raft, c.Listen.Gossip, c.Listen.HTTP} {
			if !IsLoopback(a) {
				return nil, fmt.Errorf("--dev-insecure refuses to listen on %s: without TLS and authentication only loopback addresses are allowed", a)
			}
		}
		log.Warn("development mode: the API and Raft run without TLS or authentication; anyone on this host can change the directory")
	} else {
		if c.TLS.Cert == "" {
			return nil, errors.New("the config has no tls section; create the node's certificate with labfed init (or labfed ca issue), or run a loopback-only development node with --dev-insecure")
		}
		var err error
		bundle, err = pki.Load(pki.Files{CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key, CRL: c.TLS.CRL})
		if err != nil {
			return nil, err
		}
		if id := bundle.Identity(); id.Kind != pki.KindBroker || id.Site != c.Site || id.Name != c.Node {
			return nil, fmt.Errorf("certificate %s is not for broker %s of site %s; issue one with labfed ca issue --site %s --kind broker --name %s", c.TLS.Cert, c.Node, c.Site, c.Site, c.Node)
		}
	}

	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	logs, err := boltlog.Open(filepath.Join(c.DataDir, "raft.db"), boltlog.Options{})
	if err != nil {
		return nil, err
	}
	closeOnErr := func(cl interface{ Close() error }) {
		if err != nil {
			cl.Close()
		}
	}
	defer closeOnErr(logs)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(c.DataDir, 2, replica.HCLog(log))
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	hasState, err := replica.HasState(logs, logs, snaps)
	if err != nil {
		return nil, err
	}
	fresh := o.Bootstrap && !hasState
	if fresh && !o.DevInsecure && c.Bootstrap.Coordinator.Name == "" {
		err = errors.New("--bootstrap needs a bootstrap.coordinator section (name, email) in the config: the federation's first coordinator, who may then register everyone else")
		return nil, err
	}
	state, err := boltstate.Create(filepath.Join(c.DataDir, "state.db"), directory.Buckets())
	if err != nil {
		return nil, err
	}
	defer closeOnErr(state)
	adv, err := net.ResolveTCPAddr("tcp", c.Advertise.Raft)
	if err != nil {
		return nil, fmt.Errorf("advertise.raft %q: %w", c.Advertise.Raft, err)
	}
	var trans *raft.NetworkTransport
	if bundle != nil {
		trans, err = raftls.NewTransport(c.Listen.Raft, adv, bundle, replica.HCLog(log))
	} else {
		trans, err = raft.NewTCPTransportWithLogger(c.Listen.Raft, adv, 5, 10*time.Second, replica.HCLog(log))
	}
	if err != nil {
		return nil, fmt.Errorf("listen for raft on %s: %w", c.Listen.Raft, err)
	}
	defer closeOnErr(trans)
	lis, err := net.Listen("tcp", c.Listen.API)
	if err != nil {
		return nil, fmt.Errorf("listen for the API on %s: %w", c.Listen.API, err)
	}
	defer closeOnErr(lis)
	httpLis, err := listenJWKS(c.Listen.HTTP) // jwks.go
	if err != nil {
		return nil, err
	}
	defer closeOnErr(httpLis)

	tune := func(rc *raft.Config) {
		if c.Raft.SnapshotThreshold > 0 {
			rc.SnapshotThreshold = c.Raft.SnapshotThreshold
		}
		if c.Raft.SnapshotInterval > 0 {
			rc.SnapshotInterval = c.Raft.SnapshotInterval
		}
		if c.Raft.TrailingLogs > 0 {
			rc.TrailingLogs = c.Raft.TrailingLogs
		}
		if o.Raft != nil {
			o.Raft(rc)
		}
	}
	rep, err := replica.New(replica.Config{
		Node:     directory.Node{ID: c.Node, Site: c.Site, RaftAddr: c.Advertise.Raft, APIAddr: c.Advertise.API, GossipAddr: c.Advertise.Gossip},
		UIDRange: c.uidRange, GIDRange: c.gidRange,
		LogStore: logs, StableStore: logs, SnapshotStore: snaps, State: state, Transport: trans,
		Bootstrap: o.Bootstrap, Raft: tune, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	verify, err := newVerifier(c)
	if err != nil {
		return nil, err
	}
	kid, signKey, err := loadSigningKey(c.DataDir, c.Node)
	if err != nil {
		rep.Shutdown()
		return nil, err
	}
	keys := &signingKeys{node: c.Node, path: filepath.Join(c.DataDir, signingKeyFile)}
	keys.cur.Store(capability.NewSigner(kid, c.Node, signKey))
	gsp, err := startGossip(c, o.DevInsecure, log, o.Gossip)
	if err != nil {
		rep.Shutdown()
		return nil, err
	}
	rc := rpc.Config{
		Replica:   rep,
		Dial:      dialInsecure,
		Logger:    log,
		Login:     rpc.LoginConfig{Site: c.Site, Issuers: loginIssuers(c), SessionTTL: c.OIDC.SessionTTL, Verify: verify},
		Discovery: discovery{gsp},
		Reporter:  reporter{site: c.Site, node: c.Node, g: gsp},
		Signer:    keys,
		Keys:      keys,
		Self:      pki.Identity{Site: c.Site, Kind: pki.KindBroker, Name: c.Node}.String(),
	}
	if c.Gossip.Keyring != "" {
		rc.GossipKeys = gossipKeys{gsp}
	}
	var gopts []grpc.ServerOption
	dial := dialInsecure
	if bundle != nil {
		// Brokers and agents present federation certificates; the CLI
		// may connect with the CA alone and is then refused by the
		// handlers until it authenticates.
		creds := credentials.NewTLS(bundle.ServerConfig(false))
		gopts = append(gopts, grpc.Creds(creds))
		clientTLS := bundle.ClientConfig(pki.KindBroker)
		dial = func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
		}
		peerID := rpc.PeerChecker(bundle.CheckPeer)
		rc.Peer, rc.Dial = peerID, dial
	}
	srv := rpc.NewServer(rc)
	g := grpc.NewServer(append(gopts, srv.ServerOptions()...)...)
	srv.Register(g)
	jctx, stopJoin := context.WithCancel(ctx)
	n := &Node{cfg: c, log: log, replica: rep, server: srv, grpc: g, lis: lis, done: make(chan error, 1), stopJoin: stopJoin, dial: dial, gossip: gsp}
	go joinGossip(jctx, gsp, rep, c.Gossip.Join, c.Node, log)
	if c.Audit.Retention > 0 {
		go n.archiveLoop(jctx)
	}
	n.keys = keys
	keys.publish = func(ctx context.Context, kid string, pub ed25519.PublicKey) error {
		return n.callSelf(ctx, func(ctx context.Context, d pb.DirectoryServiceClient) error {
			_, err := d.PublishKey(ctx, &pb.PublishKeyRequest{Kid: kid, Public: pub, Issuer: n.cfg.Node})
			return err
		})
	}
	keys.local = n.waitKeyActive
	keys.everywhere = n.waitKeyEverywhere
	go n.publishSigningKey(jctx, kid, signKey.Public().(ed25519.PublicKey))
	go func() { n.done <- g.Serve(lis) }()
	n.jwks = serveJWKS(httpLis, bundle, newJWKSHandler(rep, log), log) // jwks.go
	if len(o.Join) > 0 {
		go n.join(jctx, o.Join, !o.NonVoter)
	}
	if fresh && c.Bootstrap.Coordinator.Name != "" {
		if err := n.seed(ctx); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

func dialInsecure(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// join asks each address in turn to add this node until one succeeds.
func (n *Node) join(ctx context.Context, addrs []string, voter bool) {
	req := &pb.JoinRequest{
		Id: n.cfg.Node, Site: n.cfg.Site, RaftAddr: n.cfg.Advertise.Raft, ApiAddr: n.cfg.Advertise.API, GossipAddr: n.cfg.Advertise.Gossip, Nonvoter: !voter,
	}
	if n.cfg.uidRange != nil {
		req.UidRange = &pb.IDRange{Lo: n.cfg.uidRange.Lo, Hi: n.cfg.uidRange.Hi}
		req.GidRange = &pb.IDRange{Lo: n.cfg.gidRange.Lo, Hi: n.cfg.gidRange.Hi}
	}
	backoff := 200 * time.Millisecond
	for {
		for _, a := range addrs {
			conn, err := n.dial(a)
			if err != nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err = pb.NewClusterServiceClient(conn).Join(cctx, req)
			cancel()
			conn.Close()
			if err == nil {
				n.log.Info("joined the federation", "via", a)
				return
			}
			n.log.Warn("join failed; will retry", "via", a, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Addr returns the API address the node listens on.
func (n *Node) Addr() string { return n.lis.Addr().String() }

// Replica returns the node's replica.
func (n *Node) Replica() *replica.Replica { return n.replica }

// Gossip returns the node's gossip member.
func (n *Node) Gossip() *gossip.Node { return n.gossip }

// Done receives the gRPC server's exit error once, when it stops serving.
func (n *Node) Done() <-chan error { return n.done }

// Close stops the API, gossip and Raft and closes the stores. Closing
// twice is harmless.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	n.stopJoin()
	stopped := make(chan struct{})
	go func() { n.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		n.grpc.Stop()
	}
	n.jwks.Close()
	n.server.Close()
	// Say goodbye so the others list this site as left, not failed.
	if err := n.gossip.Leave(time.Second); err != nil {
		n.log.Debug("gossip leave", "err", err)
	}
	n.gossip.Shutdown()
	return n.replica.Shutdown()
}
