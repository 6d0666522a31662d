// Package agent is the composition root of axon-datapath's node agent: it
// builds the endpoint, node-device, remote, health and masquerade parts
// from the seams it is given (netlink namespaces, the eBPF datapath, IPAM),
// runs the node's start-up sequence, reports readiness, and runs the
// background loops. The logic lives in those parts; this package wires them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/healthcheck"
	"github.com/axon-cni/axon/services/datapath/internal/periodic"
	"github.com/axon-cni/axon/services/datapath/lb"
	"github.com/axon-cni/axon/services/datapath/masquerade"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/remote"
	"github.com/axon-cni/axon/services/datapath/veth"
)

// Config configures an Agent.
type Config struct {
	// NodeName is this node's name in IPAM.
	NodeName string
	// NodeIPs are the node's underlay addresses, preferred first.
	NodeIPs []netip.Addr
	// RoutingMode is nodedev.ModeTunnel or nodedev.ModeNative.
	RoutingMode string
	// TunnelProtocol is nodedev.TunnelVXLAN (default) or
	// nodedev.TunnelGeneve.
	TunnelProtocol string
	// MTU of pod interfaces; 0 derives it from the MTU of the underlay
	// device, less the encapsulation overhead in tunnel mode (see
	// nodedev.DerivePodMTU).
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
	// UnderlayDevice names the device packets to other nodes leave by
	// (--underlay-device): where axon_from_underlay goes, and what the pod
	// MTU and BIG TCP are sized for. Empty takes the device holding the
	// node address; New refuses a node address on a loopback or dummy
	// device then, rather than guess.
	UnderlayDevice string
	// BigTCP lets pods send and receive GSO packets above 64 KiB (see
	// nodedev/bigtcp.go). Pods made before it was turned on keep 64 KiB.
	BigTCP bool
}

// Validate reports what is wrong with the configuration's values, before
// anything on the node is looked at.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("node name is required")
	}
	if c.RoutingMode != nodedev.ModeTunnel && c.RoutingMode != nodedev.ModeNative {
		return fmt.Errorf("routing mode must be %q or %q, got %q", nodedev.ModeTunnel, nodedev.ModeNative, c.RoutingMode)
	}
	switch c.TunnelProtocol {
	case "", nodedev.TunnelVXLAN, nodedev.TunnelGeneve:
	default:
		return fmt.Errorf("tunnel protocol must be %q or %q, got %q", nodedev.TunnelVXLAN, nodedev.TunnelGeneve, c.TunnelProtocol)
	}
	return nil
}

// Deps are the agent's seams to the node and the control plane; tests pass
// fakes.
type Deps struct {
	// Namespaces opens netlink in the node's namespace and pods'.
	Namespaces nl.Namespaces
	// Datapath is the eBPF side; nil runs without it (native mode only).
	Datapath bpfmaps.Datapath
	// LB is the service load balancer's side of the maps; nil runs
	// without service load balancing (its RPCs fail with
	// FAILED_PRECONDITION).
	LB bpfmaps.LBMaps
	// IPAM is the IPAM service.
	IPAM ipamv1alpha1.IPAMServiceClient
	// Masquerade installs the masquerading rules (masquerade.NFTables).
	Masquerade masquerade.Rules
	// Sysctl writes the forwarding sysctls (nodedev.WriteSysctl).
	Sysctl nodedev.Sysctl
}

// Agent wires pods on one node.
type Agent struct {
	cfg    Config
	gsoMax int // pods' GSO and GRO max size with BIG TCP; 0 without
	log    *slog.Logger
	deps   Deps
	node   nl.Handle // in the node's namespace

	endpoints *endpoint.Manager
	remotes   *remote.Manager
	prober    *health.Prober
	healthEP  *health.Endpoint
	masq      *masquerade.Syncer
	services  *lb.Manager
	// healthChecks serve the services' health check node ports.
	healthChecks *healthcheck.Servers

	dpMu sync.Mutex // guards dpConfig
	// dpConfig is the datapath configuration as last written (nodeaddrs.go).
	dpConfig bpfmaps.Config

	mu      sync.Mutex // guards the fields below
	routers []netip.Addr
	ready   error // nil once the node is set up
	// ipamDown is why the last IPAM probe got no answer; nil while IPAM
	// answers (and before the first probe: Start needs IPAM to answer).
	ipamDown error
}

// New returns an agent; Start sets the node up. Configuration errors (an
// unknown mode, a kernel without Geneve when it is asked for, BIG TCP the
// node cannot do) are reported here, at once, rather than retried.
func New(cfg Config, deps Deps, log *slog.Logger) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TunnelProtocol == "" {
		cfg.TunnelProtocol = nodedev.TunnelVXLAN
	}
	switch {
	case deps.Namespaces == nil || deps.IPAM == nil || deps.Sysctl == nil:
		return nil, errors.New("agent needs Namespaces, IPAM and Sysctl")
	case cfg.Masquerade && deps.Masquerade == nil:
		return nil, errors.New("masquerading needs Masquerade rules")
	}
	if cfg.ReleaseRetry == 0 {
		cfg.ReleaseRetry = 5 * time.Second
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	h, err := deps.Namespaces.Node()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if cfg.RoutingMode == nodedev.ModeTunnel && cfg.TunnelProtocol == nodedev.TunnelGeneve {
		if err := nodedev.ProbeGeneve(h); err != nil {
			return nil, err
		}
	}
	if err := checkUnderlay(h, cfg); err != nil {
		return nil, err
	}
	if cfg.MTU == 0 {
		mtu, dev, err := nodedev.DerivePodMTU(h, cfg.NodeIPs, cfg.UnderlayDevice, cfg.RoutingMode)
		switch {
		case errors.Is(err, nodedev.ErrNoUnderlay):
			log.Warn("assuming a 1500-byte underlay for the pod MTU (set --mtu to override)", "err", err)
		case err != nil:
			return nil, fmt.Errorf("pod MTU: %w", err)
		default:
			log.Info("pod MTU derived from the underlay", "device", dev.Attrs().Name, "underlay_mtu", dev.Attrs().MTU, "pod_mtu", mtu, "mode", cfg.RoutingMode)
		}
		cfg.MTU = mtu
	}
	if cfg.MTU < nodedev.IPv6MinMTU {
		log.Warn("pod MTU is below IPv6's minimum: IPv6 pods will not work", "pod_mtu", cfg.MTU, "ipv6_min", nodedev.IPv6MinMTU)
	}
	var gsoMax int
	if cfg.BigTCP {
		if gsoMax, err = nodedev.BigTCPSize(h, cfg.NodeIPs, cfg.UnderlayDevice, cfg.RoutingMode, cfg.TunnelProtocol); err != nil {
			return nil, err
		}
		log.Info("BIG TCP: pods take GSO packets above 64 KiB", "gso_max_size", gsoMax)
	}
	a := &Agent{cfg: cfg, gsoMax: gsoMax, log: log, deps: deps, node: h, ready: errors.New("node not set up yet")}
	a.prober = health.NewProber(deps.IPAM, log)
	a.healthChecks = healthcheck.New(cfg.NodeIPs, log)
	a.services = lb.New(lb.Config{NodeName: cfg.NodeName, ServiceMap: lb.ServiceMap, HealthChecks: a.healthChecks}, deps.LB, log)
	// Endpoints' host ports are entries of the load balancer.
	var hostPorts endpoint.HostPorts
	if deps.LB != nil {
		hostPorts = a.services
	}
	a.endpoints = endpoint.New(endpoint.Config{
		NodeName: cfg.NodeName, StateDir: cfg.StateDir, MTU: cfg.MTU, GSOMaxSize: gsoMax, DeleteQueue: cfg.DeleteQueue,
		Reserved:  func(att *datapathv1alpha1.Attachment) bool { return health.IsEndpoint(cfg.NodeName, att) },
		HostPorts: hostPorts,
	}, deps.IPAM, &veth.Plumber{Namespaces: deps.Namespaces}, h, deps.Datapath, a.Ready, log)
	a.remotes = remote.New(remote.Config{
		NodeName: cfg.NodeName, Mode: cfg.RoutingMode, TunnelProtocol: cfg.TunnelProtocol, MTU: cfg.MTU, StateDir: cfg.StateDir,
	}, deps.IPAM, h, deps.Datapath, a.prober, a.Ready, log)
	a.healthEP = health.NewEndpoint(cfg.NodeName, cfg.StateDir, deps.Namespaces, h, a.endpoints)
	if cfg.Masquerade {
		a.masq = masquerade.NewSyncer(deps.IPAM, deps.Masquerade, nodedev.TunnelDevice(cfg.TunnelProtocol), log)
	}
	return a, nil
}

// checkUnderlay refuses an underlay the agent cannot choose safely (see
// nodedev.UnderlayDevice), and in tunnel mode a node with no device holding
// a node address: the programs encapsulate from that address, and
// axon_from_underlay belongs on its device.
func checkUnderlay(h nl.Handle, cfg Config) error {
	_, err := nodedev.UnderlayDevice(h, cfg.NodeIPs, cfg.UnderlayDevice)
	switch {
	case errors.Is(err, nodedev.ErrNoUnderlay) && cfg.RoutingMode == nodedev.ModeTunnel:
		return fmt.Errorf("underlay: tunnel mode needs a node address (--node-ip) held by a device of this node, or --underlay-device: %w", err)
	case errors.Is(err, nodedev.ErrNoUnderlay):
		return nil // native mode: the kernel's path, without axon_from_underlay
	case err != nil:
		return fmt.Errorf("underlay: %w", err)
	}
	return nil
}

// Close closes the health check node ports and releases the agent's
// netlink handle; what it set up on the node stays.
func (a *Agent) Close() {
	_ = a.healthChecks.Close()
	a.node.Close()
}

// Endpoints is the node's endpoint lifecycle.
func (a *Agent) Endpoints() *endpoint.Manager { return a.endpoints }

// Remotes is the node's view of other nodes.
func (a *Agent) Remotes() *remote.Manager { return a.remotes }

// Services is the node's service load balancer.
func (a *Agent) Services() *lb.Manager { return a.services }

// Start restores the services from the maps, registers the node with
// IPAM, learns its router IPs, sets up its devices and the datapath,
// reconciles the recorded endpoints and remote nodes, and has IPAM release
// the node's allocations of no endpoint (a crash during an ADD); then it
// replays the DELs queued while the agent was down.
func (a *Agent) Start(ctx context.Context) error {
	// First, and without IPAM: until then service calls are UNAVAILABLE;
	// then a client's resync finds the restored revisions, and services
	// can be programmed while the rest of the node waits for IPAM.
	if err := a.services.Restore(ctx); err != nil {
		return fmt.Errorf("restore services: %w", err)
	}
	if err := a.registerNode(ctx); err != nil {
		return err
	}
	blocks, err := a.deps.IPAM.ClaimBlock(ctx, &ipamv1alpha1.ClaimBlockRequest{Node: a.cfg.NodeName})
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
	if err := nodedev.Setup(a.node, a.deps.Sysctl, routers, a.cfg.MTU); err != nil {
		return err
	}
	if a.gsoMax > 0 {
		if err := nodedev.RaiseGSOMaxSize(a.node, a.cfg.NodeIPs, a.cfg.UnderlayDevice, a.gsoMax); err != nil {
			return fmt.Errorf("BIG TCP: %w", err)
		}
	}
	if err := a.setupDatapath(); err != nil {
		return err
	}
	if a.masq != nil {
		if err := a.masq.Sync(ctx); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.routers = routers
	a.mu.Unlock()
	a.remotes.SetRouters(routers) // the source of routes to remote blocks
	eps, err := a.endpoints.Restore(ctx)
	if err != nil {
		return err
	}
	// Before the node is ready, so that no ADD is in flight: what a crash
	// left allocated without an endpoint goes back to IPAM now, not at the
	// runtime's next CNI GC.
	if err := a.endpoints.ReleaseOrphans(ctx, health.Attachment(a.cfg.NodeName)); err != nil {
		return err
	}
	a.remotes.Restore()
	if err := a.remotes.RestoreNodes(); err != nil {
		return fmt.Errorf("restore remote nodes: %w", err)
	}
	a.mu.Lock()
	a.ready = nil
	a.mu.Unlock()
	a.log.Info("node ready", "node", a.cfg.NodeName, "router_ips", routers, "endpoints", len(eps), "mode", a.cfg.RoutingMode)
	// DELs queued while the agent was down run before anything else waits
	// on them; failures stay queued for the periodic replay.
	a.endpoints.ReplayDeletes(ctx)
	return nil
}

// registerAttempts bounds registerNode's re-reads after revision conflicts.
const registerAttempts = 5

// registerNode records the node's addresses in IPAM, or registers the node
// when it is absent. UpdateNode replaces the whole spec, so the agent reads
// the node first and changes only its addresses: the pod CIDRs are the
// operator's (Kubernetes' podCIDRs), and IPAM refuses to drop one that has
// become a block. The write is conditional on the revision read; a
// conflict (or, for a registration, the node appearing meanwhile) means
// someone else wrote, so the node is read again.
func (a *Agent) registerNode(ctx context.Context) error {
	addrs := make([]string, 0, len(a.cfg.NodeIPs))
	for _, ip := range a.cfg.NodeIPs {
		addrs = append(addrs, ip.String())
	}
	var err error
	for range registerAttempts {
		var got *ipamv1alpha1.GetNodeResponse
		got, err = a.deps.IPAM.GetNode(ctx, &ipamv1alpha1.GetNodeRequest{Name: a.cfg.NodeName})
		req := &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: a.cfg.NodeName, Addresses: addrs}}
		switch status.Code(err) {
		case codes.OK:
			cur := got.GetNode()
			if slices.Equal(cur.GetAddresses(), addrs) {
				return nil
			}
			req.Node.PodCidrs, req.ExpectedRevision = cur.GetPodCidrs(), cur.GetRevision()
		case codes.NotFound:
			req.AllowMissing = true
		default:
			return fmt.Errorf("register node %q with IPAM: read it: %w", a.cfg.NodeName, err)
		}
		_, err = a.deps.IPAM.UpdateNode(ctx, req)
		if c := status.Code(err); c != codes.Aborted && c != codes.AlreadyExists {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("register node %q with IPAM: %w", a.cfg.NodeName, err)
	}
	return nil
}

// Ready reports why the node cannot take endpoints, or nil.
func (a *Agent) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready
}

// setupDatapath creates the overlay device in tunnel mode and configures
// the eBPF programs for the routing mode.
func (a *Agent) setupDatapath() error {
	bpf := a.deps.Datapath
	if bpf == nil {
		return nil
	}
	c := bpfmaps.Config{Mode: bpfmaps.ModeNative}
	for _, ip := range a.cfg.NodeIPs {
		if ip.Is4() {
			c.NodeIP = ip
			break
		}
	}
	if a.cfg.RoutingMode == nodedev.ModeTunnel {
		tunnel, err := nodedev.EnsureTunnel(a.node, a.cfg.TunnelProtocol, a.cfg.MTU)
		if err != nil {
			return err
		}
		if err := bpf.AttachOverlay(tunnel); err != nil {
			return fmt.Errorf("attach overlay programs: %w", err)
		}
		c.Mode, c.TunnelIfindex, c.Geneve = bpfmaps.ModeTunnel, tunnel, a.cfg.TunnelProtocol == nodedev.TunnelGeneve
	}
	if err := a.configure(bpf, c); err != nil {
		return err
	}
	// The node's own processes reach services through the socket
	// programs; without them pods still do.
	if err := bpf.AttachSocketLB(); err != nil {
		a.log.Warn("the node's own processes cannot reach services", "err", err)
	}
	// Connections from outside to another node's backend leave with the
	// node's address and a port of nodedev's SNAT range.
	if err := nodedev.CheckNATPorts(); err != nil {
		a.log.Warn("SNAT ports of node ports may collide with the node's own connections", "err", err)
	}
	// Packets from other nodes for local pods skip the node's stack on the
	// way in: forwarding and connection tracking in native mode, the UDP
	// socket and the VXLAN device in tunnel mode. Without the program they
	// take the kernel's path, which works too.
	dev, err := nodedev.UnderlayDevice(a.node, a.cfg.NodeIPs, a.cfg.UnderlayDevice)
	if err != nil {
		a.log.Warn("incoming pod traffic takes the kernel's path", "err", err)
		return nil
	}
	if err := bpf.AttachUnderlay(dev.Attrs().Index); err != nil {
		return fmt.Errorf("attach underlay program: %w", err)
	}
	return nil
}

// RunReleaseRetries is the release worker: until ctx ends, it gives IPAM
// the addresses of deleted endpoints as soon as they are queued, retries
// those IPAM did not take every ReleaseRetry, and replays queued DELs.
func (a *Agent) RunReleaseRetries(ctx context.Context) {
	t := time.NewTicker(a.cfg.ReleaseRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.endpoints.ReleasesQueued():
			a.endpoints.RetryReleases(ctx)
		case <-t.C:
			a.endpoints.RetryReleases(ctx)
			a.endpoints.ReplayDeletes(ctx)
		}
	}
}

// RunVanishedEndpoints removes, until ctx ends, the endpoints whose host
// veth disappears while the agent runs (see endpoint.Manager.RunVanished):
// at once on a link deletion when Deps.Namespaces reports them
// (nl.LinkWatcher), and every interval. Run it once Start succeeded.
func (a *Agent) RunVanishedEndpoints(ctx context.Context, interval time.Duration) {
	var events endpoint.LinkEvents
	if w, ok := a.deps.Namespaces.(nl.LinkWatcher); ok {
		events = w
	}
	a.endpoints.RunVanished(ctx, interval, events)
}

// RunMasquerade follows pool changes until ctx ends: pods of a pool created
// later are masqueraded too. A no-op without masquerading.
func (a *Agent) RunMasquerade(ctx context.Context, interval time.Duration) {
	if a.masq != nil {
		a.masq.Run(ctx, interval)
	}
}

// RunServiceFlowGC removes the connection tracker's idle flows every
// interval until ctx ends; a no-op without service load balancing.
func (a *Agent) RunServiceFlowGC(ctx context.Context, interval time.Duration) {
	a.services.RunFlowGC(ctx, interval)
}

// RunRemoteWatch follows IPAM's blocks until ctx ends (see remote.Manager.Run).
func (a *Agent) RunRemoteWatch(ctx context.Context) { a.remotes.Run(ctx) }

// RunHealth keeps the node's health endpoint in place and probes every peer
// each interval, until ctx ends.
func (a *Agent) RunHealth(ctx context.Context, interval time.Duration) {
	round := func() {
		if err := a.healthEP.Keep(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("health endpoint not in place; retrying", "err", err)
		}
		a.prober.Probe(ctx)
	}
	round()
	periodic.Every(ctx, interval, round)
}
