package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/federation/wansim"
)

// TestDiscoveryCommands checks members, instruments, compute and place
// against the demo federation over TLS, with the JSON fields of cli.md.
func TestDiscoveryCommands(t *testing.T) {
	f, dir, _ := bootFederation(t, false)
	caCert, _, _ := caFiles(filepath.Join(dir, "ca"))
	admin := filepath.Join(dir, "ca", "coord")
	base := []string{"--addr", f.nodes[2].Addr(), "--ca", caCert, "--cert", admin + ".crt", "--key", admin + ".key", "--timeout", "10s"}
	cli := func(args ...string) (string, error) {
		out, _, err := runCLI(append(append([]string{}, base...), args...)...)
		return out, err
	}
	decode := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
	}
	// Gossip converges within seconds on loopback.
	var compute []map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := cli("compute", "--near", "rutgers", "--json")
		if err == nil {
			decode(out, &compute)
			reachable := 0
			for _, c := range compute {
				if c["status"] == "available" {
					reachable++
				}
			}
			if reachable == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("compute never showed 3 available targets: %v %v", compute, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range compute {
		for _, k := range []string{"id", "site", "kind", "gpus_free", "queue_wait_s", "software", "rtt_ms"} {
			if _, ok := c[k]; !ok {
				t.Errorf("compute --json element lacks %q: %v", k, c)
			}
		}
	}

	out, err := cli("members", "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var members []map[string]any
	decode(out, &members)
	if len(members) != 3 {
		t.Errorf("members = %v, want 3", members)
	}
	for _, m := range members {
		for _, k := range []string{"name", "site", "addr", "status", "rtt_ms"} {
			if _, ok := m[k]; !ok {
				t.Errorf("members --json element lacks %q: %v", k, m)
			}
		}
		if m["status"] != "alive" {
			t.Errorf("member %v is not alive", m)
		}
	}

	out, err = cli("instruments", "--type", "TEM", "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var ins []map[string]any
	decode(out, &ins)
	if len(ins) != 1 || ins[0]["id"] != "rutgers/krios-g4" || ins[0]["site"] != "rutgers" || ins[0]["model"] != "Titan Krios G4" || ins[0]["status"] != "available" {
		t.Errorf("instruments --type TEM = %v, want rutgers/krios-g4 available", ins)
	}

	out, err = cli("place", "--data-site", "psc", "--gpus", "2", "--software", "cryosparc=4.6.2", "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var placed []map[string]any
	decode(out, &placed)
	if len(placed) != 3 || placed[0]["target"] != "psc/bridges2-gpu" || placed[0]["eligible"] != true || placed[2]["eligible"] != false ||
		!strings.Contains(placed[2]["reason"].(string), "runs cryosparc 4.5.3; the job needs 4.6.2") {
		t.Errorf("place --json = %s", out)
	}
	for _, k := range []string{"target", "score", "rtt_ms", "queue_wait_s", "gpus_free", "reason"} {
		if _, ok := placed[0][k]; !ok {
			t.Errorf("place --json element lacks %q", k)
		}
	}
	text, err := cli("place", "--data-site", "psc", "--gpus", "2", "--software", "cryosparc=4.6.2")
	if err != nil || !strings.HasPrefix(text, "1. psc/bridges2-gpu: ") {
		t.Errorf("place = %q, %v", text, err)
	}

	t.Run("every broker's signing key is in the bundle", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := cli("keys", "list", "--json")
			var keys []map[string]any
			if err == nil {
				decode(out, &keys)
			}
			active := 0
			for _, k := range keys {
				if k["status"] == "active" && k["kid"] != "" && k["issuer"] != "" && k["not_before"] != "" {
					active++
				}
			}
			if active == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("keys list = %s, %v; want 3 active keys", out, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("a status change spreads", func(t *testing.T) {
		if _, err := cli("offer", "set", "fabric-dc/cloudlet-gpu", "--gpus-free", "1", "--queue-wait", "90s"); err != nil {
			t.Fatal(errorLine(err))
		}
		for _, n := range f.nodes {
			deadline := time.Now().Add(5 * time.Second)
			for {
				out, _, err := runCLI("--addr", n.Addr(), "--ca", caCert, "--cert", admin+".crt", "--key", admin+".key", "compute", "--json")
				if err == nil && strings.Contains(out, `"gpus_free": 1,`) && strings.Contains(out, `"queue_wait_s": 90`) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("node %s never saw the change: %s %v", n.Addr(), out, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})

	t.Run("gossip key rotation", func(t *testing.T) {
		keyring := filepath.Join(dir, "ca", "gossip.keys")
		oldKeys, err := os.ReadFile(keyring)
		if err != nil {
			t.Fatal(err)
		}
		oldKey := strings.TrimSpace(strings.Split(strings.TrimSpace(string(oldKeys)), "\n")[1])
		newFile := filepath.Join(t.TempDir(), "new.keys")
		if _, err := cli("gossip", "keygen", newFile); err != nil {
			t.Fatal(errorLine(err))
		}
		b, _ := os.ReadFile(newFile)
		newKey := strings.TrimSpace(strings.Split(strings.TrimSpace(string(b)), "\n")[1])
		for _, step := range [][]string{{"install", newKey}, {"use", newKey}, {"remove", oldKey}} {
			out, err := cli(append([]string{"gossip", "keys"}, step...)...)
			if err != nil || !strings.Contains(out, "3 of 3 members applied it") {
				t.Fatalf("gossip keys %s = %q, %v", step[0], out, err)
			}
		}
		out, err := cli("gossip", "keys", "list")
		if err != nil || strings.Count(out, "key ") != 1 {
			t.Errorf("gossip keys list after rotation = %q, %v", out, err)
		}
		// The members rewrote their keyring file: only the new key is left.
		if b, _ := os.ReadFile(keyring); !strings.Contains(string(b), newKey) || strings.Contains(string(b), oldKey) {
			t.Errorf("keyring file after rotation:\n%s", b)
		}
		out, err = cli("members", "--json")
		if err != nil || strings.Count(out, `"alive"`) != 3 {
			t.Errorf("members after rotation = %s, %v", out, err)
		}
		if _, err := cli("gossip", "keys", "use", "bm90IGEga2V5"); err == nil || !strings.Contains(errorLine(err), "must be base64 of 16, 24 or 32 bytes") {
			t.Errorf("gossip keys use with a bad key = %v", err)
		}
	})

	for _, bad := range []struct{ args, want string }{
		{"place --data-site nowhere", `site "nowhere" is not in the directory`},
		{"place --data-site psc --software cryosparc", `--software "cryosparc" is not NAME=VERSION`},
		{"compute --gpus -1", "--gpus -1 is negative"},
		{"compute --near Bad_Site", `site name "Bad_Site" is not valid`},
		{"offer set rutgers/krios-g4 --status maintenance", "report its status to a broker of rutgers, not of fabric-dc"},
		{"offer set fabric-dc/nothing --status offline", "site fabric-dc offers nothing called fabric-dc/nothing"},
		{"offer set fabric-dc/cloudlet-gpu --status broken", `status "broken" is not one of`},
		{"offer set fabric-dc/cloudlet-gpu --gpus-free 9", "has 2 GPUs; 9 free is impossible"},
		{"offer set fabric-dc/cloudlet-gpu", "nothing to change"},
	} {
		if _, err := cli(strings.Fields(bad.args)...); err == nil || !strings.Contains(errorLine(err), bad.want) {
			t.Errorf("labfed %s = %v, want an error containing %q", bad.args, err, bad.want)
		}
	}
}

// TestSimCoords runs labfed sim coords over the demo's topology.
func TestSimCoords(t *testing.T) {
	out, _, err := runCLI("sim", "coords", "--topology", filepath.Join("..", "..", "testdata", "topologies", "three-sites.yaml"), "--duration", "3s", "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var res simResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
	if res.Sites != 3 || res.Pairs != 3 || res.MedianRelError > 0.5 || res.P90RelError < res.MedianRelError || res.NearestHitRate < 0 || res.NearestHitRate > 1 {
		t.Errorf("sim coords = %+v", res)
	}
	for _, k := range []string{"median_rel_error", "p90_rel_error", "nearest_hit_rate"} {
		if !strings.Contains(out, `"`+k+`"`) {
			t.Errorf("sim coords --json lacks %s", k)
		}
	}
}

// TestTopologies loads every shipped topology.
func TestTopologies(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "topologies", "*.yaml"))
	if len(files) < 2 {
		t.Fatalf("topologies: %v", files)
	}
	for _, f := range files {
		if _, err := wansim.LoadTopology(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join("..", "..", "testdata", "topologies", "us-research.yaml")); err != nil {
		t.Error(err)
	}
}
