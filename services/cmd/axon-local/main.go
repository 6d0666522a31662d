// Command axon-local runs the whole Axon system on this machine: an
// embedded etcd and every service, until interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/axon-cni/axon/services/internal/daemon"
	"github.com/axon-cni/axon/services/localcluster"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "axon-local:", err)
		var usage *daemon.UsageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run() error {
	var cfg localcluster.Config
	var logCfg daemon.Config
	fs := flag.NewFlagSet("axon-local", flag.ContinueOnError)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fs.StringVar(&cfg.StateDir, "state-dir", ".run", "`directory` for etcd data and sockets")
	fs.StringVar(&cfg.BinDir, "bin-dir", filepath.Dir(self), "`directory` holding the axon-* binaries")
	fs.StringVar(&cfg.EtcdClientAddr, "etcd-client-addr", "127.0.0.1:2379", "embedded etcd client `address`")
	fs.StringVar(&cfg.EtcdPeerAddr, "etcd-peer-addr", "127.0.0.1:2380", "embedded etcd peer `address`")
	fs.StringVar(&cfg.Host, "host", "127.0.0.1", "`address` every service listens on")
	fs.IntVar(&cfg.PortBase, "port-base", 9400, "services listen on `port` base+1 (ipam) to base+5 (operator), metrics on base+201 to base+205; 0 picks free ports")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 30*time.Second, "how long each service may take to become healthy (one whose API is not implemented yet: to answer health)")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", 15*time.Second, "how long each service may take to stop")
	fs.IntVar(&cfg.Nodes, "nodes", 2, "simulated nodes (network namespaces with a datapath each; needs root)")
	fs.StringVar(&cfg.NetnsPrefix, "netns-prefix", "axon-", "`prefix` of the network namespaces (and bpffs directories) of the simulated nodes")
	fs.StringVar(&cfg.PodCIDR, "pod-cidr", "10.42.0.0/16", "IPv4 `CIDR` of the default pool")
	fs.IntVar(&cfg.DemoPods, "demo-pods", 1, "pods per node to wire through axon-cni at start (deleted at exit)")
	fs.StringVar(&cfg.PodCIDR6, "pod-cidr6", "fd00:42::/104", "IPv6 `CIDR` of the default pool; empty for IPv4 only")
	routing := fs.String("routing-mode", "tunnel", "how pods reach other nodes: tunnel (VXLAN) or native")
	bigTCP := fs.Bool("big-tcp", false, "run the datapaths with --big-tcp (pods take GSO packets of up to 192 KiB)")
	fs.StringVar(&logCfg.LogLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&logCfg.LogFormat, "log-format", "text", "log `format`: text or json")
	if err := daemon.ParseFlags(fs, os.Args[1:], "AXON_LOCAL"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &daemon.UsageError{Err: err}
	}
	cfg.DatapathArgs = []string{"--routing-mode", *routing}
	if *bigTCP {
		cfg.DatapathArgs = append(cfg.DatapathArgs, "--big-tcp")
	}
	log, err := logCfg.NewLogger(os.Stderr)
	if err != nil {
		return &daemon.UsageError{Err: err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return localcluster.Run(ctx, cfg, log, os.Stdout)
}
