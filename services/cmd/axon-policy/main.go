// Command axon-policy serves the policy compiler: identities for label sets
// and Kubernetes NetworkPolicy compiled into per-endpoint entries.
//
// Its API is not implemented yet: every RPC answers UNIMPLEMENTED and health
// reports NOT_SERVING, so that nothing mistakes it for a working service.
package main

import (
	"context"
	"os"

	policyv1alpha1 "github.com/axon-cni/axon/gen/axon/policy/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(spec()))
}

// spec describes the service to the daemon bootstrap.
func spec() daemon.Spec {
	return daemon.Spec{
		Name:     "policy",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9404", MetricsAddr: "127.0.0.1:9604"},
		Setup: func(_ context.Context, d *daemon.Daemon) error {
			policyv1alpha1.RegisterPolicyServiceServer(d.GRPC(), policyv1alpha1.UnimplementedPolicyServiceServer{})
			d.AddCheck("api", daemon.NotImplemented(policyv1alpha1.PolicyService_ServiceDesc.ServiceName))
			return nil
		},
	}
}
