// Package bootstrap wires the node agent into its daemon: it checks the
// datapath's flags, opens the agent's dependencies, starts the agent's
// background loops and registers the API, health check, metrics and the
// shutdown hooks, in the order shutdown needs. axon-datapath's main calls
// Run from its daemon Setup; tests call it with fakes.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/masquerade"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/server"
	"github.com/axon-cni/axon/services/internal/daemon"
)

// nodeAddrInterval is how often the node's addresses are checked for the
// programs (node ports answer on every one).
const nodeAddrInterval = 10 * time.Second

// Host is what Run needs of the daemon: a *daemon.Daemon.
type Host interface {
	// OnShutdown registers a hook; hooks run in reverse order of
	// registration, also when Run fails.
	OnShutdown(fn func() error)
	AddCheck(name string, fn daemon.Check)
	GRPC() *grpc.Server
	Registry() prometheus.Registerer
	Logger() *slog.Logger
	Recheck()
}

// Options are the datapath's flags.
type Options struct {
	// Agent is the agent's configuration; its NodeIPs are added from
	// NodeIPs, and an empty PinDir becomes /sys/fs/bpf/axon/<node>.
	Agent agent.Config
	// NodeIPs is --node-ip: comma-separated addresses, preferred first.
	NodeIPs string
	// GCMinAge protects endpoints younger than it from a CNI GC.
	GCMinAge time.Duration
	// HealthInterval is how often peers' health endpoints are probed.
	HealthInterval time.Duration
	// MasqueradeInterval is how often the masquerade rules are synced.
	MasqueradeInterval time.Duration
	// VanishedInterval is how often endpoints whose veth vanished are
	// looked for; it must be positive.
	VanishedInterval time.Duration
	// FlowGCInterval is how often the connection tracker's idle flows are
	// removed; it must be positive.
	FlowGCInterval time.Duration
}

// Datapath is the node's eBPF side as the daemon holds it (a *loader.Loader).
type Datapath interface {
	bpfmaps.Datapath
	server.StatsSource
	Close() error
}

// Namespaces is the node's netlink as the daemon holds it (an *nl.Linux).
type Namespaces interface {
	nl.Namespaces
	Close() error
}

// Deps open the agent's dependencies; Run opens them in this order and
// closes them in the reverse one at shutdown.
type Deps struct {
	// IPAM dials IPAM; the closer ends the connection. An error that is
	// the command line's (a bad target) should be a *daemon.UsageError.
	IPAM func() (ipamv1alpha1.IPAMServiceClient, io.Closer, error)
	// Datapath opens the eBPF objects pinned under pinDir.
	Datapath func(pinDir string) (Datapath, error)
	// Namespaces opens the node's netlink.
	Namespaces func() (Namespaces, error)
	// Masquerade installs the masquerade rules (masquerade.NFTables).
	Masquerade masquerade.Rules
	// Sysctl writes the forwarding sysctls (nodedev.WriteSysctl).
	Sysctl nodedev.Sysctl
}

// Run checks opts, opens deps and starts the agent on h. A problem with
// opts is a *daemon.UsageError (exit code 2); a node that cannot be set up
// is not (exit code 1). Shutdown stops the background loops first, then
// closes the agent, the namespaces, the eBPF objects and last the IPAM
// connection, each after everything that uses it.
func Run(ctx context.Context, h Host, opts Options, deps Deps) error {
	cfg, err := opts.config()
	if err != nil {
		return &daemon.UsageError{Err: err}
	}
	ipam, conn, err := deps.IPAM()
	if err != nil {
		return err
	}
	h.OnShutdown(conn.Close)
	bpf, err := deps.Datapath(cfg.PinDir)
	if err != nil {
		return err
	}
	h.OnShutdown(bpf.Close)
	namespaces, err := deps.Namespaces()
	if err != nil {
		return err
	}
	h.OnShutdown(namespaces.Close)
	a, err := agent.New(cfg, agent.Deps{
		Namespaces: namespaces, Datapath: bpf, IPAM: ipam,
		Masquerade: deps.Masquerade, Sysctl: deps.Sysctl,
		LB: bpf,
	}, h.Logger().With(daemon.LogKeySubsys, "agent"))
	if err != nil {
		// Not a usage error: the flags were fine, the node is not.
		return fmt.Errorf("create the agent: %w", err)
	}
	h.OnShutdown(func() error { a.Close(); return nil })
	h.AddCheck("node", func(context.Context) error { return a.Ready() })
	// The loops outlive Setup's ctx: they end with the daemon's shutdown,
	// the first hook to run.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	h.OnShutdown(func() error { cancel(); wg.Wait(); return nil })
	wg.Go(func() {
		if !startWithRetry(bg, a, h) {
			return
		}
		wg.Go(func() { a.RunHealth(bg, opts.HealthInterval) })
		wg.Go(func() { a.RunMasquerade(bg, opts.MasqueradeInterval) })
		wg.Go(func() { a.RunVanishedEndpoints(bg, opts.VanishedInterval) })
		wg.Go(func() { a.RunServiceFlowGC(bg, opts.FlowGCInterval) })
		wg.Go(func() { a.RunNodeAddrs(bg, nodeAddrInterval) })
		a.RunRemoteWatch(bg)
	})
	wg.Go(func() { a.RunReleaseRetries(bg) })
	wg.Go(func() { a.RunIPAMProbe(bg) })
	datapathv1alpha1.RegisterDatapathServiceServer(h.GRPC(), server.New(a.Endpoints(), a.Remotes(), a.Services(), a, opts.GCMinAge))
	server.RegisterMetrics(h.Registry(), bpf, a)
	h.Registry().MustRegister(a.Services().Collector())
	return nil
}

// config returns the agent's configuration from opts, or what is wrong
// with the flags.
func (opts Options) config() (agent.Config, error) {
	cfg := opts.Agent
	for s := range strings.SplitSeq(opts.NodeIPs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return cfg, fmt.Errorf("--node-ip: %w", err)
		}
		cfg.NodeIPs = append(cfg.NodeIPs, ip)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	if opts.VanishedInterval <= 0 {
		return cfg, fmt.Errorf("--endpoint-reconcile-interval must be positive, got %s", opts.VanishedInterval)
	}
	if opts.FlowGCInterval <= 0 {
		return cfg, fmt.Errorf("--flow-gc-interval must be positive, got %s", opts.FlowGCInterval)
	}
	if cfg.PinDir == "" {
		cfg.PinDir = "/sys/fs/bpf/axon/" + cfg.NodeName
	}
	return cfg, nil
}

// startWithRetry sets the node up, retrying while IPAM is unreachable; the
// node reports NOT_SERVING (and CNI STATUS not ready) until it succeeds.
// It reports whether the node was set up before ctx ended.
func startWithRetry(ctx context.Context, a *agent.Agent, h Host) bool {
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.Start(sctx)
		cancel()
		if err == nil {
			// Report SERVING now, not at the next health interval.
			h.Recheck()
			return true
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return false
		}
		h.Logger().Warn("node setup failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
	}
}
