package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/bpf/testpoll"
)

// Real packets through the programs attached with tcx. Every "node" and
// "pod" is an anonymous network namespace: nothing outlives the test
// process, names cannot collide with the host's, and no packet leaves this
// machine. Addresses are from TEST-NET-1 (underlay) and 10.244.0.0/16
// (pods), visible only inside those namespaces.

// testNode is a node: a namespace with its own datapath (unpinned maps).
type testNode struct {
	ns   netns.NsHandle
	h    *netlink.Handle
	objs *Objects
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	n := &testNode{objs: mustLoad(t, "")}
	n.ns, n.h = newTestNS(t)
	return n
}

func newTestNS(t *testing.T) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	ns, err := newNetNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return ns, h
}

func (n *testNode) sysctl(t *testing.T, path, value string) {
	t.Helper()
	if err := inNetNS(n.ns, func() error {
		return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644)
	}); err != nil {
		t.Fatalf("sysctl %s=%s: %v", path, value, err)
	}
}

// attach attaches a program to tcx ingress of ifindex in the node's
// namespace (the index is resolved in the attaching thread's namespace).
func (n *testNode) attach(t *testing.T, attach func(int) (link.Link, error), ifindex int) {
	t.Helper()
	var l link.Link
	err := inNetNS(n.ns, func() (err error) {
		l, err = attach(ifindex)
		return err
	})
	if errors.Is(err, ebpf.ErrNotSupported) {
		testenv.RequireKernel(t, "tcx", 6, 6, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

func (n *testNode) setConfig(t *testing.T, c Config) {
	t.Helper()
	if err := n.objs.SetConfig(c); err != nil {
		t.Fatal(err)
	}
}

func (n *testNode) stats(t *testing.T) Stats {
	t.Helper()
	s, err := n.objs.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	return l
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// testPod is a pod wired as the agent will wire it: a veth pair with the
// host side (hostIf) in the node and eth0 in the pod, the pod's /32 (/128),
// a link route to the router IP, a default route via it and a permanent
// neighbour entry for the router IP pointing at the host side's MAC. The
// node gets no address and no route for the pod: only the endpoint map
// entry and the program on the host side.
type testPod struct {
	ns      netns.NsHandle
	h       *netlink.Handle
	ip      netip.Addr // the address the connectivity checks use
	ip6     netip.Addr // a dual-stack pod's IPv6 address (addAddr)
	ifindex int        // eth0 in the pod
	ep      Endpoint
}

// v6 is the dual-stack pod p seen by its IPv6 address.
func (p *testPod) v6() *testPod {
	c := *p
	c.ip = p.ip6
	return &c
}

// addPod adds a pod with the address ip (IPv4 or IPv6) and its router.
func (n *testNode) addPod(t *testing.T, hostIf string, ip, router netip.Addr, mtu int) *testPod {
	t.Helper()
	p := &testPod{}
	p.ns, p.h = newTestNS(t)

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostIf, MTU: mtu},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(p.ns),
	}
	must(t, "add veth", n.h.LinkAdd(veth))
	host := mustLink(t, n.h, hostIf)
	eth0 := mustLink(t, p.h, "eth0")
	p.ifindex = eth0.Attrs().Index
	must(t, "set MTU", p.h.LinkSetMTU(eth0, mtu))
	must(t, "host side up", n.h.LinkSetUp(host))
	must(t, "pod up", p.h.LinkSetUp(eth0))
	must(t, "pod lo up", p.h.LinkSetUp(mustLink(t, p.h, "lo")))

	p.ep = Endpoint{
		Ifindex: host.Attrs().Index,
		ID:      uint32(host.Attrs().Index),
		PodMAC:  eth0.Attrs().HardwareAddr,
		HostMAC: host.Attrs().HardwareAddr,
	}
	n.addAddr(t, p, ip, router)
	n.attach(t, n.objs.AttachFromPod, p.ep.Ifindex)
	return p
}

// addAddr gives the pod the address ip with its router, as the agent does
// for each address of a dual-stack pod: the address (IPv6 without DAD), a
// link route to the router, a default route via it, a permanent neighbour
// entry for it and the endpoint map entry.
func (n *testNode) addAddr(t *testing.T, p *testPod, ip, router netip.Addr) {
	t.Helper()
	bits, family, flags := 32, unix.AF_INET, 0
	if ip.Is6() {
		bits, family, flags = 128, unix.AF_INET6, unix.IFA_F_NODAD
	}
	eth0, err := p.h.LinkByIndex(p.ifindex)
	must(t, "find eth0", err)
	must(t, "pod address "+ip.String(), p.h.AddrAdd(eth0, &netlink.Addr{
		IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		Flags: flags,
	}))
	routerNet := &net.IPNet{IP: router.AsSlice(), Mask: net.CIDRMask(bits, bits)}
	must(t, "router route", p.h.RouteAdd(&netlink.Route{LinkIndex: p.ifindex, Dst: routerNet, Scope: netlink.SCOPE_LINK}))
	must(t, "default route", p.h.RouteAdd(&netlink.Route{LinkIndex: p.ifindex, Gw: router.AsSlice()}))
	must(t, "router neighbour", p.h.NeighAdd(&netlink.Neigh{
		LinkIndex:    p.ifindex,
		Family:       family,
		State:        netlink.NUD_PERMANENT,
		IP:           router.AsSlice(),
		HardwareAddr: p.ep.HostMAC,
	}))
	must(t, "put endpoint", n.objs.PutEndpoint(ip, p.ep))
	switch {
	case !p.ip.IsValid():
		p.ip = ip
	case ip.Is6():
		p.ip6 = ip
	default:
		t.Fatalf("pod %s: a second address must be IPv6, not %s", p.ip, ip)
	}
}

// connect joins two nodes with an underlay veth pair (name under0 in both)
// carrying ip1/24 and ip2/24, and returns the two ifindexes.
func connect(t *testing.T, n1, n2 *testNode, ip1, ip2 netip.Addr) (int, int) {
	t.Helper()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "under0"},
		PeerName:      "under0",
		PeerNamespace: netlink.NsFd(n2.ns),
	}
	must(t, "add underlay veth", n1.h.LinkAdd(veth))
	var idx [2]int
	for i, side := range []struct {
		n  *testNode
		ip netip.Addr
	}{{n1, ip1}, {n2, ip2}} {
		l := mustLink(t, side.n.h, "under0")
		must(t, "underlay address", side.n.h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: side.ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
		must(t, "underlay up", side.n.h.LinkSetUp(l))
		idx[i] = l.Attrs().Index
	}
	return idx[0], idx[1]
}

// addUnderlay6 gives under0 of both nodes an IPv6 address (/64, no DAD),
// for native IPv6 routing.
func addUnderlay6(t *testing.T, n1, n2 *testNode, ip1, ip2 netip.Addr) {
	t.Helper()
	for _, side := range []struct {
		n  *testNode
		ip netip.Addr
	}{{n1, ip1}, {n2, ip2}} {
		l := mustLink(t, side.n.h, "under0")
		must(t, "underlay IPv6 address", side.n.h.AddrAdd(l, &netlink.Addr{
			IPNet: &net.IPNet{IP: side.ip.AsSlice(), Mask: net.CIDRMask(64, 128)},
			Flags: unix.IFA_F_NODAD,
		}))
	}
}

// addVXLAN creates axon_vxlan as the agent will: flow-based ("external"),
// UDP 8472.
func (n *testNode) addVXLAN(t *testing.T) int {
	t.Helper()
	must(t, "add vxlan", n.h.LinkAdd(&netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: "axon_vxlan"},
		FlowBased: true,
		Port:      8472,
	}))
	l := mustLink(t, n.h, "axon_vxlan")
	must(t, "vxlan up", n.h.LinkSetUp(l))
	return l.Attrs().Index
}

func (n *testNode) addRoute(t *testing.T, dst netip.Prefix, gw netip.Addr) {
	t.Helper()
	must(t, "route "+dst.String(), n.h.RouteAdd(&netlink.Route{
		Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:  gw.AsSlice(),
	}))
}

// TestRealSameNode: two pods on one node reach each other by ping, UDP and
// TCP although the node has no address and no route for them: only the
// redirect to the peer can deliver the packets.
func TestRealSameNode(t *testing.T) {
	requireBPF(t)
	node := newTestNode(t)
	node.setConfig(t, Config{Mode: ModeTunnel, VXLANIfindex: node.addVXLAN(t)})
	router := netip.MustParseAddr("10.244.1.1")
	a := node.addPod(t, "lxc-a", netip.MustParseAddr("10.244.1.10"), router, 1450)
	b := node.addPod(t, "lxc-b", netip.MustParseAddr("10.244.1.20"), router, 1450)

	routes, err := node.h.RouteList(nil, unix.AF_INET)
	must(t, "list node routes", err)
	if len(routes) != 0 {
		t.Fatalf("the node has routes %v; the test needs none", routes)
	}
	if _, err := node.h.RouteGet(b.ip.AsSlice()); err == nil {
		t.Fatalf("the node can route to %s; the test needs it not to", b.ip)
	}

	before := node.stats(t)
	checkConnectivity(t, a, b)
	after := node.stats(t)
	if d := after.ForwardedLocal - before.ForwardedLocal; d < 10 {
		t.Errorf("forwarded-local grew by %d, want the test's packets (>= 10)", d)
	}
	if after.DropTTL != 0 || after.DropMalformed != 0 || after.ToHost != 0 {
		t.Errorf("unexpected counters: %v", after.Map())
	}
	t.Logf("node counters: %v", after.Map())

	t.Run("truncated", func(t *testing.T) {
		// Runt IPv4 frames from a pod: counted and dropped, never forwarded,
		// and the pod still works afterwards.
		before := node.stats(t)
		full := udp4(a.ip, b.ip, 64)
		copy(full[0:6], a.ep.HostMAC)
		copy(full[6:12], a.ep.PodMAC)
		for _, size := range []int{14, 15, 14 + 19} {
			sendRaw(t, a, full[:size])
		}
		waitCounter(t, node, func(s Stats) uint64 { return s.DropMalformed - before.DropMalformed }, 3)
		if err := ping(a, b.ip); err != nil {
			t.Errorf("ping after runts: %v", err)
		}
	})
}

// TestRealSameNode6: TestRealSameNode with IPv6-only pods (/128 addresses,
// an IPv6 router address with a permanent neighbour entry). The node has no
// IPv6 address or route for them, only the link-local ones of its veths.
func TestRealSameNode6(t *testing.T) {
	requireBPF(t)
	node := newTestNode(t)
	node.setConfig(t, Config{Mode: ModeTunnel, VXLANIfindex: node.addVXLAN(t)})
	router := netip.MustParseAddr("fd00:10:244:1::1")
	a := node.addPod(t, "lxc-a", netip.MustParseAddr("fd00:10:244:1::a"), router, 1450)
	b := node.addPod(t, "lxc-b", netip.MustParseAddr("fd00:10:244:1::14"), router, 1450)

	routes, err := node.h.RouteList(nil, unix.AF_INET6)
	must(t, "list node routes", err)
	for _, r := range routes {
		if r.Dst == nil || !r.Dst.IP.IsLinkLocalUnicast() {
			t.Fatalf("the node has route %v; the test needs none beyond link-local", r)
		}
	}
	for _, p := range []*testPod{a, b} {
		if _, err := node.h.RouteGet(p.ip.AsSlice()); err == nil {
			t.Fatalf("the node can route to %s; the test needs it not to", p.ip)
		}
	}

	before := node.stats(t)
	checkConnectivity(t, a, b)
	if err := udpEcho(b, a); err != nil {
		t.Fatalf("UDP %s -> %s: %v", b.ip, a.ip, err)
	}
	after := node.stats(t)
	if d := after.ForwardedLocal - before.ForwardedLocal; d < 10 {
		t.Errorf("forwarded-local grew by %d, want the test's packets (>= 10)", d)
	}
	if after.DropTTL != 0 || after.DropMalformed != 0 || after.ToHost != 0 {
		t.Errorf("unexpected counters: %v", after.Map())
	}
	t.Logf("node counters: %v", after.Map())

	t.Run("hop limit", func(t *testing.T) {
		// A pod's packet with hop limit 1 would expire at the node, its
		// router: dropped and counted.
		before := node.stats(t)
		f := udp6(a.ip, b.ip, 1)
		copy(f[0:6], a.ep.HostMAC)
		copy(f[6:12], a.ep.PodMAC)
		sendRaw(t, a, f)
		waitCounter(t, node, func(s Stats) uint64 { return s.DropTTL - before.DropTTL }, 1)
	})

	t.Run("truncated", func(t *testing.T) {
		// Runt IPv6 frames from a pod: counted and dropped, never forwarded,
		// and the pod still works afterwards. (Test-run refuses them.)
		before := node.stats(t)
		full := udp6(a.ip, b.ip, 64)
		copy(full[0:6], a.ep.HostMAC)
		copy(full[6:12], a.ep.PodMAC)
		sizes := []int{14 + 1, 14 + 20, 14 + 39}
		for _, size := range sizes {
			sendRaw(t, a, full[:size])
		}
		waitCounter(t, node, func(s Stats) uint64 { return s.DropMalformed - before.DropMalformed }, uint64(len(sizes)))
		if err := ping(a, b.ip); err != nil {
			t.Errorf("ping after runts: %v", err)
		}
	})
}

// waitCounter waits up to two seconds for a counter delta to reach want
// and fails unless it is exactly want.
func waitCounter(t *testing.T, n *testNode, delta func(Stats) uint64, want uint64) {
	t.Helper()
	testpoll.Until(t, 2*time.Second, func() error {
		if got := delta(n.stats(t)); got < want {
			return fmt.Errorf("counter grew by %d, want %d", got, want)
		}
		return nil
	})
	if got := delta(n.stats(t)); got != want {
		t.Errorf("counter grew by %d, want %d (%v)", got, want, n.stats(t).Map())
	}
}

// TestRealTunnel: dual-stack pods on two nodes joined by VXLAN over an IPv4
// underlay; IPv6 pod traffic uses the same IPv4 tunnel. axon_from_pod
// encapsulates pod traffic itself; it arrives through the flow-based
// axon_vxlan (which must accept what the program built), or, with
// axon_from_underlay on the underlay device, is decapsulated there and
// never reaches axon_vxlan.
func TestRealTunnel(t *testing.T) {
	requireBPF(t)
	for _, decap := range []bool{false, true} {
		t.Run(map[bool]string{false: "overlay device", true: "underlay decap"}[decap], func(t *testing.T) {
			testRealTunnel(t, decap)
		})
	}
}

func testRealTunnel(t *testing.T, decap bool) {
	n1, n2 := newTestNode(t), newTestNode(t)
	ip1, ip2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	u1, u2 := connect(t, n1, n2, ip1, ip2)
	block1, block2 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24")
	block61, block62 := netip.MustParsePrefix("fd00:10:244:1::/64"), netip.MustParsePrefix("fd00:10:244:2::/64")
	for _, c := range []struct {
		n              *testNode
		underlay       int
		self           netip.Addr
		remote         []netip.Prefix
		remoteNodeAddr netip.Addr
	}{{n1, u1, ip1, []netip.Prefix{block2, block62}, ip2}, {n2, u2, ip2, []netip.Prefix{block1, block61}, ip1}} {
		// The program's FIB lookup for the remote node, like the kernel's
		// forwarding, needs forwarding on (nodes have it).
		c.n.sysctl(t, "net/ipv4/ip_forward", "1")
		vx := c.n.addVXLAN(t)
		c.n.attach(t, c.n.objs.AttachFromOverlay, vx)
		if decap {
			c.n.attach(t, c.n.objs.AttachFromUnderlay, c.underlay)
		}
		c.n.setConfig(t, Config{Mode: ModeTunnel, VXLANIfindex: vx, NodeIP: c.self})
		for _, p := range c.remote {
			must(t, "put remote", c.n.objs.PutRemote(p, c.remoteNodeAddr))
		}
	}
	// MTU 1450: VXLAN adds 50 bytes on a 1500-byte underlay, whatever the
	// inner family.
	a := n1.addPod(t, "lxc-a", netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.1"), 1450)
	b := n2.addPod(t, "lxc-b", netip.MustParseAddr("10.244.2.10"), netip.MustParseAddr("10.244.2.1"), 1450)
	n1.addAddr(t, a, netip.MustParseAddr("fd00:10:244:1::a"), netip.MustParseAddr("fd00:10:244:1::1"))
	n2.addAddr(t, b, netip.MustParseAddr("fd00:10:244:2::a"), netip.MustParseAddr("fd00:10:244:2::1"))

	vxStats := func(n *testNode) (rx, tx uint64) {
		l, err := n.h.LinkByName("axon_vxlan")
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Statistics.RxPackets, l.Attrs().Statistics.TxPackets
	}
	rx1, tx1 := vxStats(n1)
	rx2, tx2 := vxStats(n2)
	checkConnectivity(t, a, b)
	v4a, v4b := n1.stats(t), n2.stats(t)
	checkConnectivity(t, a.v6(), b.v6())
	s1, s2 := n1.stats(t), n2.stats(t)
	if s1.ForwardedTunnel-v4a.ForwardedTunnel < 5 || s2.OverlayLocal-v4b.OverlayLocal < 5 ||
		s2.ForwardedTunnel-v4b.ForwardedTunnel < 5 || s1.OverlayLocal-v4a.OverlayLocal < 5 {
		t.Errorf("IPv6 traffic did not take the tunnel:\nbefore %v %v\nafter %v %v", v4a.Map(), v4b.Map(), s1.Map(), s2.Map())
	}
	t.Logf("node1 %v\nnode2 %v", s1.Map(), s2.Map())
	for _, ecn := range []byte{ecnECT0, ecnCE} {
		checkTunnelECN(t, a, b, n2, u2, ecn)
		checkTunnelECN(t, a.v6(), b.v6(), n2, u2, ecn)
	}
	rx1e, tx1e := vxStats(n1)
	rx2e, tx2e := vxStats(n2)
	for _, c := range []struct {
		name        string
		tunnel, ovl uint64
		vxRx, vxTx  uint64
	}{{"node1", s1.ForwardedTunnel, s1.OverlayLocal, rx1e - rx1, tx1e - tx1}, {"node2", s2.ForwardedTunnel, s2.OverlayLocal, rx2e - rx2, tx2e - tx2}} {
		if c.tunnel < 5 || c.ovl < 5 {
			t.Errorf("%s: forwarded-tunnel %d, from-overlay-local %d; want both >= 5", c.name, c.tunnel, c.ovl)
		}
		// axon_from_pod encapsulates itself when the FIB has a route to
		// the remote node: pod packets never go through axon_vxlan.
		if c.vxTx > c.tunnel/4 {
			t.Errorf("%s: axon_vxlan sent %d packets while %d were tunnelled: not encapsulated by the program", c.name, c.vxTx, c.tunnel)
		}
		// Pod-to-pod packets reach axon_vxlan only without the underlay
		// program (a few others, like IPv6 ND for the node, may).
		if decap && c.vxRx > c.ovl/4 {
			t.Errorf("%s: axon_vxlan received %d packets while %d were delivered to the pod: not decapsulated on the underlay", c.name, c.vxRx, c.ovl)
		}
		if !decap && c.vxRx < c.ovl {
			t.Errorf("%s: axon_vxlan received %d packets, fewer than the %d delivered from the overlay", c.name, c.vxRx, c.ovl)
		}
	}
}

// TestRealNative: dual-stack pods on two nodes joined by plain routing. Each
// node has a route for the other's blocks (the IPv6 one via the other
// node's IPv6 underlay address, so neighbour discovery crosses
// axon_from_underlay); packets out of a pod go through the FIB and
// redirect_neigh, packets in for a pod are delivered by axon_from_underlay
// on the underlay device (the nodes have no routes for their own pods).
func TestRealNative(t *testing.T) {
	requireBPF(t)
	n1, n2 := newTestNode(t), newTestNode(t)
	for _, n := range []*testNode{n1, n2} {
		// The kernel sends no neighbour solicitation before the link-local
		// address of the device has passed DAD (a second or two after it
		// comes up); an underlay that has been up for long has.
		n.sysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	}
	ip1, ip2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	u1, u2 := connect(t, n1, n2, ip1, ip2)
	ip61, ip62 := netip.MustParseAddr("2001:db8:ff::1"), netip.MustParseAddr("2001:db8:ff::2")
	addUnderlay6(t, n1, n2, ip61, ip62)
	block1, block2 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24")
	block61, block62 := netip.MustParsePrefix("fd00:10:244:1::/64"), netip.MustParsePrefix("fd00:10:244:2::/64")
	for _, c := range []struct {
		n               *testNode
		underlay        int
		self            netip.Addr
		remote, remote6 netip.Prefix
		remoteNodeAddr  netip.Addr
		remoteNodeAddr6 netip.Addr
	}{{n1, u1, ip1, block2, block62, ip2, ip62}, {n2, u2, ip2, block1, block61, ip1, ip61}} {
		// bpf_fib_lookup answers FWD_DISABLED without forwarding.
		c.n.sysctl(t, "net/ipv4/ip_forward", "1")
		c.n.sysctl(t, "net/ipv6/conf/all/forwarding", "1")
		c.n.addRoute(t, c.remote, c.remoteNodeAddr)
		c.n.addRoute(t, c.remote6, c.remoteNodeAddr6)
		c.n.attach(t, c.n.objs.AttachFromUnderlay, c.underlay)
		c.n.setConfig(t, Config{Mode: ModeNative, NodeIP: c.self})
		must(t, "put remote", c.n.objs.PutRemote(c.remote, c.remoteNodeAddr))
		// The underlay address of a block is IPv4 for both families; the
		// FIB picks the IPv6 next hop.
		must(t, "put remote6", c.n.objs.PutRemote(c.remote6, c.remoteNodeAddr))
	}
	a := n1.addPod(t, "lxc-a", netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.1"), 1500)
	b := n2.addPod(t, "lxc-b", netip.MustParseAddr("10.244.2.10"), netip.MustParseAddr("10.244.2.1"), 1500)
	n1.addAddr(t, a, netip.MustParseAddr("fd00:10:244:1::a"), netip.MustParseAddr("fd00:10:244:1::1"))
	n2.addAddr(t, b, netip.MustParseAddr("fd00:10:244:2::a"), netip.MustParseAddr("fd00:10:244:2::1"))

	checkConnectivity(t, a, b)
	v4a, v4b := n1.stats(t), n2.stats(t)
	checkConnectivity(t, a.v6(), b.v6())
	s1, s2 := n1.stats(t), n2.stats(t)
	if s1.ForwardedNative-v4a.ForwardedNative < 5 || s2.OverlayLocal-v4b.OverlayLocal < 5 ||
		s2.ForwardedNative-v4b.ForwardedNative < 5 || s1.OverlayLocal-v4a.OverlayLocal < 5 {
		t.Errorf("IPv6 traffic was not routed natively:\nbefore %v %v\nafter %v %v", v4a.Map(), v4b.Map(), s1.Map(), s2.Map())
	}
	if s1.UnderlayToHost == v4a.UnderlayToHost && s2.UnderlayToHost == v4b.UnderlayToHost {
		t.Errorf("no neighbour discovery went to the kernel: %v %v", s1.Map(), s2.Map())
	}
	t.Logf("node1 %v\nnode2 %v", s1.Map(), s2.Map())
	for _, c := range []struct {
		name        string
		native, ovl uint64
	}{{"node1", s1.ForwardedNative, s1.OverlayLocal}, {"node2", s2.ForwardedNative, s2.OverlayLocal}} {
		if c.native < 5 || c.ovl < 5 {
			t.Errorf("%s: forwarded-native %d, from-overlay-local %d; want both >= 5", c.name, c.native, c.ovl)
		}
	}
}

// checkConnectivity pings both ways, then runs a UDP and a TCP echo from a
// to b.
func checkConnectivity(t *testing.T, a, b *testPod) {
	t.Helper()
	if err := ping(a, b.ip); err != nil {
		t.Fatalf("ping %s -> %s: %v", a.ip, b.ip, err)
	}
	if err := ping(b, a.ip); err != nil {
		t.Fatalf("ping %s -> %s: %v", b.ip, a.ip, err)
	}
	if err := udpEcho(a, b); err != nil {
		t.Fatalf("UDP %s -> %s: %v", a.ip, b.ip, err)
	}
	if err := tcpEcho(a, b, 256<<10); err != nil {
		t.Fatalf("TCP %s -> %s: %v", a.ip, b.ip, err)
	}
}

// ping sends ICMP (ICMPv6 to an IPv6 dst) echo requests from the pod to dst
// over a raw socket until one is answered (three tries, a second each).
func ping(from *testPod, dst netip.Addr) error {
	network, request, reply := "ip4:icmp", byte(8), byte(0)
	if dst.Is6() {
		network, request, reply = "ip6:ipv6-icmp", 128, 129
	}
	var c net.PacketConn
	if err := inNetNS(from.ns, func() (err error) {
		c, err = net.ListenPacket(network, from.ip.String())
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	id := uint16(os.Getpid())
	buf := make([]byte, 1500)
	for seq := uint16(1); seq <= 3; seq++ {
		req := []byte{request, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'a', 'x', 'o', 'n'}
		if !dst.Is6() {
			// The kernel computes ICMPv6 checksums (pseudo-header) itself.
			binary.BigEndian.PutUint16(req[2:], ^onesSum(req))
		}
		if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return err
		}
		for {
			n, addr, err := c.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return err
			}
			// The raw socket gets every ICMP message: look for our reply.
			if n >= 8 && buf[0] == reply && binary.BigEndian.Uint16(buf[4:]) == id &&
				binary.BigEndian.Uint16(buf[6:]) == seq && addr.String() == dst.String() {
				return nil
			}
		}
	}
	return errors.New("no echo reply")
}

// network is "udp4" or "udp6" (likewise tcp) for ip's family.
func network(proto string, ip netip.Addr) string {
	if ip.Is6() {
		return proto + "6"
	}
	return proto + "4"
}

// udpEcho sends datagrams from a to an echo server in b and expects each
// back.
func udpEcho(a, b *testPod) error {
	var srv, cli *net.UDPConn
	if err := inNetNS(b.ns, func() (err error) {
		srv, err = net.ListenUDP(network("udp", b.ip), &net.UDPAddr{IP: b.ip.AsSlice()})
		return err
	}); err != nil {
		return err
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP(buf[:n], addr)
		}
	}()
	if err := inNetNS(a.ns, func() (err error) {
		cli, err = net.DialUDP(network("udp", b.ip), nil, srv.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		return err
	}
	defer cli.Close()
	buf := make([]byte, 2048)
	for i := range 5 {
		msg := bytes.Repeat([]byte{byte(i)}, 1000)
		ok := false
		for attempt := 0; attempt < 3 && !ok; attempt++ {
			if _, err := cli.Write(msg); err != nil {
				return err
			}
			cli.SetReadDeadline(time.Now().Add(time.Second))
			n, err := cli.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				return err
			}
			if !bytes.Equal(buf[:n], msg) {
				return fmt.Errorf("datagram %d came back as %d bytes starting %d", i, n, buf[0])
			}
			ok = true
		}
		if !ok {
			return fmt.Errorf("datagram %d: no echo", i)
		}
	}
	return nil
}

// tcpEcho streams size bytes from a to an echo server in b and reads them
// back.
func tcpEcho(a, b *testPod, size int) error {
	var ln net.Listener
	if err := inNetNS(b.ns, func() (err error) {
		ln, err = net.Listen(network("tcp", b.ip), net.JoinHostPort(b.ip.String(), "0"))
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Plain reads and writes: io.Copy would splice through a pipe the
		// runtime caches, which the fd leak check would report.
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 32<<10))
	}()
	var c net.Conn
	if err := inNetNS(a.ns, func() (err error) {
		c, err = net.DialTimeout(network("tcp", b.ip), ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("echoed stream differs")
	}
	return nil
}

// sendRaw sends frame as is out of the pod's eth0 (AF_PACKET), so it can be
// shorter than any header.
func sendRaw(t *testing.T, p *testPod, frame []byte) {
	t.Helper()
	proto := uint16(unix.ETH_P_IP)
	if len(frame) >= 14 {
		proto = binary.BigEndian.Uint16(frame[12:])
	}
	proto = proto<<8 | proto>>8 // network order
	if err := inNetNS(p.ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: p.ifindex, Protocol: proto})
	}); err != nil {
		t.Fatalf("send %d-byte frame: %v", len(frame), err)
	}
}

// ECN codepoints of the IP header.
const (
	ecnECT0 = 0x02
	ecnCE   = 0x03
)

// checkTunnelECN sends datagrams with the ECN field ecn from a to b and
// checks on the receiving node's underlay device that their VXLAN packets
// carry it in the outer IPv4 header (RFC 6040 normal mode), so underlay
// routers can mark congestion. An inner CE stays CE: the kernel's VXLAN
// device would write ECT(0), so this also shows the program built the
// headers.
func checkTunnelECN(t *testing.T, a, b *testPod, recv *testNode, underlay int, ecn byte) {
	t.Helper()
	const port = 9 // the discard service: nothing answers
	// ETH_P_ALL in network order.
	all := uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8
	var fd int
	// A packet socket for every protocol sees frames before tc ingress,
	// that is, before axon_from_underlay strips the outer headers.
	must(t, "capture socket", inNetNS(recv.ns, func() (err error) {
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(all)); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: all, Ifindex: underlay})
	}))
	defer unix.Close(fd)
	must(t, "capture timeout", unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}))

	var conn *net.UDPConn
	must(t, "dial", inNetNS(a.ns, func() (err error) {
		conn, err = net.DialUDP(network("udp", b.ip), nil, &net.UDPAddr{IP: b.ip.AsSlice(), Port: port})
		return err
	}))
	defer conn.Close()
	raw, err := conn.SyscallConn()
	must(t, "raw conn", err)
	var serr error
	must(t, "set ECN", raw.Control(func(s uintptr) {
		if b.ip.Is4() {
			serr = unix.SetsockoptInt(int(s), unix.IPPROTO_IP, unix.IP_TOS, int(ecn))
		} else {
			serr = unix.SetsockoptInt(int(s), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(ecn))
		}
	}))
	must(t, "set ECN", serr)

	// Outer Ethernet, IPv4, UDP, VXLAN, inner Ethernet: the inner IP header,
	// then (no options) the inner UDP header.
	const innerIP = 14 + 20 + 8 + 8 + 14
	dst := b.ip.AsSlice()
	dstOff, udpOff := innerIP+16, innerIP+20
	if b.ip.Is6() {
		dstOff, udpOff = innerIP+24, innerIP+40
	}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := conn.Write([]byte("ecn")); err != nil {
			t.Fatalf("send: %v", err)
		}
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				break // timeout: send another
			}
			f := buf[:n]
			if n < udpOff+4 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_IP || f[14+9] != unix.IPPROTO_UDP ||
				binary.BigEndian.Uint16(f[14+20+2:]) != 8472 || !bytes.Equal(f[dstOff:dstOff+len(dst)], dst) ||
				binary.BigEndian.Uint16(f[udpOff+2:]) != port {
				continue
			}
			if got := f[14+1] & 0x03; got != ecn {
				t.Errorf("%s: outer ECN field %#x, want the inner %#x", b.ip, got, ecn)
			}
			return
		}
	}
	t.Errorf("%s: no VXLAN packet of the datagrams seen on the underlay", b.ip)
}
