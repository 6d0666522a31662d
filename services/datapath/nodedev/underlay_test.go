package nodedev

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// The underlay is the device named by --underlay-device, else the device
// holding the node address; a node address on loopback or dummy is refused
// (naming the address, the device and the flag), never guessed.
func TestUnderlayDeviceChoice(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.10")
	tests := []struct {
		name      string
		on        string // device holding the node address: "uplink", "lo", "bgp0" (dummy) or ""
		device    string // --underlay-device
		wantDev   string // chosen device; "" for an error
		wantPod   int    // tunnel-mode pod MTU when a device is chosen
		wantErr   error
		wantWords []string // the error names these
	}{
		{"node address on a veth", "uplink", "", "uplink", 8950, nil, nil},
		{"node address on loopback", "lo", "", "", 0, ErrUnderlayRefused, []string{"192.0.2.10", "lo", "loopback", "--underlay-device"}},
		{"node address on dummy", "bgp0", "", "", 0, ErrUnderlayRefused, []string{"192.0.2.10", "bgp0", "dummy", "--underlay-device"}},
		{"explicit device, node address on loopback", "lo", "uplink", "uplink", 8950, nil, nil},
		{"explicit device, no device holds the address", "", "uplink", "uplink", 8950, nil, nil},
		{"explicit device missing", "uplink", "eth9", "", 0, ErrUnderlayRefused, []string{"--underlay-device", "eth9", "does not exist"}},
		{"explicit loopback", "uplink", "lo", "", 0, ErrUnderlayRefused, []string{"--underlay-device", "lo", "loopback"}},
		{"no device holds the node address", "", "", "", 0, ErrNoUnderlay, []string{"192.0.2.10"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := nlfake.New()
			h, err := f.Node()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.Close)
			for _, l := range []netlink.Link{
				&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink", MTU: 9000}, PeerName: "uplinkp"},
				&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "bgp0", MTU: 1500}},
			} {
				if err := h.LinkAdd(l); err != nil {
					t.Fatal(err)
				}
			}
			if tc.on != "" {
				l, err := h.LinkByName(tc.on)
				if err != nil {
					t.Fatal(err)
				}
				addr := &netlink.Addr{IPNet: &net.IPNet{IP: v4.AsSlice(), Mask: net.CIDRMask(32, 32)}}
				if err := h.AddrAdd(l, addr); err != nil {
					t.Fatal(err)
				}
			}

			dev, err := UnderlayDevice(h, []netip.Addr{v4}, tc.device)
			pod, mtuDev, mtuErr := DerivePodMTU(h, []netip.Addr{v4}, tc.device, ModeTunnel)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("UnderlayDevice = %v, %v; want %v", dev, err, tc.wantErr)
				}
				for _, w := range tc.wantWords {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				if tc.wantErr == ErrUnderlayRefused && (mtuErr == nil || !errors.Is(mtuErr, ErrUnderlayRefused)) {
					t.Errorf("DerivePodMTU = %d, %v; want the refusal, not an assumed MTU", pod, mtuErr)
				}
				return
			}
			if err != nil || dev.Attrs().Name != tc.wantDev {
				t.Fatalf("UnderlayDevice = %v, %v; want %s", dev, err, tc.wantDev)
			}
			if mtuErr != nil || pod != tc.wantPod || mtuDev.Attrs().Name != tc.wantDev {
				t.Errorf("DerivePodMTU = %d, %v, %v; want %d from %s", pod, mtuDev, mtuErr, tc.wantPod, tc.wantDev)
			}
		})
	}
}
