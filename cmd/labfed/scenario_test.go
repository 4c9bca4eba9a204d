package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoScenario runs `labfed demo --scenario`, which walks the directory
// flows (including a leader failover) and fails unless every step works,
// and checks the env.sh it writes.
func TestDemoScenario(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	app := newApp(&out, &errOut)
	args := []string{"labfed", "demo", "--dir", dir, "--scenario", "--seed", filepath.Join("..", "..", "testdata", "demo", "directory.yaml")}
	if err := app.RunContext(context.Background(), interspersed(app, args)); err != nil {
		t.Fatalf("demo --scenario = %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "scenario passed") || strings.Contains(out.String(), "FAIL") {
		t.Errorf("demo --scenario output lacks a clean pass:\n%s", out.String())
	}
	env, err := os.ReadFile(filepath.Join(dir, "env.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"export LABFED_ADDR=127.0.0.1:", "export LABFED_CA=", "export LABFED_CERT=", "export LABFED_KEY="} {
		if !strings.Contains(string(env), want) {
			t.Errorf("env.sh = %q, want a line %q", env, want)
		}
	}
}
