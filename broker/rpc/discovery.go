package rpc

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"maps"
	"slices"
	"strings"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// Discovery is the gossip view a broker answers discovery questions from:
// what every site offers and how far apart the sites are.
type Discovery interface {
	Members() []broker.Member
	Instruments() []broker.Instrument
	// Compute lists every site's compute targets, with the RTT from site
	// near when near is not empty.
	Compute(near string) []broker.ComputeTarget
	// Place ranks the compute targets for job.
	Place(job broker.Job) ([]broker.Placement, []broker.Exclusion)
}

func ms(d interface{ Seconds() float64 }) float64 { return d.Seconds() * 1000 }

func (s *Server) discovery() (Discovery, error) {
	if s.cfg.Discovery == nil {
		return nil, broker.Errorf(broker.ErrPrecondition, "this broker runs without gossip, so it knows no offers; ask another site's broker")
	}
	return s.cfg.Discovery, nil
}

func (s *Server) ListMembers(context.Context, *pb.ListMembersRequest) (*pb.ListMembersResponse, error) {
	d, err := s.discovery()
	if err != nil {
		return nil, err
	}
	resp := &pb.ListMembersResponse{}
	for _, m := range d.Members() {
		resp.Members = append(resp.Members, &pb.Member{Name: m.Name, Site: m.Site, Addr: m.Addr, Status: m.Status, RttMs: ms(m.RTT), HasRtt: m.HasRTT})
	}
	return resp, nil
}

func (s *Server) ListInstruments(_ context.Context, r *pb.ListInstrumentsRequest) (*pb.ListInstrumentsResponse, error) {
	d, err := s.discovery()
	if err != nil {
		return nil, err
	}
	resp := &pb.ListInstrumentsResponse{}
	for _, in := range d.Instruments() {
		if (r.GetType() != "" && !strings.EqualFold(in.Type, r.GetType())) || (r.GetSite() != "" && in.Site != r.GetSite()) || (r.GetStatus() != "" && in.Status != r.GetStatus()) {
			continue
		}
		resp.Instruments = append(resp.Instruments, &pb.Instrument{Id: in.ID, Site: in.Site, Type: in.Type, Model: in.Model, Status: in.Status})
	}
	return resp, nil
}

func (s *Server) checkSite(ctx context.Context, site string) error {
	if err := broker.ValidateName("site", site); err != nil {
		return err
	}
	return s.local(ctx, func(d *directory.Directory) error {
		_, err := d.Site(site)
		return err
	})
}

func (s *Server) ListCompute(ctx context.Context, r *pb.ListComputeRequest) (*pb.ListComputeResponse, error) {
	d, err := s.discovery()
	if err != nil {
		return nil, err
	}
	if r.GetNear() != "" {
		if err := s.checkSite(ctx, r.GetNear()); err != nil {
			return nil, err
		}
	}
	if r.GetGpus() < 0 {
		return nil, broker.Errorf(broker.ErrInvalid, "--gpus %d is negative", r.GetGpus())
	}
	resp := &pb.ListComputeResponse{}
	for _, c := range d.Compute(r.GetNear()) {
		if int(r.GetGpus()) > c.GPUsFree || !hasSoftware(c.Software, r.GetSoftware()) {
			continue
		}
		resp.Targets = append(resp.Targets, &pb.ComputeTarget{
			Id: c.ID, Site: c.Site, Kind: c.Kind, Gpus: int32(c.GPUs), GpusFree: int32(c.GPUsFree), QueueWaitS: c.QueueWait.Seconds(),
			Software: maps.Clone(c.Software), Status: c.Status, RttMs: ms(c.RTT), HasRtt: c.HasRTT,
		})
	}
	return resp, nil
}

func hasSoftware(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (s *Server) Place(ctx context.Context, r *pb.PlaceRequest) (*pb.PlaceResponse, error) {
	d, err := s.discovery()
	if err != nil {
		return nil, err
	}
	if r.GetDataSite() == "" {
		return nil, broker.Errorf(broker.ErrInvalid, "give the site that holds the job's data (--data-site SITE)")
	}
	if err := s.checkSite(ctx, r.GetDataSite()); err != nil {
		return nil, err
	}
	if r.GetGpus() < 0 {
		return nil, broker.Errorf(broker.ErrInvalid, "--gpus %d is negative", r.GetGpus())
	}
	for k, v := range r.GetSoftware() {
		if k == "" || v == "" {
			return nil, broker.Errorf(broker.ErrInvalid, "software %q=%q: give NAME=VERSION, such as cryosparc=4.6.2", k, v)
		}
	}
	ranked, excluded := d.Place(broker.Job{DataSite: r.GetDataSite(), GPUs: int(r.GetGpus()), Software: r.GetSoftware()})
	resp := &pb.PlaceResponse{}
	for _, p := range ranked {
		resp.Ranked = append(resp.Ranked, &pb.Placement{Target: p.Target, Score: p.Score, RttMs: ms(p.RTT), HasRtt: p.HasRTT, QueueWaitS: p.QueueWait.Seconds(), GpusFree: int32(p.GPUsFree), Reason: p.Reason})
	}
	for _, e := range excluded {
		resp.Excluded = append(resp.Excluded, &pb.Excluded{Target: e.Target, Reason: e.Reason})
	}
	return resp, nil
}

// KeyResult is the outcome of a gossip key operation across the members.
type KeyResult struct {
	Members, Acked int
	// Failed says, per member, why it did not apply the change.
	Failed map[string]string
}

// GossipKeyring rotates the gossip encryption key (see gossip.Node).
type GossipKeyring interface {
	KeyOp(op string, key []byte) (KeyResult, error)
	Keys() [][]byte
}

func (s *Server) GossipKeys(_ context.Context, r *pb.GossipKeysRequest) (*pb.GossipKeysResponse, error) {
	if s.cfg.GossipKeys == nil {
		return nil, broker.Errorf(broker.ErrPrecondition, "this broker's gossip is not encrypted (development mode); there are no keys to rotate")
	}
	resp := &pb.GossipKeysResponse{}
	switch r.GetOp() {
	case "list":
	case "install", "use", "remove":
		key, err := base64.StdEncoding.DecodeString(r.GetKey())
		if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
			return nil, broker.Errorf(broker.ErrInvalid, "the key must be base64 of 16, 24 or 32 bytes (labfed gossip keygen FILE writes one)")
		}
		res, err := s.cfg.GossipKeys.KeyOp(r.GetOp(), key)
		resp.Members, resp.Acked = uint32(res.Members), uint32(res.Acked)
		for _, m := range slices.Sorted(maps.Keys(res.Failed)) {
			resp.Failed = append(resp.Failed, m+": "+res.Failed[m])
		}
		if err != nil && res.Members == 0 {
			return nil, broker.Errorf(broker.ErrPrecondition, "%s key: %v", r.GetOp(), err)
		}
	default:
		return nil, broker.Errorf(broker.ErrInvalid, "unknown key operation %q; use install, use, remove or list", r.GetOp())
	}
	for _, k := range s.cfg.GossipKeys.Keys() {
		sum := sha256.Sum256(k)
		resp.Fingerprints = append(resp.Fingerprints, hex.EncodeToString(sum[:8]))
	}
	return resp, nil
}

// StatusChange is a change to one item of this site's offer; nil fields
// stay as they are.
type StatusChange struct {
	ID         string
	Status     *string
	GPUsFree   *int
	QueueWaitS *float64
}

// OfferReporter changes this node's own offer.
type OfferReporter interface {
	Site() string
	Report(StatusChange) error
}

func (s *Server) ReportStatus(ctx context.Context, r *pb.ReportStatusRequest) (*pb.ReportStatusResponse, error) {
	if s.cfg.Reporter == nil {
		return nil, broker.Errorf(broker.ErrPrecondition, "this broker runs without gossip; it offers nothing to change")
	}
	site, _, ok := strings.Cut(r.GetId(), "/")
	if !ok {
		return nil, broker.Errorf(broker.ErrInvalid, "%q is not SITE/NAME of an instrument or compute target", r.GetId())
	}
	if site != s.cfg.Reporter.Site() {
		return nil, broker.Errorf(broker.ErrPrecondition, "%s is offered by site %s; report its status to a broker of %s, not of %s", r.GetId(), site, site, s.cfg.Reporter.Site())
	}
	c := StatusChange{ID: r.GetId(), Status: r.Status, QueueWaitS: r.QueueWaitS}
	if r.GpusFree != nil {
		n := int(r.GetGpusFree())
		c.GPUsFree = &n
	}
	if c.Status == nil && c.GPUsFree == nil && c.QueueWaitS == nil {
		return nil, broker.Errorf(broker.ErrInvalid, "nothing to change for %s; give --status, --gpus-free or --queue-wait", r.GetId())
	}
	if err := s.cfg.Reporter.Report(c); err != nil {
		return nil, err
	}
	return &pb.ReportStatusResponse{}, nil
}
