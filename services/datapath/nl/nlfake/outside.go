package nlfake

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// DeleteLink deletes the link name in namespace ns behind the code under
// test's back (a veth's peer and the routes, addresses and neighbours of
// both go with it).
func (f *Fake) DeleteLink(ns, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return fmt.Errorf("delete %s in %s: %w", name, ns, nl.ErrNetNS)
	}
	l := n.byName(name)
	if l == nil {
		return fmt.Errorf("delete %s in %s: %w", name, ns, errNotFound())
	}
	n.deleteLink(l)
	return nil
}

// DeleteAddr removes the address p from the link name in namespace ns
// behind the code under test's back, as `ip addr del` does. As in the
// kernel, the IPv4 routes that prefer it as their source go with it once no
// link of the namespace holds it (fib_sync_down_addr), the link's IPv4
// routes and ARP entries go with its last IPv4 address (fib_disable_ip),
// and the IPv6 routes that prefer it keep going without a preferred source
// (rt6_remove_prefsrc).
// A missing address is EADDRNOTAVAIL, as the kernel answers.
func (f *Fake) DeleteAddr(ns, name string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return fmt.Errorf("delete %s from %s in %s: %w", p, name, ns, nl.ErrNetNS)
	}
	l := n.byName(name)
	if l == nil {
		return fmt.Errorf("delete %s from %s in %s: %w", p, name, ns, errNotFound())
	}
	want := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	i := slices.IndexFunc(l.addrs, func(a netlink.Addr) bool { return sameNet(a.IPNet, want) && a.IP.Equal(want.IP) })
	if i < 0 {
		return fmt.Errorf("delete %s from %s in %s: %w", p, name, ns, unix.EADDRNOTAVAIL)
	}
	l.addrs = slices.Delete(l.addrs, i, i+1)
	if p.Addr().Is4() {
		idx := l.l.Attrs().Index
		if !slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool { return familyOf(a.IP) == netlink.FAMILY_V4 }) {
			// The link's last IPv4 address: the kernel turns IPv4 off on
			// it (fib_disable_ip), flushing its routes and ARP entries,
			// permanent ones too.
			n.routes = slices.DeleteFunc(n.routes, func(r netlink.Route) bool {
				return r.LinkIndex == idx && routeFamily(&r) == netlink.FAMILY_V4
			})
			n.neighs = slices.DeleteFunc(n.neighs, func(nb netlink.Neigh) bool {
				return nb.LinkIndex == idx && nb.Family == netlink.FAMILY_V4
			})
		}
	}
	if n.hasAddr(want.IP) {
		return nil
	}
	if p.Addr().Is4() {
		n.routes = slices.DeleteFunc(n.routes, func(r netlink.Route) bool { return r.Src.Equal(want.IP) })
		return nil
	}
	for i := range n.routes {
		if n.routes[i].Src.Equal(want.IP) {
			n.routes[i].Src = nil
		}
	}
	return nil
}

// DeleteNeigh removes the neighbour entry for ip on the link name in
// namespace ns behind the code under test's back, as `ip neigh del` does;
// a missing one is ENOENT.
func (f *Fake) DeleteNeigh(ns, name string, ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.byPath[ns]
	if !ok {
		return fmt.Errorf("delete neighbour %s on %s in %s: %w", ip, name, ns, nl.ErrNetNS)
	}
	l := n.byName(name)
	if l == nil {
		return fmt.Errorf("delete neighbour %s on %s in %s: %w", ip, name, ns, errNotFound())
	}
	idx := l.l.Attrs().Index
	i := slices.IndexFunc(n.neighs, func(nb netlink.Neigh) bool { return nb.LinkIndex == idx && nb.IP.Equal(ip.AsSlice()) })
	if i < 0 {
		return fmt.Errorf("delete neighbour %s on %s in %s: %w", ip, name, ns, unix.ENOENT)
	}
	n.neighs = slices.Delete(n.neighs, i, i+1)
	return nil
}
