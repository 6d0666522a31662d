// Command axon-policy serves the policy compiler: identities for label sets
// and Kubernetes NetworkPolicy compiled into per-endpoint entries.
package main

import (
	"context"
	"os"

	policyv1alpha1 "github.com/axon-cni/axon/gen/axon/policy/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(daemon.Spec{
		Name:     "policy",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9404", MetricsAddr: "127.0.0.1:9604"},
		Setup: func(_ context.Context, d *daemon.Daemon) error {
			policyv1alpha1.RegisterPolicyServiceServer(d.GRPC(), policyv1alpha1.UnimplementedPolicyServiceServer{})
			return nil
		},
	}))
}
