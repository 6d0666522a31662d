package remote_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/bpf/testpoll"
	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/remote"
)

const self = "node-a"

var (
	selfIP4   = netip.MustParseAddr("192.0.2.10")
	selfIP6   = netip.MustParseAddr("2001:db8::10")
	router4   = netip.MustParseAddr("10.0.1.1")
	router6   = netip.MustParseAddr("fd00:1::1")
	ownBlock  = netip.MustParsePrefix("10.0.1.0/24")
	peerIP4   = netip.MustParseAddr("192.0.2.20")
	peerIP6   = netip.MustParseAddr("2001:db8::20")
	peerBlk4  = netip.MustParsePrefix("10.0.2.0/24")
	peerBlk6  = netip.MustParsePrefix("fd00:2::/64")
	peerIP4b  = netip.MustParseAddr("192.0.2.21") // node-b's address after a change
	otherBlk4 = netip.MustParsePrefix("10.0.3.0/24")
)

// peers records what the prober is told.
type peers struct {
	mu    sync.Mutex
	known map[string]netip.Addr
}

func (p *peers) NotePeer(node string, nodeIP, _ netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.known[node] = nodeIP
}

func (p *peers) ForgetPeer(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.known, node)
}

func (p *peers) get(node string) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ip, ok := p.known[node]
	return ip, ok
}

// world is this node on fakes: an underlay eth0 holding the node's
// addresses, axon_host with the router IPs and, in tunnel mode, axon_vxlan.
type world struct {
	mode     string
	nl       *nlfake.Fake
	bpf      *bpffake.Fake
	ipam     *fakeipam.IPAM
	peers    *peers
	stateDir string
	tunnel   int
	ready    error
	retry    time.Duration // the managers' failed-block retry interval
}

func newWorld(t *testing.T, mode string) *world {
	t.Helper()
	w := &world{
		mode: mode, nl: nlfake.New(), bpf: bpffake.New(), peers: &peers{known: map[string]netip.Addr{}}, stateDir: t.TempDir(), retry: 50 * time.Millisecond,
		ipam: fakeipam.New(fakeipam.Config{Node: self, Blocks: []netip.Prefix{ownBlock}}),
	}
	h, err := w.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0peer"}); err != nil {
		t.Fatal(err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Prefix{netip.PrefixFrom(selfIP4, 24), netip.PrefixFrom(selfIP6, 64)} {
		if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	if err := nodedev.Setup(h, func(string, string) error { return nil }, []netip.Addr{router4, router6}, 1450); err != nil {
		t.Fatal(err)
	}
	if mode == nodedev.ModeTunnel {
		if w.tunnel, err = nodedev.EnsureTunnel(h, nodedev.TunnelVXLAN, 1450); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.ipam.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: self, Addresses: []string{selfIP4.String()}}, AllowMissing: true}); err != nil {
		t.Fatal(err)
	}
	return w
}

// manager returns a Manager on the world, with its own node handle.
func (w *world) manager(t *testing.T) *remote.Manager {
	t.Helper()
	h, err := w.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	m := remote.New(remote.Config{NodeName: self, Mode: w.mode, TunnelProtocol: nodedev.TunnelVXLAN, MTU: 1450, StateDir: w.stateDir, RetryInterval: w.retry},
		w.ipam, h, w.bpf, w.peers, func() error { return w.ready }, slog.New(slog.DiscardHandler))
	m.SetRouters([]netip.Addr{router4, router6})
	return m
}

// run runs m's watch until the test ends or stop is called.
func run(t *testing.T, m *remote.Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

func block(p netip.Prefix, node string, first bool) *ipamv1alpha1.Block {
	b := &ipamv1alpha1.Block{Cidr: p.String(), Node: node, Pool: "default", Family: commonv1alpha1.IPFamily_IP_FAMILY_IPV4}
	if p.Addr().Is6() {
		b.Family = commonv1alpha1.IPFamily_IP_FAMILY_IPV6
	}
	if first {
		b.RouterIp = p.Addr().Next().String()
	}
	return b
}

// route returns the main-table route to p.
func (w *world) route(p netip.Prefix) (netlink.Route, bool) {
	for _, r := range w.nl.Routes(nlfake.NodeNS) {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok && netip.PrefixFrom(a.Unmap(), ones) == p {
			return r, true
		}
	}
	return netlink.Route{}, false
}

// routed checks that p is routed to the node at nodeIP (its IPv4 address
// nodeIP4 in the map), as the mode asks.
func (w *world) routed(p netip.Prefix, nodeIP, nodeIP4 netip.Addr) error {
	remotes, err := w.bpf.RemoteBlocks()
	if err != nil {
		return err
	}
	if got, ok := remotes[p]; !ok || got != nodeIP4 {
		return fmt.Errorf("map entry of %s = %v, %v; want %v", p, got, ok, nodeIP4)
	}
	r, ok := w.route(p)
	if !ok {
		return fmt.Errorf("no route to %s", p)
	}
	if w.mode == nodedev.ModeTunnel {
		src := router4
		if p.Addr().Is6() {
			src = router6
		}
		if r.LinkIndex != w.tunnel || !r.Src.Equal(src.AsSlice()) || r.MTU != 1450 || r.Gw != nil {
			return fmt.Errorf("route to %s: dev %d src %v mtu %d gw %v; want dev %d src %s mtu 1450", p, r.LinkIndex, r.Src, r.MTU, r.Gw, w.tunnel, src)
		}
		return nil
	}
	if !r.Gw.Equal(nodeIP.AsSlice()) {
		return fmt.Errorf("route to %s via %v, want via %s", p, r.Gw, nodeIP)
	}
	return nil
}

// gone checks that p has neither a route nor a map entry.
func (w *world) gone(p netip.Prefix) error {
	remotes, err := w.bpf.RemoteBlocks()
	if err != nil {
		return err
	}
	if ip, ok := remotes[p]; ok {
		return fmt.Errorf("map entry of %s → %s still there", p, ip)
	}
	if r, ok := w.route(p); ok {
		return fmt.Errorf("route %v still there", r)
	}
	return nil
}

var modes = []string{nodedev.ModeTunnel, nodedev.ModeNative}

// nextHop is where the mode routes a block of p's family of node-b.
func nextHop(mode string, p netip.Prefix, ip4, ip6 netip.Addr) netip.Addr {
	if mode == nodedev.ModeNative && p.Addr().Is6() {
		return ip6
	}
	return ip4
}

func TestWatchRoutesBlocks(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, mode)
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String(), peerIP6.String())
			m := w.manager(t)
			run(t, m)
			testpoll.Until(t, 5*time.Second, func() error { return w.routed(peerBlk4, peerIP4, peerIP4) })
			if _, ok := w.route(ownBlock); ok {
				t.Errorf("this node's own block %s is routed", ownBlock)
			}
			if ip, ok := w.peers.get("node-b"); !ok || ip != peerIP4 {
				t.Errorf("peer node-b = %v, %v; want %s", ip, ok, peerIP4)
			}
			// ADDED while watching, an IPv6 block.
			w.ipam.SetRemoteBlock(block(peerBlk6, "node-b", false), peerIP4.String(), peerIP6.String())
			testpoll.Until(t, 5*time.Second, func() error { return w.routed(peerBlk6, nextHop(mode, peerBlk6, peerIP4, peerIP6), peerIP4) })
			// MODIFIED: the node's address changed.
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4b.String(), peerIP6.String())
			testpoll.Until(t, 5*time.Second, func() error { return w.routed(peerBlk4, peerIP4b, peerIP4b) })
			// The list shows what the watch reports.
			list := m.ListRemoteNodes()
			if len(list) != 1 || list[0].GetName() != "node-b" || !slices.Equal(list[0].GetPodCidrs(), []string{peerBlk4.String(), peerBlk6.String()}) {
				t.Errorf("ListRemoteNodes = %v, want node-b with both blocks", list)
			}
			// DELETED.
			w.ipam.DeleteRemoteBlock(peerBlk4.String())
			testpoll.Until(t, 5*time.Second, func() error { return w.gone(peerBlk4) })
			if _, ok := w.peers.get("node-b"); ok {
				t.Error("node-b still a peer after its first block went")
			}
			if err := w.routed(peerBlk6, nextHop(mode, peerBlk6, peerIP4, peerIP6), peerIP4); err != nil {
				t.Errorf("the other block: %v", err)
			}
		})
	}
}

// TestWatchReconnectsAndSyncDrops ends the watch stream: the manager
// reconnects, and the SYNCED after the new listing drops a block deleted
// while it was not watching.
func TestWatchReconnectsAndSyncDrops(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, mode)
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
			w.ipam.SetRemoteBlock(block(otherBlk4, "node-c", true), "192.0.2.30")
			run(t, w.manager(t))
			testpoll.Until(t, 5*time.Second, func() error {
				return w.routed(otherBlk4, netip.MustParseAddr("192.0.2.30"), netip.MustParseAddr("192.0.2.30"))
			})
			w.ipam.EndWatches(status.Error(codes.Unavailable, "ipam restarting"))
			w.ipam.DeleteRemoteBlock(otherBlk4.String()) // no stream sees this
			testpoll.Until(t, 5*time.Second, func() error {
				if n := w.ipam.Calls("WatchBlocks"); n < 2 {
					return fmt.Errorf("WatchBlocks called %d times, want a reconnect", n)
				}
				return w.gone(otherBlk4)
			})
			if err := w.routed(peerBlk4, peerIP4, peerIP4); err != nil {
				t.Errorf("the block re-sent after the reconnect: %v", err)
			}
		})
	}
}

// TestRestoredEntriesRemovedAfterSync starts on map entries and routes a
// previous agent left: the first SYNCED removes those of blocks nobody
// reports and keeps the others.
func TestRestoredEntriesRemovedAfterSync(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, mode)
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
			// What a previous agent applied for node-c's block, which went
			// while no agent ran: its map entry and its route.
			cIP := netip.MustParseAddr("192.0.2.30")
			if err := w.bpf.PutRemote(otherBlk4, cIP); err != nil {
				t.Fatal(err)
			}
			h, err := w.nl.Node()
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			r := &netlink.Route{Dst: &net.IPNet{IP: otherBlk4.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}, Gw: cIP.AsSlice()}
			if mode == nodedev.ModeTunnel {
				r = &netlink.Route{Dst: r.Dst, LinkIndex: w.tunnel, Scope: netlink.SCOPE_LINK, Src: router4.AsSlice(), MTU: 1450}
			}
			if err := h.RouteReplace(r); err != nil {
				t.Fatal(err)
			}

			m := w.manager(t)
			m.Restore()
			run(t, m)
			testpoll.Until(t, 5*time.Second, func() error { return w.gone(otherBlk4) })
			if err := w.routed(peerBlk4, peerIP4, peerIP4); err != nil {
				t.Errorf("block still reported: %v", err)
			}
		})
	}
}

// TestFailedBlockIsRetried injects a failed route or map write: the block
// is applied by the failed-block retry.
func TestFailedBlockIsRetried(t *testing.T) {
	for _, tc := range []struct {
		mode, fail string
	}{
		{nodedev.ModeTunnel, "route"}, {nodedev.ModeTunnel, "map"},
		{nodedev.ModeNative, "route"}, {nodedev.ModeNative, "map"},
	} {
		t.Run(tc.mode+"/"+tc.fail, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, tc.mode)
			if tc.fail == "route" {
				w.nl.FailOn(nlfake.NodeNS, "RouteReplace", 1, unix.ENOMEM)
			} else {
				w.bpf.FailOn(bpffake.OpPutRemote, 1, unix.E2BIG)
			}
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
			run(t, w.manager(t))
			testpoll.Until(t, 10*time.Second, func() error { return w.routed(peerBlk4, peerIP4, peerIP4) })
		})
	}
}

// TestFailedBlockDeletedLeavesNothing: a block whose apply failed half-way
// (the map written, the route refused; or the reverse) and that is deleted
// before the retry must leave neither behind.
func TestFailedBlockDeletedLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		mode, fail string
	}{
		{nodedev.ModeTunnel, "route"}, {nodedev.ModeNative, "map"},
	} {
		t.Run(tc.mode+"/"+tc.fail, func(t *testing.T) {
			w := newWorld(t, tc.mode)
			w.retry = time.Hour // the deletion, not a retry, must clean up
			run(t, w.manager(t))
			testpoll.Until(t, 5*time.Second, func() error {
				if w.ipam.Watchers() == 0 {
					return errors.New("not watching")
				}
				return nil
			})
			if tc.fail == "route" {
				w.nl.FailOn(nlfake.NodeNS, "RouteReplace", 1, unix.ENOMEM)
			} else {
				w.bpf.FailOn(bpffake.OpPutRemote, 1, unix.E2BIG)
			}
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
			// The map write comes first in tunnel mode, last in native mode:
			// once it was tried, the apply failed half-way. Events are
			// applied in order, so the deletion comes after.
			testpoll.Until(t, 5*time.Second, func() error {
				if w.bpf.Calls(bpffake.OpPutRemote) == 0 {
					return errors.New("not applied yet")
				}
				return nil
			})
			w.ipam.DeleteRemoteBlock(peerBlk4.String())
			testpoll.Until(t, 5*time.Second, func() error { return w.gone(peerBlk4) })
		})
	}
}

func TestRemoteNodesAPI(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, mode)
			m := w.manager(t)
			nodeC := &datapathv1alpha1.RemoteNode{Name: "node-c", NodeIps: []string{"192.0.2.30", "2001:db8::30"}, PodCidrs: []string{otherBlk4.String(), "fd00:3::/64"}}
			cIP4, cIP6 := netip.MustParseAddr("192.0.2.30"), netip.MustParseAddr("2001:db8::30")

			w.ready = errors.New("starting")
			if _, err := m.UpsertRemoteNode(nodeC, ""); !errors.Is(err, remote.ErrNotReady) {
				t.Fatalf("upsert before ready: %v, want ErrNotReady", err)
			}
			w.ready = nil
			for _, bad := range []*datapathv1alpha1.RemoteNode{
				{}, {Name: self}, {Name: "x", NodeIps: []string{"nope"}}, {Name: "x", NodeIps: []string{"192.0.2.9"}, PodCidrs: []string{"10.0.9.1/24"}},
				{Name: "x", PodCidrs: []string{"10.0.9.0/24"}},
			} {
				if _, err := m.UpsertRemoteNode(bad, ""); !errors.Is(err, remote.ErrInvalid) {
					t.Errorf("upsert %v: %v, want ErrInvalid", bad, err)
				}
			}
			got, err := m.UpsertRemoteNode(nodeC, "")
			if err != nil {
				t.Fatal(err)
			}
			if got.GetRevision() != "1" {
				t.Errorf("revision %q, want 1", got.GetRevision())
			}
			for _, p := range []netip.Prefix{otherBlk4, netip.MustParsePrefix("fd00:3::/64")} {
				if err := w.routed(p, nextHop(mode, p, cIP4, cIP6), cIP4); err != nil {
					t.Error(err)
				}
			}
			if again, err := m.UpsertRemoteNode(nodeC, "1"); err != nil || again.GetRevision() != "1" {
				t.Errorf("unchanged upsert: %v revision %q, want revision 1", err, again.GetRevision())
			}
			if _, err := m.UpsertRemoteNode(nodeC, "7"); !errors.Is(err, remote.ErrConflict) {
				t.Errorf("stale revision: %v, want ErrConflict", err)
			}
			// The watch's node-b and the API's node-c are listed together.
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
			stop := run(t, m)
			testpoll.Until(t, 5*time.Second, func() error { return w.routed(peerBlk4, peerIP4, peerIP4) })
			var names []string
			for _, n := range m.ListRemoteNodes() {
				names = append(names, n.GetName())
			}
			if !slices.Equal(names, []string{"node-b", "node-c"}) {
				t.Errorf("ListRemoteNodes names = %v, want [node-b node-c]", names)
			}

			// Restored from the state file by a new manager, which puts
			// back a route that went meanwhile; the SYNCED of its watch
			// does not drop the API's blocks.
			stop()
			h, err := w.nl.Node()
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if r, ok := w.route(otherBlk4); !ok {
				t.Fatal("no route to node-c's block")
			} else if err := h.RouteDel(&r); err != nil {
				t.Fatal(err)
			}
			m2 := w.manager(t)
			m2.Restore()
			if err := m2.RestoreNodes(); err != nil {
				t.Fatal(err)
			}
			run(t, m2)
			testpoll.Until(t, 5*time.Second, func() error {
				if n := len(m2.ListRemoteNodes()); n != 2 {
					return fmt.Errorf("second manager knows %d remote nodes, want 2", n)
				}
				return nil
			})
			if err := w.routed(otherBlk4, cIP4, cIP4); err != nil {
				t.Errorf("after restore: %v", err)
			}
			if l := m2.ListRemoteNodes(); len(l) != 2 || l[1].GetRevision() != "1" {
				t.Errorf("restored list = %v, want node-b and node-c at revision 1", l)
			}

			// Deleted: its blocks go; a stale revision is refused first.
			if _, err := m2.DeleteRemoteNode("node-c", "9"); !errors.Is(err, remote.ErrConflict) {
				t.Errorf("delete at a stale revision: %v, want ErrConflict", err)
			}
			if old, err := m2.DeleteRemoteNode("node-c", "1"); err != nil || old.GetName() != "node-c" {
				t.Fatalf("delete: %v, %v", old, err)
			}
			for _, p := range []netip.Prefix{otherBlk4, netip.MustParsePrefix("fd00:3::/64")} {
				if err := w.gone(p); err != nil {
					t.Error(err)
				}
			}
			if old, err := m2.DeleteRemoteNode("node-c", ""); err != nil || old != nil {
				t.Errorf("second delete: %v, %v; want nil, nil", old, err)
			}
			if _, err := m2.UpsertRemoteNode(&datapathv1alpha1.RemoteNode{Name: "node-b", NodeIps: []string{peerIP4.String()}}, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := m2.DeleteRemoteNode("node-b", ""); err != nil {
				t.Fatal(err)
			}
			if err := w.routed(peerBlk4, peerIP4, peerIP4); err != nil {
				t.Errorf("the watch's block after deleting the API's node-b: %v", err)
			}
		})
	}
}

// TestDeletedRemoteNodeIsNoPeer: an API-given node with a health endpoint
// is probed while it exists; deleting it stops that, unless the block
// watch still reports the node.
func TestDeletedRemoteNodeIsNoPeer(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel)
	m := w.manager(t)
	w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
	run(t, m)
	testpoll.Until(t, 5*time.Second, func() error { return w.routed(peerBlk4, peerIP4, peerIP4) })
	for _, name := range []string{"node-b", "node-c"} {
		n := &datapathv1alpha1.RemoteNode{Name: name, NodeIps: []string{"192.0.2.30"}, HealthIps: []string{"10.0.3.2"}}
		if _, err := m.UpsertRemoteNode(n, ""); err != nil {
			t.Fatal(err)
		}
		if _, ok := w.peers.get(name); !ok {
			t.Fatalf("%s not a peer after its upsert", name)
		}
		if _, err := m.DeleteRemoteNode(name, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := w.peers.get("node-c"); ok {
		t.Error("deleted node-c is still a peer")
	}
	if _, ok := w.peers.get("node-b"); !ok {
		t.Error("node-b, which the watch reports, is no peer after its API entry went")
	}
}

// TestWatchedNodeGoneKeepsAPIPeer: a node that leaves IPAM (its first
// block deleted) but has an API-given entry stays a peer to probe.
func TestWatchedNodeGoneKeepsAPIPeer(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel)
	m := w.manager(t)
	w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
	run(t, m)
	testpoll.Until(t, 5*time.Second, func() error { return w.routed(peerBlk4, peerIP4, peerIP4) })
	n := &datapathv1alpha1.RemoteNode{Name: "node-b", NodeIps: []string{peerIP4.String()}, HealthIps: []string{"10.0.3.2"}}
	if _, err := m.UpsertRemoteNode(n, ""); err != nil {
		t.Fatal(err)
	}
	w.ipam.DeleteRemoteBlock(peerBlk4.String())
	testpoll.Until(t, 5*time.Second, func() error { return w.gone(peerBlk4) })
	if _, ok := w.peers.get("node-b"); !ok {
		t.Error("node-b, which the API still gives, is no peer after its IPAM blocks went")
	}
}

// TestFailedRemovalIsRetried: a block whose route or map entry could not be
// removed is removed by the failed-block retry, not forgotten with the
// route or entry left behind.
func TestFailedRemovalIsRetried(t *testing.T) {
	for _, tc := range []struct {
		mode, fail string
	}{
		{nodedev.ModeTunnel, "RouteListFiltered"}, {nodedev.ModeTunnel, "RouteDel"}, {nodedev.ModeTunnel, "map"},
		{nodedev.ModeNative, "RouteDel"}, {nodedev.ModeNative, "map"},
	} {
		t.Run(tc.mode+"/"+tc.fail, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, tc.mode)
			w.ipam.SetRemoteBlock(block(peerBlk4, "node-b", true), peerIP4.String())
			run(t, w.manager(t))
			testpoll.Until(t, 5*time.Second, func() error { return w.routed(peerBlk4, peerIP4, peerIP4) })
			if tc.fail == "map" {
				w.bpf.FailOn(bpffake.OpDeleteRemote, 1, unix.EBUSY)
			} else {
				w.nl.FailOn(nlfake.NodeNS, tc.fail, 1, unix.ENOBUFS)
			}
			w.ipam.DeleteRemoteBlock(peerBlk4.String())
			testpoll.Until(t, 10*time.Second, func() error { return w.gone(peerBlk4) })
		})
	}
}

// TestRestoreNodesSurvivesADamagedFile: an unreadable state file does not
// keep the node from starting; the API's clients upsert their nodes again.
func TestRestoreNodesSurvivesADamagedFile(t *testing.T) {
	for _, content := range []string{"{not json", `[{"name": 7}, {"name": "node-c", "nodeIps": ["192.0.2.30"], "podCidrs": ["10.0.3.0/24"]}]`} {
		w := newWorld(t, nodedev.ModeNative)
		if err := os.WriteFile(filepath.Join(w.stateDir, "remote-nodes.state"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		m := w.manager(t)
		if err := m.RestoreNodes(); err != nil {
			t.Fatalf("RestoreNodes(%q): %v, want nil", content, err)
		}
		var names []string
		for _, n := range m.ListRemoteNodes() {
			names = append(names, n.GetName())
		}
		want := []string(nil)
		if strings.Contains(content, "node-c") {
			want = []string{"node-c"} // the readable entry is kept
		}
		if !slices.Equal(names, want) {
			t.Errorf("RestoreNodes(%q) restored %v, want %v", content, names, want)
		}
		if want != nil {
			cIP := netip.MustParseAddr("192.0.2.30")
			if err := w.routed(otherBlk4, cIP, cIP); err != nil {
				t.Errorf("restored node-c: %v", err)
			}
		}
	}
}

// TestRestoredRemoteNodeIsAPeer: after a restart the prober is told of the
// API-given nodes restored from the state file, and an upsert of an
// unchanged node tells it again.
func TestRestoredRemoteNodeIsAPeer(t *testing.T) {
	w := newWorld(t, nodedev.ModeNative)
	nodeC := &datapathv1alpha1.RemoteNode{Name: "node-c", NodeIps: []string{"192.0.2.30"}, HealthIps: []string{"10.0.3.2"}, PodCidrs: []string{otherBlk4.String()}}
	if _, err := w.manager(t).UpsertRemoteNode(nodeC, ""); err != nil {
		t.Fatal(err)
	}
	// A restart: a new manager with a new prober.
	w.peers = &peers{known: map[string]netip.Addr{}}
	m := w.manager(t)
	if err := m.RestoreNodes(); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr("192.0.2.30")
	if ip, ok := w.peers.get("node-c"); !ok || ip != want {
		t.Errorf("restored node-c: peer %v %v, want %s", ip, ok, want)
	}
	w.peers.ForgetPeer("node-c")
	if got, err := m.UpsertRemoteNode(nodeC, ""); err != nil || got.GetRevision() != "1" {
		t.Fatalf("unchanged upsert: %v revision %q, want revision 1", err, got.GetRevision())
	}
	if ip, ok := w.peers.get("node-c"); !ok || ip != want {
		t.Errorf("after an unchanged upsert: peer %v %v, want %s", ip, ok, want)
	}
}
