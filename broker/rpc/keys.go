package rpc

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

func keyToPB(k *directory.SigningKey) *pb.SigningKey {
	out := &pb.SigningKey{Kid: k.KID, Issuer: k.Issuer, Public: k.Public, Status: k.Status, NotBefore: timestamppb.New(k.NotBefore), Reason: k.Reason}
	if k.NotAfter != nil {
		out.NotAfter = timestamppb.New(*k.NotAfter)
	}
	return out
}

func (s *Server) ListKeys(ctx context.Context, r *pb.ListKeysRequest) (*pb.ListKeysResponse, error) {
	resp := &pb.ListKeysResponse{}
	err := s.read(ctx, r.GetRead(), func(d *directory.Directory) error {
		keys, err := d.SigningKeys()
		for _, k := range keys {
			resp.Keys = append(resp.Keys, keyToPB(k))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// PublishKey publishes the calling broker's own signing key: the issuer
// comes from its certificate, never from the request.
func (s *Server) PublishKey(ctx context.Context, r *pb.PublishKeyRequest) (*pb.SigningKey, error) {
	var issuer string
	switch p := caller(ctx); {
	case p.Cert != nil:
		issuer = p.Cert.Name
	case s.cfg.Peer != nil:
		return nil, status.Error(codes.PermissionDenied, "only a broker publishes a signing key, its own")
	default:
		// Development mode: no certificates, and anyone may do anything.
		issuer = r.GetIssuer()
	}
	k, err := applyAs[directory.SigningKey](s, ctx, &directory.Command{PublishKey: &directory.PublishKey{KID: r.GetKid(), Issuer: issuer, Public: r.GetPublic()}})
	if err != nil {
		return nil, err
	}
	return keyToPB(k), nil
}

func (s *Server) RevokeKey(ctx context.Context, r *pb.RevokeKeyRequest) (*pb.SigningKey, error) {
	k, err := applyAs[directory.SigningKey](s, ctx, &directory.Command{RevokeKey: &directory.RevokeKey{KID: r.GetKid(), Reason: r.GetReason()}})
	if err != nil {
		return nil, err
	}
	return keyToPB(k), nil
}
