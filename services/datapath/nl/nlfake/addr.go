package nlfake

import (
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// familyOf is the netlink family of ip.
func familyOf(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func sameNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.IP.Equal(b.IP) && slices.Equal(normMask(a), normMask(b))
}

// normMask is n's mask in the length of its family, so a 16-byte IPv4
// mask and a 4-byte one compare equal.
func normMask(n *net.IPNet) net.IPMask {
	ones, _ := n.Mask.Size()
	bits := 128
	if n.IP.To4() != nil {
		bits = 32
	}
	return net.CIDRMask(ones, bits)
}

// AddrAdd adds an address; the same address and prefix again is EEXIST.
func (h *handle) AddrAdd(nlink netlink.Link, addr *netlink.Addr) error {
	return h.putAddr("AddrAdd", nlink, addr, false)
}

// AddrReplace adds an address or replaces the one with the same address
// and prefix.
func (h *handle) AddrReplace(nlink netlink.Link, addr *netlink.Addr) error {
	return h.putAddr("AddrReplace", nlink, addr, true)
}

func (h *handle) putAddr(op string, nlink netlink.Link, addr *netlink.Addr, replace bool) error {
	return h.modify(op, nlink, func(l *link) error {
		if addr == nil || addr.IPNet == nil || addr.IP == nil {
			return unix.EINVAL
		}
		a := cloneAddr(*addr)
		a.LinkIndex = l.l.Attrs().Index
		a.Flags |= unix.IFA_F_PERMANENT
		if familyOf(a.IP) == netlink.FAMILY_V4 {
			a.IP = a.IP.To4()
			a.Label = l.l.Attrs().Name
		}
		a.Mask = normMask(a.IPNet)
		if i := slices.IndexFunc(l.addrs, func(x netlink.Addr) bool { return sameNet(x.IPNet, a.IPNet) }); i >= 0 {
			if !replace {
				return unix.EEXIST
			}
			l.addrs[i] = a
			return nil
		}
		l.addrs = append(l.addrs, a)
		return nil
	})
}

// AddrList lists the addresses of a link, or of all links when link is
// nil, of family (FAMILY_ALL for both).
func (h *handle) AddrList(nlink netlink.Link, family int) ([]netlink.Addr, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("AddrList"); err != nil {
		return nil, err
	}
	var links []*link
	if nlink != nil {
		// The real handle filters a dump by the index it is given.
		if l, ok := h.ns.links[nlink.Attrs().Index]; ok {
			links = append(links, l)
		}
	} else {
		for _, i := range sortedIndexes(h.ns) {
			links = append(links, h.ns.links[i])
		}
	}
	var out []netlink.Addr
	for _, l := range links {
		for _, a := range l.addrs {
			if family == netlink.FAMILY_ALL || familyOf(a.IP) == family {
				out = append(out, cloneAddr(a))
			}
		}
	}
	return out, nil
}

func sortedIndexes(ns *namespace) []int {
	idx := make([]int, 0, len(ns.links))
	for i := range ns.links {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	return idx
}

// routeFamily is the family of r from its destination or gateway; 0 when
// it has neither.
func routeFamily(r *netlink.Route) int {
	switch {
	case r.Dst != nil:
		return familyOf(r.Dst.IP)
	case r.Gw != nil:
		return familyOf(r.Gw)
	}
	return 0
}

// zeroNet is the default destination of family; nil for FAMILY_ALL.
func zeroNet(family int) *net.IPNet {
	switch family {
	case netlink.FAMILY_V4:
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	case netlink.FAMILY_V6:
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return nil
}

// reachable reports whether gw is on-link through l: covered by one of its
// addresses' prefixes (the kernel's connected routes, present while l is
// up), or by a link route of it (a gateway's route must have link scope,
// as the kernel's next-hop lookup asks for).
func (ns *namespace) reachable(l *link, gw net.IP) bool {
	connected := l.up && slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool {
		ones, bits := a.Mask.Size()
		return ones < bits && a.Contains(gw)
	})
	idx := l.l.Attrs().Index
	return connected || slices.ContainsFunc(ns.routes, func(r netlink.Route) bool {
		v4 := r.Family == netlink.FAMILY_V4
		return r.LinkIndex == idx && r.Gw == nil && r.Dst != nil && r.Dst.Contains(gw) && (!v4 || r.Scope == netlink.SCOPE_LINK)
	})
}

func (ns *namespace) hasAddr(ip net.IP) bool {
	for _, l := range ns.links {
		if slices.ContainsFunc(l.addrs, func(a netlink.Addr) bool { return a.IP.Equal(ip) }) {
			return true
		}
	}
	return false
}

// sameKey reports whether a and b are the same route for RouteReplace: the
// same table, destination and priority.
func sameKey(a, b *netlink.Route) bool {
	return a.Family == b.Family && a.Table == b.Table && a.Priority == b.Priority && sameNet(a.Dst, b.Dst)
}

// RouteReplace adds a route or replaces the one with its destination (and
// table and priority). Its device must be up; a gateway must be on-link;
// a preferred source must be an address of the namespace.
func (h *handle) RouteReplace(route *netlink.Route) error {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("RouteReplace"); err != nil {
		return err
	}
	r := cloneRoute(*route)
	r.Family = routeFamily(&r)
	if r.Family == 0 {
		return unix.EINVAL
	}
	if r.Dst != nil {
		r.Dst = &net.IPNet{IP: r.Dst.IP.Mask(r.Dst.Mask), Mask: normMask(r.Dst)}
		if r.Family == netlink.FAMILY_V4 {
			r.Dst.IP = r.Dst.IP.To4()
		}
	} else {
		// netlink reports a default route with the all-zero prefix.
		r.Dst = zeroNet(r.Family)
	}
	if r.Table == 0 {
		r.Table = unix.RT_TABLE_MAIN
	}
	if r.Protocol == 0 {
		r.Protocol = unix.RTPROT_BOOT
	}
	if r.Type == 0 {
		r.Type = unix.RTN_UNICAST
	}
	var dev *link
	if r.LinkIndex != 0 {
		var ok bool
		if dev, ok = h.ns.links[r.LinkIndex]; !ok {
			return unix.ENODEV
		}
	}
	if r.Gw != nil {
		if dev == nil {
			for _, i := range sortedIndexes(h.ns) {
				if l := h.ns.links[i]; h.ns.reachable(l, r.Gw) {
					dev = l
					break
				}
			}
		}
		if dev == nil || !h.ns.reachable(dev, r.Gw) {
			if r.Family == netlink.FAMILY_V4 {
				return unix.ENETUNREACH
			}
			return unix.EHOSTUNREACH
		}
		r.LinkIndex = dev.l.Attrs().Index
	}
	if dev == nil {
		return unix.ENODEV
	}
	if !dev.up {
		return unix.ENETDOWN
	}
	if r.Src != nil && !h.ns.hasAddr(r.Src) {
		return unix.EINVAL
	}
	if r.Family == netlink.FAMILY_V6 {
		// IPv6 routes all report universe scope.
		r.Scope = netlink.SCOPE_UNIVERSE
	}
	if i := slices.IndexFunc(h.ns.routes, func(x netlink.Route) bool { return sameKey(&x, &r) }); i >= 0 {
		h.ns.routes[i] = r
		return nil
	}
	h.ns.routes = append(h.ns.routes, r)
	return nil
}

// RouteDel deletes the first route with route's destination and table
// that also has its device, gateway and priority where those are set;
// ESRCH when there is none.
func (h *handle) RouteDel(route *netlink.Route) error {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("RouteDel"); err != nil {
		return err
	}
	table := route.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	family := routeFamily(route)
	dst := normDst(route.Dst)
	if dst == nil {
		dst = zeroNet(family)
	}
	i := slices.IndexFunc(h.ns.routes, func(r netlink.Route) bool {
		return r.Table == table && (family == 0 || r.Family == family) && sameNet(dst, r.Dst) &&
			(route.LinkIndex == 0 || r.LinkIndex == route.LinkIndex) &&
			(route.Gw == nil || r.Gw.Equal(route.Gw)) &&
			(route.Priority == 0 || r.Priority == route.Priority)
	})
	if i < 0 {
		return unix.ESRCH
	}
	h.ns.routes = slices.Delete(h.ns.routes, i, i+1)
	return nil
}

func normDst(d *net.IPNet) *net.IPNet {
	if d == nil {
		return nil
	}
	n := &net.IPNet{IP: d.IP.Mask(d.Mask), Mask: normMask(d)}
	if n.IP.To4() != nil {
		n.IP = n.IP.To4()
	}
	return n
}

// RouteList lists the main table's routes through link (all when nil) of
// family.
func (h *handle) RouteList(nlink netlink.Link, family int) ([]netlink.Route, error) {
	filter := &netlink.Route{}
	var mask uint64
	if nlink != nil {
		filter.LinkIndex = nlink.Attrs().Index
		mask = netlink.RT_FILTER_OIF
	}
	return h.list("RouteList", family, filter, mask)
}

// RouteListFiltered lists the routes of family that match filter in the
// fields mask names: RT_FILTER_TABLE (else the main table only), _OIF,
// _DST, _GW, _SRC, _SCOPE, _TYPE and _PROTOCOL; other bits are ignored.
func (h *handle) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return h.list("RouteListFiltered", family, filter, mask)
}

func (h *handle) list(op string, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin(op); err != nil {
		return nil, err
	}
	var out []netlink.Route
	for _, r := range h.ns.routes {
		if family != netlink.FAMILY_ALL && r.Family != family {
			continue
		}
		if mask&netlink.RT_FILTER_TABLE == 0 && r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		if !matches(r, family, filter, mask) {
			continue
		}
		out = append(out, cloneRoute(r))
	}
	return out, nil
}

// matches applies a RouteListFiltered filter as the real handle does; a
// destination filter without a destination asks for family's default
// route, and never matches with FAMILY_ALL.
func matches(r netlink.Route, family int, f *netlink.Route, mask uint64) bool {
	if f == nil {
		return true
	}
	switch {
	case mask&netlink.RT_FILTER_TABLE != 0 && f.Table != unix.RT_TABLE_UNSPEC && r.Table != f.Table,
		mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != f.Protocol,
		mask&netlink.RT_FILTER_SCOPE != 0 && r.Scope != f.Scope,
		mask&netlink.RT_FILTER_TYPE != 0 && r.Type != f.Type,
		mask&netlink.RT_FILTER_OIF != 0 && r.LinkIndex != f.LinkIndex,
		mask&netlink.RT_FILTER_GW != 0 && !r.Gw.Equal(f.Gw),
		mask&netlink.RT_FILTER_SRC != 0 && !r.Src.Equal(f.Src):
		return false
	case mask&netlink.RT_FILTER_DST != 0:
		dst := normDst(f.Dst)
		if dst == nil {
			dst = zeroNet(family)
		}
		return dst != nil && sameNet(r.Dst, dst)
	}
	return true
}

// NeighSet adds or replaces the neighbour entry for an address on a link.
func (h *handle) NeighSet(neigh *netlink.Neigh) error {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("NeighSet"); err != nil {
		return err
	}
	if neigh == nil || neigh.IP == nil {
		return unix.EINVAL
	}
	l, ok := h.ns.links[neigh.LinkIndex]
	if !ok {
		return unix.ENODEV
	}
	if neigh.HardwareAddr != nil && len(neigh.HardwareAddr) != len(l.l.Attrs().HardwareAddr) {
		return unix.EINVAL
	}
	n := cloneNeigh(*neigh)
	if n.Family == 0 {
		n.Family = familyOf(n.IP)
	}
	if n.Family == netlink.FAMILY_V4 {
		n.IP = n.IP.To4()
	}
	if i := slices.IndexFunc(h.ns.neighs, func(x netlink.Neigh) bool { return x.LinkIndex == n.LinkIndex && x.IP.Equal(n.IP) }); i >= 0 {
		h.ns.neighs[i] = n
		return nil
	}
	h.ns.neighs = append(h.ns.neighs, n)
	return nil
}

// NeighList lists the neighbour entries of a link (all for 0) of family.
func (h *handle) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	if err := h.begin("NeighList"); err != nil {
		return nil, err
	}
	var out []netlink.Neigh
	for _, n := range h.ns.neighs {
		if (linkIndex == 0 || n.LinkIndex == linkIndex) && (family == netlink.FAMILY_ALL || n.Family == family) {
			out = append(out, cloneNeigh(n))
		}
	}
	return out, nil
}
