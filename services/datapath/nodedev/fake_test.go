package nodedev_test

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// These tests run the node-device logic on nlfake, without root; the
// package's other tests run it against the kernel.

var (
	v4  = netip.MustParseAddr("192.0.2.10")
	v4b = netip.MustParseAddr("198.51.100.10")
	v6  = netip.MustParseAddr("2001:db8::10")
)

// dev is a device of the node: a veth (or a dummy) with an MTU and
// addresses (/24 or /64), up.
type dev struct {
	name  string
	kind  string // nlfake.KindVeth (default) or nlfake.KindDummy
	mtu   int
	addrs []netip.Addr
}

// fakeNode builds a node on nlfake: devs, node addresses on lo, and an
// IPv4 default route via defaultVia's gateway 198.51.100.1.
func fakeNode(t *testing.T, devs []dev, loopback []netip.Addr, defaultVia string) (*nlfake.Fake, nl.Handle) {
	t.Helper()
	f := nlfake.New()
	h, err := f.Node()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	for _, d := range devs {
		var l netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: d.mtu}, PeerName: d.name + "p"}
		if d.kind == nlfake.KindDummy {
			l = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: d.mtu}}
		}
		if err := h.LinkAdd(l); err != nil {
			t.Fatal(err)
		}
		if l, err = h.LinkByName(d.name); err != nil {
			t.Fatal(err)
		}
		for _, a := range d.addrs {
			bits := 24
			if a.Is6() {
				bits = 64
			}
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}}); err != nil {
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
	for _, a := range loopback {
		if err := h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}); err != nil {
			t.Fatal(err)
		}
	}
	if defaultVia != "" {
		l, err := h.LinkByName(defaultVia)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(198, 51, 100, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	return f, h
}

func TestDerivePodMTUOnFake(t *testing.T) {
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
		{name: "IPv4 address decides", devs: []dev{{name: "v6dev", mtu: 9000, addrs: []netip.Addr{v6}}, {name: "v4dev", mtu: 1400, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v6, v4}, mode: nodedev.ModeTunnel, wantDev: "v4dev", wantPod: 1350},
		{name: "first IPv4 a device holds", devs: []dev{{name: "v4dev", mtu: 1400, addrs: []netip.Addr{v4b}}}, nodeIPs: []netip.Addr{v4, v4b}, mode: nodedev.ModeNative, wantDev: "v4dev", wantPod: 1400},
		{name: "IPv6-only node", devs: []dev{{name: "v6dev", mtu: 9000, addrs: []netip.Addr{v6}}}, nodeIPs: []netip.Addr{v6}, mode: nodedev.ModeNative, wantDev: "v6dev", wantPod: 9000},
		{name: "node address on loopback, underlay named", devs: []dev{{name: "uplink", mtu: 9000, addrs: []netip.Addr{v4b}}}, loopback: []netip.Addr{v4}, defaultVia: "uplink", nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, device: "uplink", wantDev: "uplink", wantPod: 8950},
		{name: "node address on a dummy, underlay named", devs: []dev{{name: "uplink", mtu: 9000, addrs: []netip.Addr{v4b}}, {name: "bgp0", kind: nlfake.KindDummy, mtu: 1500, addrs: []netip.Addr{v4}}}, defaultVia: "uplink", nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeNative, device: "uplink", wantDev: "uplink", wantPod: 9000},
		// Not guessed from the default route: refused (underlay_test.go has the messages).
		{name: "node address on loopback, underlay not named", devs: []dev{{name: "uplink", mtu: 9000, addrs: []netip.Addr{v4b}}}, loopback: []netip.Addr{v4}, defaultVia: "uplink", nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantErr: true},
		{name: "no device holds the node address", devs: []dev{{name: "eth0", mtu: 9000, addrs: []netip.Addr{v4b}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantPod: 1450},
		{name: "no node address", nodeIPs: nil, mode: nodedev.ModeNative, wantPod: 1500},
		{name: "underlay too small for the tunnel", devs: []dev{{name: "tiny", mtu: 600, addrs: []netip.Addr{v4}}}, nodeIPs: []netip.Addr{v4}, mode: nodedev.ModeTunnel, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, h := fakeNode(t, tc.devs, tc.loopback, tc.defaultVia)
			pod, underlay, err := nodedev.DerivePodMTU(h, tc.nodeIPs, tc.device, tc.mode)
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
				if l, err := nodedev.UnderlayDevice(h, tc.nodeIPs, tc.device); err != nil || l.Attrs().Name != tc.wantDev {
					t.Errorf("UnderlayDevice = %v, %v; want %s", l, err, tc.wantDev)
				}
			}
		})
	}
}

// tunnelState reads the overlay device back.
func tunnelState(t *testing.T, f *nlfake.Fake, name string) (idx, mtu int, noARP, up bool) {
	t.Helper()
	l, ok := f.Link(nlfake.NodeNS, name)
	if !ok {
		t.Fatalf("%s missing", name)
	}
	a := l.Attrs()
	return a.Index, a.MTU, a.RawFlags&unix.IFF_NOARP != 0, a.Flags&net.FlagUp != 0
}

func TestEnsureTunnelOnFake(t *testing.T) {
	for _, proto := range []string{nodedev.TunnelVXLAN, nodedev.TunnelGeneve} {
		t.Run(proto, func(t *testing.T) {
			f, h := fakeNode(t, nil, nil, "")
			name := nodedev.TunnelDevice(proto)
			idx, err := nodedev.EnsureTunnel(h, proto, 1450)
			if err != nil {
				t.Fatal(err)
			}
			got, mtu, noARP, up := tunnelState(t, f, name)
			if got != idx || mtu != 1450 || !noARP || !up {
				t.Errorf("%s: index %d (returned %d) MTU %d noarp %v up %v; want MTU 1450, noarp, up", name, got, idx, mtu, noARP, up)
			}
			l, _ := f.Link(nlfake.NodeNS, name)
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
			// A restart keeps the device; a new MTU updates it.
			again, err := nodedev.EnsureTunnel(h, proto, 8950)
			if err != nil || again != idx {
				t.Fatalf("second EnsureTunnel = %d, %v; want the same device %d", again, err, idx)
			}
			if _, mtu, _, _ := tunnelState(t, f, name); mtu != 8950 {
				t.Errorf("MTU after the change %d, want 8950", mtu)
			}
			if n := f.Calls(nlfake.NodeNS, "LinkAdd"); n != 1 {
				t.Errorf("LinkAdd calls %d, want 1", n)
			}
		})
	}
}

func TestEnsureTunnelFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proto   string
		inject  func(f *nlfake.Fake)
		wantErr error // nil: any error
		wantDev bool  // whether the device is left (for the next start to finish)
	}{
		{name: "no Geneve", proto: nodedev.TunnelGeneve, inject: func(f *nlfake.Fake) { f.SetKindSupported(nlfake.KindGeneve, false) }, wantErr: nodedev.ErrNoGeneve},
		{name: "create fails", proto: nodedev.TunnelVXLAN, inject: func(f *nlfake.Fake) { f.FailOn(nlfake.NodeNS, "LinkAdd", 1, unix.ENOMEM) }, wantErr: unix.ENOMEM},
		{name: "noarp fails", proto: nodedev.TunnelVXLAN, inject: func(f *nlfake.Fake) { f.FailOn(nlfake.NodeNS, "LinkSetARPOff", 1, unix.EPERM) }, wantErr: unix.EPERM, wantDev: true},
		{name: "up fails", proto: nodedev.TunnelVXLAN, inject: func(f *nlfake.Fake) { f.FailOn(nlfake.NodeNS, "LinkSetUp", 1, unix.EPERM) }, wantErr: unix.EPERM, wantDev: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, h := fakeNode(t, nil, nil, "")
			tc.inject(f)
			name := nodedev.TunnelDevice(tc.proto)
			if _, err := nodedev.EnsureTunnel(h, tc.proto, 1450); !errors.Is(err, tc.wantErr) {
				t.Fatalf("EnsureTunnel: %v, want %v", err, tc.wantErr)
			}
			if _, ok := f.Link(nlfake.NodeNS, name); ok != tc.wantDev {
				t.Fatalf("%s present %v, want %v", name, ok, tc.wantDev)
			}
			if tc.wantErr == nodedev.ErrNoGeneve {
				return
			}
			// The next start finishes the job.
			if _, err := nodedev.EnsureTunnel(h, tc.proto, 1450); err != nil {
				t.Fatal(err)
			}
			if _, mtu, noARP, up := tunnelState(t, f, name); mtu != 1450 || !noARP || !up {
				t.Errorf("after the retry: MTU %d noarp %v up %v", mtu, noARP, up)
			}
		})
	}
}

func TestProbeGeneveOnFake(t *testing.T) {
	for _, tc := range []struct {
		name      string
		supported bool
		existing  bool
		want      error
	}{
		{name: "supported", supported: true},
		{name: "unsupported", want: nodedev.ErrNoGeneve},
		{name: "device already there", existing: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, h := fakeNode(t, nil, nil, "")
			if tc.existing {
				if _, err := nodedev.EnsureTunnel(h, nodedev.TunnelGeneve, 1450); err != nil {
					t.Fatal(err)
				}
			}
			// An existing device answers without a probe.
			f.SetKindSupported(nlfake.KindGeneve, tc.supported)
			if err := nodedev.ProbeGeneve(h); !errors.Is(err, tc.want) {
				t.Fatalf("ProbeGeneve = %v, want %v", err, tc.want)
			}
			if _, ok := f.Link(nlfake.NodeNS, "axon_gnvprobe"); ok {
				t.Error("the probe device was left behind")
			}
		})
	}
}

func TestBigTCPSizeOnFake(t *testing.T) {
	tests := []struct {
		name     string
		underlay string // nlfake.KindVeth, nlfake.KindVxlan or "" (none)
		nodeIPs  []netip.Addr
		mode     string
		protocol string
		want     int
		wantErr  string // part of the error; "" for success
	}{
		{"tunnel over a veth", nlfake.KindVeth, []netip.Addr{v4}, nodedev.ModeTunnel, nodedev.TunnelVXLAN, 196608, ""},
		{"native over a veth", nlfake.KindVeth, []netip.Addr{v4}, nodedev.ModeNative, "", 196608, ""},
		{"IPv6-only native", nlfake.KindVeth, []netip.Addr{v6}, nodedev.ModeNative, "", 196608, ""},
		{"Geneve", nlfake.KindVeth, []netip.Addr{v4}, nodedev.ModeTunnel, nodedev.TunnelGeneve, 0, "Geneve"},
		{"IPv6-only tunnel", nlfake.KindVeth, []netip.Addr{v6}, nodedev.ModeTunnel, nodedev.TunnelVXLAN, 0, "IPv4 node address"},
		{"underlay without big GSO", nlfake.KindVxlan, []netip.Addr{v4}, nodedev.ModeNative, "", 0, "tso_max_size"},
		{"no underlay device", "", []netip.Addr{v4}, nodedev.ModeNative, "", 0, "no device holds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, h := fakeNode(t, nil, nil, "")
			if tc.underlay != "" {
				var l netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplinkp"}
				if tc.underlay == nlfake.KindVxlan {
					l = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, VxlanId: 7, Port: 4789}
				}
				if err := h.LinkAdd(l); err != nil {
					t.Fatal(err)
				}
				for _, a := range tc.nodeIPs {
					if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, a.BitLen())}}); err != nil {
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
	}
}

func TestSetupOnFake(t *testing.T) {
	r4, r6 := netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("fd00:1::1")
	for _, tc := range []struct {
		name        string
		routers     []netip.Addr
		wantSysctls []string
	}{
		{"IPv4", []netip.Addr{r4}, []string{"/proc/sys/net/ipv4/ip_forward"}},
		{"dual stack", []netip.Addr{r4, r6}, []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, h := fakeNode(t, nil, nil, "")
			var set []string
			sysctl := func(path, v string) error {
				if v != "1" {
					t.Errorf("sysctl %s = %q, want 1", path, v)
				}
				set = append(set, path)
				return nil
			}
			for _, mtu := range []int{1450, 8950} { // a restart with a new MTU
				if err := nodedev.Setup(h, sysctl, tc.routers, mtu); err != nil {
					t.Fatal(err)
				}
				for _, name := range []string{nodedev.HostDevice, nodedev.NetDevice} {
					l, ok := f.Link(nlfake.NodeNS, name)
					if !ok || l.Attrs().MTU != mtu || l.Attrs().Flags&net.FlagUp == 0 {
						t.Errorf("%s = %v; want MTU %d, up", name, l, mtu)
					}
				}
			}
			var got []netip.Addr
			for _, a := range f.Addrs(nlfake.NodeNS, nodedev.HostDevice) {
				ip, _ := netip.AddrFromSlice(a.IP)
				got = append(got, ip.Unmap())
				if ones, bits := a.Mask.Size(); ones != bits {
					t.Errorf("router IP %s/%d, want a host prefix", ip, ones)
				}
				if ip.Is6() && a.Flags&unix.IFA_F_NODAD == 0 {
					t.Errorf("IPv6 router IP %s without NODAD", ip)
				}
			}
			slices.SortFunc(got, netip.Addr.Compare)
			if !slices.Equal(got, tc.routers) {
				t.Errorf("router IPs on %s = %v, want %v", nodedev.HostDevice, got, tc.routers)
			}
			slices.Sort(set)
			if want := append(slices.Clone(tc.wantSysctls), tc.wantSysctls...); !slices.Equal(set, sortedCopy(want)) {
				t.Errorf("sysctls written %v, want %v on each start", set, tc.wantSysctls)
			}
			if n := f.Calls(nlfake.NodeNS, "LinkAdd"); n != 1 {
				t.Errorf("LinkAdd calls %d, want 1", n)
			}
		})
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestSetupFailures(t *testing.T) {
	r4 := netip.MustParseAddr("10.0.1.1")
	for _, op := range []string{"LinkAdd", "AddrReplace", "LinkSetUp", "sysctl"} {
		t.Run(op, func(t *testing.T) {
			f, h := fakeNode(t, nil, nil, "")
			sysctlErr := errors.New("read-only /proc")
			sysctl := func(string, string) error { return nil }
			if op == "sysctl" {
				sysctl = func(string, string) error { return sysctlErr }
			} else {
				f.FailOn(nlfake.NodeNS, op, 1, unix.ENOMEM)
			}
			err := nodedev.Setup(h, sysctl, []netip.Addr{r4}, 1450)
			if err == nil || (op == "sysctl" && !errors.Is(err, sysctlErr)) || (op != "sysctl" && !errors.Is(err, unix.ENOMEM)) {
				t.Fatalf("Setup: %v, want the injected error", err)
			}
			if err := nodedev.Setup(h, func(string, string) error { return nil }, []netip.Addr{r4}, 1450); err != nil {
				t.Fatalf("Setup after the failure: %v", err)
			}
			if l, ok := f.Link(nlfake.NodeNS, nodedev.HostDevice); !ok || l.Attrs().Flags&net.FlagUp == 0 || len(f.Addrs(nlfake.NodeNS, nodedev.HostDevice)) != 1 {
				t.Errorf("after the retry: %s = %v with %v", nodedev.HostDevice, l, f.Addrs(nlfake.NodeNS, nodedev.HostDevice))
			}
		})
	}
}
