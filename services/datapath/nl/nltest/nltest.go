// Package nltest is a conformance suite for [nl.Namespaces]: scenarios of
// the netlink behaviour the node agent relies on (veth pairs across
// namespaces, what goes with a deleted link, route replacement, the errors
// it branches on). Running it against the kernel and against nl/nlfake keeps
// the fake honest; a new implementation runs it too.
package nltest

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// Env is one host for a scenario: its namespaces and a way to make pod
// namespaces.
type Env struct {
	NS nl.Namespaces
	// NewPod makes an empty pod namespace, gone when the test ends, and
	// returns the path NS.Open takes.
	NewPod func(t *testing.T) string
}

// Run runs every scenario, each on a fresh Env from newEnv.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	for _, sc := range []struct {
		name string
		fn   func(t *testing.T, h *host)
	}{
		{"VethAcrossNamespaces", vethAcrossNamespaces},
		{"OperState", operState},
		{"NameTaken", nameTaken},
		{"NotFound", notFound},
		{"DeleteOneEnd", deleteOneEnd},
		{"RouteReplace", routeReplace},
		{"RouteErrors", routeErrors},
		{"Addresses", addresses},
		{"Neighbours", neighbours},
		{"Vxlan", vxlan},
		{"Copies", copies},
		{"VethInOneNamespace", vethInOneNamespace},
		{"OpenMissing", openMissing},
		{"EnsureRemove", ensureRemove},
		{"Underlay", underlay},
		{"TSOMaxSize", tsoMaxSize},
	} {
		t.Run(sc.name, func(t *testing.T) {
			env := newEnv(t)
			node, err := env.NS.Node()
			if err != nil {
				t.Fatalf("node handle: %v", err)
			}
			t.Cleanup(node.Close)
			sc.fn(t, &host{env: env, node: node})
		})
	}
}

// host is a scenario's Env with an open node handle.
type host struct {
	env  Env
	node nl.Handle
}

// pod makes and opens a pod namespace.
func (h *host) pod(t *testing.T) *nl.NS {
	t.Helper()
	path := h.env.NewPod(t)
	ns, err := h.env.NS.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(ns.Close)
	return ns
}

var (
	hostMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	podMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	podIP   = net.IPv4(10, 244, 1, 7).To4()
	gwIP    = net.IPv4(10, 244, 1, 1).To4()
	podIP6  = net.ParseIP("fd00:244::7")
	// defaultV4 is how netlink reports an IPv4 default route's destination.
	defaultV4 = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	gwIP6     = net.ParseIP("fd00:244::1")
)

func host32(ip net.IP) *net.IPNet {
	bits := 128
	if ip.To4() != nil {
		bits = 32
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}
}

// veth makes host-side "h0" in the node and "p0" in pod, as the agent
// wires a pod.
func (h *host) veth(t *testing.T, pod *nl.NS) (hostLink, podLink netlink.Link) {
	t.Helper()
	v := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: "h0", MTU: 1400, HardwareAddr: hostMAC, GSOMaxSize: 131072, GROMaxSize: 131072},
		PeerName:  "p0", PeerHardwareAddr: podMAC, PeerMTU: 1400, PeerNamespace: netlink.NsFd(pod.Ref),
	}
	if err := h.node.LinkAdd(v); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	hostLink, err := h.node.LinkByName("h0")
	if err != nil {
		t.Fatalf("host side: %v", err)
	}
	if v.Attrs().Index != hostLink.Attrs().Index {
		t.Errorf("LinkAdd set index %d, the link has %d", v.Attrs().Index, hostLink.Attrs().Index)
	}
	podLink, err = pod.Handle.LinkByName("p0")
	if err != nil {
		t.Fatalf("pod side: %v", err)
	}
	return hostLink, podLink
}

func mustUp(t *testing.T, h nl.Handle, l netlink.Link) netlink.Link {
	t.Helper()
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", l.Attrs().Name, err)
	}
	got, err := h.LinkByIndex(l.Attrs().Index)
	if err != nil {
		t.Fatalf("reread %s: %v", l.Attrs().Name, err)
	}
	return got
}

func vethAcrossNamespaces(t *testing.T, h *host) {
	pod := h.pod(t)
	hl, pl := h.veth(t, pod)
	for _, c := range []struct {
		l        netlink.Link
		mac      net.HardwareAddr
		gso, gro uint32
	}{{hl, hostMAC, 131072, 131072}, {pl, podMAC, 65536, 65536}} {
		a := c.l.Attrs()
		if c.l.Type() != "veth" {
			t.Errorf("%s is a %s, want veth", a.Name, c.l.Type())
		}
		if a.MTU != 1400 || a.HardwareAddr.String() != c.mac.String() {
			t.Errorf("%s: MTU %d MAC %s, want 1400 %s", a.Name, a.MTU, a.HardwareAddr, c.mac)
		}
		// The kernel takes the GSO/GRO sizes for the new device only.
		if a.GSOMaxSize != c.gso || a.GROMaxSize != c.gro {
			t.Errorf("%s: GSO %d GRO %d, want %d %d", a.Name, a.GSOMaxSize, a.GROMaxSize, c.gso, c.gro)
		}
		if a.Flags&net.FlagUp != 0 || a.OperState != netlink.OperDown {
			t.Errorf("%s: new link flags %v state %v, want down", a.Name, a.Flags, a.OperState)
		}
	}
	if hl.Attrs().ParentIndex != pl.Attrs().Index || pl.Attrs().ParentIndex != hl.Attrs().Index {
		t.Errorf("veth ends' parent indexes %d and %d, want each other's (%d, %d)", hl.Attrs().ParentIndex, pl.Attrs().ParentIndex, pl.Attrs().Index, hl.Attrs().Index)
	}
	if _, err := h.node.LinkByName("p0"); !isNotFound(err) {
		t.Errorf("pod side visible in the node namespace: %v", err)
	}
	if _, err := pod.Handle.LinkByName("h0"); !isNotFound(err) {
		t.Errorf("host side visible in the pod namespace: %v", err)
	}
	links, err := pod.Handle.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"lo", "p0"}) {
		t.Errorf("pod links %v, want [lo p0]", names)
	}
	big := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "big0", GSOMaxSize: 524281}, PeerName: "big1"}
	if err := h.node.LinkAdd(big); !errors.Is(err, unix.EINVAL) {
		t.Errorf("new veth with a GSO size above the maximum: %v, want EINVAL", err)
	}
	if err := h.node.LinkSetGSOIPv4MaxSize(hl, 524281); !errors.Is(err, unix.EINVAL) {
		t.Errorf("GSO size above the veth's maximum: %v, want EINVAL", err)
	}
	if err := pod.Handle.LinkSetGSOMaxSize(pl, 131072); err != nil {
		t.Fatalf("pod side GSO: %v", err)
	}
	if got, err := pod.Handle.LinkByName("p0"); err != nil || got.Attrs().GSOMaxSize != 131072 {
		t.Errorf("pod side GSO after setting: %v %v", got, err)
	}
}

func operState(t *testing.T, h *host) {
	pod := h.pod(t)
	hl, pl := h.veth(t, pod)
	hl = mustUp(t, h.node, hl)
	// The kernel settles a veth without carrier on LOWERLAYERDOWN, but
	// through linkwatch, which may not have run yet.
	if hl.Attrs().Flags&net.FlagUp == 0 || hl.Attrs().OperState == netlink.OperUp {
		t.Errorf("host side up, peer down: flags %v state %v, want up and not operationally up", hl.Attrs().Flags, hl.Attrs().OperState)
	}
	pl = mustUp(t, pod.Handle, pl)
	hl, err := h.node.LinkByName("h0")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{hl, pl} {
		if l.Attrs().OperState != netlink.OperUp {
			t.Errorf("%s with both ends up: state %v, want up", l.Attrs().Name, l.Attrs().OperState)
		}
	}
	if err := h.node.LinkSetMTU(hl, 65536); !errors.Is(err, unix.EINVAL) {
		t.Errorf("MTU 65536 on a veth: %v, want EINVAL", err)
	}
}

func nameTaken(t *testing.T, h *host) {
	pod := h.pod(t)
	h.veth(t, pod)
	again := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h0"}, PeerName: "p1"}
	if err := h.node.LinkAdd(again); !errors.Is(err, unix.EEXIST) {
		t.Errorf("host name taken: %v, want EEXIST", err)
	}
	peerTaken := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h1"}, PeerName: "p0", PeerNamespace: netlink.NsFd(pod.Ref)}
	if err := h.node.LinkAdd(peerTaken); !errors.Is(err, unix.EEXIST) {
		t.Errorf("peer name taken: %v, want EEXIST", err)
	}
	if _, err := h.node.LinkByName("h1"); !isNotFound(err) {
		t.Errorf("a failed LinkAdd left h1 behind: %v", err)
	}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) && nf.Error() != ""
}

func notFound(t *testing.T, h *host) {
	if _, err := h.node.LinkByName("nope0"); !isNotFound(err) {
		t.Errorf("LinkByName of a missing link: %v, want LinkNotFoundError", err)
	}
	if _, err := h.node.LinkByIndex(1 << 20); !isNotFound(err) {
		t.Errorf("LinkByIndex of a missing link: %v, want LinkNotFoundError", err)
	}
	pod := h.pod(t)
	hl, _ := h.veth(t, pod)
	if err := h.node.LinkDel(hl); err != nil {
		t.Fatal(err)
	}
	if err := h.node.LinkDel(hl); !errors.Is(err, unix.ENODEV) {
		t.Errorf("deleting a deleted link: %v, want ENODEV", err)
	}
	if err := h.node.LinkSetUp(hl); !errors.Is(err, unix.ENODEV) {
		t.Errorf("setting a deleted link up: %v, want ENODEV", err)
	}
}

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

func addresses(t *testing.T, h *host) {
	pod := h.pod(t)
	_, pl := h.veth(t, pod)
	a := &netlink.Addr{IPNet: &net.IPNet{IP: podIP, Mask: net.CIDRMask(24, 32)}}
	if err := pod.Handle.AddrAdd(pl, a); err != nil {
		t.Fatal(err)
	}
	if err := pod.Handle.AddrAdd(pl, a); !errors.Is(err, unix.EEXIST) {
		t.Errorf("adding an address twice: %v, want EEXIST", err)
	}
	if err := pod.Handle.AddrReplace(pl, a); err != nil {
		t.Errorf("replacing an address: %v", err)
	}
	if err := pod.Handle.AddrAdd(pl, &netlink.Addr{IPNet: host32(podIP6), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	v4, err := pod.Handle.AddrList(pl, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(v4) != 1 || v4[0].IPNet.String() != "10.244.1.7/24" || v4[0].LinkIndex != pl.Attrs().Index {
		t.Errorf("IPv4 addresses %v, want 10.244.1.7/24 on p0", v4)
	}
	v6, err := pod.Handle.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(v6, func(a netlink.Addr) bool { return a.IPNet.String() == "fd00:244::7/128" }) {
		t.Errorf("IPv6 addresses %v, want fd00:244::7/128", v6)
	}
	// A connected gateway needs no link route.
	mustUp(t, pod.Handle, pl)
	if err := pod.Handle.RouteReplace(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 6, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}, Gw: gwIP}); err != nil {
		t.Errorf("route via a gateway in the link's prefix: %v", err)
	}
}

func neighbours(t *testing.T, h *host) {
	pod := h.pod(t)
	_, pl := h.veth(t, pod)
	for _, mac := range []net.HardwareAddr{hostMAC, podMAC} {
		if err := pod.Handle.NeighSet(&netlink.Neigh{LinkIndex: pl.Attrs().Index, IP: gwIP, HardwareAddr: mac, State: netlink.NUD_PERMANENT}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := pod.Handle.NeighList(pl.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var found []netlink.Neigh
	for _, n := range got {
		if n.IP.Equal(gwIP) {
			found = append(found, n)
		}
	}
	if len(found) != 1 || found[0].HardwareAddr.String() != podMAC.String() || found[0].State&netlink.NUD_PERMANENT == 0 {
		t.Errorf("neighbours for %s after two sets: %+v, want one permanent with %s", gwIP, found, podMAC)
	}
	if err := pod.Handle.NeighSet(&netlink.Neigh{LinkIndex: 1 << 20, IP: gwIP, HardwareAddr: podMAC, State: netlink.NUD_PERMANENT}); !errors.Is(err, unix.ENODEV) {
		t.Errorf("neighbour on a missing link: %v, want ENODEV", err)
	}
}

func vxlan(t *testing.T, h *host) {
	v := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, FlowBased: true, Port: 8472}
	if err := h.node.LinkAdd(v); err != nil {
		t.Fatalf("add vxlan: %v", err)
	}
	l, err := h.node.LinkByName("vx0")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := l.(*netlink.Vxlan)
	if !ok || !got.FlowBased || got.Port != 8472 || l.Attrs().MTU != 1500 {
		t.Fatalf("vxlan read back as %T %+v", l, l)
	}
	if err := h.node.LinkSetARPOff(l); err != nil {
		t.Fatal(err)
	}
	if err := h.node.LinkSetMTU(l, 1450); err != nil {
		t.Fatal(err)
	}
	l = mustUp(t, h.node, l)
	a := l.Attrs()
	if a.MTU != 1450 || a.RawFlags&unix.IFF_NOARP == 0 || a.Flags&net.FlagUp == 0 || a.OperState != netlink.OperUnknown {
		t.Errorf("vxlan: MTU %d raw flags %#x state %v, want 1450, NOARP|UP, unknown", a.MTU, a.RawFlags, a.OperState)
	}
}

func copies(t *testing.T, h *host) {
	pod := h.pod(t)
	hl, _ := h.veth(t, pod)
	hl.Attrs().MTU = 9000
	hl.Attrs().HardwareAddr[5] = 0xff
	again, err := h.node.LinkByName("h0")
	if err != nil {
		t.Fatal(err)
	}
	if again.Attrs().MTU != 1400 || again.Attrs().HardwareAddr.String() != hostMAC.String() {
		t.Errorf("changing a returned link changed the link: MTU %d MAC %s", again.Attrs().MTU, again.Attrs().HardwareAddr)
	}
}

func openMissing(t *testing.T, h *host) {
	if _, err := h.env.NS.Open("/proc/self/no-such-netns"); !errors.Is(err, nl.ErrNetNS) {
		t.Errorf("open a missing namespace: %v, want ErrNetNS", err)
	}
}

func vethInOneNamespace(t *testing.T, h *host) {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "axh0", MTU: 1450}, PeerName: "axn0"}
	if err := h.node.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	peer, err := h.node.LinkByName("axn0")
	if err != nil {
		t.Fatalf("peer in the same namespace: %v", err)
	}
	if peer.Attrs().MTU != 1450 {
		t.Errorf("peer MTU %d, want the link's 1450 when PeerMTU is unset", peer.Attrs().MTU)
	}
	router := &netlink.Addr{IPNet: host32(gwIP)}
	for range 2 {
		if err := h.node.AddrReplace(v, router); err != nil {
			t.Fatalf("router address: %v", err)
		}
	}
	if addrs, err := h.node.AddrList(v, netlink.FAMILY_V4); err != nil || len(addrs) != 1 {
		t.Errorf("addresses after AddrReplace twice: %v %v, want one", addrs, err)
	}
	if err := h.node.LinkDel(peer); err != nil {
		t.Fatal(err)
	}
	if _, err := h.node.LinkByName("axh0"); !isNotFound(err) {
		t.Errorf("deleting the peer left %s: %v", "axh0", err)
	}
	if addrs, err := h.node.AddrList(nil, netlink.FAMILY_V4); err != nil || slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(gwIP) }) {
		t.Errorf("addresses after deleting the link: %v %v", addrs, err)
	}
}

func ensureRemove(t *testing.T, h *host) {
	path := filepath.Join(t.TempDir(), "netns")
	for range 2 {
		if err := h.env.NS.Ensure(path); err != nil {
			t.Fatalf("Ensure: %v", err)
		}
	}
	t.Cleanup(func() { _ = h.env.NS.Remove(path) })
	ns, err := h.env.NS.Open(path)
	if err != nil {
		t.Fatalf("open an ensured namespace: %v", err)
	}
	_, err = ns.Handle.LinkByName("lo")
	ns.Close()
	if err != nil {
		t.Fatalf("loopback of an ensured namespace: %v", err)
	}
	// Ensure keeps a namespace that is there, and what is in it.
	pod, err := h.env.NS.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	h.veth(t, pod)
	pod.Close()
	if err := h.env.NS.Ensure(path); err != nil {
		t.Fatalf("Ensure of an existing namespace: %v", err)
	}
	if pod, err = h.env.NS.Open(path); err != nil {
		t.Fatal(err)
	}
	_, err = pod.Handle.LinkByName("p0")
	pod.Close()
	if err != nil {
		t.Errorf("Ensure replaced the namespace: %v", err)
	}
	for range 2 {
		if err := h.env.NS.Remove(path); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if _, err := h.env.NS.Open(path); !errors.Is(err, nl.ErrNetNS) {
		t.Errorf("open a removed namespace: %v, want ErrNetNS", err)
	}
}

// underlay gives the node an address and a default route through a
// connected gateway, and finds both as the agent finds its underlay.
func underlay(t *testing.T, h *host) {
	outside := h.pod(t)
	hl, pl := h.veth(t, outside)
	nodeIP := &net.IPNet{IP: net.IPv4(192, 0, 2, 10).To4(), Mask: net.CIDRMask(24, 32)}
	if err := h.node.AddrAdd(hl, &netlink.Addr{IPNet: nodeIP}); err != nil {
		t.Fatal(err)
	}
	def := &netlink.Route{Dst: defaultV4, Gw: net.IPv4(192, 0, 2, 1).To4()}
	if err := h.node.RouteReplace(def); !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("default route while the link is down: %v, want ENETUNREACH", err)
	}
	mustUp(t, outside.Handle, pl)
	mustUp(t, h.node, hl)
	if err := h.node.RouteReplace(def); err != nil {
		t.Fatalf("default route via a connected gateway: %v", err)
	}
	addrs, err := h.node.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(nodeIP.IP) })
	if i < 0 || addrs[i].LinkIndex != hl.Attrs().Index || addrs[i].IPNet.String() != nodeIP.String() {
		t.Fatalf("node addresses %v, want %s on h0", addrs, nodeIP)
	}
	routes, err := h.node.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	j := slices.IndexFunc(routes, func(r netlink.Route) bool { return r.Dst.String() == defaultV4.String() })
	if j < 0 || routes[j].LinkIndex != hl.Attrs().Index {
		t.Fatalf("routes %v, want the default route through h0", routes)
	}
	dev, err := h.node.LinkByIndex(routes[j].LinkIndex)
	if err != nil || dev.Attrs().Name != "h0" {
		t.Errorf("the default route's device: %v %v", dev, err)
	}
}

// tsoMaxSize: the drivers' GSO limits BIG TCP sizing reads (tso_max_size):
// veth and loopback take 512 KiB less 8 bytes, VXLAN the legacy 64 KiB.
func tsoMaxSize(t *testing.T, h *host) {
	if err := h.node.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tso0"}, PeerName: "tso1"}); err != nil {
		t.Fatal(err)
	}
	if err := h.node.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, FlowBased: true, Port: 8472}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{"lo": 524280, "tso0": 524280, "tso1": 524280, "vx0": 65536} {
		l, err := h.node.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Attrs().TSOMaxSize; got != want {
			t.Errorf("%s: tso_max_size %d, want %d", name, got, want)
		}
	}
}
