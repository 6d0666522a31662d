package nodedev_test

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// These tests run the node-device logic on nlfake, without root;
// handles_test.go runs it on both nlfake and, as root, the kernel.

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
	buildNode(t, h, devs, loopback, defaultVia)
	return f, h
}

// buildNode gives the node of h devs, node addresses on lo, and an IPv4
// default route via defaultVia's gateway 198.51.100.1.
func buildNode(t *testing.T, h nl.Handle, devs []dev, loopback []netip.Addr, defaultVia string) {
	t.Helper()
	for _, d := range devs {
		var l netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: d.mtu}, PeerName: d.name + "p"}
		if d.kind == nlfake.KindDummy {
			l = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: d.mtu}}
		}
		if err := h.LinkAdd(l); err != nil {
			if d.kind == nlfake.KindDummy && errors.Is(err, unix.EOPNOTSUPP) {
				t.Skip("this kernel has no dummy devices")
			}
			t.Fatal(err)
		}
		l, err := h.LinkByName(d.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range d.addrs {
			bits := 24
			if a.Is6() {
				bits = 64
			}
			// No duplicate address detection: the kernel would list an
			// IPv6 address as tentative meanwhile.
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}, Flags: unix.IFA_F_NODAD}
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
			if _, mtu, noARP, up := tunnelState(t, h, name); mtu != 1450 || !noARP || !up {
				t.Errorf("after the retry: MTU %d noarp %v up %v", mtu, noARP, up)
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
