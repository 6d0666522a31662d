package nodedev

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/internal/nstest"
)

// RaiseGSOMaxSize raises the underlay and the axon_host pair, and leaves a
// size that is already larger alone.
func TestRaiseGSOMaxSize(t *testing.T) {
	ns := nstest.New(t)
	h := ns.Netlink
	v4 := netip.MustParseAddr("192.0.2.10")
	for _, v := range []*netlink.Veth{
		{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplinkp"},
		{LinkAttrs: netlink.LinkAttrs{Name: HostDevice}, PeerName: NetDevice},
	} {
		if err := h.LinkAdd(v); err != nil {
			t.Fatal(err)
		}
	}
	uplink, err := h.LinkByName("uplink")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(uplink, &netlink.Addr{IPNet: &net.IPNet{IP: v4.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	const larger = 262144
	if err := h.LinkSetGSOIPv4MaxSize(uplink, larger); err != nil {
		t.Fatal(err)
	}
	if err := RaiseGSOMaxSize(h, []netip.Addr{v4}, "", bigTCPMaxSize); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"uplink", HostDevice, NetDevice} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		a := l.Attrs()
		wantV4GSO := uint32(bigTCPMaxSize)
		if name == "uplink" {
			wantV4GSO = larger
		}
		if a.GSOMaxSize != bigTCPMaxSize || a.GROMaxSize != bigTCPMaxSize || a.GSOIPv4MaxSize != wantV4GSO || a.GROIPv4MaxSize != bigTCPMaxSize {
			t.Errorf("%s: GSO %d GRO %d IPv4 GSO %d IPv4 GRO %d; want %d (IPv4 GSO %d)",
				name, a.GSOMaxSize, a.GROMaxSize, a.GSOIPv4MaxSize, a.GROIPv4MaxSize, bigTCPMaxSize, wantV4GSO)
		}
	}
}
