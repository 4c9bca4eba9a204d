package node

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/labfed/labfed/broker/directory"
	"github.com/labfed/labfed/broker/pki"
	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// TestSigningKeysPublished checks that every broker, leader or follower,
// creates its signing key (private half 0600 on the node only) and
// publishes the public half in the replicated trust bundle under its own
// name, and that the same key is kept across a restart.
func TestSigningKeysPublished(t *testing.T) {
	tn := startTLSFederation(t)
	cfg := tlsTestConfig(t, "psc", "psc-1", tn.fed.issue(t, pki.Identity{Site: "psc", Kind: pki.KindBroker, Name: "psc-1"}))
	psc := startTLS(t, Options{Config: cfg, Join: []string{tn.n.Addr()}})
	want := map[string]string{"rutgers-1": tn.n.keys.KID(), "psc-1": psc.keys.KID()}
	waitUntil(t, 20*time.Second, "both keys in the bundle", func() error {
		keys, err := tn.n.Replica().Directory().SigningKeys()
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, k := range keys {
			if k.Status == directory.KeyActive {
				got[k.Issuer] = k.KID
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("bundle %v, want %v", got, want)
		}
		return nil
	})
	for _, n := range []*Node{tn.n, psc} {
		fi, err := os.Stat(filepath.Join(n.cfg.DataDir, signingKeyFile))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: signing key file %v, mode %v", n.cfg.Node, err, fi.Mode().Perm())
		}
	}
	// A broker may publish only its own key: the issuer is its certificate.
	d := dir(dialTLS(t, tn.n.Addr(), clientTLS(t, tn.fed.issue(t, pki.Identity{Site: "psc", Kind: pki.KindBroker, Name: "psc-1"}))))
	k, err := d.PublishKey(callCtx(t), &pb.PublishKeyRequest{Kid: "psc-1-extra", Public: make([]byte, 32)})
	if err != nil || k.GetIssuer() != "psc-1" {
		t.Errorf("PublishKey by psc-1 = %v, %v; want issuer psc-1", k, err)
	}
	// Restart: same key id.
	kid := psc.keys.KID()
	psc.Close()
	again := startTLS(t, Options{Config: cfg})
	if again.keys.KID() != kid {
		t.Errorf("after a restart the key id is %s, want %s", again.keys.KID(), kid)
	}
}
