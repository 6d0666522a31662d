package nodedev

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/internal/nstest"
)

func TestEnsureTunnel(t *testing.T) {
	ns := nstest.New(t)
	idx, err := EnsureTunnel(ns.Netlink, TunnelVXLAN, 1450)
	if err != nil {
		t.Fatalf("VXLAN: %v", err)
	}
	again, err := EnsureTunnel(ns.Netlink, TunnelVXLAN, 1450)
	if err != nil || again != idx {
		t.Fatalf("second EnsureTunnel = %d, %v; want the same device %d", again, err, idx)
	}
	l, err := ns.Netlink.LinkByName(VXLANDevice)
	if err != nil || l.Attrs().MTU != 1450 || l.Attrs().RawFlags&0x80 == 0 /* IFF_NOARP */ {
		t.Fatalf("axon_vxlan = %+v, %v; want MTU 1450 and NOARP", l, err)
	}

	// A restart with another MTU (the underlay's changed) updates the device.
	if _, err := EnsureTunnel(ns.Netlink, TunnelVXLAN, 8950); err != nil {
		t.Fatalf("EnsureTunnel with a new MTU: %v", err)
	}
	if l, err := ns.Netlink.LinkByName(VXLANDevice); err != nil || l.Attrs().MTU != 8950 {
		t.Fatalf("axon_vxlan after an MTU change = %+v, %v; want MTU 8950", l, err)
	}

	_, err = EnsureTunnel(ns.Netlink, TunnelGeneve, 1450)
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
	v4 := netip.MustParseAddr("192.0.2.10")
	v4b := netip.MustParseAddr("198.51.100.10")
	v6 := netip.MustParseAddr("2001:db8::10")
	// A device of the node: one end of a veth pair with an MTU and addresses.
	type dev struct {
		name  string
		mtu   int
		addrs []netip.Addr
	}
	tests := []struct {
		name       string
		devs       []dev
		loopback   []netip.Addr // node addresses on lo
		defaultVia string       // device of an IPv4 default route
		nodeIPs    []netip.Addr
		mode       string
		wantDev    string // "" for no underlay (1500 assumed)
		wantPod    int
		wantErr    bool
	}{
		{"jumbo underlay, tunnel", []dev{{"jumbo", 9000, []netip.Addr{v4}}}, nil, "", []netip.Addr{v4}, ModeTunnel, "jumbo", 8950, false},
		{"jumbo underlay, native", []dev{{"jumbo", 9000, []netip.Addr{v4}}}, nil, "", []netip.Addr{v4}, ModeNative, "jumbo", 9000, false},
		{"cloud underlay, tunnel", []dev{{"gce", 1460, []netip.Addr{v4}}}, nil, "", []netip.Addr{v4}, ModeTunnel, "gce", 1410, false},
		// The tunnel source is the first IPv4 node address, wherever it is listed.
		{"IPv4 address decides", []dev{{"v6dev", 9000, []netip.Addr{v6}}, {"v4dev", 1400, []netip.Addr{v4}}}, nil, "", []netip.Addr{v6, v4}, ModeTunnel, "v4dev", 1350, false},
		{"first IPv4 a device holds", []dev{{"v4dev", 1400, []netip.Addr{v4b}}}, nil, "", []netip.Addr{v4, v4b}, ModeNative, "v4dev", 1400, false},
		{"IPv6-only node", []dev{{"v6dev", 9000, []netip.Addr{v6}}}, nil, "", []netip.Addr{v6}, ModeNative, "v6dev", 9000, false},
		// A /32 on lo (announced by BGP) says nothing about where packets
		// leave: refused rather than guessed from the default route.
		{"node address on loopback", []dev{{"uplink", 9000, []netip.Addr{v4b}}}, []netip.Addr{v4}, "uplink", []netip.Addr{v4}, ModeTunnel, "", 0, true},
		{"node address on loopback, no default route", nil, []netip.Addr{v4}, "", []netip.Addr{v4}, ModeTunnel, "", 0, true},
		{"no device holds the node address", nil, nil, "", []netip.Addr{v4}, ModeTunnel, "", 1450, false},
		{"no node address", nil, nil, "", nil, ModeNative, "", 1500, false},
		{"underlay too small for the tunnel", []dev{{"tiny", 600, []netip.Addr{v4}}}, nil, "", []netip.Addr{v4}, ModeTunnel, "", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := nstest.New(t)
			h := ns.Netlink
			for _, d := range tc.devs {
				if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: d.mtu}, PeerName: d.name + "p"}); err != nil {
					t.Fatal(err)
				}
				l, err := h.LinkByName(d.name)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range d.addrs {
					addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, a.BitLen())}, Flags: unix.IFA_F_NODAD}
					if err := h.AddrAdd(l, addr); err != nil {
						t.Fatal(err)
					}
				}
				if err := h.LinkSetUp(l); err != nil {
					t.Fatal(err)
				}
			}
			lo, err := h.LinkByName("lo")
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tc.loopback {
				if err := h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.defaultVia != "" {
				l, err := h.LinkByName(tc.defaultVia)
				if err != nil {
					t.Fatal(err)
				}
				gw := net.IPv4(198, 51, 100, 1)
				if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil {
					t.Fatal(err)
				}
			}

			pod, underlay, err := DerivePodMTU(h, tc.nodeIPs, "", tc.mode)
			if tc.wantErr {
				if err == nil || errors.Is(err, ErrNoUnderlay) {
					t.Fatalf("DerivePodMTU = %d, %v; want an error", pod, err)
				}
				return
			}
			if pod != tc.wantPod {
				t.Errorf("pod MTU %d, want %d", pod, tc.wantPod)
			}
			switch {
			case tc.wantDev == "":
				if !errors.Is(err, ErrNoUnderlay) || underlay != nil {
					t.Errorf("underlay %v, err %v; want none and ErrNoUnderlay", underlay, err)
				}
			case err != nil || underlay == nil || underlay.Attrs().Name != tc.wantDev:
				t.Errorf("underlay %v, err %v; want %s", underlay, err, tc.wantDev)
			}
		})
	}
}

// On a kernel without Geneve, the probe fails at once with ErrNoGeneve
// (the agent exits with that message rather than retrying), and leaves no
// device behind either way.
func TestProbeGeneve(t *testing.T) {
	ns := nstest.New(t)
	err := ProbeGeneve(ns.Netlink)
	switch {
	case err == nil:
		t.Log("this kernel supports Geneve")
		if _, lerr := ns.Netlink.LinkByName("axon_gnvprobe"); lerr == nil {
			t.Error("the probe device was left behind")
		}
	case !errors.Is(err, ErrNoGeneve):
		t.Fatalf("ProbeGeneve = %v, want ErrNoGeneve or success", err)
	}
}
