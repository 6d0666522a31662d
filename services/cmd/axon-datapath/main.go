// Command axon-datapath is the per-node agent: it wires pods (veth, routes),
// loads the eBPF programs and serves the node's datapath API, to the CNI
// shim over a unix socket, and over TCP only when --grpc-addr asks for it,
// then with mTLS (anyone who reaches the API can rewire the node's pods).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/bootstrap"
	"github.com/axon-cni/axon/services/datapath/loader"
	"github.com/axon-cni/axon/services/datapath/masquerade"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/internal/daemon"
	ipamclient "github.com/axon-cni/axon/services/ipam/client"
)

func main() {
	host, _ := os.Hostname()
	var ipamTarget string
	ipamTLS := daemon.ClientTLS{Peer: "ipam"}
	opts := bootstrap.Options{
		Agent:              agent.Config{NodeName: host, RoutingMode: nodedev.ModeTunnel, Masquerade: true},
		GCMinAge:           time.Minute,
		HealthInterval:     5 * time.Second,
		MasqueradeInterval: 10 * time.Second,
		VanishedInterval:   30 * time.Second,
		FlowGCInterval:     30 * time.Second,
	}
	mapSizes := bpfdp.LoadOptions{
		EndpointMapMax: bpfdp.DefaultEndpointMapMax, RemoteMapMax: bpfdp.DefaultRemoteMapMax,
		ServiceMapMax: bpfdp.DefaultServiceMapMax, SlotMapMax: bpfdp.DefaultSlotMapMax, CTMapMax: bpfdp.DefaultCTMapMax,
	}
	os.Exit(daemon.Main(daemon.Spec{
		Name:         "datapath",
		TCPNeedsMTLS: true,
		// A full resync of services is one UpsertServices call: 100k
		// frontends with a few backends each take about 11 MiB.
		MaxRecvMsgSize: 64 << 20,
		Defaults: daemon.Defaults{
			UnixSocket:  "/run/axon/datapath.sock",
			MetricsAddr: "127.0.0.1:9602",
		},
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&opts.Agent.NodeName, "node-name", opts.Agent.NodeName, "this node's `name` (the Kubernetes node name)")
			fs.StringVar(&opts.NodeIPs, "node-ip", "", "comma-separated underlay `addresses` of this node, preferred first")
			fs.StringVar(&ipamTarget, "ipam-target", "127.0.0.1:9401", "gRPC `target` of axon-ipam (host:port or unix:///path)")
			ipamTLS.RegisterFlags(fs)
			fs.StringVar(&opts.Agent.RoutingMode, "routing-mode", opts.Agent.RoutingMode, "how pods reach other nodes: tunnel (VXLAN) or native")
			fs.StringVar(&opts.Agent.TunnelProtocol, "tunnel-protocol", nodedev.TunnelVXLAN, "overlay of tunnel mode: vxlan (UDP 8472) or geneve (UDP 6081)")
			fs.IntVar(&opts.Agent.MTU, "mtu", 0, "pod interface `MTU`; 0 derives it from the MTU of the underlay device (less 50 in tunnel mode)")
			fs.StringVar(&opts.Agent.UnderlayDevice, "underlay-device", "", "`device` packets to other nodes leave by (for axon_from_underlay, the pod MTU and BIG TCP); default: the device holding the node address, refused when that is a loopback or dummy device")
			fs.StringVar(&opts.Agent.StateDir, "state-dir", "/run/axon/datapath", "`directory` of the endpoint records")
			fs.StringVar(&opts.Agent.DeleteQueue, "cni-delete-queue", "/run/axon/cni-deletes", "`directory` where axon-cni queues DELs while the datapath is down")
			fs.BoolVar(&opts.Agent.BigTCP, "big-tcp", false, "BIG TCP: pods send and receive GSO packets of up to 192 KiB (IPv4 needs Linux 6.3; VXLAN or native routing; an underlay device that takes them); pods made before keep 64 KiB")
			fs.BoolVar(&opts.Agent.Masquerade, "masquerade", opts.Agent.Masquerade, "masquerade pod traffic leaving the pod CIDRs to the node's address (nftables)")
			fs.DurationVar(&opts.HealthInterval, "health-probe-interval", opts.HealthInterval, "how often peers' health endpoints are probed")
			fs.DurationVar(&opts.VanishedInterval, "endpoint-reconcile-interval", opts.VanishedInterval, "how often endpoints whose veth vanished are looked for (link deletions are acted on at once)")
			fs.DurationVar(&opts.FlowGCInterval, "flow-gc-interval", opts.FlowGCInterval, "how often the connection tracker's idle service flows are removed")
			fs.DurationVar(&opts.GCMinAge, "gc-min-age", opts.GCMinAge, "endpoints younger than this survive a CNI GC")
			fs.DurationVar(&opts.MasqueradeInterval, "masquerade-sync-interval", opts.MasqueradeInterval, "how often the masquerade rules are brought in line with IPAM's pools")
			fs.StringVar(&opts.Agent.PinDir, "bpf-pin-dir", "", "bpffs `directory` of this node's pinned maps and links (default /sys/fs/bpf/axon/<node>)")
			fs.Var(mapMax{&mapSizes.EndpointMapMax}, "bpf-endpoint-map-max", "`entries` of the endpoint maps: pod addresses per family on this node; changing it migrates the pinned maps")
			fs.Var(mapMax{&mapSizes.RemoteMapMax}, "bpf-remote-map-max", "`entries` of the remote-block maps: other nodes' pod blocks per family; changing it migrates the pinned maps")
			fs.Var(mapMax{&mapSizes.ServiceMapMax}, "bpf-service-map-max", "`entries` of the service map: frontends (two for a LOCAL-policy external one); changing it migrates the pinned maps")
			fs.Var(mapMax{&mapSizes.SlotMapMax}, "bpf-slot-map-max", "`entries` of the backend slot map: every frontend's backends (weights expanded), with room for a batch's new set beside the old; changing it migrates the pinned maps")
			fs.Var(mapMax{&mapSizes.CTMapMax}, "bpf-ct-map-max", "`entries` of the connection tracker: two per translated flow; changing it migrates the pinned maps")
		},
		Setup: func(ctx context.Context, d *daemon.Daemon) error {
			return bootstrap.Run(ctx, d, opts, bootstrap.Deps{
				IPAM: func() (ipamv1alpha1.IPAMServiceClient, io.Closer, error) {
					creds, err := ipamTLS.Credentials(ipamTarget)
					if err != nil {
						return nil, nil, err
					}
					conn, err := grpc.NewClient(ipamTarget, grpc.WithTransportCredentials(creds))
					if err != nil {
						return nil, nil, &daemon.UsageError{Err: fmt.Errorf("--ipam-target: %w", err)}
					}
					// Pods starting together ask IPAM for their addresses together.
					return ipamclient.New(ipamv1alpha1.NewIPAMServiceClient(conn)), conn, nil
				},
				// No typed nil pointers in the interfaces on failure.
				Datapath: func(pinDir string) (bootstrap.Datapath, error) {
					l, err := loader.Open(pinDir, mapSizes)
					if err != nil {
						return nil, err
					}
					return l, nil
				},
				Namespaces: func() (bootstrap.Namespaces, error) {
					l, err := nl.NewLinux()
					if err != nil {
						return nil, err
					}
					return l, nil
				},
				Masquerade: masquerade.NFTables{},
				Sysctl:     nodedev.WriteSysctl,
			})
		},
	}))
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
