package node

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/labfed/labfed/broker/directory"
)

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testConfig returns a loopback config for site in a fresh data_dir.
func testConfig(t testing.TB, site, api, raftAddr string) *Config {
	t.Helper()
	text := fmt.Sprintf("site: %s\ndata_dir: %s\nlisten:\n  api: %s\n  raft: %s\n  http: 127.0.0.1:0\nuid_range: 200000-209999\ngid_range: 200000-209999\n",
		site, filepath.Join(t.TempDir(), site), api, raftAddr)
	c, err := ParseConfig(site+".yaml", []byte(text))
	if err != nil {
		t.Fatalf("ParseConfig(%q) = %v", text, err)
	}
	return c
}

// fastRaft shortens Raft's timeouts: a single node elects itself quickly.
func fastRaft(rc *raft.Config) {
	rc.HeartbeatTimeout = 200 * time.Millisecond
	rc.ElectionTimeout = 200 * time.Millisecond
	rc.LeaderLeaseTimeout = 100 * time.Millisecond
}

func TestStartRefusesInsecureOffLoopback(t *testing.T) {
	tests := []struct {
		name        string
		api, raft   string
		devInsecure bool
		want        string
	}{
		{"no dev-insecure", "127.0.0.1:0", "127.0.0.1:0", false, "--dev-insecure"},
		{"api on every interface", "0.0.0.0:0", "127.0.0.1:0", true, "refuses to listen on 0.0.0.0:0"},
		{"raft on every interface", "127.0.0.1:0", ":0", true, `refuses to listen on :0`},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			cfg := testConfig(t, "rutgers", test.api, test.raft)
			n, err := Start(context.Background(), Options{Config: cfg, DevInsecure: test.devInsecure, Bootstrap: true})
			if err == nil {
				n.Close()
				t.Fatalf("Start(api %s, raft %s, DevInsecure %v) = nil error, want %q", test.api, test.raft, test.devInsecure, test.want)
			}
			if !strings.Contains(err.Error(), test.want) {
				t.Errorf("Start(api %s, raft %s, DevInsecure %v) = %q, want it to contain %q", test.api, test.raft, test.devInsecure, err, test.want)
			}
		})
	}
}

// waitLeaderWithSite waits until n leads and its directory holds site, and
// returns the directory's hash.
func waitLeaderWithSite(t testing.TB, n *Node, site string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		var hash string
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		last = n.Replica().Read(ctx, false, func(d *directory.Directory) error {
			if _, err := d.Site(site); err != nil {
				return err
			}
			var err error
			hash, err = d.Hash()
			return err
		})
		cancel()
		if last == nil {
			return hash
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("node %s did not lead with site %s within 10s: %v", n.cfg.Node, site, last)
	return ""
}

// TestRestartKeepsState starts a single bootstrapped node, closes it and
// starts it again on the same data_dir without Bootstrap or Join: it must
// lead again with the same directory.
func TestRestartKeepsState(t *testing.T) {
	cfg := testConfig(t, "rutgers", freePort(t), freePort(t))
	ctx := context.Background()
	n, err := Start(ctx, Options{Config: cfg, DevInsecure: true, Bootstrap: true, Raft: fastRaft})
	if err != nil {
		t.Fatalf("Start(bootstrap) = %v", err)
	}
	if got, want := n.Addr(), cfg.Listen.API; got != want {
		t.Errorf("Addr() = %s, want %s", got, want)
	}
	before := waitLeaderWithSite(t, n, "rutgers")
	if err := n.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	n, err = Start(ctx, Options{Config: cfg, DevInsecure: true, Raft: fastRaft})
	if err != nil {
		t.Fatalf("Start(restart) = %v", err)
	}
	t.Cleanup(func() { n.Close() })
	after := waitLeaderWithSite(t, n, "rutgers")
	if after != before {
		t.Errorf("directory hash after restart = %s, want %s (as before)", after, before)
	}
}
