package nltest

import (
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
