package nlfake

import (
	"net"
	"slices"

	"github.com/vishvananda/netlink"
)

// cloneLink copies l deeply enough that neither the caller nor the fake can
// change the other's copy: the attributes the fake models and the kind's
// addresses.
func cloneLink(l netlink.Link) netlink.Link {
	var c netlink.Link
	switch v := l.(type) {
	case *netlink.Device:
		d := *v
		c = &d
	case *netlink.Veth:
		d := *v
		d.PeerHardwareAddr = slices.Clone(v.PeerHardwareAddr)
		c = &d
	case *netlink.Vxlan:
		d := *v
		d.SrcAddr, d.Group = cloneIP(v.SrcAddr), cloneIP(v.Group)
		c = &d
	case *netlink.Geneve:
		d := *v
		d.Remote = cloneIP(v.Remote)
		c = &d
	case *netlink.Dummy:
		d := *v
		c = &d
	default:
		// LinkAdd refuses other kinds, so the fake never holds one.
		panic("nlfake: unexpected link type " + l.Type())
	}
	a := c.Attrs()
	a.HardwareAddr = slices.Clone(a.HardwareAddr)
	a.AltNames = slices.Clone(a.AltNames)
	a.Statistics, a.Protinfo, a.Xdp, a.Vfs = nil, nil, nil, nil
	return c
}

func cloneIP(ip net.IP) net.IP { return slices.Clone(ip) }

func cloneNet(n *net.IPNet) *net.IPNet {
	if n == nil {
		return nil
	}
	return &net.IPNet{IP: cloneIP(n.IP), Mask: slices.Clone(n.Mask)}
}

func cloneAddr(a netlink.Addr) netlink.Addr {
	a.IPNet, a.Peer, a.Broadcast = cloneNet(a.IPNet), cloneNet(a.Peer), cloneIP(a.Broadcast)
	return a
}

func cloneAddrs(as []netlink.Addr) []netlink.Addr {
	out := make([]netlink.Addr, 0, len(as))
	for _, a := range as {
		out = append(out, cloneAddr(a))
	}
	return out
}

func cloneRoute(r netlink.Route) netlink.Route {
	r.Dst, r.Gw, r.Src = cloneNet(r.Dst), cloneIP(r.Gw), cloneIP(r.Src)
	r.MultiPath = slices.Clone(r.MultiPath)
	return r
}

func cloneNeigh(n netlink.Neigh) netlink.Neigh {
	n.IP, n.HardwareAddr, n.LLIPAddr = cloneIP(n.IP), slices.Clone(n.HardwareAddr), cloneIP(n.LLIPAddr)
	return n
}
