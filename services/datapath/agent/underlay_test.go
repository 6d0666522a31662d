package agent

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// The agent refuses at New an underlay it would have to guess, saying why
// and which flag to set, and attaches axon_from_underlay to the device
// --underlay-device names.
func TestUnderlayChoiceAtStart(t *testing.T) {
	nodeIP := netip.MustParseAddr("192.0.2.10")
	tests := []struct {
		name      string
		on        string // device holding the node address; "" for none
		device    string // Config.UnderlayDevice
		mode      string
		wantWords []string // New's error names these; nil for success
		wantOn    string   // device axon_from_underlay is attached to
	}{
		{"address on loopback", "lo", "", nodedev.ModeTunnel, []string{"192.0.2.10", "lo", "--underlay-device"}, ""},
		{"address on dummy, native", "bgp0", "", nodedev.ModeNative, []string{"192.0.2.10", "bgp0", "--underlay-device"}, ""},
		{"no device holds the address, tunnel", "", "", nodedev.ModeTunnel, []string{"--node-ip", "--underlay-device"}, ""},
		{"missing explicit device", "eth0", "eth9", nodedev.ModeTunnel, []string{"eth9", "does not exist"}, ""},
		{"explicit loopback", "eth0", "lo", nodedev.ModeTunnel, []string{"--underlay-device", "loopback"}, ""},
		{"address on loopback, explicit device", "lo", "eth0", nodedev.ModeTunnel, nil, "eth0"},
		{"address on eth0", "eth0", "", nodedev.ModeTunnel, nil, "eth0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nf := nlfake.New()
			h, err := nf.Node()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.Close)
			for _, l := range []netlink.Link{
				&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0p"},
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
				if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
					t.Fatal(err)
				}
			}
			bpf := bpffake.New()
			bpf.SetInterfaces(func() map[string]int { return nf.Indexes(nlfake.NodeNS) })
			ipam := fakeipam.New(fakeipam.Config{Node: "n1", Blocks: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/26")}})
			cfg := Config{
				NodeName: "n1", NodeIPs: []netip.Addr{nodeIP}, RoutingMode: tc.mode, UnderlayDevice: tc.device,
				StateDir: t.TempDir(),
			}
			a, err := New(cfg, Deps{
				Namespaces: nf, Datapath: bpf, IPAM: ipam, Sysctl: func(string, string) error { return nil },
			}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if tc.wantWords != nil {
				if err == nil {
					a.Close()
					t.Fatal("New accepted the underlay; want a refusal")
				}
				for _, w := range tc.wantWords {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("New: %q does not name %q", err, w)
					}
				}
				if n := nf.OpenHandles(); n != 1 { // the test's own
					t.Errorf("%d handles open after the refusal, want only the test's", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			t.Cleanup(a.Close)
			if err := a.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			_, underlay := bpf.NodePrograms()
			if want := nf.Indexes(nlfake.NodeNS)[tc.wantOn]; underlay != want || want == 0 {
				t.Errorf("axon_from_underlay on ifindex %d, want %s (%d)", underlay, tc.wantOn, want)
			}
			if a.cfg.MTU != 1450 {
				t.Errorf("pod MTU %d, want 1450 from %s", a.cfg.MTU, tc.wantOn)
			}
		})
	}
}
