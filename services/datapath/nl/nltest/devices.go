package nltest

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
)

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

// isNode: the node's namespace is told from a pod's, and a path that is no
// network namespace (missing, a file, a directory, a device) is ErrNetNS.
func isNode(t *testing.T, h *host) {
	if ok, err := h.env.NS.IsNode(h.env.NodePath); err != nil || !ok {
		t.Errorf("IsNode(the node's path) = %v, %v; want true", ok, err)
	}
	if ok, err := h.env.NS.IsNode(h.env.NewPod(t)); err != nil || ok {
		t.Errorf("IsNode(a pod's path) = %v, %v; want false", ok, err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing"), file, dir, "/dev/null"} {
		if _, err := h.env.NS.IsNode(path); !errors.Is(err, nl.ErrNetNS) {
			t.Errorf("IsNode(%s): %v, want ErrNetNS", path, err)
		}
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
