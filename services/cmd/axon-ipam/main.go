// Command axon-ipam serves the cluster IPAM API (pools, node blocks, pod
// addresses) with its state in etcd.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/internal/etcdclient"
	"github.com/axon-cni/axon/services/ipam/allocator"
	"github.com/axon-cni/axon/services/ipam/server"
)

func main() {
	var etcd etcdclient.Config
	cfg := allocator.DefaultConfig()
	startTimeout := 30 * time.Second
	usageInterval := 10 * time.Second
	os.Exit(daemon.Main(daemon.Spec{
		Name:     "ipam",
		Defaults: daemon.Defaults{GRPCAddr: "127.0.0.1:9401", MetricsAddr: "127.0.0.1:9601"},
		Flags: func(fs *flag.FlagSet) {
			etcd.RegisterFlags(fs)
			fs.StringVar(&cfg.Root, "etcd-prefix", cfg.Root, "etcd key `prefix` of all IPAM state (ends in /)")
			fs.DurationVar(&cfg.StickyHold, "sticky-hold", cfg.StickyHold, "how long a released sticky allocation's addresses stay held by default")
			fs.DurationVar(&cfg.GCMinAge, "gc-min-age", cfg.GCMinAge, "allocations younger than this survive GarbageCollect by default")
			fs.DurationVar(&cfg.BlockReleaseGrace, "block-release-grace", cfg.BlockReleaseGrace, "how long a node's extra block stays empty before it goes back to its pool")
			fs.DurationVar(&startTimeout, "etcd-start-timeout", startTimeout, "how long start-up waits for etcd to load IPAM state")
			fs.DurationVar(&cfg.RequestTimeout, "etcd-request-timeout", cfg.RequestTimeout, "how long one etcd request of a call may take before the call fails with UNAVAILABLE")
			fs.DurationVar(&usageInterval, "usage-interval", usageInterval, "how often the pool and node usage metrics are read from etcd")
		},
		Setup: func(ctx context.Context, d *daemon.Daemon) error {
			if !strings.HasSuffix(cfg.Root, "/") {
				return &daemon.UsageError{Err: fmt.Errorf("--etcd-prefix must end in /, got %q", cfg.Root)}
			}
			if usageInterval <= 0 {
				return &daemon.UsageError{Err: fmt.Errorf("--usage-interval must be positive, got %s", usageInterval)}
			}
			if cfg.RequestTimeout < 0 {
				return &daemon.UsageError{Err: fmt.Errorf("--etcd-request-timeout must not be negative, got %s", cfg.RequestTimeout)}
			}
			cli, err := etcdclient.New(etcd)
			if err != nil {
				return err
			}
			d.OnShutdown(cli.Close)
			loadCtx, cancel := context.WithTimeout(ctx, startTimeout)
			defer cancel()
			alloc, err := allocator.New(loadCtx, cli, cfg, d.Logger().With(daemon.LogKeySubsys, "allocator"))
			if err != nil {
				return fmt.Errorf("load IPAM state from etcd: %w", err)
			}
			d.OnShutdown(func() error { alloc.Close(); return nil })
			// The health check is the allocator's: while it fails, calls
			// fail at once with UNAVAILABLE instead of waiting for etcd.
			d.AddCheck("etcd", alloc.CheckStore)
			m := server.NewMetrics(d.Registry(), alloc)
			usageCtx, stopUsage := context.WithCancel(ctx)
			usageDone := make(chan struct{})
			go func() {
				defer close(usageDone)
				m.RunUsage(usageCtx, usageInterval)
			}()
			d.OnShutdown(func() error { stopUsage(); <-usageDone; return nil })
			ipamv1alpha1.RegisterIPAMServiceServer(d.GRPC(), server.New(alloc, m, d.Logger()))
			return nil
		},
	}))
}
