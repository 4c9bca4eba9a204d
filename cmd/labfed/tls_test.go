package main

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/labfed/labfed/proto/labfed/v1"
)

// TestCLIOverTLS runs the command line against a demo federation in TLS
// mode: with the coordinator's certificate it works through any node, and
// the actor recorded for a write forwarded by a follower is still the
// coordinator; with the CA alone, or in plaintext, it is refused with one
// line.
func TestCLIOverTLS(t *testing.T) {
	f, dir, cl := bootFederation(t, false)
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	peers, err := cl.Cluster.ListPeers(rctx, &pb.ListPeersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	follower := -1
	for _, p := range peers.GetPeers() {
		if !p.GetLeader() {
			follower = f.index(p.GetId())
		}
	}
	if follower < 0 {
		t.Fatalf("ListPeers = %v, want a follower", peers.GetPeers())
	}

	caDir := filepath.Join(dir, "ca")
	caCert, _, _ := caFiles(caDir)
	adminPrefix := filepath.Join(caDir, "coord")
	const coord = "rutgers/admin/coord"
	creds := []string{"--ca", caCert, "--cert", adminPrefix + ".crt", "--key", adminPrefix + ".key", "--timeout", "10s"}
	run := func(i int, args ...string) (string, error) {
		out, _, err := runCLI(append(append([]string{"--addr", f.nodes[i].Addr()}, creds...), args...)...)
		return out, err
	}
	mustJSON := func(i int, v any, args ...string) {
		t.Helper()
		out, err := run(i, args...)
		if err != nil {
			t.Fatalf("labfed %s (node %d) = %s, want success", strings.Join(args, " "), i, errorLine(err))
		}
		if err := decodeOne(out, v); err != nil {
			t.Fatalf("labfed %s (node %d) printed %q: %v", strings.Join(args, " "), i, out, err)
		}
	}

	for i := range f.nodes {
		var users []userJSON
		mustJSON(i, &users, "user", "list", "--json")
		var sites []siteJSON
		mustJSON(i, &sites, "site", "list", "--json")
		var names []string
		for _, s := range sites {
			names = append(names, s.Name)
		}
		slices.Sort(names)
		if want := []string{"fabric-dc", "psc", "rutgers"}; !slices.Equal(names, want) {
			t.Errorf("site list --json (node %d) = %v, want %v", i, names, want)
		}
	}

	var s siteJSON
	mustJSON(follower, &s, "site", "add", "tls-lab", "--uid-range", "800000-800999", "--gid-range", "800000-800999", "--json")
	var u userJSON
	mustJSON(follower, &u, "user", "add", "tina", "--email", "tina@example.org", "--home", "tls-lab", "--json")
	var g grantJSON
	mustJSON(follower, &g, "grant", "add", "--user", "tina", "--resource", "tls-lab/scope", "--actions", "instrument.view", "--json")
	if g.GrantedBy != coord {
		t.Errorf("grant add through follower %d: granted_by = %q, want %q", follower, g.GrantedBy, coord)
	}

	addr := f.nodes[follower].Addr()
	t.Run("CA without a certificate", func(t *testing.T) {
		_, _, err := runCLI("--addr", addr, "--ca", caCert, "--timeout", "10s", "user", "list", "--json")
		if err == nil {
			t.Fatalf("labfed --ca %s user list = success, want an error", caCert)
		}
		if line := errorLine(err); !strings.Contains(line, "no credential: log in with labfed login") || strings.ContainsAny(line, "\r\n") {
			t.Errorf("errorLine(labfed --ca %s user list) = %q, want one line containing %q", caCert, line, "no credential: log in with labfed login")
		}
	})

	t.Run("plaintext against a TLS broker", func(t *testing.T) {
		start := time.Now()
		_, _, err := runCLI("--addr", addr, "--dev-insecure", "--timeout", "1s", "user", "list", "--json")
		if err == nil {
			t.Fatalf("labfed --dev-insecure user list against a TLS broker = success, want an error")
		}
		line := errorLine(err)
		t.Logf("labfed --dev-insecure user list against a TLS broker: %s", line)
		if !strings.Contains(line, "it speaks TLS, so drop --dev-insecure") {
			t.Errorf("errorLine(labfed --dev-insecure user list) = %q, want it to say the broker speaks TLS", line)
		}
		if strings.ContainsAny(line, "\r\n") || strings.TrimSpace(line) == "" {
			t.Errorf("errorLine(labfed --dev-insecure user list) = %q, want one non-empty line", line)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("labfed --dev-insecure --timeout 1s user list took %v, want about 1s", d)
		}
	})
}
