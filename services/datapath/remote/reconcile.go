// Package remote owns the node's way to other nodes' pods: the blocks IPAM's
// block watch reports and the remote nodes given by API (kept in the state
// directory), reconciled into routes and remote map entries, with failed
// blocks retried. It tells the health prober about peers through [Peers].
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/internal/periodic"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// remoteBlock is another node's block and where to send its traffic.
type remoteBlock struct {
	node   string
	nodeIP netip.Addr // the next hop: the tunnel endpoint, or the route's gateway
	// nodeIP4 is the node's IPv4 address, what the remote maps hold (in
	// native mode only their presence matters: the block is a pod block);
	// invalid for a node without one.
	nodeIP4 netip.Addr
}

// Config configures a Manager.
type Config struct {
	// NodeName is this node's name in IPAM; its own blocks are not remote.
	NodeName string
	// Mode is nodedev.ModeTunnel or nodedev.ModeNative.
	Mode string
	// TunnelProtocol names the overlay device routes to remote blocks use
	// in tunnel mode.
	TunnelProtocol string
	// MTU is the pods' MTU, that of routes into the overlay.
	MTU int
	// StateDir keeps the remote nodes given by API.
	StateDir string
	// RetryInterval is how often blocks that could not be applied or
	// removed are tried again; 0 means 5 seconds.
	RetryInterval time.Duration
}

// Peers is told about the nodes to probe (the health prober).
type Peers interface {
	// NotePeer records a peer's node address and, if valid, its health
	// endpoint's address.
	NotePeer(node string, nodeIP, healthIP netip.Addr)
	// ForgetPeer drops a node that has no block left.
	ForgetPeer(node string)
}

// Blocks is IPAM's block watch.
type Blocks interface {
	WatchBlocks(ctx context.Context, in *ipamv1alpha1.WatchBlocksRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[ipamv1alpha1.WatchBlocksResponse], error)
}

// Manager is what the node knows of other nodes' blocks, from two sources:
// IPAM's block watch and the UpsertRemoteNode API. A block is routed while
// either source has it; the watch wins when both do.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	blocks Blocks
	node   nl.Handle    // in the node's namespace
	bpf    bpfmaps.Maps // nil without the eBPF datapath
	peers  Peers
	ready  func() error

	routersMu sync.Mutex
	routers   []netip.Addr // the source of routes into the overlay

	mu      sync.Mutex // guards the state below
	watched map[netip.Prefix]remoteBlock
	manual  map[string]*datapathv1alpha1.RemoteNode
	applied map[netip.Prefix]remoteBlock
	// failed are blocks whose route or map entry could not be applied;
	// retried until they can.
	failed map[netip.Prefix]bool
}

// New returns a Manager. node is a netlink handle in the node's namespace;
// bpf may be nil (no eBPF datapath: native mode only); ready says whether
// the node is set up (API-given nodes wait for it; nil: always).
func New(cfg Config, blocks Blocks, node nl.Handle, bpf bpfmaps.Maps, peers Peers, ready func() error, log *slog.Logger) *Manager {
	if ready == nil {
		ready = func() error { return nil }
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	return &Manager{
		cfg: cfg, log: log, blocks: blocks, node: node, bpf: bpf, peers: peers, ready: ready,
		watched: map[netip.Prefix]remoteBlock{}, manual: map[string]*datapathv1alpha1.RemoteNode{},
		applied: map[netip.Prefix]remoteBlock{}, failed: map[netip.Prefix]bool{},
	}
}

// SetRouters sets the node's router IPs, the source of routes into the
// overlay; the node's start-up learns them from IPAM.
func (m *Manager) SetRouters(routers []netip.Addr) {
	m.routersMu.Lock()
	defer m.routersMu.Unlock()
	m.routers = routers
}

// effective is what block p should be routed to, if anything. Caller holds
// mu.
func (m *Manager) effective(p netip.Prefix, tunnel bool) (remoteBlock, bool) {
	if rb, ok := m.watched[p]; ok {
		return rb, true
	}
	for _, n := range m.manual {
		for _, s := range n.GetPodCidrs() {
			if s == p.String() {
				ip, ok := pickNodeIP(n.GetNodeIps(), p.Addr().Is4() || tunnel)
				ip4, _ := pickNodeIP(n.GetNodeIps(), true)
				return remoteBlock{node: n.GetName(), nodeIP: ip, nodeIP4: ip4}, ok
			}
		}
	}
	return remoteBlock{}, false
}

// reconcile brings block p's route and map entry to what the sources say.
// Caller holds m.mu.
func (m *Manager) reconcile(p netip.Prefix) {
	want, ok := m.effective(p, m.cfg.Mode == nodedev.ModeTunnel)
	cur, applied := m.applied[p]
	switch {
	case !ok && (applied || m.failed[p]):
		// A block whose apply failed may be half there (the map entry
		// written and the route refused, or the reverse). What cannot be
		// removed now is retried: forgotten, it would stay for good (a
		// restart finds map entries, not routes).
		if err := m.removeRemote(p); err != nil {
			if !m.failed[p] {
				m.log.Warn("cannot remove remote block; retrying", "block", p, "err", err)
			}
			m.failed[p] = true
			return
		}
		delete(m.applied, p)
	case ok && (!applied || cur != want):
		if err := m.applyRemote(p, want); err != nil {
			if !m.failed[p] {
				m.log.Warn("cannot route remote block; retrying", "block", p, "node", want.node, "err", err)
			}
			m.failed[p] = true
			return
		}
		m.applied[p] = want
	}
	delete(m.failed, p)
}

// retryFailedRemotes reconciles again the blocks that could not be applied
// or removed.
func (m *Manager) retryFailedRemotes() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.failed {
		m.reconcile(p)
	}
}

// Run follows IPAM's blocks until ctx ends and keeps this node's
// way to every other node's blocks: a route via the node in native mode, a
// tunnel map entry and a route into the overlay in tunnel mode. It
// reconnects after errors; after each SYNCED it drops what was not re-sent.
func (m *Manager) Run(ctx context.Context) {
	// The retries stop with Run, so its caller knows nothing of the node's
	// routes and maps runs once Run returned.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { periodic.Every(ctx, m.cfg.RetryInterval, m.retryFailedRemotes) })
	for ctx.Err() == nil {
		err := m.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("block watch ended; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (m *Manager) watchOnce(ctx context.Context) error {
	stream, err := m.blocks.WatchBlocks(ctx, &ipamv1alpha1.WatchBlocksRequest{})
	if err != nil {
		return err
	}
	seen := map[netip.Prefix]bool{}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("stream closed")
		}
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.watchEvent(ev, seen)
		m.mu.Unlock()
	}
}

// watchEvent applies one block event. Caller holds m.mu.
func (m *Manager) watchEvent(ev *ipamv1alpha1.WatchBlocksResponse, seen map[netip.Prefix]bool) {
	if ev.GetType() == commonv1alpha1.EventType_EVENT_TYPE_SYNCED {
		for p := range m.watched {
			if !seen[p] {
				delete(m.watched, p)
				m.reconcile(p)
			}
		}
		// Blocks routed before a restart that no source has any more.
		for p := range m.applied {
			m.reconcile(p)
		}
		clear(seen)
		return
	}
	b := ev.GetBlock()
	p, err := netip.ParsePrefix(b.GetCidr())
	if err != nil || b.GetNode() == m.cfg.NodeName {
		return
	}
	if ev.GetType() == commonv1alpha1.EventType_EVENT_TYPE_DELETED {
		delete(m.watched, p)
		m.reconcile(p)
		if b.GetRouterIp() != "" {
			// The node left IPAM; an API-given entry for it keeps it a
			// peer, with the health address the API gave.
			if n, ok := m.manual[b.GetNode()]; ok {
				m.notePeer(n)
			} else {
				m.peers.ForgetPeer(b.GetNode())
			}
		}
		return
	}
	if b.GetRouterIp() != "" {
		// A node's first block: the node is a peer to probe; its health
		// endpoint's address comes from IPAM.
		nip, _ := pickNodeIP(ev.GetNodeAddresses(), true)
		m.peers.NotePeer(b.GetNode(), nip, netip.Addr{})
	}
	seen[p] = true
	// The overlay runs over the node's IPv4 underlay for both families;
	// native routing needs a next hop of the block's family.
	nodeIP, ok := pickNodeIP(ev.GetNodeAddresses(), p.Addr().Is4() || m.cfg.Mode == nodedev.ModeTunnel)
	if !ok {
		m.log.Warn("remote block has no node address of its family", "block", p, "node", b.GetNode())
		return
	}
	nodeIP4, _ := pickNodeIP(ev.GetNodeAddresses(), true)
	m.watched[p] = remoteBlock{node: b.GetNode(), nodeIP: nodeIP, nodeIP4: nodeIP4}
	m.reconcile(p)
}

// pickNodeIP returns the node's first IPv4 (v4) or IPv6 address.
func pickNodeIP(addrs []string, v4 bool) (netip.Addr, bool) {
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (m *Manager) applyRemote(p netip.Prefix, rb remoteBlock) error {
	dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	h := m.node
	if m.cfg.Mode == nodedev.ModeNative {
		// The kernel route is the next hop the programs' FIB lookup finds;
		// the map entry tells them the block is a remote pod block (other
		// destinations stay on the kernel's path, through masquerading).
		if err := h.RouteReplace(&netlink.Route{Dst: dst, Gw: rb.nodeIP.AsSlice()}); err != nil {
			return err
		}
		if m.bpf == nil || !rb.nodeIP4.IsValid() {
			// The map holds an IPv4 node address: for a node without one
			// the kernel route alone carries the block.
			return nil
		}
		return m.bpf.PutRemote(p, rb.nodeIP4)
	}
	if m.bpf == nil {
		return errors.New("tunnel mode needs the eBPF datapath")
	}
	if err := m.bpf.PutRemote(p, rb.nodeIP); err != nil {
		return err
	}
	dev := nodedev.TunnelDevice(m.cfg.TunnelProtocol)
	vx, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("find %s: %w", dev, err)
	}
	// Traffic the node itself sends to the block goes into the overlay;
	// the device's egress program picks the tunnel endpoint. Its source is
	// the node's router IP (as Cilium's routes via cilium_host do), a pod
	// address the other node reaches through the overlay: replies come
	// back the way the request went, which a strict reverse-path filter
	// (rp_filter=1) requires, and peers' health probes take the same path
	// both ways.
	route := &netlink.Route{Dst: dst, LinkIndex: vx.Attrs().Index, Scope: netlink.SCOPE_LINK, MTU: m.cfg.MTU}
	if src, ok := m.routerOf(p.Addr().Is4()); ok {
		route.Src = src.AsSlice()
	}
	return h.RouteReplace(route)
}

// routerOf returns the node's router IP of a family, once the node is set
// up.
func (m *Manager) routerOf(v4 bool) (netip.Addr, bool) {
	m.routersMu.Lock()
	defer m.routersMu.Unlock()
	for _, r := range m.routers {
		if r.Is4() == v4 {
			return r, true
		}
	}
	return netip.Addr{}, false
}

// removeRemote removes block p's routes and map entry; what is already
// gone is success.
func (m *Manager) removeRemote(p netip.Prefix) error {
	dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	routes, err := m.node.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		return fmt.Errorf("list routes to %s: %w", p, err)
	}
	for _, r := range routes {
		if err := m.node.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete route to %s: %w", p, err)
		}
	}
	if m.bpf != nil {
		if err := m.bpf.DeleteRemote(p); err != nil {
			return fmt.Errorf("delete remote map entry of %s: %w", p, err)
		}
	}
	return nil
}

// Restore seeds what the agent has applied of other nodes' blocks
// from the pinned maps, so that the first full sync of IPAM's block watch
// removes blocks that went away while no agent ran (their routes too).
func (m *Manager) Restore() {
	if m.bpf == nil {
		return
	}
	blocks, err := m.bpf.RemoteBlocks()
	if err != nil {
		m.log.Warn("list remote map entries", "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for p, ip := range blocks {
		if _, ok := m.applied[p]; !ok {
			m.applied[p] = remoteBlock{nodeIP: ip, nodeIP4: ip}
		}
	}
}
