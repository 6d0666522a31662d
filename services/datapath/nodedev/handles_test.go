package nodedev_test

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// These tests run one table on both handles: nlfake always, the kernel (a
// namespace of the test's own) as root. The kernel run holds the fake to
// the kernel's behaviour where the node-device logic depends on it.

// node is the netlink of a fresh test node.
type node struct {
	h nl.Handle
	f *nlfake.Fake // nil on the kernel
}

// onBoth runs fn on a fresh node of the fake and of the kernel, as the
// subtests "fake" and "kernel" (which needs root).
func onBoth(t *testing.T, fn func(t *testing.T, n node)) {
	t.Helper()
	t.Run("fake", func(t *testing.T) {
		f := nlfake.New()
		h, err := f.Node()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		fn(t, node{h: h, f: f})
	})
	t.Run("kernel", func(t *testing.T) {
		fn(t, node{h: nstest.New(t).Netlink})
	})
}

// geneveSupported reports whether the node can create Geneve devices: on
// the fake, as configured; on the kernel, by trying.
func (n node) geneveSupported(t *testing.T) bool {
	t.Helper()
	const name = "axon_gnvcheck"
	err := n.h.LinkAdd(&netlink.Geneve{LinkAttrs: netlink.LinkAttrs{Name: name}, FlowBased: true, Dport: nodedev.GenevePort})
	if err != nil {
		return false
	}
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	return true
}

func TestDerivePodMTU(t *testing.T) {
	tests := []struct {
		name       string
		devs       []dev
		loopback   []netip.Addr
		defaultVia string
		nodeIPs    []netip.Addr
		mode       string
		device     string // --underlay-device
		wantDev    string // "" for no underlay (1500 assumed)
		wantPod    int
		wantErr    bool
	}{
		{name: "jumbo underlay, tunnel", devs: []dev{{name: "jumbo", mtu: 9000, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantDev: "jumbo", wantPod: 8950},
		{name: "jumbo underlay, native", devs: []dev{{name: "jumbo", mtu: 9000, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeNative, wantDev: "jumbo", wantPod: 9000},
		{name: "standard underlay, tunnel", devs: []dev{{name: "eth0", mtu: 1500, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantDev: "eth0", wantPod: 1450},
		{name: "cloud underlay, tunnel", devs: []dev{{name: "gce", mtu: 1460, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantDev: "gce", wantPod: 1410},
		// The tunnel source is the first IPv4 node address, wherever it is listed.
		{name: "IPv4 address decides", devs: []dev{{name: "v6dev", mtu: 9000, addrs: []netip.Addr{v6}}, {name: "v4dev", mtu: 1400, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v6, v4}, mode: nodedev.ModeTunnel, wantDev: "v4dev", wantPod: 1350},
		{name: "first IPv4 a device holds", devs: []dev{{name: "v4dev", mtu: 1400, addrs: []netip.Addr{v4b}}}, nodeIPs: []netip.Addr{v4, v4b}, mode: nodedev.ModeNative, wantDev: "v4dev", wantPod: 1400},
		{name: "IPv6-only node", devs: []dev{{name: "v6dev", mtu: 9000, addrs: []netip.Addr{v6}}}, nodeIPs: []netip.Addr{v6}, mode: nodedev.ModeNative, wantDev: "v6dev", wantPod: 9000},
		{name: "node address on loopback, underlay named", devs: []dev{{name: "uplink", mtu: 9000, addrs: []netip.Addr{v4b}}}, loopback: []netip.Addr{v4}, defaultVia: "uplink", nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, device: "uplink", wantDev: "uplink", wantPod: 8950},
		{name: "node address on a dummy, underlay named", devs: []dev{{name: "uplink", mtu: 9000, addrs: []netip.Addr{v4b}}, {name: "bgp0", kind: nlfake.KindDummy, mtu: 1500, addrs: []netip.Addr{v4}}}, defaultVia: "uplink", nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeNative, device: "uplink", wantDev: "uplink", wantPod: 9000},
		// A /32 on lo (announced by BGP) says nothing about where packets
		// leave: refused rather than guessed from the default route
		// (underlay_test.go has the messages).
		{name: "node address on loopback, underlay not named", devs: []dev{{name: "uplink", mtu: 9000, addrs: []netip.Addr{v4b}}}, loopback: []netip.Addr{v4}, defaultVia: "uplink", nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantErr: true},
		{name: "node address on loopback, no default route", loopback: []netip.Addr{v4}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantErr: true},
		{name: "no device holds the node address", devs: []dev{{name: "eth0", mtu: 9000, addrs: []netip.Addr{v4b}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantPod: 1450},
		{name: "no node address", nodeIPs: nil, mode: nodedev.ModeNative, wantPod: 1500},
		{name: "underlay too small for the tunnel", devs: []dev{{name: "tiny", mtu: 600, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			onBoth(t, func(t *testing.T, n node) {
				buildNode(t, n.h, tc.devs, tc.loopback, tc.defaultVia)
				pod, underlay, err := nodedev.DerivePodMTU(n.h, tc.nodeIPs, tc.device, tc.mode)
				if tc.wantErr {
					if err == nil || errors.Is(err, nodedev.ErrNoUnderlay) {
						t.Fatalf("DerivePodMTU = %d, %v; want an error", pod, err)
					}
					return
				}
				if pod != tc.wantPod {
					t.Errorf("pod MTU %d, want %d", pod, tc.wantPod)
				}
				switch {
				case tc.wantDev == "":
					if !errors.Is(err, nodedev.ErrNoUnderlay) || underlay != nil {
						t.Errorf("underlay %v, err %v; want none and ErrNoUnderlay", underlay, err)
					}
				case err != nil || underlay == nil || underlay.Attrs().Name != tc.wantDev:
					t.Errorf("underlay %v, err %v; want %s", underlay, err, tc.wantDev)
				}
				if tc.wantDev != "" {
					if l, err := nodedev.UnderlayDevice(n.h, tc.nodeIPs, tc.device); err != nil || l.Attrs().Name != tc.wantDev {
						t.Errorf("UnderlayDevice = %v, %v; want %s", l, err, tc.wantDev)
					}
				}
			})
		})
	}
}

// tunnelState reads the overlay device back.
func tunnelState(t *testing.T, h nl.Handle, name string) (l netlink.Link, mtu int, noARP, up bool) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	a := l.Attrs()
	return l, a.MTU, a.RawFlags&unix.IFF_NOARP != 0, a.Flags&net.FlagUp != 0
}

func TestEnsureTunnel(t *testing.T) {
	for _, proto := range []string{nodedev.TunnelVXLAN, nodedev.TunnelGeneve} {
		t.Run(proto, func(t *testing.T) {
			onBoth(t, func(t *testing.T, n node) {
				name := nodedev.TunnelDevice(proto)
				idx, err := nodedev.EnsureTunnel(n.h, proto, 1450)
				if n.f == nil && proto == nodedev.TunnelGeneve && errors.Is(err, nodedev.ErrNoGeneve) {
					t.Skip("this kernel has no Geneve; the clear error is the expected answer")
				}
				if err != nil {
					t.Fatal(err)
				}
				l, mtu, noARP, up := tunnelState(t, n.h, name)
				if l.Attrs().Index != idx || mtu != 1450 || !noARP || !up {
					t.Errorf("%s: index %d (returned %d) MTU %d noarp %v up %v; want MTU 1450, noarp, up", name, l.Attrs().Index, idx, mtu, noARP, up)
				}
				switch d := l.(type) {
				case *netlink.Vxlan:
					if !d.FlowBased || d.Port != nodedev.VXLANPort {
						t.Errorf("vxlan: flow-based %v port %d, want flow-based on %d", d.FlowBased, d.Port, nodedev.VXLANPort)
					}
				case *netlink.Geneve:
					if !d.FlowBased || d.Dport != nodedev.GenevePort {
						t.Errorf("geneve: flow-based %v port %d, want flow-based on %d", d.FlowBased, d.Dport, nodedev.GenevePort)
					}
				default:
					t.Errorf("%s is a %T", name, l)
				}
				// A restart keeps the device; a new MTU (the underlay's
				// changed) updates it.
				again, err := nodedev.EnsureTunnel(n.h, proto, 8950)
				if err != nil || again != idx {
					t.Fatalf("second EnsureTunnel = %d, %v; want the same device %d", again, err, idx)
				}
				if _, mtu, _, _ := tunnelState(t, n.h, name); mtu != 8950 {
					t.Errorf("MTU after the change %d, want 8950", mtu)
				}
				if n.f != nil {
					if calls := n.f.Calls(nlfake.NodeNS, "LinkAdd"); calls != 1 {
						t.Errorf("LinkAdd calls %d, want 1", calls)
					}
				}
			})
		})
	}
}

// The probe fails at once with ErrNoGeneve where Geneve is missing (the
// agent exits with that message rather than retrying), an existing device
// answers without a probe, and no probe device is left behind either way.
func TestProbeGeneve(t *testing.T) {
	for _, tc := range []struct {
		name      string
		supported bool // the kernel runs only the cases that match it
		existing  bool
		want      error
	}{
		{name: "supported", supported: true},
		{name: "unsupported", want: nodedev.ErrNoGeneve},
		{name: "device already there", existing: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onBoth(t, func(t *testing.T, n node) {
				has := n.geneveSupported(t)
				if n.f == nil && (tc.existing && !has || !tc.existing && tc.supported != has) {
					t.Skipf("this kernel's Geneve support (%v) does not fit the case", has)
				}
				if tc.existing {
					if _, err := nodedev.EnsureTunnel(n.h, nodedev.TunnelGeneve, 1450); err != nil {
						t.Fatal(err)
					}
				}
				if n.f != nil {
					n.f.SetKindSupported(nlfake.KindGeneve, tc.supported)
				}
				if err := nodedev.ProbeGeneve(n.h); !errors.Is(err, tc.want) {
					t.Fatalf("ProbeGeneve = %v, want %v", err, tc.want)
				}
				if _, err := n.h.LinkByName("axon_gnvprobe"); err == nil {
					t.Error("the probe device was left behind")
				}
			})
		})
	}
}

func TestBigTCPSize(t *testing.T) {
	tests := []struct {
		name     string
		underlay string // nlfake.KindVeth (tso_max_size 524280), nlfake.KindVxlan (65536) or "" (none)
		nodeIPs  []netip.Addr
		mode     string
		protocol string
		want     int
		wantErr  string // part of the error; "" for success
	}{
		{"tunnel over a veth", nlfake.KindVeth, []netip.Addr{v4}, nodedev.ModeTunnel, nodedev.TunnelVXLAN, nodedev.BigTCPMaxSize, ""},
		{"native over a veth", nlfake.KindVeth, []netip.Addr{v4}, nodedev.ModeNative, "", nodedev.BigTCPMaxSize, ""},
		{"IPv6-only native", nlfake.KindVeth, []netip.Addr{v6}, nodedev.ModeNative, "", nodedev.BigTCPMaxSize, ""},
		{"Geneve", nlfake.KindVeth, []netip.Addr{v4}, nodedev.ModeTunnel, nodedev.TunnelGeneve, 0, "Geneve"},
		{"IPv6-only tunnel", nlfake.KindVeth, []netip.Addr{v6}, nodedev.ModeTunnel, nodedev.TunnelVXLAN, 0, "IPv4 node address"},
		{"underlay without big GSO", nlfake.KindVxlan, []netip.Addr{v4}, nodedev.ModeNative, "", 0, "tso_max_size"},
		{"no underlay device", "", []netip.Addr{v4}, nodedev.ModeNative, "", 0, "no device holds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			onBoth(t, func(t *testing.T, n node) {
				h := n.h
				if tc.underlay != "" {
					var l netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplinkp"}
					if tc.underlay == nlfake.KindVxlan {
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
						addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, a.BitLen())}, Flags: unix.IFA_F_NODAD}
						if err := h.AddrAdd(l, addr); err != nil {
							t.Fatal(err)
						}
					}
				}
				got, err := nodedev.BigTCPSize(h, tc.nodeIPs, "", tc.mode, tc.protocol)
				if tc.wantErr != "" {
					if !errors.Is(err, nodedev.ErrBigTCP) || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("BigTCPSize = %d, %v; want an ErrBigTCP error mentioning %q", got, err, tc.wantErr)
					}
					return
				}
				if err != nil || got != tc.want {
					t.Fatalf("BigTCPSize = %d, %v; want %d", got, err, tc.want)
				}
				// Raising the sizes reaches the underlay and the axon_host pair.
				if err := nodedev.Setup(h, func(string, string) error { return nil }, []netip.Addr{netip.MustParseAddr("10.0.1.1")}, 1500); err != nil {
					t.Fatal(err)
				}
				if err := nodedev.RaiseGSOMaxSize(h, tc.nodeIPs, "", got); err != nil {
					t.Fatal(err)
				}
				for _, name := range []string{"uplink", nodedev.HostDevice, nodedev.NetDevice} {
					l, err := h.LinkByName(name)
					if err != nil {
						t.Fatal(err)
					}
					if a := l.Attrs(); int(a.GSOMaxSize) != got || int(a.GROMaxSize) != got || int(a.GSOIPv4MaxSize) != got || int(a.GROIPv4MaxSize) != got {
						t.Errorf("%s: GSO %d GRO %d IPv4 GSO %d IPv4 GRO %d; want %d", name, a.GSOMaxSize, a.GROMaxSize, a.GSOIPv4MaxSize, a.GROIPv4MaxSize, got)
					}
				}
			})
		})
	}
}
