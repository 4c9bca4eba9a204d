package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker"
	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
)

// actorHeader carries the certificate identity of the original caller of a
// request a follower forwards to the leader. The leader believes it only
// from another broker. A caller with a session credential needs no such
// header: the leader checks the forwarded authorization header itself.
const actorHeader = "labfed-actor"

// How a caller authenticated.
const (
	MethodSession     = "session"
	MethodCertificate = "certificate"
	MethodDevelopment = "development"
)

// Principal is an authenticated caller: a person (by session credential or
// administrator certificate), a site's agent or broker (by certificate), or
// anyone in development mode.
type Principal struct {
	Method string
	// User is the directory user the caller acts as; nil for brokers,
	// agents and development mode.
	User *directory.User
	// Cert is the caller's certificate identity when it authenticated
	// with one.
	Cert *pki.Identity
	// Session is the session credential used, when Method is "session".
	Session *directory.Session

	// target and targetSite name the user a site administrator was
	// allowed to act on; the command carries them as a guard.
	target, targetSite string
}

// Actor names the caller in the directory's records: the user for a session,
// the certificate identity ("rutgers/admin/rhea") for a certificate.
func (p *Principal) Actor() string {
	switch {
	case p.Method == MethodDevelopment:
		return "dev-insecure"
	case p.Cert != nil:
		return p.Cert.String()
	}
	return p.User.Name
}

// String describes the caller in refusals.
func (p *Principal) String() string {
	switch {
	case p.Method == MethodDevelopment:
		return "development mode"
	case p.User != nil:
		roles := p.User.Roles
		if len(roles) == 0 {
			roles = []string{directory.RoleResearcher}
		}
		return fmt.Sprintf("user %s (%s)", p.User.Name, strings.Join(roles, ", "))
	}
	return "certificate " + p.Cert.String()
}

func (p *Principal) hasRole(r string) bool {
	return p.User != nil && slices.Contains(p.User.Roles, r)
}

// Coordinator reports whether the caller may act federation-wide.
func (p *Principal) Coordinator() bool {
	return p.Method == MethodDevelopment || p.hasRole(directory.RoleCoordinator)
}

// AdminOf reports whether the caller administers site: a coordinator or the
// site's site-admin.
func (p *Principal) AdminOf(site string) bool {
	return p.Coordinator() || p.hasRole(directory.RoleSiteAdminPrefix+site)
}

// AnyAdmin reports whether the caller administers some site.
func (p *Principal) AnyAdmin() bool {
	if p.Coordinator() {
		return true
	}
	return p.User != nil && slices.ContainsFunc(p.User.Roles, func(r string) bool {
		return strings.HasPrefix(r, directory.RoleSiteAdminPrefix)
	})
}

// Is reports whether the caller is the directory user name.
func (p *Principal) Is(name string) bool { return p.User != nil && p.User.Name == name }

// AgentOf reports whether the caller is an agent of site.
func (p *Principal) AgentOf(site string) bool {
	return p.Cert != nil && p.Cert.Kind == pki.KindAgent && p.Cert.Site == site
}

// Broker reports whether the caller is a broker node.
func (p *Principal) Broker() bool {
	return p.Method == MethodDevelopment || (p.Cert != nil && p.Cert.Kind == pki.KindBroker && p.User == nil)
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller the interceptor authenticated.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// SessionTokenPrefix starts every session credential, so a leaked one is
// easy to recognise (and to scan for).
const SessionTokenPrefix = "lfs_"

// SessionDigest is the directory key of a session credential.
func SessionDigest(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func bearer(ctx context.Context) (string, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", true, status.Error(codes.Unauthenticated, "more than one authorization header; send one session credential")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || !strings.HasPrefix(tok, SessionTokenPrefix) || len(tok) > 256 {
		return "", true, status.Error(codes.Unauthenticated, "the authorization header is not a labfed session credential; run labfed login")
	}
	return tok, true, nil
}

var errNoCredential = status.Error(codes.Unauthenticated, "no credential: log in with labfed login, or give a federation certificate with --cert and --key")

// authenticate finds out who is calling. A session credential in the
// authorization header wins over the connection's certificate, so a broker
// forwarding a person's request is never mistaken for that person.
func (s *Server) authenticate(ctx context.Context) (*Principal, error) {
	tok, has, err := bearer(ctx)
	if err != nil {
		return nil, err
	}
	if has {
		return s.sessionPrincipal(ctx, tok)
	}
	if s.cfg.Peer == nil {
		return &Principal{Method: MethodDevelopment}, nil
	}
	id, err := s.peer(ctx)
	if err != nil {
		return nil, err
	}
	if id.Kind == pki.KindBroker && isForwarded(ctx) {
		if fwd, ok, err := forwardedIdentity(ctx); err != nil {
			return nil, err
		} else if ok {
			id = fwd
		}
	}
	p := &Principal{Method: MethodCertificate, Cert: &id}
	if id.Kind != pki.KindAdmin {
		return p, nil
	}
	// An administrator's certificate names a directory user of its site;
	// the directory, not the certificate, says what that user may do.
	err = s.local(ctx, func(d *directory.Directory) error {
		u, err := d.User(id.Name)
		if err != nil || u.Home != id.Site {
			return status.Errorf(codes.PermissionDenied, "certificate %s names no directory user %s of site %s; register the user (labfed user add %s --home %s) or log in with labfed login", id, id.Name, id.Site, id.Name, id.Site)
		}
		if u.Status != directory.StatusActive {
			return status.Errorf(codes.PermissionDenied, "user %s is %s; ask your site administrator", u.Name, u.Status)
		}
		p.User = u
		return nil
	})
	return p, err
}

func (s *Server) peer(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if ok {
		if ti, isTLS := p.AuthInfo.(credentials.TLSInfo); isTLS && len(ti.State.VerifiedChains) == 0 {
			return pki.Identity{}, errNoCredential
		}
	}
	return s.cfg.Peer(ctx)
}

// forwardedIdentity parses the certificate identity a forwarding broker
// names ("rutgers/admin/rhea").
func forwardedIdentity(ctx context.Context) (pki.Identity, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	a := md.Get(actorHeader)
	if len(a) == 0 {
		return pki.Identity{}, false, nil
	}
	if len(a) != 1 || a[0] == "" {
		return pki.Identity{}, false, status.Error(codes.Unauthenticated, "a forwarded request must name exactly one caller")
	}
	parts := strings.Split(a[0], "/")
	if len(parts) != 3 {
		return pki.Identity{}, false, status.Errorf(codes.Unauthenticated, "forwarded caller %q is not SITE/KIND/NAME", a[0])
	}
	id := pki.Identity{Site: parts[0], Kind: parts[1], Name: parts[2]}
	if err := id.Validate(); err != nil {
		return pki.Identity{}, false, status.Errorf(codes.Unauthenticated, "forwarded caller %q: %v", a[0], err)
	}
	return id, true, nil
}

func (s *Server) sessionPrincipal(ctx context.Context, tok string) (*Principal, error) {
	id := SessionDigest(tok)
	p := &Principal{Method: MethodSession}
	err := s.local(ctx, func(d *directory.Directory) error {
		sess, err := d.Session(id)
		if err != nil {
			return err
		}
		u, err := d.User(sess.User)
		if err != nil {
			return err
		}
		p.Session, p.User = sess, u
		return nil
	})
	if broker.KindOf(err) == broker.ErrNotFound && !s.cfg.Replica.IsLeader() && !isForwarded(ctx) {
		// A session created a moment ago may not have reached this
		// follower yet; the leader has it.
		id, api := s.cfg.Replica.Leader()
		return nil, &broker.NotLeaderError{LeaderID: id, LeaderAPI: api}
	}
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "this session credential is not known to the federation (revoked, expired or never issued); run labfed login")
	}
	if now := s.cfg.Now(); p.Session.ExpiredAt(now) {
		return nil, status.Errorf(codes.Unauthenticated, "your session expired at %s; run labfed login", p.Session.Expires.UTC().Format(time.RFC3339))
	}
	if p.User.Status != directory.StatusActive {
		return nil, status.Errorf(codes.PermissionDenied, "user %s is %s; ask your site administrator", p.User.Name, p.User.Status)
	}
	return p, nil
}

// local reads this node's own state.
func (s *Server) local(ctx context.Context, fn func(*directory.Directory) error) error {
	return s.cfg.Replica.Read(ctx, true, fn)
}

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
		return pki.Identity{}, errNoCredential
	}
	id, err := pki.PeerIdentity(ti.State)
	if err != nil {
		return pki.Identity{}, status.Errorf(codes.Unauthenticated, "client certificate has no federation identity: %v", err)
	}
	return id, nil
}
