package node

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	"github.com/labfed/labfed/federation/replica"
)

// jwksPath is where every broker serves the federation's trust bundle, the
// capability signing keys verifiers may trust, as a JWK Set (RFC 7517).
const jwksPath = "/.well-known/jwks.json"

// jwksContentType is the media type of a JWK Set (RFC 7517 §8.5).
const jwksContentType = "application/jwk-set+json"

// jwksCacheControl bounds how long a verifier that honours it keeps
// trusting a key after its revocation has reached this broker: a minute,
// small beside the hours a capability token lives, yet long enough that
// verifiers do not fetch on every token. A verifier meeting a kid it does
// not know should fetch again anyway, as a new broker signs before its key
// reaches everyone's cache.
const jwksCacheControl = "max-age=60"

// jwksHandler serves the trust bundle at jwksPath. It builds the document
// on every request from the local replica: a stale read, as the document
// is itself a cache for verifiers outside the federation.
type jwksHandler struct {
	// keys returns every signing key of the directory. It is called
	// concurrently, once per request.
	keys func(context.Context) ([]*directory.SigningKey, error)
	now  func() time.Time
	log  *slog.Logger

	// warned holds the kids of keys left out of the document, so that
	// each is logged once and not on every request.
	warned sync.Map
}

func newJWKSHandler(rep *replica.Replica, log *slog.Logger) *jwksHandler {
	return &jwksHandler{
		keys: func(ctx context.Context) (keys []*directory.SigningKey, err error) {
			err = rep.Read(ctx, true, func(d *directory.Directory) error {
				keys, err = d.SigningKeys()
				return err
			})
			return keys, err
		},
		now: time.Now,
		log: log,
	}
}

func (h *jwksHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != jwksPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the key set is read with GET", http.StatusMethodNotAllowed)
		return
	}
	keys, err := h.keys(r.Context())
	if err != nil {
		h.log.Warn("JWKS: read the signing keys", "err", err)
		http.Error(w, "the trust bundle is unavailable; try again shortly", http.StatusServiceUnavailable)
		return
	}
	doc, skipped := jwksDocument(keys, h.now())
	for _, kid := range skipped {
		if _, seen := h.warned.LoadOrStore(kid, true); !seen {
			h.log.Warn("JWKS: left out a signing key that is not a valid Ed25519 public key", "kid", kid)
		}
	}
	hdr := w.Header()
	hdr.Set("Content-Type", jwksContentType)
	hdr.Set("Cache-Control", jwksCacheControl)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(doc)
	}
}

// jwksDocument returns the JWK Set {"keys":[…]} of the keys in the bundle
// at now (active, or retiring and still verifying), sorted by kid, each an
// RFC 8037 OKP key: {"kty":"OKP","crv":"Ed25519","x":…,"kid":…,
// "alg":"EdDSA","use":"sig"}. It leaves out, and returns the kids of, keys
// go-jose refuses to encode: the directory checks only a key's length, and
// one bad key must not take the whole set down.
func jwksDocument(keys []*directory.SigningKey, now time.Time) (doc []byte, skipped []string) {
	keys = slices.DeleteFunc(slices.Clone(keys), func(k *directory.SigningKey) bool { return !k.InBundle(now) })
	slices.SortFunc(keys, func(a, b *directory.SigningKey) int { return cmp.Compare(a.KID, b.KID) })
	set := struct {
		Keys []json.RawMessage `json:"keys"`
	}{Keys: []json.RawMessage{}}
	for _, k := range keys {
		b, err := json.Marshal(jose.JSONWebKey{Key: ed25519.PublicKey(k.Public), KeyID: k.KID, Algorithm: string(jose.EdDSA), Use: "sig"})
		if err != nil {
			skipped = append(skipped, k.KID)
			continue
		}
		set.Keys = append(set.Keys, b)
	}
	doc, err := json.Marshal(set)
	if err != nil {
		panic(err) // raw messages that json.Marshal itself produced
	}
	return doc, skipped
}

// listenJWKS opens the JWKS endpoint's listener; Start opens it with the
// others, so that a taken port fails Start before anything runs.
func listenJWKS(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the JWKS endpoint (listen.http) on %s: %w", addr, err)
	}
	return lis, nil
}

// jwksTLS is the TLS configuration of the JWKS endpoint: the broker's
// server certificate, TLS 1.3 like the API, and no client certificate.
// The verifiers it serves are outside the federation and hold none, and
// the document holds public keys only (as Vault's and SPIRE's JWKS
// endpoints serve theirs); not even asking for one keeps a verifier whose
// HTTP client presents a certificate of another CA from being refused.
func jwksTLS(b *pki.Bundle) *tls.Config {
	cfg := b.ServerConfig(false)
	cfg.ClientAuth = tls.NoClientCert
	cfg.ClientCAs = nil
	cfg.VerifyConnection = nil
	return cfg
}

// jwksServer is the running JWKS endpoint.
type jwksServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// serveJWKS serves h on lis: HTTPS with the broker's certificate, or
// plain HTTP when bundle is nil (development mode, which Start allows on
// loopback only).
func serveJWKS(lis net.Listener, bundle *pki.Bundle, h http.Handler, log *slog.Logger) *jwksServer {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		// Anyone may connect, so failed handshakes are no news.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	scheme := "http"
	if bundle != nil {
		srv.TLSConfig = jwksTLS(bundle)
		scheme = "https"
	}
	s := &jwksServer{srv: srv, addr: lis.Addr().String(), done: make(chan struct{})}
	log.Info("serving the trust bundle", "url", scheme+"://"+s.addr+jwksPath)
	go func() {
		defer close(s.done)
		var err error
		if bundle != nil {
			err = srv.ServeTLS(lis, "", "") // the certificate is in TLSConfig
		} else {
			err = srv.Serve(lis)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("the JWKS endpoint stopped serving", "addr", s.addr, "err", err)
		}
	}()
	return s
}

// Close stops the endpoint, letting requests in progress finish for a few
// seconds. A nil server (Start failed before serving) is already closed.
func (s *jwksServer) Close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}

// JWKSAddr returns the address the JWKS endpoint listens on.
func (n *Node) JWKSAddr() string { return n.jwks.addr }
