package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labfed/labfed/broker/capability"
	"github.com/labfed/labfed/broker/directory"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// signingKeyFile holds the private half of this broker's capability
// signing key; it never leaves the node.
const signingKeyFile = "signing.key"

// loadSigningKey reads the node's signing key, creating it (mode 0600) on
// first start. A key a rotation left behind (written, perhaps published,
// not yet switched to) is taken up first: publication is idempotent, so
// the node ends up signing with it either way. The key id names the node
// and the key's fingerprint.
func loadSigningKey(dataDir, nodeName string) (kid string, priv ed25519.PrivateKey, err error) {
	path := filepath.Join(dataDir, signingKeyFile)
	if b, err := os.ReadFile(path + nextSuffix); err == nil {
		// Written whole and synced before any publication, so a damaged
		// one never reached the directory: drop it.
		if seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err != nil || len(seed) != ed25519.SeedSize {
			os.Remove(path + nextSuffix)
		} else if err := os.Rename(path+nextSuffix, path); err != nil {
			return "", nil, fmt.Errorf("take up the rotated signing key: %w", err)
		}
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kid, priv, err := newSigningKey(path, nodeName)
		return kid, priv, err
	case err != nil:
		return "", nil, fmt.Errorf("read signing key: %w", err)
	default:
		fi, _ := os.Stat(path)
		if fi.Mode().Perm()&0o077 != 0 {
			return "", nil, fmt.Errorf("signing key %s is readable by others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
		}
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(seed) != ed25519.SeedSize {
			return "", nil, fmt.Errorf("signing key %s is damaged; move it away to make a new one (then revoke the old kid)", path)
		}
		priv = ed25519.NewKeyFromSeed(seed)
	}
	return keyID(nodeName, priv), priv, nil
}

// nextSuffix names the file a rotation writes its new key to before the
// directory has committed it.
const nextSuffix = ".next"

// newSigningKey writes a fresh key to path (0600, synced) and returns it.
func newSigningKey(path, nodeName string) (string, ed25519.PrivateKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return "", nil, err
	}
	// Written aside, synced, then renamed: a crash leaves the old file or
	// the whole new one, never a torn key.
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("write signing key: %w", err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(seed) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", nil, fmt.Errorf("write signing key: %w", err)
	}
	syncDir(filepath.Dir(path))
	priv := ed25519.NewKeyFromSeed(seed)
	return keyID(nodeName, priv), priv, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func keyID(nodeName string, priv ed25519.PrivateKey) string {
	sum := sha256.Sum256(priv.Public().(ed25519.PublicKey))
	return nodeName + "-" + hex.EncodeToString(sum[:4])
}

// signingKeys is the key this broker signs capability tokens with. Rotate
// replaces it; Sign always uses a key the directory holds as active or, for
// a moment after a rotation, retiring — both verify everywhere.
type signingKeys struct {
	node, path string
	cur        atomic.Pointer[capability.Signer]
	mu         sync.Mutex // one rotation at a time
	// publish puts a public key into the directory through this broker's
	// own API (forwarded to the leader) and returns once it is committed.
	publish func(ctx context.Context, kid string, pub ed25519.PublicKey) error
	// local waits until the local replica holds kid as active.
	local func(ctx context.Context, kid string) (*directory.SigningKey, error)
	// everywhere waits (bounded) until every other broker holds kid, so
	// the verifiers following them know it before the first token.
	everywhere func(ctx context.Context, kid string)
}

func (k *signingKeys) KID() string { return k.cur.Load().KID() }

func (k *signingKeys) Sign(c capability.Claims) (string, error) { return k.cur.Load().Sign(c) }

// Rotate makes a new key, publishes it, and switches to it once the
// directory has committed it and this node has applied it. Until then the
// old key signs; afterwards the old key is retiring and keeps verifying
// until every token it signed has expired.
func (k *signingKeys) Rotate(ctx context.Context) (string, *directory.SigningKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.KID()
	next := k.path + nextSuffix
	kid, priv, err := newSigningKey(next, k.node)
	if err != nil {
		return "", nil, err
	}
	// On failure the new key stays in .next: if its publication did commit
	// after all, a restart takes it up; another rotation replaces it.
	if err := k.publish(ctx, kid, priv.Public().(ed25519.PublicKey)); err != nil {
		return "", nil, fmt.Errorf("publish the new signing key %s (still signing with %s): %w", kid, old, err)
	}
	key, err := k.local(ctx, kid)
	if err != nil {
		return "", nil, fmt.Errorf("new signing key %s is published but not yet applied here (still signing with %s): %w", kid, old, err)
	}
	if k.everywhere != nil {
		k.everywhere(ctx, kid)
	}
	if err := os.Rename(next, k.path); err != nil {
		return "", nil, fmt.Errorf("switch to the new signing key: %w", err)
	}
	syncDir(filepath.Dir(k.path))
	k.cur.Store(capability.NewSigner(kid, k.node, priv))
	return old, key, nil
}

// publishSigningKey makes sure the directory holds this node's public key,
// asking its own API (which forwards to the leader) until it does.
func (n *Node) publishSigningKey(ctx context.Context, kid string, pub ed25519.PublicKey) {
	for {
		if k, err := n.replica.Directory().SigningKey(kid); err == nil && k.Issuer == n.cfg.Node {
			return
		}
		err := n.callSelf(ctx, func(ctx context.Context, d pb.DirectoryServiceClient) error {
			_, err := d.PublishKey(ctx, &pb.PublishKeyRequest{Kid: kid, Public: pub, Issuer: n.cfg.Node})
			return err
		})
		if err == nil || status.Code(err) == codes.AlreadyExists {
			n.log.Info("published the capability signing key", "kid", kid)
			return
		}
		n.log.Debug("publish signing key; will retry", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// waitKeyActive waits until the local replica holds kid as active.
func (n *Node) waitKeyActive(ctx context.Context, kid string) (*directory.SigningKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		changed := n.replica.Changed()
		k, err := n.replica.Directory().SigningKey(kid)
		if err == nil && k.Status == directory.KeyActive {
			return k, nil
		}
		if err == nil && k.Status != directory.KeyActive {
			return nil, fmt.Errorf("key %s is %s in the directory", kid, k.Status)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("key %s did not reach this node's directory: %w", kid, ctx.Err())
		case <-changed:
		}
	}
}

// keyReplicated is how long a rotation waits for the other brokers to
// apply the new key before it switches anyway.
const keyReplicated = 10 * time.Second

// waitKeyEverywhere asks every other Raft peer until each holds kid, for at
// most keyReplicated; brokers that are down or lagging are logged and
// left behind (their verifiers fetch an unknown kid once they catch up).
func (n *Node) waitKeyEverywhere(ctx context.Context, kid string) {
	ctx, cancel := context.WithTimeout(ctx, keyReplicated)
	defer cancel()
	peers, err := n.replica.Peers()
	if err != nil {
		n.log.Warn("rotation: cannot list the brokers to wait for", "err", err)
		return
	}
	pending := map[string]string{} // id → API address
	for _, p := range peers {
		if p.ID == n.cfg.Node {
			continue
		}
		if nd, err := n.replica.Directory().Node(p.ID); err == nil && nd.APIAddr != "" {
			pending[p.ID] = nd.APIAddr
		}
	}
	for len(pending) > 0 {
		for id, addr := range pending {
			if n.holdsKey(ctx, addr, kid) {
				delete(pending, id)
			}
		}
		if len(pending) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			n.log.Warn("rotation: switching to the new key before these brokers applied it", "kid", kid, "brokers", slices.Sorted(maps.Keys(pending)))
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *Node) holdsKey(ctx context.Context, addr, kid string) bool {
	conn, err := n.dial(addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := pb.NewDirectoryServiceClient(conn).ListKeys(cctx, &pb.ListKeysRequest{Read: &pb.ReadOptions{Stale: true}})
	if err != nil {
		return false
	}
	return slices.ContainsFunc(resp.GetKeys(), func(k *pb.SigningKey) bool { return k.GetKid() == kid })
}

func (n *Node) callSelf(ctx context.Context, fn func(context.Context, pb.DirectoryServiceClient) error) error {
	conn, err := n.dial(n.cfg.Advertise.API)
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return fn(cctx, pb.NewDirectoryServiceClient(conn))
}
