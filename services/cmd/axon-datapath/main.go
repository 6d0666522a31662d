// Command axon-datapath is the per-node agent: it wires pods (veth, routes),
// loads the eBPF programs and serves the node's datapath API, to the CNI
// shim over a unix socket, and over TCP only when --grpc-addr asks for it,
// then with mTLS (anyone who reaches the API can rewire the node's pods).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/loader"
	"github.com/axon-cni/axon/services/datapath/masquerade"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/server"
	"github.com/axon-cni/axon/services/internal/daemon"
	ipamclient "github.com/axon-cni/axon/services/ipam/client"
)

func main() {
	host, _ := os.Hostname()
	cfg := agent.Config{NodeName: host, RoutingMode: nodedev.ModeTunnel, Masquerade: true}
	var ipamTarget, nodeIPs string
	ipamTLS := daemon.ClientTLS{Peer: "ipam"}
	gcMinAge := time.Minute
	healthInterval := 5 * time.Second
	masqInterval := 10 * time.Second
	mapSizes := bpfdp.LoadOptions{EndpointMapMax: bpfdp.DefaultEndpointMapMax, RemoteMapMax: bpfdp.DefaultRemoteMapMax}
	vanishedInterval := 30 * time.Second
	os.Exit(daemon.Main(daemon.Spec{
		Name:         "datapath",
		TCPNeedsMTLS: true,
		Defaults: daemon.Defaults{
			UnixSocket:  "/run/axon/datapath.sock",
			MetricsAddr: "127.0.0.1:9602",
		},
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's `name` (the Kubernetes node name)")
			fs.StringVar(&nodeIPs, "node-ip", "", "comma-separated underlay `addresses` of this node, preferred first")
			fs.StringVar(&ipamTarget, "ipam-target", "127.0.0.1:9401", "gRPC `target` of axon-ipam (host:port or unix:///path)")
			ipamTLS.RegisterFlags(fs)
			fs.StringVar(&cfg.RoutingMode, "routing-mode", cfg.RoutingMode, "how pods reach other nodes: tunnel (VXLAN) or native")
			fs.StringVar(&cfg.TunnelProtocol, "tunnel-protocol", nodedev.TunnelVXLAN, "overlay of tunnel mode: vxlan (UDP 8472) or geneve (UDP 6081)")
			fs.IntVar(&cfg.MTU, "mtu", 0, "pod interface `MTU`; 0 derives it from the MTU of the underlay device (less 50 in tunnel mode)")
			fs.StringVar(&cfg.UnderlayDevice, "underlay-device", "", "`device` packets to other nodes leave by (for axon_from_underlay, the pod MTU and BIG TCP); default: the device holding the node address, refused when that is a loopback or dummy device")
			fs.StringVar(&cfg.StateDir, "state-dir", "/run/axon/datapath", "`directory` of the endpoint records")
			fs.StringVar(&cfg.DeleteQueue, "cni-delete-queue", "/run/axon/cni-deletes", "`directory` where axon-cni queues DELs while the datapath is down")
			fs.BoolVar(&cfg.BigTCP, "big-tcp", false, "BIG TCP: pods send and receive GSO packets of up to 192 KiB (IPv4 needs Linux 6.3; VXLAN or native routing; an underlay device that takes them); pods made before keep 64 KiB")
			fs.BoolVar(&cfg.Masquerade, "masquerade", cfg.Masquerade, "masquerade pod traffic leaving the pod CIDRs to the node's address (nftables)")
			fs.DurationVar(&healthInterval, "health-probe-interval", healthInterval, "how often peers' health endpoints are probed")
			fs.DurationVar(&vanishedInterval, "endpoint-reconcile-interval", vanishedInterval, "how often endpoints whose veth vanished are looked for (link deletions are acted on at once)")
			fs.DurationVar(&gcMinAge, "gc-min-age", gcMinAge, "endpoints younger than this survive a CNI GC")
			fs.DurationVar(&masqInterval, "masquerade-sync-interval", masqInterval, "how often the masquerade rules are brought in line with IPAM's pools")
			fs.StringVar(&cfg.PinDir, "bpf-pin-dir", "", "bpffs `directory` of this node's pinned maps and links (default /sys/fs/bpf/axon/<node>)")
			fs.Var(mapMax{&mapSizes.EndpointMapMax}, "bpf-endpoint-map-max", "`entries` of the endpoint maps: pod addresses per family on this node; changing it migrates the pinned maps")
			fs.Var(mapMax{&mapSizes.RemoteMapMax}, "bpf-remote-map-max", "`entries` of the remote-block maps: other nodes' pod blocks per family; changing it migrates the pinned maps")
		},
		Setup: func(ctx context.Context, d *daemon.Daemon) error {
			for s := range strings.SplitSeq(nodeIPs, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				ip, err := netip.ParseAddr(s)
				if err != nil {
					return &daemon.UsageError{Err: fmt.Errorf("--node-ip: %w", err)}
				}
				cfg.NodeIPs = append(cfg.NodeIPs, ip)
			}
			if err := cfg.Validate(); err != nil {
				return &daemon.UsageError{Err: err}
			}
			if vanishedInterval <= 0 {
				return &daemon.UsageError{Err: fmt.Errorf("--endpoint-reconcile-interval must be positive, got %s", vanishedInterval)}
			}
			if cfg.PinDir == "" {
				cfg.PinDir = "/sys/fs/bpf/axon/" + cfg.NodeName
			}
			creds, err := ipamTLS.Credentials(ipamTarget)
			if err != nil {
				return err
			}
			conn, err := grpc.NewClient(ipamTarget, grpc.WithTransportCredentials(creds))
			if err != nil {
				return &daemon.UsageError{Err: fmt.Errorf("--ipam-target: %w", err)}
			}
			// Shutdown hooks run in reverse order: the background loops stop
			// (below) before the agent, the BPF objects and then the IPAM
			// connection they use are closed.
			d.OnShutdown(conn.Close)
			bpf, err := loader.Open(cfg.PinDir, mapSizes)
			if err != nil {
				return err
			}
			d.OnShutdown(bpf.Close)
			namespaces, err := nl.NewLinux()
			if err != nil {
				return err
			}
			d.OnShutdown(namespaces.Close)
			// Pods starting together ask IPAM for their addresses together.
			ipam := ipamclient.New(ipamv1alpha1.NewIPAMServiceClient(conn))
			a, err := agent.New(cfg, agent.Deps{
				Namespaces: namespaces, Datapath: bpf, IPAM: ipam,
				Masquerade: masquerade.NFTables{}, Sysctl: nodedev.WriteSysctl,
			}, d.Logger().With(daemon.LogKeySubsys, "agent"))
			if err != nil {
				return err // not a usage error: the flags were fine, the node is not
			}
			d.OnShutdown(func() error { a.Close(); return nil })
			d.AddCheck("node", func(context.Context) error { return a.Ready() })
			bg, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			d.OnShutdown(func() error { cancel(); wg.Wait(); return nil })
			wg.Go(func() {
				if !startWithRetry(bg, a, d) {
					return
				}
				wg.Go(func() { a.RunHealth(bg, healthInterval) })
				wg.Go(func() { a.RunMasquerade(bg, masqInterval) })
				wg.Go(func() { a.RunVanishedEndpoints(bg, vanishedInterval) })
				a.RunRemoteWatch(bg)
			})
			wg.Go(func() { a.RunReleaseRetries(bg) })
			datapathv1alpha1.RegisterDatapathServiceServer(d.GRPC(), server.New(a.Endpoints(), a.Remotes(), a, gcMinAge))
			server.RegisterMetrics(d.Registry(), bpf, a)
			return nil
		},
	}))
}

// startWithRetry sets the node up, retrying while IPAM is unreachable; the
// node reports NOT_SERVING (and CNI STATUS not ready) until it succeeds.
// It reports whether the node was set up before ctx ended.
func startWithRetry(ctx context.Context, a *agent.Agent, d *daemon.Daemon) bool {
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.Start(sctx)
		cancel()
		if err == nil {
			// Report SERVING now, not at the next health interval.
			d.Recheck()
			return true
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return false
		}
		d.Logger().Warn("node setup failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
	}
}

// mapMax is a map size flag: a positive number (zero would mean the
// build's default to bpf/datapath, which the flag's default already shows).
type mapMax struct{ v *uint32 }

func (m mapMax) String() string {
	if m.v == nil {
		return ""
	}
	return strconv.FormatUint(uint64(*m.v), 10)
}

func (m mapMax) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return err
	}
	if n == 0 || n > bpfdp.MaxMapMax {
		return fmt.Errorf("want 1 to %d", bpfdp.MaxMapMax)
	}
	*m.v = uint32(n)
	return nil
}
