// Command axon-ipam serves the cluster IPAM API (pools, node blocks, pod
// addresses) with its state in etcd.
package main

import (
	"context"
	"flag"
	"os"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/internal/etcdclient"
)

func main() {
	var etcd etcdclient.Config
	os.Exit(daemon.Main(daemon.Spec{
		Name:     "ipam",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9401", MetricsAddr: "127.0.0.1:9601"},
		Flags:    func(fs *flag.FlagSet) { etcd.RegisterFlags(fs) },
		Setup: func(_ context.Context, d *daemon.Daemon) error {
			if _, err := etcdclient.Attach(d, etcd); err != nil {
				return err
			}
			ipamv1alpha1.RegisterIPAMServiceServer(d.GRPC(), ipamv1alpha1.UnimplementedIPAMServiceServer{})
			return nil
		},
	}))
}
