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

// servicesPrefix is where every service's code lives; the datapath may use
// its own (services/datapath), the shared packages (services/internal) and
// localcluster, which the benchmarks start the services with as processes,
// not as code.
const servicesPrefix = "github.com/axon-cni/axon/services/"

// TestNoOtherServiceImports fails if a datapath package, its tests or
// anything they depend on imports a package of another service (any
// services/<x> other than datapath and internal), save IPAM's client.
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
		if otherService(pkg) {
			t.Errorf("the datapath depends on %s; use the IPAM contract, %s or a shared package under services/internal", pkg, ipamClient)
		}
	}
}

// otherService reports whether pkg belongs to a service other than the
// datapath and is not IPAM's client library nor localcluster.
func otherService(pkg string) bool {
	rest, ok := strings.CutPrefix(pkg, servicesPrefix)
	if !ok {
		return false
	}
	top, _, _ := strings.Cut(rest, "/")
	// A test main prints as "path.test", an external test package as "path_test".
	top = strings.TrimSuffix(strings.TrimSuffix(top, ".test"), "_test")
	switch top {
	case "datapath", "internal", "localcluster":
		return false
	}
	return pkg != ipamClient && !strings.HasPrefix(pkg, ipamClient+"/")
}

func TestOtherService(t *testing.T) {
	for _, tc := range []struct {
		pkg  string
		want bool
	}{
		{"github.com/axon-cni/axon/services/datapath/agent", false},
		{"github.com/axon-cni/axon/services/datapath.test", false},
		{"github.com/axon-cni/axon/services/datapath_test", false},
		{"github.com/axon-cni/axon/services/localcluster", false},
		{"github.com/axon-cni/axon/services/internal/daemon", false},
		{"github.com/axon-cni/axon/services/ipam/client", false},
		{"github.com/axon-cni/axon/services/ipam/client/sub", false},
		{"github.com/axon-cni/axon/services/ipam/store", true},
		{"github.com/axon-cni/axon/services/ipam/clientx", true},
		{"github.com/axon-cni/axon/services/cmd/axon-ipam", true},
		{"github.com/axon-cni/axon/services/policy", true},
		{"github.com/axon-cni/axon/services/datapathx/foo", true},
		{"github.com/axon-cni/axon/gen/axon/ipam/v1alpha1", false},
		{"google.golang.org/grpc", false},
	} {
		if got := otherService(tc.pkg); got != tc.want {
			t.Errorf("otherService(%q) = %v, want %v", tc.pkg, got, tc.want)
		}
	}
}
