package broker_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies holds the layering of the module: the domain packages
// under broker/ never import federation/, storage/ or grpc, and every
// package has a doc comment.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{.Doc}}|{{join .Imports \" \"}}", "github.com/labfed/labfed/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/labfed/labfed/"
	// The RPC adapters and the client are the edge: they may speak grpc.
	edge := map[string]bool{mod + "broker/rpc": true, mod + "broker/client": true}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		pkg, doc, imports := parts[0], parts[1], strings.Fields(parts[2])
		if doc == "" && !strings.HasPrefix(pkg, mod+"proto/") {
			t.Errorf("package %s has no doc comment", pkg)
		}
		if !strings.HasPrefix(pkg, mod+"broker") {
			continue
		}
		for _, imp := range imports {
			bad := strings.HasPrefix(imp, mod+"federation/") || strings.HasPrefix(imp, mod+"storage/") || strings.HasPrefix(imp, mod+"cmd/")
			if !edge[pkg] {
				bad = bad || strings.HasPrefix(imp, "google.golang.org/grpc") || strings.HasPrefix(imp, mod+"proto/")
			}
			if pkg == mod+"broker" && strings.Contains(imp, ".") {
				bad = true // the vocabulary package imports only the standard library
			}
			if bad {
				t.Errorf("%s imports %s, which breaks the layering (see CONTRIBUTING.md)", pkg, imp)
			}
		}
	}
}
