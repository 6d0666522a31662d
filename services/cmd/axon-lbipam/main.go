// Command axon-lbipam serves LoadBalancer IP allocation from pools, with its
// state in etcd.
//
// Its API is not implemented yet: every RPC answers UNIMPLEMENTED and health
// reports NOT_SERVING, so that nothing mistakes it for a working service.
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
	os.Exit(daemon.Main(spec()))
}

// spec describes the service to the daemon bootstrap.
func spec() daemon.Spec {
	var etcd etcdclient.Config
	return daemon.Spec{
		Name:     "lbipam",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9403", MetricsAddr: "127.0.0.1:9603"},
		Flags:    func(fs *flag.FlagSet) { etcd.RegisterFlags(fs) },
		Setup: func(_ context.Context, d *daemon.Daemon) error {
			if _, err := etcdclient.Attach(d, etcd); err != nil {
				return err
			}
			lbipamv1alpha1.RegisterLBIPAMServiceServer(d.GRPC(), lbipamv1alpha1.UnimplementedLBIPAMServiceServer{})
			d.AddCheck("api", daemon.NotImplemented(lbipamv1alpha1.LBIPAMService_ServiceDesc.ServiceName))
			return nil
		},
	}
}
