// Command axon-lbipam serves LoadBalancer IP allocation from pools, with its
// state in etcd.
package main

import (
	"context"
	"flag"
	"os"

	lbipamv1alpha1 "github.com/axon-cni/axon/gen/axon/lbipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/internal/etcdclient"
)

func main() {
	var etcd etcdclient.Config
	os.Exit(daemon.Main(daemon.Spec{
		Name:     "lbipam",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9403", MetricsAddr: "127.0.0.1:9603"},
		Flags:    func(fs *flag.FlagSet) { etcd.RegisterFlags(fs) },
		Setup: func(_ context.Context, d *daemon.Daemon) error {
			if _, err := etcdclient.Attach(d, etcd); err != nil {
				return err
			}
			lbipamv1alpha1.RegisterLBIPAMServiceServer(d.GRPC(), lbipamv1alpha1.UnimplementedLBIPAMServiceServer{})
			return nil
		},
	}))
}
