// Command axon-operator watches the Kubernetes API and drives the Axon
// services from it. It serves gRPC health and metrics; it has no API of its
// own.
//
// Watching the Kubernetes API is not implemented yet: health reports
// NOT_SERVING, so that nothing mistakes it for a working operator.
package main

import (
	"context"
	"os"

	"github.com/axon-cni/axon/services/internal/daemon"
)

// work names what the operator does not do yet, for its failing health check.
const work = "axon-operator: watching the Kubernetes API"

func main() {
	os.Exit(daemon.Main(spec()))
}

// spec describes the service to the daemon bootstrap.
func spec() daemon.Spec {
	return daemon.Spec{
		Name:     "operator",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9405", MetricsAddr: "127.0.0.1:9605"},
		Setup: func(_ context.Context, d *daemon.Daemon) error {
			d.AddCheck("api", daemon.NotImplemented(work))
			return nil
		},
	}
}
