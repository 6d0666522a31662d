// Command axon-datapath is the per-node agent: it wires pods (veth, routes),
// loads the eBPF programs and serves the node's datapath API, to the CNI
// shim over a unix socket and to the control plane over TCP.
package main

import (
	"context"
	"os"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(daemon.Spec{
		Name: "datapath",
		Defaults: daemon.Defaults{
			GRPCAddr:    "127.0.0.1:9402",
			UnixSocket:  "/run/axon/datapath.sock",
			MetricsAddr: "127.0.0.1:9602",
		},
		Setup: func(_ context.Context, d *daemon.Daemon) error {
			datapathv1alpha1.RegisterDatapathServiceServer(d.GRPC(), datapathv1alpha1.UnimplementedDatapathServiceServer{})
			return nil
		},
	}))
}
