package bpffake_test

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

var (
	mac1 = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	mac2 = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	ep   = bpfmaps.Endpoint{Ifindex: 7, ID: 1, PodMAC: mac1, HostMAC: mac2}

	errInjected = errors.New("injected")
)

func TestPutEndpointValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		ip   string
		ep   bpfmaps.Endpoint
		want error
	}{
		{"IPv4", "10.0.0.7", ep, nil},
		{"IPv6", "fd00::7", ep, nil},
		{"zero address", "", ep, bpfdp.ErrInvalidAddress},
		{"multicast", "224.0.0.1", ep, bpfdp.ErrInvalidAddress},
		{"link-local IPv6", "fe80::1", ep, bpfdp.ErrInvalidAddress},
		{"no ifindex", "10.0.0.7", bpfmaps.Endpoint{PodMAC: mac1, HostMAC: mac2}, bpfdp.ErrInvalidIfindex},
		{"short MAC", "10.0.0.7", bpfmaps.Endpoint{Ifindex: 7, PodMAC: mac1[:4], HostMAC: mac2}, bpfdp.ErrInvalidMAC},
		{"no host MAC", "10.0.0.7", bpfmaps.Endpoint{Ifindex: 7, PodMAC: mac1}, bpfdp.ErrInvalidMAC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := bpffake.New()
			var ip netip.Addr
			if tc.ip != "" {
				ip = netip.MustParseAddr(tc.ip)
			}
			if err := f.PutEndpoint(ip, tc.ep); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("PutEndpoint: %v, want %v", err, tc.want)
			}
			if tc.want != nil && len(f.Endpoints()) != 0 {
				t.Errorf("a refused entry was stored: %v", f.Endpoints())
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	f := bpffake.New()
	mapped := netip.MustParseAddr("::ffff:10.0.0.7")
	if err := f.PutEndpoint(mapped, ep); err != nil {
		t.Fatal(err)
	}
	got, err := f.Endpoint(netip.MustParseAddr("10.0.0.7"))
	if err != nil || got.Ifindex != 7 || got.PodMAC.String() != mac1.String() {
		t.Fatalf("Endpoint: %+v %v", got, err)
	}
	got.PodMAC[0] = 0xff
	if again, _ := f.Endpoint(netip.MustParseAddr("10.0.0.7")); again.PodMAC.String() != mac1.String() {
		t.Error("changing a returned entry changed the map")
	}
	addrs, err := f.EndpointAddrs()
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("10.0.0.7") {
		t.Errorf("EndpointAddrs: %v %v", addrs, err)
	}
	for range 2 {
		if err := f.DeleteEndpoint(netip.MustParseAddr("10.0.0.7")); err != nil {
			t.Fatalf("DeleteEndpoint: %v", err)
		}
	}
	if _, err := f.Endpoint(netip.MustParseAddr("10.0.0.7")); !errors.Is(err, bpfdp.ErrNotFound) {
		t.Errorf("Endpoint after delete: %v, want ErrNotFound", err)
	}
}

func TestCapacity(t *testing.T) {
	f := bpffake.New()
	f.SetCapacity(2)
	for i := range 2 {
		if err := f.PutEndpoint(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), ep); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.PutEndpoint(netip.MustParseAddr("10.0.0.3"), ep); !errors.Is(err, unix.E2BIG) {
		t.Fatalf("third entry: %v, want E2BIG", err)
	}
	if err := f.PutEndpoint(netip.MustParseAddr("10.0.0.1"), ep); err != nil {
		t.Errorf("replacing in a full map: %v", err)
	}
	for i := range 3 {
		err := f.PutRemote(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), 0}), 24), netip.MustParseAddr("192.0.2.1"))
		if want := i == 2; errors.Is(err, unix.E2BIG) != want {
			t.Errorf("remote %d: %v, want E2BIG %v", i, err, want)
		}
	}
	for i := range 3 {
		if err := f.PutDevice(i+1, 1); errors.Is(err, unix.E2BIG) != (i == 2) {
			t.Errorf("device %d: %v", i+1, err)
		}
	}
}

func TestFailOn(t *testing.T) {
	f := bpffake.New()
	f.FailOn(bpffake.OpPutEndpoint, 2, errInjected)
	ips := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")}
	var errs []error
	for _, ip := range ips {
		errs = append(errs, f.PutEndpoint(ip, ep))
	}
	if errs[0] != nil || !errors.Is(errs[1], errInjected) || errs[2] != nil {
		t.Fatalf("errors %v, want only the second injected", errs)
	}
	if _, err := f.Endpoint(ips[1]); !errors.Is(err, bpfdp.ErrNotFound) {
		t.Errorf("the failed call stored its entry: %v", err)
	}
	if got := f.Calls(bpffake.OpPutEndpoint); got != 3 {
		t.Errorf("calls %d, want 3", got)
	}
	f.SetFail(func(op string) error {
		if op == bpffake.OpDeleteEndpoint {
			return errInjected
		}
		return nil
	})
	if err := f.DeleteEndpoint(ips[0]); !errors.Is(err, errInjected) {
		t.Errorf("DeleteEndpoint: %v, want injected", err)
	}
	f.SetFail(nil)
	if err := f.DeleteEndpoint(ips[0]); err != nil {
		t.Error(err)
	}
}

func TestRemotesAndDevices(t *testing.T) {
	f := bpffake.New()
	node := netip.MustParseAddr("192.0.2.1")
	if err := f.PutRemote(netip.MustParsePrefix("10.1.0.9/24"), node); err != nil {
		t.Fatal(err)
	}
	if err := f.PutRemote(netip.MustParsePrefix("10.2.0.0/24"), netip.MustParseAddr("fd00::1")); !errors.Is(err, bpfdp.ErrIPv6Unsupported) {
		t.Errorf("IPv6 underlay: %v, want ErrIPv6Unsupported", err)
	}
	if err := f.PutRemote(netip.MustParsePrefix("fe80::/64"), node); !errors.Is(err, bpfdp.ErrInvalidPrefix) {
		t.Errorf("link-local block: %v, want ErrInvalidPrefix", err)
	}
	got, err := f.RemoteBlocks()
	if err != nil || len(got) != 1 || got[netip.MustParsePrefix("10.1.0.0/24")] != node {
		t.Fatalf("RemoteBlocks: %v %v, want the block masked", got, err)
	}
	if err := f.DeleteRemote(netip.MustParsePrefix("10.1.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.RemoteBlocks(); len(got) != 0 {
		t.Errorf("after delete: %v", got)
	}
	if err := f.PutDevice(0, 1); !errors.Is(err, bpfdp.ErrInvalidIfindex) {
		t.Errorf("device 0: %v, want ErrInvalidIfindex", err)
	}
	if err := f.PutDevice(5, 9); err != nil {
		t.Fatal(err)
	}
	if d := f.Devices(); d[5] != 9 {
		t.Errorf("devices %v", d)
	}
	if err := f.DeleteDevice(5); err != nil || len(f.Devices()) != 0 {
		t.Errorf("DeleteDevice: %v, %v left", err, f.Devices())
	}
}

func TestConfigure(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    bpfmaps.Config
		want error
	}{
		{"native", bpfmaps.Config{Mode: bpfmaps.ModeNative, NodeIP: netip.MustParseAddr("192.0.2.1")}, nil},
		{"tunnel", bpfmaps.Config{Mode: bpfmaps.ModeTunnel, TunnelIfindex: 4}, nil},
		{"tunnel without device", bpfmaps.Config{Mode: bpfmaps.ModeTunnel}, bpfdp.ErrInvalidIfindex},
		{"no mode", bpfmaps.Config{}, bpfdp.ErrInvalidMode},
		{"IPv6 node", bpfmaps.Config{Mode: bpfmaps.ModeNative, NodeIP: netip.MustParseAddr("fd00::1")}, bpfdp.ErrIPv6Unsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := bpffake.New()
			err := f.Configure(tc.c)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Configure: %v, want %v", err, tc.want)
			}
			got, ok := f.Config()
			if ok != (tc.want == nil) || (ok && !reflect.DeepEqual(got, tc.c)) {
				t.Errorf("Config() = %+v %v", got, ok)
			}
		})
	}
}

func TestPrograms(t *testing.T) {
	f := bpffake.New()
	if p := f.EndpointProgramProblems("lxc1"); len(p) != 1 {
		t.Errorf("problems without a device: %v", p)
	}
	links := map[string]int{"lxc1": 7}
	f.SetInterfaces(func() map[string]int { return links })
	if p := f.EndpointProgramProblems("lxc1"); len(p) != 1 {
		t.Errorf("problems without a program: %v", p)
	}
	if err := f.AttachEndpoint(0); err == nil {
		t.Error("attaching to ifindex 0 worked")
	}
	if err := f.AttachEndpoint(8); !errors.Is(err, unix.ENODEV) {
		t.Errorf("attaching to a missing interface: %v, want ENODEV", err)
	}
	if err := f.AttachEndpoint(7); err != nil {
		t.Fatal(err)
	}
	if !f.IsEndpointDevice(7) || f.IsEndpointDevice(8) {
		t.Error("IsEndpointDevice disagrees with AttachEndpoint")
	}
	if p := f.EndpointProgramProblems("lxc1"); p != nil {
		t.Errorf("problems with the program attached: %v", p)
	}
	// The interface goes (the veth was deleted), and its program with it.
	delete(links, "lxc1")
	if f.IsEndpointDevice(7) {
		t.Error("a deleted interface carries the program")
	}
	if p := f.EndpointProgramProblems("lxc1"); len(p) != 1 {
		t.Errorf("problems of a deleted interface: %v", p)
	}
	f.DetachEndpoint(7)
	if len(f.EndpointPrograms()) != 0 {
		t.Error("program still attached after DetachEndpoint")
	}
	if err := f.AttachOverlay(3); err != nil {
		t.Fatal(err)
	}
	if err := f.AttachUnderlay(2); err != nil {
		t.Fatal(err)
	}
	if o, u := f.NodePrograms(); o != 3 || u != 2 {
		t.Errorf("node programs %d %d, want 3 2", o, u)
	}
}

func TestConcurrent(t *testing.T) {
	f := bpffake.New()
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)})
			e := ep
			e.Ifindex = i + 10
			if err := f.PutEndpoint(ip, e); err != nil {
				t.Error(err)
			}
			if err := f.AttachEndpoint(e.Ifindex); err != nil {
				t.Error(err)
			}
			if _, err := f.EndpointAddrs(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := len(f.Endpoints()); n != 32 {
		t.Errorf("%d endpoints, want 32", n)
	}
	if n := len(f.EndpointPrograms()); n != 32 {
		t.Errorf("%d programs, want 32", n)
	}
}
