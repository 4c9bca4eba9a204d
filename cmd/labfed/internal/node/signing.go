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
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// signingKeyFile holds the private half of this broker's capability
// signing key; it never leaves the node.
const signingKeyFile = "signing.key"

// loadSigningKey reads the node's signing key, creating it (mode 0600) on
// first start. The key id names the node and the key's fingerprint.
func loadSigningKey(dataDir, nodeName string) (kid string, priv ed25519.PrivateKey, err error) {
	path := filepath.Join(dataDir, signingKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return "", nil, err
		}
		if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(seed)+"\n"), 0o600); err != nil {
			return "", nil, fmt.Errorf("write signing key: %w", err)
		}
		priv = ed25519.NewKeyFromSeed(seed)
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
	sum := sha256.Sum256(priv.Public().(ed25519.PublicKey))
	return nodeName + "-" + hex.EncodeToString(sum[:4]), priv, nil
}

// publishSigningKey makes sure the directory holds this node's public key,
// asking its own API (which forwards to the leader) until it does.
func (n *Node) publishSigningKey(ctx context.Context, kid string, pub ed25519.PublicKey) {
	for {
		if k, err := n.replica.Directory().SigningKey(kid); err == nil && k.Issuer == n.cfg.Node {
			return
		}
		err := n.callSelf(ctx, func(ctx context.Context, d pb.DirectoryServiceClient) error {
			_, err := d.PublishKey(ctx, &pb.PublishKeyRequest{Kid: kid, Public: pub})
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
