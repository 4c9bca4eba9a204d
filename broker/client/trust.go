package client

import (
	"context"
	"crypto/ed25519"

	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/trust"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// TrustSource is a broker as the source of a verifier's trust state
// (broker/trust).
func (c *Client) TrustSource() trust.Source {
	return trustSource{pb.NewTokenServiceClient(c.conn)}
}

type trustSource struct {
	tokens pb.TokenServiceClient
}

func (t trustSource) Watch(ctx context.Context, fn func(*trust.State)) error {
	stream, err := t.tokens.WatchTrust(ctx, &pb.WatchTrustRequest{})
	if err != nil {
		return err
	}
	for {
		u, err := stream.Recv()
		if err != nil {
			return err
		}
		if !u.GetFull() {
			fn(nil)
			continue
		}
		fn(TrustState(u.GetKeys(), u.GetLocks(), u.GetIndex()))
	}
}

// Fetch reads the state linearizably (the leader answers through the
// broker), so a kid published a moment ago is there even when the broker
// followed has not applied it yet.
func (t trustSource) Fetch(ctx context.Context) (*trust.State, error) {
	u, err := t.tokens.GetTrust(ctx, &pb.GetTrustRequest{})
	if err != nil {
		return nil, err
	}
	return TrustState(u.GetKeys(), u.GetLocks(), u.GetIndex()), nil
}

// TrustState converts the wire form of keys and locks.
func TrustState(keys []*pb.SigningKey, locks []*pb.Lock, index uint64) *trust.State {
	st := &trust.State{Index: index}
	for _, k := range keys {
		key := capability.Key{KID: k.GetKid(), Issuer: k.GetIssuer(), Public: ed25519.PublicKey(k.GetPublic()), Status: k.GetStatus(), NotBefore: k.GetNotBefore().AsTime()}
		if k.GetNotAfter() != nil {
			key.NotAfter = k.GetNotAfter().AsTime()
		}
		st.Keys = append(st.Keys, key)
	}
	for _, l := range locks {
		st.Locks = append(st.Locks, directory.Lock{ID: l.GetId(), Kind: l.GetKind(), Value: l.GetValue(), Reason: l.GetReason(), Created: l.GetCreated().AsTime(), Until: l.GetUntil().AsTime(), By: l.GetBy()})
	}
	return st
}
