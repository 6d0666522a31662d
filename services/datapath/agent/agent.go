// Package agent is the node agent behind axon-datapath: it registers the
// node with IPAM, sets up the node's devices, and creates, checks and
// removes pod endpoints (addresses from IPAM, veth plumbing, eBPF maps and
// program attachment), keeping a record of each on disk so a restart loses
// nothing. It runs in the node's network namespace.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/veth"
)

// Routing modes between nodes.
const (
	ModeTunnel = "tunnel"
	ModeNative = "native"
)

// Config configures an Agent.
type Config struct {
	// NodeName is this node's name in IPAM.
	NodeName string
	// NodeIPs are the node's underlay addresses, preferred first.
	NodeIPs []netip.Addr
	// RoutingMode is ModeTunnel or ModeNative.
	RoutingMode string
	// TunnelProtocol is TunnelVXLAN (default) or TunnelGeneve.
	TunnelProtocol string
	// MTU of pod interfaces; 0 derives it from the MTU of the underlay
	// device, less the encapsulation overhead in tunnel mode (see
	// derivePodMTU).
	MTU int
	// StateDir keeps one record per endpoint.
	StateDir string
	// PinDir is this node's bpffs directory for pinned maps and links.
	PinDir string
	// ReleaseRetry is how often releases that IPAM could not take are retried.
	ReleaseRetry time.Duration
	// Masquerade rewrites the source of pod traffic leaving the pod CIDRs
	// to the node's address.
	Masquerade bool
	// DeleteQueue is where axon-cni queues DELs while the agent is down;
	// the agent replays them once the node is set up, then periodically.
	DeleteQueue string
	// BigTCP lets pods send and receive GSO packets above 64 KiB (see
	// bigtcp.go). Pods made before it was turned on keep 64 KiB.
	BigTCP bool
}

// Datapath is the eBPF side of the node: programs loaded once, per-endpoint
// entries in maps, and the program on each pod's host-side veth.
type Datapath interface {
	// AttachEndpoint puts the pod program on a pod's host veth; it stays
	// until the veth is deleted.
	AttachEndpoint(ifindex int) error
	// IsEndpointDevice reports whether ifindex carries the pod program.
	IsEndpointDevice(ifindex int) bool
	PutEndpoint(ip netip.Addr, ifindex int, id uint32, podMAC, hostMAC net.HardwareAddr) error
	DeleteEndpoint(ip netip.Addr) error
	// PutDevice and DeleteDevice keep which pod a host-side veth belongs
	// to: a pod may send any of its addresses out of any of its veths.
	PutDevice(ifindex int, pod uint32) error
	DeleteDevice(ifindex int) error
	// EndpointAddrs lists the addresses with endpoint entries.
	EndpointAddrs() ([]netip.Addr, error)
	// CheckEndpoint describes what is missing or wrong of a pod address's
	// eBPF state: the program on hostName, and the map entry (its host
	// ifindex, when not 0, and MACs).
	CheckEndpoint(hostName string, ip netip.Addr, ifindex int, podMAC, hostMAC net.HardwareAddr) []string
	PutRemote(block netip.Prefix, nodeIP netip.Addr) error
	DeleteRemote(block netip.Prefix) error
	// RemoteBlocks lists the remote blocks in the maps and their nodes.
	RemoteBlocks() (map[netip.Prefix]netip.Addr, error)
	// Configure sets the routing mode (through the tunnel device, VXLAN or
	// Geneve; native when tunnelIfindex is 0) and the node's underlay IPv4.
	Configure(tunnelIfindex int, geneve bool, nodeIP netip.Addr) error
	// AttachOverlay attaches the overlay programs to the VXLAN device.
	AttachOverlay(vxlanIfindex int) error
	// AttachUnderlay attaches the delivery program to the underlay device.
	AttachUnderlay(ifindex int) error
}

// Agent wires pods on one node.
type Agent struct {
	cfg     Config
	gsoMax  int // pods' GSO and GRO max size with BIG TCP; 0 without
	log     *slog.Logger
	ipam    ipamv1alpha1.IPAMServiceClient
	plumber *veth.Plumber
	bpf     Datapath
	store   store

	health healthState
	locks  attachmentLocks // serializes the changes of one endpoint
	pods   podKeys         // tells pods apart in the device map
	remote remoteState

	masqMu      sync.Mutex // serializes masquerade updates
	masqCIDRs   []netip.Prefix
	masqApplied bool

	mu      sync.Mutex // guards the fields below
	routers []netip.Addr
	nextID  uint32
	ready   error // nil once the node is set up
}

// New returns an agent; Start sets the node up.
func New(cfg Config, ipam ipamv1alpha1.IPAMServiceClient, bpf Datapath, log *slog.Logger) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node name is required")
	}
	if cfg.RoutingMode != ModeTunnel && cfg.RoutingMode != ModeNative {
		return nil, fmt.Errorf("routing mode must be %q or %q, got %q", ModeTunnel, ModeNative, cfg.RoutingMode)
	}
	switch cfg.TunnelProtocol {
	case "":
		cfg.TunnelProtocol = TunnelVXLAN
	case TunnelVXLAN, TunnelGeneve:
	default:
		return nil, fmt.Errorf("tunnel protocol must be %q or %q, got %q", TunnelVXLAN, TunnelGeneve, cfg.TunnelProtocol)
	}
	if cfg.ReleaseRetry == 0 {
		cfg.ReleaseRetry = 5 * time.Second
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	// The agent runs in the node's namespace: its own is the node's.
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("node network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	if cfg.RoutingMode == ModeTunnel && cfg.TunnelProtocol == TunnelGeneve {
		// A kernel without Geneve is a configuration error to report at
		// once, not a setup failure to retry forever.
		if err := probeGeneve(h); err != nil {
			h.Close()
			ns.Close()
			return nil, err
		}
	}
	if cfg.MTU == 0 {
		mtu, dev, err := derivePodMTU(h, cfg.NodeIPs, cfg.RoutingMode)
		switch {
		case errors.Is(err, errNoUnderlay):
			log.Warn("assuming a 1500-byte underlay for the pod MTU (set --mtu to override)", "err", err)
		case err != nil:
			h.Close()
			ns.Close()
			return nil, fmt.Errorf("pod MTU: %w", err)
		default:
			log.Info("pod MTU derived from the underlay", "device", dev.Attrs().Name, "underlay_mtu", dev.Attrs().MTU, "pod_mtu", mtu, "mode", cfg.RoutingMode)
		}
		cfg.MTU = mtu
	}
	if cfg.MTU < ipv6MinMTU {
		log.Warn("pod MTU is below IPv6's minimum: IPv6 pods will not work", "pod_mtu", cfg.MTU, "ipv6_min", ipv6MinMTU)
	}
	var gsoMax int
	if cfg.BigTCP {
		// Like a missing Geneve module: a configuration error, reported at once.
		if gsoMax, err = bigTCPSize(h, cfg); err != nil {
			h.Close()
			ns.Close()
			return nil, err
		}
		log.Info("BIG TCP: pods take GSO packets above 64 KiB", "gso_max_size", gsoMax)
	}
	return &Agent{
		cfg: cfg, gsoMax: gsoMax, log: log, ipam: ipam, plumber: &veth.Plumber{Node: h, NodeNS: ns}, bpf: bpf,
		store: store{dir: cfg.StateDir, log: log}, ready: errors.New("node not set up yet"),
		remote: remoteState{
			watched: map[netip.Prefix]remoteBlock{}, manual: map[string]*datapathv1alpha1.RemoteNode{},
			applied: map[netip.Prefix]remoteBlock{}, failed: map[netip.Prefix]bool{},
		},
	}, nil
}

// Start registers the node with IPAM, learns its router IPs, sets up its
// devices and reconciles the recorded endpoints.
func (a *Agent) Start(ctx context.Context) error {
	var addrs []string
	for _, ip := range a.cfg.NodeIPs {
		addrs = append(addrs, ip.String())
	}
	if _, err := a.ipam.UpdateNode(ctx, &ipamv1alpha1.UpdateNodeRequest{
		Node: &ipamv1alpha1.Node{Name: a.cfg.NodeName, Addresses: addrs}, AllowMissing: true,
	}); err != nil {
		return fmt.Errorf("register node %q with IPAM: %w", a.cfg.NodeName, err)
	}
	blocks, err := a.ipam.ClaimBlock(ctx, &ipamv1alpha1.ClaimBlockRequest{Node: a.cfg.NodeName})
	if err != nil {
		return fmt.Errorf("claim the node's first block: %w", err)
	}
	var routers []netip.Addr
	for _, b := range blocks.GetBlocks() {
		if ip, err := netip.ParseAddr(b.GetRouterIp()); err == nil {
			routers = append(routers, ip)
		}
	}
	if len(routers) == 0 {
		return errors.New("IPAM gave the node no router IP")
	}
	if err := setupNodeDevices(a.plumber.Node, routers, a.cfg.MTU); err != nil {
		return err
	}
	if a.gsoMax > 0 {
		if err := raiseGSOMaxSize(a.plumber.Node, a.cfg.NodeIPs, a.gsoMax); err != nil {
			return fmt.Errorf("BIG TCP: %w", err)
		}
	}
	if err := a.setupDatapath(); err != nil {
		return err
	}
	if a.cfg.Masquerade {
		if err := a.syncMasquerade(ctx); err != nil {
			return err
		}
	}
	eps, err := a.store.list()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.routers = routers // the source of routes to remote blocks
	a.mu.Unlock()
	eps = a.restoreEndpoints(ctx, eps)
	a.restoreRemotes()
	if err := a.restoreRemoteNodes(); err != nil {
		return fmt.Errorf("restore remote nodes: %w", err)
	}
	for _, ep := range eps {
		if int(ep.GetMtu()) > a.cfg.MTU {
			// Its full-size packets no longer fit the underlay once
			// encapsulated; only a new pod gets the new MTU.
			a.log.Warn("endpoint MTU exceeds the node's pod MTU; recreate the pod", "endpoint", ep.GetEndpointId(),
				"pod", ep.GetPodNamespace()+"/"+ep.GetPodName(), "endpoint_mtu", ep.GetMtu(), "pod_mtu", a.cfg.MTU)
		}
	}
	a.mu.Lock()
	for _, ep := range eps {
		a.nextID = max(a.nextID, ep.GetEndpointId())
	}
	a.ready = nil
	a.mu.Unlock()
	a.log.Info("node ready", "node", a.cfg.NodeName, "router_ips", routers, "endpoints", len(eps), "mode", a.cfg.RoutingMode)
	// DELs queued while the agent was down run before anything else waits
	// on them; failures stay queued for the periodic replay.
	a.replayDeletes(ctx)
	return nil
}

// Ready reports why the node cannot take endpoints, or nil.
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready
}

// RunReleaseRetries retries, until ctx ends, the address releases that
// IPAM was unavailable for when their endpoints were deleted.
func (a *Agent) RunReleaseRetries(ctx context.Context) {
	every(ctx, a.cfg.ReleaseRetry, func() {
		a.retryReleases(ctx)
		a.replayDeletes(ctx)
	})
}

// every calls fn each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// ipamError turns an IPAM failure into the datapath's status, keeping the
// code so the CNI shim can map it (exhausted pool, unknown pool, ...).
func ipamError(op string, err error) error {
	st, _ := status.FromError(err)
	return status.Errorf(st.Code(), "%s: IPAM: %s", op, st.Message())
}

func errUnavailable(format string, args ...any) error {
	return status.Errorf(codes.Unavailable, format, args...)
}

// setupDatapath creates the overlay device in tunnel mode and configures
// the eBPF programs for the routing mode.
func (a *Agent) setupDatapath() error {
	if a.bpf == nil {
		return nil
	}
	var nodeIP netip.Addr
	for _, ip := range a.cfg.NodeIPs {
		if ip.Is4() {
			nodeIP = ip
			break
		}
	}
	if a.cfg.RoutingMode == ModeNative {
		if err := a.bpf.Configure(0, false, nodeIP); err != nil {
			return err
		}
	} else {
		vx, err := ensureTunnel(a.plumber.Node, a.cfg.TunnelProtocol, a.cfg.MTU)
		if err != nil {
			return err
		}
		if err := a.bpf.AttachOverlay(vx); err != nil {
			return fmt.Errorf("attach overlay programs: %w", err)
		}
		if err := a.bpf.Configure(vx, a.cfg.TunnelProtocol == TunnelGeneve, nodeIP); err != nil {
			return err
		}
	}
	// Packets from other nodes for local pods skip the node's stack on the
	// way in: forwarding and connection tracking in native mode, the UDP
	// socket and the VXLAN device in tunnel mode. Without the program they
	// take the kernel's path, which works too.
	dev, err := underlayDevice(a.plumber.Node, a.cfg.NodeIPs)
	if err != nil {
		a.log.Warn("incoming pod traffic takes the kernel's path", "err", err)
		return nil
	}
	if err := a.bpf.AttachUnderlay(dev.Attrs().Index); err != nil {
		return fmt.Errorf("attach underlay program: %w", err)
	}
	return nil
}
