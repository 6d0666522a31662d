package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
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

// remoteState is what the agent knows of other nodes' blocks, from two
// sources: IPAM's block watch and the UpsertRemoteNode API. A block is
// routed while either source has it; the watch wins when both do.
type remoteState struct {
	mu      sync.Mutex
	watched map[netip.Prefix]remoteBlock
	manual  map[string]*datapathv1alpha1.RemoteNode
	applied map[netip.Prefix]remoteBlock
	// failed are blocks whose route or map entry could not be applied;
	// retried until they can.
	failed map[netip.Prefix]bool
}

// effective is what block p should be routed to, if anything. Caller holds
// mu.
func (r *remoteState) effective(p netip.Prefix, tunnel bool) (remoteBlock, bool) {
	if rb, ok := r.watched[p]; ok {
		return rb, true
	}
	for _, n := range r.manual {
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
// Caller holds a.remote.mu.
func (a *Agent) reconcile(p netip.Prefix) {
	want, ok := a.remote.effective(p, a.cfg.RoutingMode == ModeTunnel)
	cur, applied := a.remote.applied[p]
	switch {
	case !ok && applied:
		a.removeRemote(p)
		delete(a.remote.applied, p)
	case ok && (!applied || cur != want):
		if err := a.applyRemote(p, want); err != nil {
			if !a.remote.failed[p] {
				a.log.Warn("cannot route remote block; retrying", "block", p, "node", want.node, "err", err)
			}
			a.remote.failed[p] = true
			return
		}
		a.remote.applied[p] = want
	}
	delete(a.remote.failed, p)
}

// retryFailedRemotes applies again the blocks that could not be applied.
func (a *Agent) retryFailedRemotes() {
	a.remote.mu.Lock()
	defer a.remote.mu.Unlock()
	for p := range a.remote.failed {
		a.reconcile(p)
	}
}

// RunRemoteWatch follows IPAM's blocks until ctx ends and keeps this node's
// way to every other node's blocks: a route via the node in native mode, a
// tunnel map entry and a route into the overlay in tunnel mode. It
// reconnects after errors; after each SYNCED it drops what was not re-sent.
func (a *Agent) RunRemoteWatch(ctx context.Context) {
	go every(ctx, 5*time.Second, a.retryFailedRemotes)
	for ctx.Err() == nil {
		err := a.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("block watch ended; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) watchOnce(ctx context.Context) error {
	stream, err := a.ipam.WatchBlocks(ctx, &ipamv1alpha1.WatchBlocksRequest{})
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
		a.remote.mu.Lock()
		a.watchEvent(ev, seen)
		a.remote.mu.Unlock()
	}
}

// watchEvent applies one block event. Caller holds a.remote.mu.
func (a *Agent) watchEvent(ev *ipamv1alpha1.WatchBlocksResponse, seen map[netip.Prefix]bool) {
	if ev.GetType() == commonv1alpha1.EventType_EVENT_TYPE_SYNCED {
		for p := range a.remote.watched {
			if !seen[p] {
				delete(a.remote.watched, p)
				a.reconcile(p)
			}
		}
		// Blocks routed before a restart that no source has any more.
		for p := range a.remote.applied {
			a.reconcile(p)
		}
		clear(seen)
		return
	}
	b := ev.GetBlock()
	p, err := netip.ParsePrefix(b.GetCidr())
	if err != nil || b.GetNode() == a.cfg.NodeName {
		return
	}
	if ev.GetType() == commonv1alpha1.EventType_EVENT_TYPE_DELETED {
		delete(a.remote.watched, p)
		a.reconcile(p)
		if b.GetRouterIp() != "" {
			a.health.forgetPeer(b.GetNode())
		}
		return
	}
	if b.GetRouterIp() != "" {
		// A node's first block: the node is a peer to probe; its health
		// endpoint's address comes from IPAM.
		nip, _ := pickNodeIP(ev.GetNodeAddresses(), true)
		a.health.notePeer(b.GetNode(), nip, netip.Addr{})
	}
	seen[p] = true
	// The overlay runs over the node's IPv4 underlay for both families;
	// native routing needs a next hop of the block's family.
	nodeIP, ok := pickNodeIP(ev.GetNodeAddresses(), p.Addr().Is4() || a.cfg.RoutingMode == ModeTunnel)
	if !ok {
		a.log.Warn("remote block has no node address of its family", "block", p, "node", b.GetNode())
		return
	}
	nodeIP4, _ := pickNodeIP(ev.GetNodeAddresses(), true)
	a.remote.watched[p] = remoteBlock{node: b.GetNode(), nodeIP: nodeIP, nodeIP4: nodeIP4}
	a.reconcile(p)
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

func (a *Agent) applyRemote(p netip.Prefix, rb remoteBlock) error {
	dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	h := a.plumber.Node
	if a.cfg.RoutingMode == ModeNative {
		// The kernel route is the next hop the programs' FIB lookup finds;
		// the map entry tells them the block is a remote pod block (other
		// destinations stay on the kernel's path, through masquerading).
		if err := h.RouteReplace(&netlink.Route{Dst: dst, Gw: rb.nodeIP.AsSlice()}); err != nil {
			return err
		}
		if a.bpf == nil || !rb.nodeIP4.IsValid() {
			// The map holds an IPv4 node address: for a node without one
			// the kernel route alone carries the block.
			return nil
		}
		return a.bpf.PutRemote(p, rb.nodeIP4)
	}
	if a.bpf == nil {
		return errors.New("tunnel mode needs the eBPF datapath")
	}
	if err := a.bpf.PutRemote(p, rb.nodeIP); err != nil {
		return err
	}
	dev := tunnelDevice(a.cfg.TunnelProtocol)
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
	route := &netlink.Route{Dst: dst, LinkIndex: vx.Attrs().Index, Scope: netlink.SCOPE_LINK, MTU: a.cfg.MTU}
	if src, ok := a.routerOf(p.Addr().Is4()); ok {
		route.Src = src.AsSlice()
	}
	return h.RouteReplace(route)
}

// routerOf returns the node's router IP of a family, once the node is set
// up.
func (a *Agent) routerOf(v4 bool) (netip.Addr, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.routers {
		if r.Is4() == v4 {
			return r, true
		}
	}
	return netip.Addr{}, false
}

func (a *Agent) removeRemote(p netip.Prefix) {
	dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	routes, err := a.plumber.Node.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err == nil {
		for _, r := range routes {
			_ = a.plumber.Node.RouteDel(&r)
		}
	}
	if a.bpf != nil {
		if err := a.bpf.DeleteRemote(p); err != nil {
			a.log.Warn("delete tunnel map entry", "block", p, "err", err)
		}
	}
}
