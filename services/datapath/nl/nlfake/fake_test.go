package nlfake_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

const podPath = "/run/netns/pod"

var errInjected = errors.New("injected")

// wire makes a veth pair h0/p0 into the pod namespace with a pod route,
// and returns the handles it used.
func wire(t *testing.T, f *nlfake.Fake, path, hostName string) (node nl.Handle, pod *nl.NS, err error) {
	t.Helper()
	node, err = f.Node()
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(node.Close)
	pod, err = f.Open(path)
	if err != nil {
		return node, nil, err
	}
	t.Cleanup(pod.Close)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pod.Ref)}
	if err := node.LinkAdd(v); err != nil {
		return node, pod, err
	}
	if err := node.LinkSetUp(v); err != nil {
		return node, pod, err
	}
	err = node.RouteReplace(&netlink.Route{LinkIndex: v.Index, Dst: &net.IPNet{IP: net.IPv4(10, 0, 0, 7).To4(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
	return node, pod, err
}

func TestNamespaces(t *testing.T) {
	f := nlfake.New()
	if _, err := f.Open(podPath); !errors.Is(err, nl.ErrNetNS) {
		t.Fatalf("open before AddNamespace: %v, want ErrNetNS", err)
	}
	if err := f.Ensure(podPath); err != nil {
		t.Fatal(err)
	}
	if err := f.Ensure(podPath); err != nil {
		t.Fatalf("Ensure of an existing namespace: %v", err)
	}
	_, pod, err := wire(t, f, podPath, "h0")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Link(podPath, "eth0"); !ok {
		t.Fatal("pod side missing")
	}
	pod.Close()
	if err := f.Remove(podPath); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(podPath); err != nil {
		t.Fatalf("Remove of a missing namespace: %v", err)
	}
	// The namespace took the pod's veth end, and the host's end with it.
	if _, ok := f.Link(nlfake.NodeNS, "h0"); ok {
		t.Error("host side outlived the pod namespace")
	}
	if len(f.Routes(nlfake.NodeNS)) != 0 {
		t.Errorf("routes outlived the link: %v", f.Routes(nlfake.NodeNS))
	}
	if got := f.Namespaces(); len(got) != 1 || got[0] != nlfake.NodeNS {
		t.Errorf("namespaces %v, want only the node's", got)
	}
}

// TestNamespaceOutlivesPath deletes a pod's namespace while a handle is
// open in it: the wiring goes on, and goes away with the last handle.
func TestNamespaceOutlivesPath(t *testing.T) {
	f := nlfake.New()
	f.AddNamespace(podPath)
	pod, err := f.Open(podPath)
	if err != nil {
		t.Fatal(err)
	}
	f.DeleteNamespace(podPath)
	if _, err := f.Open(podPath); !errors.Is(err, nl.ErrNetNS) {
		t.Errorf("open after delete: %v, want ErrNetNS", err)
	}
	node, err := f.Node()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pod.Ref)}
	if err := node.LinkAdd(v); err != nil {
		t.Fatalf("veth into a namespace without path: %v", err)
	}
	pod.Close()
	if _, ok := f.Link(nlfake.NodeNS, "h0"); ok {
		t.Error("host side outlived the namespace's last handle")
	}
	if err := node.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "h1"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pod.Ref)}); !errors.Is(err, unix.EBADF) {
		t.Errorf("veth into a dead namespace: %v, want EBADF", err)
	}
}

func TestDeleteLinkOutside(t *testing.T) {
	f := nlfake.New()
	f.AddNamespace(podPath)
	if _, _, err := wire(t, f, podPath, "h0"); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteLink(podPath, "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Link(nlfake.NodeNS, "h0"); ok {
		t.Error("host side outlived its peer")
	}
	var nf netlink.LinkNotFoundError
	if err := f.DeleteLink(podPath, "eth0"); !errors.As(err, &nf) {
		t.Errorf("deleting a missing link: %v, want LinkNotFoundError", err)
	}
}

func TestFailOn(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ns, op   string
		n        int
		wantLink bool
	}{
		{"first LinkAdd", nlfake.NodeNS, "LinkAdd", 1, false},
		{"route after the veth", nlfake.NodeNS, "RouteReplace", 1, true},
		{"any namespace", "", "LinkSetUp", 1, true},
		{"other namespace", podPath, "LinkAdd", 1, true},
		{"later call", nlfake.NodeNS, "RouteReplace", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := nlfake.New()
			f.AddNamespace(podPath)
			f.FailOn(tc.ns, tc.op, tc.n, errInjected)
			_, _, err := wire(t, f, podPath, "h0")
			wantErr := tc.n == 1 && tc.ns != podPath
			if wantErr != errors.Is(err, errInjected) {
				t.Fatalf("wire: %v, want injected error %v", err, wantErr)
			}
			if _, ok := f.Link(nlfake.NodeNS, "h0"); ok != tc.wantLink {
				t.Errorf("host link exists %v, want %v", ok, tc.wantLink)
			}
			// The rule fires once, on its nth call.
			f.AddNamespace(podPath + "2")
			_, _, err = wire(t, f, podPath+"2", "h1")
			if wantSecond := tc.n == 2; errors.Is(err, errInjected) != wantSecond {
				t.Errorf("second wiring: %v, want injected error %v", err, wantSecond)
			}
		})
	}
}

func TestSetFail(t *testing.T) {
	f := nlfake.New()
	f.AddNamespace(podPath)
	f.SetFail(func(ns, op string) error {
		if ns == podPath && op == "Open" {
			return errInjected
		}
		return nil
	})
	if _, _, err := wire(t, f, podPath, "h0"); !errors.Is(err, errInjected) {
		t.Fatalf("wire: %v, want the injected error", err)
	}
	f.SetFail(nil)
	if _, _, err := wire(t, f, podPath, "h0"); err != nil {
		t.Fatal(err)
	}
	if got := f.Calls(podPath, "Open"); got != 2 {
		t.Errorf("Open calls %d, want 2", got)
	}
	if got := f.Calls("", "LinkAdd"); got != 1 {
		t.Errorf("LinkAdd calls %d, want 1", got)
	}
}

func TestGeneveSupport(t *testing.T) {
	f := nlfake.New()
	node, err := f.Node()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	f.SetKindSupported(nlfake.KindGeneve, false)
	g := &netlink.Geneve{LinkAttrs: netlink.LinkAttrs{Name: "gnv0"}, FlowBased: true}
	if err := node.LinkAdd(g); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("Geneve without the driver: %v, want EOPNOTSUPP", err)
	}
	f.SetKindSupported(nlfake.KindGeneve, true)
	if err := node.LinkAdd(g); err != nil {
		t.Fatal(err)
	}
	if l, err := node.LinkByName("gnv0"); err != nil || l.Type() != "geneve" {
		t.Errorf("Geneve read back: %v %v", l, err)
	}
	if err := node.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "d0"}}); err != nil {
		t.Errorf("dummy: %v", err)
	}
	if err := node.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("a kind the fake does not model: %v, want EOPNOTSUPP", err)
	}
}

func TestClosedHandle(t *testing.T) {
	f := nlfake.New()
	node, err := f.Node()
	if err != nil {
		t.Fatal(err)
	}
	if f.OpenHandles() != 1 {
		t.Fatalf("open handles %d, want 1", f.OpenHandles())
	}
	node.Close()
	node.Close()
	if f.OpenHandles() != 0 {
		t.Errorf("open handles after Close %d, want 0", f.OpenHandles())
	}
	if _, err := node.LinkList(); !errors.Is(err, unix.EBADF) {
		t.Errorf("call on a closed handle: %v, want EBADF", err)
	}
}

func TestLoopback(t *testing.T) {
	f := nlfake.New()
	f.AddNamespace(podPath)
	for _, tc := range []struct {
		ns string
		up bool
	}{{nlfake.NodeNS, true}, {podPath, false}} {
		lo, ok := f.Link(tc.ns, "lo")
		if !ok || lo.Attrs().Index != 1 || lo.Attrs().Flags&net.FlagLoopback == 0 {
			t.Fatalf("lo in %s: %+v", tc.ns, lo)
		}
		if up := lo.Attrs().Flags&net.FlagUp != 0; up != tc.up {
			t.Errorf("lo in %s up %v, want %v", tc.ns, up, tc.up)
		}
	}
}

// TestConcurrent wires pods in parallel, as the agent does; run with -race.
func TestConcurrent(t *testing.T) {
	f := nlfake.New()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		path := fmt.Sprintf("%s%d", podPath, i)
		f.AddNamespace(path)
		wg.Go(func() {
			_, _, err := wire(t, f, path, fmt.Sprintf("h%d", i))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	seen := map[int]bool{}
	for _, l := range f.Links(nlfake.NodeNS) {
		if seen[l.Attrs().Index] {
			t.Errorf("ifindex %d twice", l.Attrs().Index)
		}
		seen[l.Attrs().Index] = true
	}
	if len(seen) != 17 {
		t.Errorf("%d node links, want lo and 16 veths", len(seen))
	}
}

func TestInspection(t *testing.T) {
	f := nlfake.New()
	f.AddNamespace(podPath)
	_, pod, err := wire(t, f, podPath, "h0")
	if err != nil {
		t.Fatal(err)
	}
	eth0, err := pod.Handle.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := pod.Handle.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 0, 0, 7), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := pod.Handle.NeighSet(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.IPv4(10, 0, 0, 1), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}, State: netlink.NUD_PERMANENT}); err != nil {
		t.Fatal(err)
	}
	addrs := f.Addrs(podPath, "eth0")
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.0.7/32" {
		t.Errorf("addresses %v", addrs)
	}
	// Inspection returns copies.
	addrs[0].IP[3] = 9
	if got := f.Addrs(podPath, "eth0"); got[0].IP.String() != "10.0.0.7" {
		t.Errorf("changing an inspected address changed the fake: %v", got)
	}
	if n := f.Neighs(podPath); len(n) != 1 || n[0].Family != netlink.FAMILY_V4 {
		t.Errorf("neighbours %v", n)
	}
	if r := f.Routes(nlfake.NodeNS); len(r) != 1 || r[0].Dst.String() != "10.0.0.7/32" {
		t.Errorf("routes %v", r)
	}
	if idx := f.Indexes(podPath); len(idx) != 2 || idx["eth0"] != eth0.Attrs().Index || idx["lo"] != 1 {
		t.Errorf("Indexes: %v, want lo 1 and eth0 %d", idx, eth0.Attrs().Index)
	}
	if f.Links("/nope") != nil || f.Routes("/nope") != nil {
		t.Error("inspecting an unknown namespace returned something")
	}
}

// Addresses and neighbour entries removed behind the code's back, with
// what the kernel removes with them (checked with iproute2 on Linux 6.18).
func TestDeleteAddrAndNeighOutside(t *testing.T) {
	f := nlfake.New()
	f.AddNamespace(podPath)
	_, pod, err := wire(t, f, podPath, "h0")
	if err != nil {
		t.Fatal(err)
	}
	eth0, err := pod.Handle.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := pod.Handle.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	idx := eth0.Attrs().Index
	gw4, gw6 := net.IPv4(10, 0, 0, 1).To4(), net.ParseIP("fd00::1")
	for _, a := range []string{"10.0.0.7/32", "10.0.0.8/32", "fd00::7/128"} {
		ip, ipn, _ := net.ParseCIDR(a)
		if err := pod.Handle.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: ipn.Mask}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*netlink.Route{
		{LinkIndex: idx, Dst: &net.IPNet{IP: gw4, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK},
		{LinkIndex: idx, Gw: gw4, Src: net.IPv4(10, 0, 0, 7)},
		{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv4(10, 9, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}, Gw: gw4, Src: net.IPv4(10, 0, 0, 8)},
		{LinkIndex: idx, Dst: &net.IPNet{IP: gw6, Mask: net.CIDRMask(128, 128)}, Scope: netlink.SCOPE_LINK},
		{LinkIndex: idx, Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: gw6, Src: net.ParseIP("fd00::7")},
	} {
		if err := pod.Handle.RouteReplace(r); err != nil {
			t.Fatalf("route %v: %v", r, err)
		}
	}
	for _, gw := range []net.IP{gw4, gw6} {
		if err := pod.Handle.NeighSet(&netlink.Neigh{LinkIndex: idx, IP: gw, State: netlink.NUD_PERMANENT, HardwareAddr: eth0.Attrs().HardwareAddr}); err != nil {
			t.Fatal(err)
		}
	}
	routeVia := func(gw net.IP) []netlink.Route {
		var out []netlink.Route
		for _, r := range f.Routes(podPath) {
			if r.Gw.Equal(gw) {
				out = append(out, r)
			}
		}
		return out
	}

	// Not the last IPv4 address: only the route preferring it goes.
	if err := f.DeleteAddr(podPath, "eth0", netip.MustParsePrefix("10.0.0.7/32")); err != nil {
		t.Fatal(err)
	}
	if rs := routeVia(gw4); len(rs) != 1 || rs[0].Dst == nil || rs[0].Dst.String() != "10.9.0.0/16" {
		t.Errorf("IPv4 routes via the gateway %v, want 10.9.0.0/16 alone", rs)
	}
	if n := len(f.Routes(podPath)); n != 4 {
		t.Errorf("%d routes, want 4: %v", n, f.Routes(podPath))
	}
	if err := f.DeleteAddr(podPath, "eth0", netip.MustParsePrefix("10.0.0.7/32")); !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Errorf("deleting a missing address: %v, want EADDRNOTAVAIL", err)
	}

	if err := f.DeleteNeigh(podPath, "eth0", netip.MustParseAddr("fd00::1")); err != nil {
		t.Fatal(err)
	}
	if n := f.Neighs(podPath); len(n) != 1 || !n[0].IP.Equal(gw4) {
		t.Errorf("neighbours %v, want the IPv4 gateway's alone", n)
	}
	if err := f.DeleteNeigh(podPath, "eth0", netip.MustParseAddr("fd00::1")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("deleting a missing neighbour: %v, want ENOENT", err)
	}

	// The last IPv4 address: every IPv4 route and ARP entry of the link
	// goes, permanent ones too.
	if err := f.DeleteAddr(podPath, "eth0", netip.MustParsePrefix("10.0.0.8/32")); err != nil {
		t.Fatal(err)
	}
	if n := f.Neighs(podPath); len(n) != 0 {
		t.Errorf("neighbours left after the last IPv4 address: %v", n)
	}
	if n := len(f.Routes(podPath)); n != 2 {
		t.Errorf("%d routes, want the two IPv6 ones: %v", n, f.Routes(podPath))
	}

	// IPv6 routes preferring a deleted address stay, without a source.
	if err := f.DeleteAddr(podPath, "eth0", netip.MustParsePrefix("fd00::7/128")); err != nil {
		t.Fatal(err)
	}
	if rs := routeVia(gw6); len(rs) != 1 || rs[0].Src != nil {
		t.Errorf("IPv6 default routes %v, want one without a source", rs)
	}
	if a := f.Addrs(podPath, "eth0"); len(a) != 0 {
		t.Errorf("addresses left: %v", a)
	}
}
