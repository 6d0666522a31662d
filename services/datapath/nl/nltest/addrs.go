package nltest

import (
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
