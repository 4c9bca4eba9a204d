package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labfed/labfed/cmd/labfed/internal/oidcissuer"
)

// TestLoginCommands drives labfed login (both flows), whoami and logout
// against the demo federation over TLS, with the demo's OIDC issuer and a
// programmatic browser in place of a person.
func TestLoginCommands(t *testing.T) {
	f, dir, cl := bootFederation(t, false)
	loadDemoSeed(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.registerDemoIdentities(ctx, cl.Directory); err != nil {
		t.Fatal(err)
	}
	caCert, _, _ := caFiles(filepath.Join(dir, "ca"))
	session := os.Getenv("LABFED_SESSION")
	admin := filepath.Join(dir, "ca", "coord")
	t.Setenv("LABFED_OIDC_CA", filepath.Join(dir, "oidc-ca.pem"))
	base := []string{"--addr", f.nodes[1].Addr(), "--ca", caCert, "--timeout", "10s"}
	cli := func(args ...string) (string, error) {
		out, _, err := runCLI(append(append([]string{}, base...), args...)...)
		return out, err
	}
	as := func(who string) {
		saved := openBrowser
		t.Cleanup(func() { openBrowser = saved })
		openBrowser = func(_ io.Writer, url string) error {
			go oidcissuer.Browse(f.issuer.Client(), url, who, demoPassword)
			return nil
		}
		savedDev := approveDevice
		t.Cleanup(func() { approveDevice = savedDev })
		approveDevice = func(_ io.Writer, _, code, _ string) {
			go f.issuer.ApproveDevice(code, who, demoPassword)
		}
	}
	whoami := func(extra ...string) map[string]any {
		t.Helper()
		out, err := cli(append(extra, "whoami", "--json")...)
		if err != nil {
			t.Fatalf("whoami: %s", errorLine(err))
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("whoami --json = %q: %v", out, err)
		}
		return m
	}

	t.Run("authorization code flow", func(t *testing.T) {
		as("alice")
		out, err := cli("login")
		if err != nil || !strings.HasPrefix(out, "logged in as alice until ") {
			t.Fatalf("login = %q, %v", out, err)
		}
		fi, err := os.Stat(session)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("session file %s: %v, mode %v; want mode 0600", session, err, fi.Mode().Perm())
		}
		if m := whoami(); m["user"] != "alice" || m["method"] != "session" || strings.Join(toStrings(m["roles"]), ",") != "researcher" {
			t.Errorf("whoami after login = %v", m)
		}
		// The session takes precedence over the coordinator's certificate.
		_, err = cli("--cert", admin+".crt", "--key", admin+".key", "site", "add", "rogue", "--uid-range", "900000-900999", "--gid-range", "900000-900999")
		if line := errorLine(err); !strings.Contains(line, "user alice (researcher) may not add sites") {
			t.Errorf("site add as alice = %q, want refused for alice", line)
		}
	})

	t.Run("logout returns to the certificate", func(t *testing.T) {
		if out, err := cli("logout"); err != nil || out != "logged out\n" {
			t.Fatalf("logout = %q, %v", out, err)
		}
		if _, err := os.Stat(session); !os.IsNotExist(err) {
			t.Errorf("session file still there after logout: %v", err)
		}
		if m := whoami("--cert", admin+".crt", "--key", admin+".key"); m["user"] != "coord" || m["method"] != "certificate" {
			t.Errorf("whoami with the certificate after logout = %v", m)
		}
		if _, err := cli("whoami"); !strings.Contains(errorLine(err), "no credential") {
			t.Errorf("whoami without any credential = %v, want no credential", err)
		}
	})

	t.Run("device flow", func(t *testing.T) {
		as("bob")
		if out, err := cli("login", "--device"); err != nil || !strings.HasPrefix(out, "logged in as bob") {
			t.Fatalf("login --device = %q, %v", out, err)
		}
		if m := whoami(); m["user"] != "bob" {
			t.Errorf("whoami after device login = %v", m)
		}
	})

	t.Run("sessions are listed", func(t *testing.T) {
		out, err := cli("user", "sessions", "--json")
		var ss []sessionJSON
		if err != nil || json.Unmarshal([]byte(out), &ss) != nil || len(ss) != 1 || ss[0].User != "bob" || !strings.Contains(ss[0].Via, "urn:labfed-demo:user:bob") {
			t.Errorf("user sessions --json as bob = %q, %v; want bob's one session", out, err)
		}
		if _, err := cli("user", "sessions", "alice"); !strings.Contains(errorLine(err), "may not act on other users' sessions") {
			t.Errorf("user sessions alice as bob = %v, want refused", err)
		}
	})

	t.Run("a coordinator ends all of a user's sessions", func(t *testing.T) {
		out, err := cli("--session", filepath.Join(t.TempDir(), "none.json"), "--cert", admin+".crt", "--key", admin+".key", "logout", "--user", "bob")
		if err != nil || out != "ended 1 session(s) of bob\n" {
			t.Fatalf("logout --user bob = %q, %v", out, err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, err := cli("whoami")
			if err != nil && strings.Contains(errorLine(err), "not known to the federation") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bob's session still works 2s after it was ended: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		as("mallory")
		if _, err := cli("login"); !strings.Contains(errorLine(err), "not registered in the federation; ask your site administrator") {
			t.Errorf("login as mallory = %v", err)
		}
		if _, err := cli("login", "--issuer", "https://elsewhere.example.org"); !strings.Contains(errorLine(err), "does not accept issuer https://elsewhere.example.org") {
			t.Errorf("login --issuer elsewhere = %v", err)
		}
		if err := os.WriteFile(session, []byte(`{"token":"lfs_x","expires":"2099-01-01T00:00:00Z"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(session, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := cli("whoami"); !strings.Contains(errorLine(err), "readable by others") {
			t.Errorf("whoami with a world-readable session file = %v", err)
		}
	})
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
