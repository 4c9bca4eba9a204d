package rpc

import (
	"context"
	"crypto/x509"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker/pki"
)

// actorHeader carries the original caller of a request a follower forwards
// to the leader. The leader believes it only from another broker.
const actorHeader = "labfed-actor"

// PeerChecker re-checks a verified peer certificate on every call (see
// pki.Bundle.CheckPeer); Config.Peer built with it ends a revoked caller's
// access at its next request, not only at its next connection.
func PeerChecker(check func(*x509.Certificate) (pki.Identity, error)) func(context.Context) (pki.Identity, error) {
	return func(ctx context.Context) (pki.Identity, error) {
		if _, err := PeerIdentity(ctx); err != nil {
			return pki.Identity{}, err
		}
		p, _ := peer.FromContext(ctx)
		leaf := p.AuthInfo.(credentials.TLSInfo).State.VerifiedChains[0][0]
		id, err := check(leaf)
		if err != nil {
			return pki.Identity{}, status.Errorf(codes.Unauthenticated, "client certificate refused: %v", err)
		}
		return id, nil
	}
}

// CertActorWith is CertActor with the caller's identity taken from peer.
func CertActorWith(peerID func(context.Context) (pki.Identity, error)) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		id, err := peerID(ctx)
		if err != nil {
			return "", err
		}
		return actorOf(ctx, id), nil
	}
}

// PeerIdentity returns the federation identity in the caller's verified
// TLS client certificate.
func PeerIdentity(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer information on this connection")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "this connection is not TLS; connect with the federation CA (--ca)")
	}
	if len(ti.State.VerifiedChains) == 0 {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no client certificate was presented; give a federation certificate with --cert and --key")
	}
	id, err := pki.PeerIdentity(ti.State)
	if err != nil {
		return pki.Identity{}, status.Errorf(codes.Unauthenticated, "client certificate has no federation identity: %v", err)
	}
	return id, nil
}

// CertActor names the caller by its federation certificate
// ("rutgers/admin/rhea"). A request forwarded by another broker is
// attributed to the caller that broker names.
func CertActor(ctx context.Context) (string, error) {
	id, err := PeerIdentity(ctx)
	if err != nil {
		return "", err
	}
	return actorOf(ctx, id), nil
}

func actorOf(ctx context.Context, id pki.Identity) string {
	if id.Kind == pki.KindBroker && isForwarded(ctx) {
		md, _ := metadata.FromIncomingContext(ctx)
		if a := md.Get(actorHeader); len(a) == 1 && a[0] != "" {
			return a[0]
		}
	}
	return id.String()
}
