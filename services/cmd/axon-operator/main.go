// Command axon-operator watches the Kubernetes API and drives the Axon
// services from it. It serves gRPC health and metrics; it has no API of its
// own.
package main

import (
	"os"

	"github.com/axon-cni/axon/services/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(daemon.Spec{
		Name:     "operator",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9405", MetricsAddr: "127.0.0.1:9605"},
	}))
}
