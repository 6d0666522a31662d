package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/bpf/testpoll"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// The agent wires link events to the endpoint lifecycle: a pod veth
// deleted while it runs takes its endpoint, map entries and allocation
// with it, long before the periodic pass.
func TestRunVanishedEndpoints(t *testing.T) {
	nf := nlfake.New()
	h, err := nf.Node()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0p"}); err != nil {
		t.Fatal(err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := netip.MustParseAddr("192.0.2.10")
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	bpf := bpffake.New()
	bpf.SetInterfaces(func() map[string]int { return nf.Indexes(nlfake.NodeNS) })
	ipam := fakeipam.New(fakeipam.Config{Node: "n1", Blocks: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/26")}})
	a, err := New(Config{NodeName: "n1", NodeIPs: []netip.Addr{nodeIP}, RoutingMode: nodedev.ModeTunnel, StateDir: t.TempDir()},
		Deps{Namespaces: nf, Datapath: bpf, IPAM: ipam, Sysctl: func(string, string) error { return nil }},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pod")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	nf.AddNamespace(path)
	att := &datapathv1alpha1.Attachment{ContainerId: "c1", InterfaceName: "eth0"}
	ep, err := a.Endpoints().CreateEndpoint(t.Context(), &datapathv1alpha1.CreateEndpointRequest{Attachment: att, NetnsPath: path})
	if err != nil {
		t.Fatal(err)
	}
	ip := endpoint.Addrs(ep)[0].Addr()

	lookups := nf.Calls(nlfake.NodeNS, "LinkByName")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); a.RunVanishedEndpoints(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })
	// Subscribed, and the first pass (a lookup of the one record) done:
	// what follows only the link event can remove.
	testpoll.Until(t, 5*time.Second, func() error {
		if nf.Calls(nlfake.NodeNS, "LinkDeletions") == 0 || nf.Calls(nlfake.NodeNS, "LinkByName") <= lookups {
			return errors.New("the agent never subscribed to link deletions and looked the record up")
		}
		return nil
	})
	nf.DeleteNamespace(path) // the runtime tore the sandbox down; no DEL came

	testpoll.Until(t, 5*time.Second, func() error {
		if _, err := a.Endpoints().GetEndpoint(att); err == nil {
			return errors.New("the endpoint was not removed")
		}
		return nil
	})
	if _, ok := bpf.Endpoints()[ip]; ok {
		t.Errorf("map entry for %s kept", ip)
	}
	// The removal left the release to the release worker: one pass.
	a.Endpoints().RetryReleases(t.Context())
	if h, ok := ipam.Holders()[ip]; ok {
		t.Errorf("%s still allocated to %s", ip, h)
	}
}
