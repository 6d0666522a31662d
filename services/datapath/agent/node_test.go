package agent

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/internal/nstest"
)

func TestEnsureTunnel(t *testing.T) {
	ns := nstest.New(t)
	idx, err := ensureTunnel(ns.Netlink, TunnelVXLAN, 1450)
	if err != nil {
		t.Fatalf("VXLAN: %v", err)
	}
	again, err := ensureTunnel(ns.Netlink, TunnelVXLAN, 1450)
	if err != nil || again != idx {
		t.Fatalf("second ensureTunnel = %d, %v; want the same device %d", again, err, idx)
	}
	l, err := ns.Netlink.LinkByName(VXLANDevice)
	if err != nil || l.Attrs().MTU != 1450 || l.Attrs().RawFlags&0x80 == 0 /* IFF_NOARP */ {
		t.Fatalf("axon_vxlan = %+v, %v; want MTU 1450 and NOARP", l, err)
	}

	// A restart with another MTU (the underlay's changed) updates the device.
	if _, err := ensureTunnel(ns.Netlink, TunnelVXLAN, 8950); err != nil {
		t.Fatalf("ensureTunnel with a new MTU: %v", err)
	}
	if l, err := ns.Netlink.LinkByName(VXLANDevice); err != nil || l.Attrs().MTU != 8950 {
		t.Fatalf("axon_vxlan after an MTU change = %+v, %v; want MTU 8950", l, err)
	}

	_, err = ensureTunnel(ns.Netlink, TunnelGeneve, 1450)
	switch {
	case err == nil:
		t.Log("this kernel supports Geneve; the device was created")
	case errors.Is(err, ErrNoGeneve):
		// The expected answer on a kernel without Geneve: a clear error.
	default:
		t.Fatalf("Geneve: %v, want success or ErrNoGeneve", err)
	}
}

func TestPodMTUFromUnderlay(t *testing.T) {
	ns := nstest.New(t)
	nodeIP := netip.MustParseAddr("192.0.2.10")
	// The node's underlay device: one end of a veth pair with jumbo frames.
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "underlay0", MTU: 9000}, PeerName: "underlay1"}
	if err := ns.Netlink.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	l, err := ns.Netlink.LinkByName("underlay0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		nodeIPs   []netip.Addr
		wantFound bool
		wantUnder int
		tunnel    int
		native    int
	}{
		{"jumbo underlay", []netip.Addr{nodeIP}, true, 9000, 8950, 9000},
		{"second node IP is the underlay's", []netip.Addr{netip.MustParseAddr("fd00::1"), nodeIP}, true, 9000, 8950, 9000},
		{"no device holds the node IP", []netip.Addr{netip.MustParseAddr("198.51.100.1")}, false, 1500, 1450, 1500},
		{"no node IP", nil, false, 1500, 1450, 1500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := underlayMTU(ns.Netlink, tc.nodeIPs)
			if err != nil || found != tc.wantFound || got != tc.wantUnder {
				t.Fatalf("underlayMTU = %d, %v, %v; want %d, %v", got, found, err, tc.wantUnder, tc.wantFound)
			}
			if m := podMTU(got, ModeTunnel); m != tc.tunnel {
				t.Errorf("tunnel pod MTU = %d, want %d", m, tc.tunnel)
			}
			if m := podMTU(got, ModeNative); m != tc.native {
				t.Errorf("native pod MTU = %d, want %d", m, tc.native)
			}
		})
	}
}
