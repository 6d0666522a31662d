package bench

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/veth"
	"github.com/axon-cni/axon/services/localcluster"
)

// The plain-kernel baselines: the same namespaces, veth pairs, addresses,
// routes and neighbour entries Axon sets up, without any eBPF program, so
// the kernel's routing forwards every packet. Addresses live only inside
// these namespaces. With gso (not 0) every device of a baseline takes GSO
// packets of that size, as Axon's with --big-tcp; 0 keeps the kernel's
// 64 KiB (raising to 0 changes nothing).

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// plainNode is a node namespace with forwarding on and a router-IP device
// (the counterpart of axon_host/axon_net).
func plainNode(router netip.Addr, gso int) (*ns, error) {
	n, err := newNS()
	if err != nil {
		return nil, err
	}
	if err := n.sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "rtr_host"}, PeerName: "rtr_net"}
	if err := n.nl.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("router device: %w", err)
	}
	for _, name := range []string{"rtr_host", "rtr_net"} {
		l, err := n.nl.LinkByName(name)
		if err == nil {
			err = veth.RaiseGSOMaxSize(n.nl, l, gso)
		}
		if err == nil {
			err = n.nl.LinkSetUp(l)
		}
		if err != nil {
			return nil, err
		}
		if name == "rtr_host" {
			if err := n.nl.AddrAdd(l, &netlink.Addr{IPNet: hostNet(router)}); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// plainPod creates a pod namespace wired to node like an Axon endpoint: a
// veth pair (host side hostName in the node, eth0 in the pod), the pod's
// /32, a permanent neighbour entry for the gateway and a default route via
// it in the pod; in the node a /32 route to the pod on the host-side veth
// and a permanent neighbour entry for the pod.
func plainPod(node *ns, hostName string, ip, gw netip.Addr, mtu, gso int) (*ns, error) {
	pod, err := newNS()
	if err != nil {
		return nil, err
	}
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName, MTU: mtu},
		PeerName:      "eth0",
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(pod.h)),
	}
	if err := node.nl.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("veth %s: %w", hostName, err)
	}
	host, err := node.nl.LinkByName(hostName)
	if err != nil {
		return nil, err
	}
	eth0, err := pod.nl.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	if err := veth.RaiseGSOMaxSize(node.nl, host, gso); err != nil {
		return nil, err
	}
	if err := veth.RaiseGSOMaxSize(pod.nl, eth0, gso); err != nil {
		return nil, err
	}
	if err := pod.nl.AddrAdd(eth0, &netlink.Addr{IPNet: hostNet(ip)}); err != nil {
		return nil, err
	}
	if err := pod.nl.LinkSetUp(eth0); err != nil {
		return nil, err
	}
	if err := node.nl.LinkSetUp(host); err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error {
			return pod.nl.NeighSet(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: gw.AsSlice(), HardwareAddr: host.Attrs().HardwareAddr})
		},
		func() error {
			return pod.nl.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: hostNet(gw), Scope: netlink.SCOPE_LINK})
		},
		func() error {
			return pod.nl.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: prefixNet(netip.MustParsePrefix("0.0.0.0/0")),
				Gw: gw.AsSlice(), Src: ip.AsSlice()})
		},
		func() error {
			return node.nl.RouteReplace(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: hostNet(ip), Scope: netlink.SCOPE_LINK})
		},
		func() error {
			return node.nl.NeighSet(&netlink.Neigh{LinkIndex: host.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: ip.AsSlice(), HardwareAddr: eth0.Attrs().HardwareAddr})
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("wire plain pod %s: %w", ip, err)
		}
	}
	return pod, nil
}

// plainLocal is two pods on one node, routed by the kernel.
func plainLocal(mtu, gso int) (endpointPair, error) {
	gw := netip.MustParseAddr("10.98.0.1")
	node, err := plainNode(gw, gso)
	if err != nil {
		return endpointPair{}, err
	}
	a, err := plainPod(node, "lxcplain1", netip.MustParseAddr("10.98.0.10"), gw, mtu, gso)
	if err != nil {
		return endpointPair{}, err
	}
	b, err := plainPod(node, "lxcplain2", netip.MustParseAddr("10.98.0.20"), gw, mtu, gso)
	if err != nil {
		return endpointPair{}, err
	}
	return endpointPair{ClientNS: a.path, ServerNS: b.path, ServerIP: "10.98.0.20"}, nil
}

// plainCross is two nodes on an underlay bridge (in a namespace of its own,
// like localcluster's) with a pair of pods routed natively (each node
// routes the other's pod block via the other's underlay IP) and a pair
// over a plain kernel VXLAN device per node (point to point, UDP 8472,
// static route and neighbour for the other node's pod block).
type plainCross struct {
	Native, VXLAN endpointPair
}

func newPlainCross(nativeMTU, vxlanMTU, gso int) (*plainCross, error) {
	underlay, err := newNS()
	if err != nil {
		return nil, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := underlay.nl.LinkAdd(br); err != nil {
		return nil, err
	}
	if err := underlay.nl.LinkSetUp(br); err != nil {
		return nil, err
	}
	type nodeInfo struct {
		ns        *ns
		ip        netip.Addr
		eth0      netlink.Link
		vx        netlink.Link
		nativeGW  netip.Addr
		vxlanGW   netip.Addr
		nativePod netip.Addr
		vxlanPod  netip.Addr
	}
	nodes := make([]*nodeInfo, 2)
	for i := range nodes {
		n := &nodeInfo{
			ip:        netip.AddrFrom4([4]byte{192, 168, 252, byte(11 + i)}),
			nativeGW:  netip.AddrFrom4([4]byte{10, 97, byte(1 + i), 1}),
			nativePod: netip.AddrFrom4([4]byte{10, 97, byte(1 + i), 10}),
			vxlanGW:   netip.AddrFrom4([4]byte{10, 96, byte(1 + i), 1}),
			vxlanPod:  netip.AddrFrom4([4]byte{10, 96, byte(1 + i), 10}),
		}
		if n.ns, err = plainNode(n.nativeGW, gso); err != nil {
			return nil, err
		}
		port := fmt.Sprintf("n%d", i+1)
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: port, PeerNamespace: netlink.NsFd(int(underlay.h))}
		if err := n.ns.nl.LinkAdd(v); err != nil {
			return nil, err
		}
		p, err := underlay.nl.LinkByName(port)
		if err == nil {
			err = underlay.nl.LinkSetMaster(p, br)
		}
		if err == nil {
			err = veth.RaiseGSOMaxSize(underlay.nl, p, localcluster.WireGSOMaxSize)
		}
		if err == nil {
			err = underlay.nl.LinkSetUp(p)
		}
		if err != nil {
			return nil, err
		}
		if n.eth0, err = n.ns.nl.LinkByName("eth0"); err != nil {
			return nil, err
		}
		if err := veth.RaiseGSOMaxSize(n.ns.nl, n.eth0, gso); err != nil {
			return nil, err
		}
		if err := n.ns.nl.AddrAdd(n.eth0, &netlink.Addr{IPNet: &net.IPNet{IP: n.ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return nil, err
		}
		if err := n.ns.nl.LinkSetUp(n.eth0); err != nil {
			return nil, err
		}
		nodes[i] = n
	}
	for i, n := range nodes {
		peer := nodes[1-i]
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: "vx0", MTU: vxlanMTU},
			VxlanId:   42, Group: peer.ip.AsSlice(), SrcAddr: n.ip.AsSlice(), Port: 8472,
			VtepDevIndex: n.eth0.Attrs().Index,
		}
		if err := n.ns.nl.LinkAdd(vx); err != nil {
			return nil, fmt.Errorf("vxlan: %w", err)
		}
		if n.vx, err = n.ns.nl.LinkByName("vx0"); err != nil {
			return nil, err
		}
		// A VXLAN device with a lower device takes its GSO limit from it.
		if err := veth.RaiseGSOMaxSize(n.ns.nl, n.vx, gso); err != nil {
			return nil, fmt.Errorf("vxlan: %w", err)
		}
		if err := n.ns.nl.LinkSetUp(n.vx); err != nil {
			return nil, err
		}
	}
	for i, n := range nodes {
		peer := nodes[1-i]
		steps := []func() error{
			// Native: the peer's pod block via the peer's underlay IP.
			func() error {
				return n.ns.nl.RouteReplace(&netlink.Route{LinkIndex: n.eth0.Attrs().Index,
					Dst: prefixNet(netip.PrefixFrom(peer.nativePod, 24)), Gw: peer.ip.AsSlice()})
			},
			// VXLAN: the peer's pod block via the peer's gateway on vx0,
			// whose MAC is the peer's vx0 (a permanent entry: no ARP).
			func() error {
				return n.ns.nl.NeighSet(&netlink.Neigh{LinkIndex: n.vx.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
					IP: peer.vxlanGW.AsSlice(), HardwareAddr: peer.vx.Attrs().HardwareAddr})
			},
			func() error {
				return n.ns.nl.RouteReplace(&netlink.Route{LinkIndex: n.vx.Attrs().Index,
					Dst: prefixNet(netip.PrefixFrom(peer.vxlanPod, 24)), Gw: peer.vxlanGW.AsSlice(), Flags: int(netlink.FLAG_ONLINK)})
			},
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return nil, fmt.Errorf("plain node routes: %w", err)
			}
		}
	}
	pods := make([][2]*ns, 2)
	for i, n := range nodes {
		if pods[i][0], err = plainPod(n.ns, "lxcnative", n.nativePod, n.nativeGW, nativeMTU, gso); err != nil {
			return nil, err
		}
		if pods[i][1], err = plainPod(n.ns, "lxcvxlan", n.vxlanPod, n.vxlanGW, vxlanMTU, gso); err != nil {
			return nil, err
		}
	}
	return &plainCross{
		Native: endpointPair{ClientNS: pods[0][0].path, ServerNS: pods[1][0].path, ServerIP: nodes[1].nativePod.String()},
		VXLAN:  endpointPair{ClientNS: pods[0][1].path, ServerNS: pods[1][1].path, ServerIP: nodes[1].vxlanPod.String()},
	}, nil
}
