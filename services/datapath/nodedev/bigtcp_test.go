package nodedev

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/internal/nstest"
)

func TestBigTCPSize(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8::10")
	tests := []struct {
		name     string
		underlay string // "veth" (tso_max_size 524280), "vxlan" (65536) or "" (none)
		nodeIPs  []netip.Addr
		mode     string
		protocol string
		want     int
		wantErr  string // part of the error; "" for success
	}{
		{"tunnel over a veth", "veth", []netip.Addr{v4}, ModeTunnel, TunnelVXLAN, bigTCPMaxSize, ""},
		{"native over a veth", "veth", []netip.Addr{v4}, ModeNative, "", bigTCPMaxSize, ""},
		{"IPv6-only native", "veth", []netip.Addr{v6}, ModeNative, "", bigTCPMaxSize, ""},
		{"Geneve", "veth", []netip.Addr{v4}, ModeTunnel, TunnelGeneve, 0, "Geneve"},
		{"IPv6-only tunnel", "veth", []netip.Addr{v6}, ModeTunnel, TunnelVXLAN, 0, "IPv4 node address"},
		{"underlay without big GSO", "vxlan", []netip.Addr{v4}, ModeNative, "", 0, "tso_max_size"},
		{"no underlay device", "", []netip.Addr{v4}, ModeNative, "", 0, "no device holds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := nstest.New(t)
			h := ns.Netlink
			if tc.underlay != "" {
				var l netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplinkp"}
				if tc.underlay == "vxlan" {
					l = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, VxlanId: 7, Port: 4789}
				}
				if err := h.LinkAdd(l); err != nil {
					t.Fatal(err)
				}
				l, err := h.LinkByName("uplink")
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range tc.nodeIPs {
					if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, a.BitLen())}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := BigTCPSize(h, tc.nodeIPs, "", tc.mode, tc.protocol)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrBigTCP) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("BigTCPSize = %d, %v; want an ErrBigTCP error mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("BigTCPSize = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

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
