package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTokenCommands issues capability tokens through a follower (the
// decision and signature happen on the leader), verifies them as the
// audience site would, and checks refusals name their reason.
func TestTokenCommands(t *testing.T) {
	f, dir, cl := bootFederation(t, false)
	loadDemoSeed(t, cl)
	cli := adminCLI(f, dir, 1)
	var tok string
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := cli("token", "issue", "--scope", "instrument.operate:rutgers/krios-g4", "--user", "alice", "--ttl", "30m")
		if err == nil {
			tok = strings.TrimSpace(out)
			break
		}
		// The brokers publish their signing keys just after start.
		if time.Now().After(deadline) || !strings.Contains(errorLine(err), "not yet active") {
			t.Fatalf("token issue = %v", errorLine(err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token issue printed %q, want one compact token", tok)
	}

	out, err := cli("token", "inspect", tok, "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var ins struct {
		Header map[string]any `json:"header"`
		Claims map[string]any `json:"claims"`
	}
	if err := json.Unmarshal([]byte(out), &ins); err != nil {
		t.Fatal(err)
	}
	if ins.Header["alg"] != "EdDSA" || ins.Header["typ"] != "labfed-cap+jwt" || ins.Claims["sub"] != "alice" || ins.Claims["aud"] != "rutgers" ||
		ins.Claims["scope"] != "instrument.operate:rutgers/krios-g4" || ins.Claims["posix"] == nil {
		t.Errorf("inspect = %s", out)
	}
	if exp, iat := ins.Claims["exp"].(float64), ins.Claims["iat"].(float64); exp-iat != 1800 {
		t.Errorf("lifetime %v s, want 1800", exp-iat)
	}

	out, err = cli("token", "verify", tok, "--aud", "rutgers", "--scope", "instrument.operate:rutgers/krios-g4", "--json")
	if err != nil || !strings.Contains(out, `"valid": true`) {
		t.Errorf("verify at rutgers = %s, %v", out, err)
	}
	out, err = cli("token", "verify", tok, "--aud", "psc", "--json")
	if err == nil || !strings.Contains(out, `"valid": false`) || !strings.Contains(out, `"code": "aud"`) {
		t.Errorf("verify at psc = %s, %v; want invalid (aud)", out, err)
	}
	tampered := tok[:strings.LastIndex(tok, ".")+1] + "AAAA" + tok[strings.LastIndex(tok, ".")+5:]
	if _, err := cli("token", "verify", tampered, "--aud", "rutgers"); err == nil {
		t.Error("a tampered token verified")
	}

	// With a cache, then offline from it: the agent's view when its broker
	// is away. Operate tokens are refused (a lock may have been missed).
	cache := filepath.Join(t.TempDir(), "trust.json")
	if out, err := cli("token", "verify", tok, "--aud", "rutgers", "--cache", cache, "--json"); err != nil || !strings.Contains(out, `"valid": true`) {
		t.Errorf("verify --cache = %s, %v", out, err)
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("trust cache %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	out, err = cli("token", "verify", tok, "--aud", "rutgers", "--cache", cache, "--offline", "--json")
	if err == nil || !strings.Contains(out, `"code": "broker-lost"`) || !strings.Contains(out, "view tokens still work") {
		t.Errorf("verify --offline of an operate token = %s, %v; want broker-lost", out, err)
	}
	if _, err := cli("token", "verify", tok, "--aud", "rutgers", "--offline"); err == nil || !strings.Contains(errorLine(err), "give --cache FILE") {
		t.Errorf("verify --offline without --cache = %v", err)
	}

	// keys rotate: the broker at --addr gets a new key; the old one retires.
	out, err = cli("keys", "rotate", "--json")
	if err != nil {
		t.Fatal(errorLine(err))
	}
	var rotated []keyJSON
	if err := json.Unmarshal([]byte(out), &rotated); err != nil || len(rotated) != 2 {
		t.Fatalf("keys rotate --json = %s (%v), want the new and the old key", out, err)
	}
	if n := f.cfgs[1].Node; rotated[0].Status != "active" || rotated[0].Issuer != n || rotated[1].Status != "retiring" || rotated[1].Issuer != n || rotated[1].NotAfter == nil {
		t.Errorf("keys rotate = %+v, want %s's new key active and its old one retiring with an end", rotated, n)
	}

	// Revoking the token's jti: the audience site refuses it.
	jti := ins.Claims["jti"].(string)
	if out, err := cli("token", "revoke", "--jti", jti, "--reason", "test"); err != nil || !strings.HasPrefix(out, "lock l-1 on jti "+jti) {
		t.Fatalf("token revoke --jti = %q, %v", out, err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		out, err := cli("token", "verify", tok, "--aud", "rutgers", "--json")
		if err != nil && strings.Contains(out, `"code": "revoked"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still verifies: %s %v", out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Revoking a user refuses their new tokens too.
	if _, err := cli("token", "revoke", "--user", "alice", "--reason", "laptop stolen"); err != nil {
		t.Fatal(errorLine(err))
	}
	if _, err := cli("token", "issue", "--scope", "instrument.operate:rutgers/krios-g4", "--user", "alice"); err == nil || !strings.Contains(errorLine(err), "the tokens of alice are revoked") {
		t.Errorf("issue for a revoked user = %v", err)
	}

	for _, bad := range []struct{ args, want string }{
		{"token revoke --jti a --user alice", "give exactly one of --jti, --user or --key"},
		{"token issue --scope instrument.operate:rutgers/krios-g4 --user carol", "no grant for instrument.operate on rutgers/krios-g4"},
		{"token issue --scope instrument.view:rutgers/krios-g4 --user bob --ttl 13h", "a token lives at most 12h0m0s"},
		{"token issue --scope instrument.fly:rutgers/krios-g4 --user alice", "instrument.fly"},
		// The coordinator's certificate names the user coord, who holds no grant.
		{"token issue --scope instrument.operate:rutgers/krios-g4", "no grant for instrument.operate on rutgers/krios-g4"},
	} {
		if _, err := cli(strings.Fields(bad.args)...); err == nil || !strings.Contains(errorLine(err), bad.want) {
			t.Errorf("labfed %s = %v, want an error containing %q", bad.args, err, bad.want)
		}
	}
}
