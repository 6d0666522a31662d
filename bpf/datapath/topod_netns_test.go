package datapath

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRealServiceNodeBackend: a pod reaches a ClusterIP service whose
// backend is no pod but a process of the node listening on the node's
// address (as the kubernetes Service's API server), TCP and UDP, IPv4 and
// IPv6. The pod's packets go to the node's stack translated; its answers
// come back through the kernel's host route into the pod, where
// axon_to_pod on the host veth's egress translates them back: the client's
// connected sockets accept answers from the service address only.
func TestRealServiceNodeBackend(t *testing.T) {
	requireBPF(t)
	n := newTestNode(t)
	n.sysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	nodeAddr, nodeAddr6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8:ff::1")
	lo := mustLink(t, n.h, "lo")
	must(t, "lo up", n.h.LinkSetUp(lo))
	for _, a := range []netip.Addr{nodeAddr, nodeAddr6} {
		must(t, "node address "+a.String(), n.h.AddrAdd(lo, &netlink.Addr{
			IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}, Flags: unix.IFA_F_NODAD,
		}))
	}
	n.setConfig(t, Config{Mode: ModeNative, NodeIP: nodeAddr})
	a := n.addPod(t, "lxc-nb", netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.1"), 1500)
	n.addAddr(t, a, netip.MustParseAddr("fd00:10:244:1::a"), netip.MustParseAddr("fd00:10:244:1::1"))
	n.attach(t, n.objs.AttachToPod, a.ep.Ifindex)
	// The node reaches the pod by a host route on its veth, as the agent
	// wires it (neighbour resolution through the veth included).
	for _, ip := range []netip.Addr{a.ip, a.ip6} {
		must(t, "host route "+ip.String(), n.h.RouteAdd(&netlink.Route{LinkIndex: a.ep.Ifindex,
			Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}, Scope: netlink.SCOPE_LINK}))
	}

	for _, fam := range []struct {
		name      string
		vip, node netip.Addr
		client    *testPod
	}{
		{"v4", netip.MustParseAddr("10.96.0.1"), nodeAddr, a},
		{"v6", netip.MustParseAddr("fd00:96::1"), nodeAddr6, a.v6()},
	} {
		t.Run(fam.name, func(t *testing.T) {
			serveNamed(t, &testPod{ns: n.ns, ip: fam.node}, "node", 6443)
			for id, proto := range []uint8{protoTCP, protoUDP} {
				fe := frontend(fam.vip, 443, proto)
				putServices(t, n.objs, ServiceEntry{Frontend: fe, Service: Service{ID: uint32(id + 1),
					Active: []Backend{{Addr: fam.node, Port: 6443}}}})
				t.Cleanup(func() { _ = n.objs.DeleteServices([]Frontend{fe}) })
			}
			before := n.stats(t)
			dst := netip.AddrPortFrom(fam.vip, 443)
			for range 3 {
				if name, err := tcpNamedEcho(fam.client, dst); err != nil || name != "node" {
					t.Fatalf("TCP to %s: %q, %v", dst, name, err)
				}
				if name, err := udpNamedEcho(fam.client, dst); err != nil || name != "node" {
					t.Fatalf("UDP to %s: %q, %v", dst, name, err)
				}
			}
			after := n.stats(t)
			if after.DropNAT != before.DropNAT || after.KernelToPod == before.KernelToPod {
				t.Errorf("counters %v -> %v: want replies through axon_to_pod, no drop-nat", before.Map(), after.Map())
			}
		})
	}
}
