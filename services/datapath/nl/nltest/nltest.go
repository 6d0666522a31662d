// Package nltest is a conformance suite for [nl.Namespaces]: scenarios of
// the netlink behaviour the node agent relies on (veth pairs across
// namespaces, what goes with a deleted link, route replacement, the errors
// it branches on, the link deletions it is told of: Env.NS must be an
// [nl.LinkWatcher] too). Running it against the kernel and against nl/nlfake keeps
// the fake honest; a new implementation runs it too.
package nltest

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// Env is one host for a scenario: its namespaces and a way to make pod
// namespaces.
type Env struct {
	NS nl.Namespaces
	// NewPod makes an empty pod namespace, gone when the test ends, and
	// returns the path NS.Open takes.
	NewPod func(t *testing.T) string
	// NodePath is a path of the node's namespace, which NS.IsNode says is
	// the node's.
	NodePath string
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
		{"IsNode", isNode},
		{"EnsureRemove", ensureRemove},
		{"Underlay", underlay},
		{"LinkDeletions", linkDeletions},
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
