// Package datapath_test guards the boundary between axon-datapath and the
// other services: the datapath meets them only through their gRPC
// contracts (gen/) and shared internal packages, never through their code.
package datapath_test

import (
	"os/exec"
	"strings"
	"testing"
)

// ipamClient is the one package of another service the datapath may use:
// IPAM's node client library, documented as such in its package comment.
const ipamClient = "github.com/axon-cni/axon/services/ipam/client"

// TestNoOtherServiceImports fails if a datapath package, its tests or
// anything they depend on imports a services/ipam package other than the
// client.
func TestNoOtherServiceImports(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	// The working directory of a test is its package directory: ./... is
	// every datapath package.
	out, err := exec.CommandContext(t.Context(), goCmd, "list", "-deps", "-test", "-f", "{{.ImportPath}}", "./...").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	for _, pkg := range strings.Fields(string(out)) {
		// A test variant prints as "path [pkg.test]"; the bracket is its own field.
		if strings.HasPrefix(pkg, "github.com/axon-cni/axon/services/ipam/") &&
			pkg != ipamClient && !strings.HasPrefix(pkg, ipamClient+"/") {
			t.Errorf("the datapath depends on %s; use the IPAM contract, %s or a shared package under services/internal", pkg, ipamClient)
		}
	}
}
