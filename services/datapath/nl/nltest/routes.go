package nltest

import (
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// wire gives a veth pair the agent's pod wiring, both families.
func (h *host) wire(t *testing.T, pod *nl.NS, hl, pl netlink.Link) {
	t.Helper()
	for _, ip := range []net.IP{podIP, podIP6} {
		a := &netlink.Addr{IPNet: host32(ip)}
		if ip.To4() == nil {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := pod.Handle.AddrAdd(pl, a); err != nil {
			t.Fatalf("address %s: %v", ip, err)
		}
	}
	mustUp(t, pod.Handle, pl)
	mustUp(t, h.node, hl)
	for _, gw := range []net.IP{gwIP, gwIP6} {
		if err := pod.Handle.NeighSet(&netlink.Neigh{LinkIndex: pl.Attrs().Index, IP: gw, HardwareAddr: hostMAC, State: netlink.NUD_PERMANENT}); err != nil {
			t.Fatalf("neighbour %s: %v", gw, err)
		}
	}
	for _, r := range []*netlink.Route{
		{LinkIndex: pl.Attrs().Index, Dst: host32(gwIP), Scope: netlink.SCOPE_LINK},
		{LinkIndex: pl.Attrs().Index, Dst: defaultV4, Gw: gwIP, Src: podIP},
		{LinkIndex: pl.Attrs().Index, Dst: host32(gwIP6), Scope: netlink.SCOPE_LINK},
		{LinkIndex: pl.Attrs().Index, Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: gwIP6, Src: podIP6},
	} {
		if err := pod.Handle.RouteReplace(r); err != nil {
			t.Fatalf("pod route %v: %v", r, err)
		}
	}
	for _, ip := range []net.IP{podIP, podIP6} {
		if err := h.node.RouteReplace(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: host32(ip), Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatalf("host route %s: %v", ip, err)
		}
	}
}

func hasRoute(routes []netlink.Route, dst *net.IPNet) bool {
	return slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == dst.String() })
}

func deleteOneEnd(t *testing.T, h *host) {
	pod := h.pod(t)
	hl, pl := h.veth(t, pod)
	h.wire(t, pod, hl, pl)

	routes, err := pod.Handle.RouteList(pl, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	// netlink reports a default route with the all-zero destination.
	if !hasRoute(routes, defaultV4) || !hasRoute(routes, host32(gwIP)) {
		t.Errorf("pod IPv4 routes %v: want %s and %s", routes, defaultV4, host32(gwIP))
	}
	for _, r := range routes {
		if r.Dst.String() == defaultV4.String() && (!r.Gw.Equal(gwIP) || r.LinkIndex != pl.Attrs().Index || r.Table != unix.RT_TABLE_MAIN) {
			t.Errorf("default route %+v", r)
		}
	}
	hostRoutes, err := h.node.RouteList(hl, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	if !hasRoute(hostRoutes, host32(podIP)) || !hasRoute(hostRoutes, host32(podIP6)) {
		t.Errorf("host routes %v: want /32 and /128 to the pod", hostRoutes)
	}
	for _, r := range hostRoutes {
		// IPv6 routes report universe scope whatever they were given.
		want := netlink.SCOPE_LINK
		if r.Family == netlink.FAMILY_V6 {
			want = netlink.SCOPE_UNIVERSE
		}
		if r.Scope != want {
			t.Errorf("host route %v has scope %v, want %v", r, r.Scope, want)
		}
	}

	// Deleting the pod's end takes the host's end and its routes too.
	if err := pod.Handle.LinkDel(pl); err != nil {
		t.Fatalf("delete pod end: %v", err)
	}
	if _, err := h.node.LinkByName("h0"); !isNotFound(err) {
		t.Errorf("host end after deleting the pod end: %v", err)
	}
	all, err := h.node.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	if hasRoute(all, host32(podIP)) || hasRoute(all, host32(podIP6)) {
		t.Errorf("node routes to the pod outlived its veth: %v", all)
	}
	podRoutes, err := pod.Handle.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	if hasRoute(podRoutes, defaultV4) || hasRoute(podRoutes, host32(gwIP)) {
		t.Errorf("pod routes outlived its veth: %v", podRoutes)
	}
	neighs, err := pod.Handle.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(gwIP) || n.IP.Equal(gwIP6) {
			t.Errorf("neighbour %v outlived its link", n)
		}
	}
	addrs, err := pod.Handle.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.Equal(podIP) || a.IP.Equal(podIP6) {
			t.Errorf("address %v outlived its link", a)
		}
	}
}

func routeReplace(t *testing.T, h *host) {
	pod := h.pod(t)
	hl, pl := h.veth(t, pod)
	h.wire(t, pod, hl, pl)
	block := &net.IPNet{IP: net.IPv4(10, 9, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}
	for _, mtu := range []int{1400, 1300} {
		if err := h.node.RouteReplace(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: block, Scope: netlink.SCOPE_LINK, MTU: mtu}); err != nil {
			t.Fatalf("replace with MTU %d: %v", mtu, err)
		}
	}
	got, err := h.node.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: block}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].MTU != 1300 || got[0].LinkIndex != hl.Attrs().Index {
		t.Fatalf("routes to %s after two replaces: %+v, want one with MTU 1300", block, got)
	}
	// Replacing with a gateway (native routing's remote block) finds the
	// device through the gateway's link route.
	viaPod := &net.IPNet{IP: net.IPv4(10, 8, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}
	if err := h.node.RouteReplace(&netlink.Route{Dst: viaPod, Gw: podIP}); err != nil {
		t.Fatalf("route via %s: %v", podIP, err)
	}
	got, err = h.node.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: hl.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatal(err)
	}
	if !hasRoute(got, viaPod) || !hasRoute(got, block) || !hasRoute(got, host32(podIP)) {
		t.Errorf("routes via h0: %v, want %s, %s and %s", got, viaPod, block, host32(podIP))
	}
	if err := h.node.RouteDel(&got[slices.IndexFunc(got, func(r netlink.Route) bool { return r.Dst.String() == block.String() })]); err != nil {
		t.Fatalf("delete %s: %v", block, err)
	}
	if err := h.node.RouteDel(&netlink.Route{Dst: block, LinkIndex: hl.Attrs().Index}); !errors.Is(err, unix.ESRCH) {
		t.Errorf("deleting a deleted route: %v, want ESRCH", err)
	}
	// A destination filter finds the default route, given as the zero
	// prefix or as no destination (with a family).
	for _, dst := range []*net.IPNet{defaultV4, nil} {
		def, err := pod.Handle.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatal(err)
		}
		if len(def) != 1 || !def[0].Gw.Equal(gwIP) {
			t.Errorf("destination filter %v: %v, want the default route", dst, def)
		}
	}
}

func routeErrors(t *testing.T, h *host) {
	pod := h.pod(t)
	hl, _ := h.veth(t, pod)
	for _, dst := range []net.IP{podIP, podIP6} {
		if err := h.node.RouteReplace(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: host32(dst), Scope: netlink.SCOPE_LINK}); !errors.Is(err, unix.ENETDOWN) {
			t.Errorf("route to %s on a down link: %v, want ENETDOWN", dst, err)
		}
	}
	mustUp(t, h.node, hl)
	far := &net.IPNet{IP: net.IPv4(10, 7, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}
	if err := h.node.RouteReplace(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: far, Gw: net.IPv4(192, 0, 2, 1)}); !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("gateway not on-link: %v, want ENETUNREACH", err)
	}
	if err := h.node.RouteReplace(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: far, Scope: netlink.SCOPE_LINK, Src: net.IPv4(192, 0, 2, 9)}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("source address not local: %v, want EINVAL", err)
	}
	if err := h.node.RouteReplace(&netlink.Route{LinkIndex: 1 << 20, Dst: far}); !errors.Is(err, unix.ENODEV) {
		t.Errorf("route on a missing link: %v, want ENODEV", err)
	}
}
