package rpc

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// Notifier tells WatchTrust when the directory changed. A Replica that
// also implements it lets updates go out the moment a lock or key is
// applied; without it the stream polls every 100 ms.
type Notifier interface {
	// Changed returns a channel closed at the next change.
	Changed() <-chan struct{}
	AppliedIndex() uint64
}

// LeaderContacter is a Replica that can say whether it is in touch with
// the Raft leader. A broker cut off from the majority stops its trust
// streams rather than send heartbeats over stale state: its verifiers
// then see the silence and fail closed after their MaxStale.
type LeaderContacter interface {
	LeaderContact(max time.Duration) bool
}

// MaxLeaderSilence is how long a follower may go without hearing from
// the leader before its trust streams end.
const MaxLeaderSilence = 5 * time.Second

// KeyRotator replaces this broker's signing key.
type KeyRotator interface {
	// Rotate creates a new key, publishes it, waits until the directory has
	// committed it, and only then signs with it. It returns the old kid.
	Rotate(ctx context.Context) (oldKID string, key *directory.SigningKey, err error)
}

// DefaultHeartbeat is how often WatchTrust says it is still there when
// nothing changes; verifiers measure their contact with the broker by it.
const DefaultHeartbeat = time.Second

// StreamInterceptor authenticates the caller of a streaming RPC and checks
// its access rule. Streams are served from the local replica and never
// forwarded.
func (s *Server) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	r, ok := policy[info.FullMethod]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s has no access rule; refusing it", info.FullMethod)
	}
	ctx := ss.Context()
	if !r.public {
		p, err := s.authenticate(ctx)
		if err != nil {
			return toStatus(err)
		}
		ctx = withPrincipal(ctx, p)
		if r.check != nil {
			if err := r.check(s, ctx, p, nil); err != nil {
				return toStatus(err)
			}
		}
		release, err := s.openStream(p.Actor())
		if err != nil {
			return err
		}
		defer release()
	}
	return toStatus(handler(srv, &principalStream{ServerStream: ss, ctx: ctx}))
}

// MaxStreamsPerCaller bounds the streams one caller keeps open on a
// broker: an agent needs one trust stream, a person a few follows.
const MaxStreamsPerCaller = 16

// openStream counts a stream of actor, refusing one beyond the bound.
func (s *Server) openStream(actor string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = map[string]int{}
	}
	if s.streams[actor] >= MaxStreamsPerCaller {
		return nil, status.Errorf(codes.ResourceExhausted, "%s already has %d streams open on this broker; close some", actor, MaxStreamsPerCaller)
	}
	s.streams[actor]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.streams[actor]--; s.streams[actor] == 0 {
			delete(s.streams, actor)
		}
	}, nil
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (p *principalStream) Context() context.Context { return p.ctx }

// WatchTrust streams the signing keys and revocation locks of the local
// replica: everything at once, then again after every change to either,
// and a heartbeat when nothing changed for a while.
func (s *Server) WatchTrust(r *pb.WatchTrustRequest, stream grpc.ServerStreamingServer[pb.TrustUpdate]) error {
	beat := DefaultHeartbeat
	if h := r.GetHeartbeatSeconds(); h > 0 {
		if h > 30 {
			return broker.Errorf(broker.ErrInvalid, "heartbeat of %d s is too long; ask for at most 30", h)
		}
		beat = time.Duration(h) * time.Second
	}
	ctx := stream.Context()
	if _, ok := PrincipalFrom(ctx); !ok {
		// Registered without StreamInterceptor: refuse rather than serve
		// unauthenticated.
		return status.Error(codes.Unauthenticated, "the server has no stream interceptor; refusing")
	}
	n, _ := s.cfg.Replica.(Notifier)
	var last *pb.TrustUpdate
	for {
		var changed <-chan struct{}
		if n != nil {
			changed = n.Changed()
		}
		u, err := s.trustState(ctx)
		if err != nil {
			return err
		}
		if lc, ok := s.cfg.Replica.(LeaderContacter); ok && !lc.LeaderContact(MaxLeaderSilence) {
			return status.Errorf(codes.Unavailable, "this broker has lost contact with the Raft leader, so revocations may not reach it; connect to another broker")
		}
		u.Sent = timestamppb.New(s.cfg.Now())
		if last == nil || !sameTrust(last, u) {
			u.Full = true
			last = u
		} else {
			u = &pb.TrustUpdate{Index: u.Index, Sent: u.Sent}
		}
		if err := stream.Send(u); err != nil {
			return err
		}
		if changed == nil {
			t := make(chan struct{})
			time.AfterFunc(100*time.Millisecond, func() { close(t) })
			changed = t
		}
		timer := time.NewTimer(beat)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// GetTrust answers the trust state once, from the leader unless stale.
func (s *Server) GetTrust(ctx context.Context, r *pb.GetTrustRequest) (*pb.TrustUpdate, error) {
	u, err := s.trustStateRead(ctx, r.GetStale())
	if err != nil {
		return nil, err
	}
	u.Full, u.Sent = true, timestamppb.New(s.cfg.Now())
	return u, nil
}

func (s *Server) trustState(ctx context.Context) (*pb.TrustUpdate, error) {
	return s.trustStateRead(ctx, true)
}

func (s *Server) trustStateRead(ctx context.Context, stale bool) (*pb.TrustUpdate, error) {
	u := &pb.TrustUpdate{}
	now := s.cfg.Now()
	err := s.cfg.Replica.Read(ctx, stale, func(d *directory.Directory) error {
		if n, ok := s.cfg.Replica.(Notifier); ok {
			u.Index = n.AppliedIndex()
		}
		keys, err := d.SigningKeys()
		if err != nil {
			return err
		}
		for _, k := range keys {
			u.Keys = append(u.Keys, keyToPB(k))
		}
		locks, err := d.Locks(now)
		if err != nil {
			return err
		}
		for _, l := range locks {
			u.Locks = append(u.Locks, lockToPB(l))
		}
		return nil
	})
	return u, err
}

// sameTrust reports whether two updates carry the same keys and locks.
func sameTrust(a, b *pb.TrustUpdate) bool {
	return slices.EqualFunc(a.Keys, b.Keys, func(x, y *pb.SigningKey) bool { return proto.Equal(x, y) }) &&
		slices.EqualFunc(a.Locks, b.Locks, func(x, y *pb.Lock) bool { return proto.Equal(x, y) })
}

// RotateKey replaces the signing key of the broker that serves it.
func (s *Server) RotateKey(ctx context.Context, _ *pb.RotateKeyRequest) (*pb.RotateKeyResponse, error) {
	if s.cfg.Keys == nil {
		return nil, broker.Errorf(broker.ErrPrecondition, "this broker cannot rotate its signing key")
	}
	old, k, err := s.cfg.Keys.Rotate(ctx)
	if err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("rotated the capability signing key", "old", old, "new", k.KID, "by", caller(ctx).Actor())
	return &pb.RotateKeyResponse{OldKid: old, Key: keyToPB(k)}, nil
}
