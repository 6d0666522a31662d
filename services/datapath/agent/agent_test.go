package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/bpf/testpoll"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/veth"
)

const (
	node     = "node-a"
	underlay = "eth0"
)

var (
	nodeIP  = netip.MustParseAddr("192.0.2.10")
	block4  = netip.MustParsePrefix("10.0.1.0/24")
	block6  = netip.MustParsePrefix("fd00:1::/64")
	router4 = netip.MustParseAddr("10.0.1.1")
	router6 = netip.MustParseAddr("fd00:1::1")
)

// rules is a fake masquerade.Rules.
type rules struct {
	mu      sync.Mutex
	applied [][]netip.Prefix
	overlay string
}

func (r *rules) Apply(cidrs []netip.Prefix, overlay string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = append(r.applied, slices.Clone(cidrs))
	r.overlay = overlay
	return nil
}

func (r *rules) Installed(cidrs []netip.Prefix) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied) > 0 && slices.Equal(r.applied[len(r.applied)-1], cidrs)
}

// sysctls is a fake nodedev.Sysctl that records what was written.
type sysctls struct {
	mu  sync.Mutex
	set map[string]string
}

func (s *sysctls) write(path, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set[path] = value
	return nil
}

func (s *sysctls) get(path string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set[path]
}

// world is one node on fakes.
type world struct {
	nl       *nlfake.Fake
	bpf      *bpffake.Fake
	ipam     *fakeipam.IPAM
	rules    *rules
	sysctls  *sysctls
	cfg      agent.Config
	underlay int // the underlay device's ifindex
}

// newWorld returns a node with an underlay device eth0 (MTU 1500) holding
// the node address, and IPAM serving node's blocks.
func newWorld(t *testing.T, mode string, blocks ...netip.Prefix) *world {
	t.Helper()
	w := &world{
		nl: nlfake.New(), bpf: bpffake.New(), rules: &rules{}, sysctls: &sysctls{set: map[string]string{}},
		ipam: fakeipam.New(fakeipam.Config{Node: node, Blocks: blocks, PoolCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}}),
	}
	w.bpf.SetInterfaces(func() map[string]int { return w.nl.Indexes(nlfake.NodeNS) })
	h, err := w.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: underlay, MTU: 1500}, PeerName: "eth0peer"}); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName(underlay)
	if err != nil {
		t.Fatal(err)
	}
	w.underlay = l.Attrs().Index
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	w.cfg = agent.Config{
		NodeName: node, NodeIPs: []netip.Addr{nodeIP}, RoutingMode: mode, StateDir: t.TempDir(),
		Masquerade: true, DeleteQueue: t.TempDir(),
	}
	return w
}

// agent builds an agent on the world's fakes, closed at the test's end.
func (w *world) agent(t *testing.T) *agent.Agent {
	t.Helper()
	a, err := agent.New(w.cfg, agent.Deps{
		Namespaces: w.nl, Datapath: w.bpf, LB: w.bpf, IPAM: w.ipam, Masquerade: w.rules, Sysctl: w.sysctls.write,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

func (w *world) hasAddr(dev string, ip netip.Addr) bool {
	for _, a := range w.nl.Addrs(nlfake.NodeNS, dev) {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true
		}
	}
	return false
}

func TestStartSetsUpTheNode(t *testing.T) {
	for _, tc := range []struct {
		mode       string
		wantTunnel bool
		wantMode   bpfmaps.Mode
		wantMTU    int
	}{
		{mode: nodedev.ModeTunnel, wantTunnel: true, wantMode: bpfmaps.ModeTunnel, wantMTU: 1450},
		{mode: nodedev.ModeNative, wantMode: bpfmaps.ModeNative, wantMTU: 1500},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			w := newWorld(t, tc.mode, block4, block6)
			a := w.agent(t)
			if a.Ready() == nil {
				t.Fatal("Ready() = nil before Start")
			}
			if err := a.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if err := a.Ready(); err != nil {
				t.Fatalf("Ready() after Start = %v", err)
			}
			n, ok := w.ipam.RegisteredNode(node)
			if !ok || !slices.Equal(n.GetAddresses(), []string{nodeIP.String()}) {
				t.Errorf("registered node = %v, %v; want addresses [%s]", n, ok, nodeIP)
			}
			if got := w.ipam.Calls("ClaimBlock"); got != 1 {
				t.Errorf("ClaimBlock calls = %d, want 1", got)
			}
			for _, dev := range []string{nodedev.HostDevice, nodedev.NetDevice} {
				l, ok := w.nl.Link(nlfake.NodeNS, dev)
				if !ok {
					t.Fatalf("%s missing", dev)
				}
				if l.Attrs().MTU != tc.wantMTU || l.Attrs().Flags&net.FlagUp == 0 {
					t.Errorf("%s: MTU %d up %v, want MTU %d and up", dev, l.Attrs().MTU, l.Attrs().Flags&net.FlagUp != 0, tc.wantMTU)
				}
			}
			for _, r := range []netip.Addr{router4, router6} {
				if !w.hasAddr(nodedev.HostDevice, r) {
					t.Errorf("router IP %s not on %s", r, nodedev.HostDevice)
				}
			}
			tunnel, hasTunnel := w.nl.Link(nlfake.NodeNS, nodedev.VXLANDevice)
			if hasTunnel != tc.wantTunnel {
				t.Fatalf("%s present = %v, want %v", nodedev.VXLANDevice, hasTunnel, tc.wantTunnel)
			}
			c, ok := w.bpf.Config()
			if !ok {
				t.Fatal("datapath not configured")
			}
			wantCfg := bpfmaps.Config{Mode: tc.wantMode, NodeIP: nodeIP}
			if hasTunnel {
				wantCfg.TunnelIfindex = tunnel.Attrs().Index
				if tunnel.Attrs().MTU != tc.wantMTU || tunnel.Attrs().Flags&net.FlagUp == 0 || tunnel.Attrs().RawFlags&unix.IFF_NOARP == 0 {
					t.Errorf("tunnel: MTU %d flags %v raw %#x; want MTU %d, up, NOARP", tunnel.Attrs().MTU, tunnel.Attrs().Flags, tunnel.Attrs().RawFlags, tc.wantMTU)
				}
			}
			if !slices.Contains(c.NodeAddrs, nodeIP) {
				t.Errorf("datapath node addresses %v, want %v among them", c.NodeAddrs, nodeIP)
			}
			c.NodeAddrs = nil
			if !reflect.DeepEqual(c, wantCfg) {
				t.Errorf("datapath config = %+v, want %+v", c, wantCfg)
			}
			overlay, under := w.bpf.NodePrograms()
			if under != w.underlay || overlay != wantCfg.TunnelIfindex {
				t.Errorf("programs on overlay %d underlay %d, want %d and %d", overlay, under, wantCfg.TunnelIfindex, w.underlay)
			}
			for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
				if got := w.sysctls.get(p); got != "1" {
					t.Errorf("sysctl %s = %q, want 1", p, got)
				}
			}
			if len(w.rules.applied) != 1 || !slices.Equal(w.rules.applied[0], []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}) || w.rules.overlay != nodedev.VXLANDevice {
				t.Errorf("masquerade applied %v via %q, want once [10.0.0.0/16] via %s", w.rules.applied, w.rules.overlay, nodedev.VXLANDevice)
			}
			st := a.NodeStatus()
			if st.GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_READY {
				t.Errorf("NodeStatus readiness %v (%v), want READY", st.GetReadiness(), st.GetReasons())
			}
		})
	}
}

// TestStartKeepsThePodCIDRs is issue item 9: a node whose pod CIDR is one
// of its (host-scope) blocks must stay registered with it, or IPAM refuses
// the registration and the datapath cannot restart.
func TestStartKeepsThePodCIDRs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		preset    *ipamv1alpha1.Node // registered by the operator before the agent starts
		failNext  map[string]error
		wantCIDRs []string
		wantAddrs []string
		wantWrite bool // whether the agent writes the node
	}{{
		name:      "absent: registered",
		wantAddrs: []string{nodeIP.String()}, wantWrite: true,
	}, {
		name:      "pod CIDR that is a block: kept",
		preset:    &ipamv1alpha1.Node{Name: node, PodCidrs: []string{block4.String()}},
		wantCIDRs: []string{block4.String()}, wantAddrs: []string{nodeIP.String()}, wantWrite: true,
	}, {
		name:      "addresses changed: replaced, pod CIDR kept",
		preset:    &ipamv1alpha1.Node{Name: node, Addresses: []string{"192.0.2.99"}, PodCidrs: []string{block4.String()}},
		wantCIDRs: []string{block4.String()}, wantAddrs: []string{nodeIP.String()}, wantWrite: true,
	}, {
		name:      "unchanged: not written",
		preset:    &ipamv1alpha1.Node{Name: node, Addresses: []string{nodeIP.String()}, PodCidrs: []string{block4.String()}},
		wantCIDRs: []string{block4.String()}, wantAddrs: []string{nodeIP.String()},
	}, {
		name:      "revision conflict: re-read and retried",
		preset:    &ipamv1alpha1.Node{Name: node, PodCidrs: []string{block4.String()}},
		failNext:  map[string]error{"UpdateNode": status.Error(codes.Aborted, "node changed")},
		wantCIDRs: []string{block4.String()}, wantAddrs: []string{nodeIP.String()}, wantWrite: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nodedev.ModeNative, block4)
			var rev string
			if tc.preset != nil {
				resp, err := w.ipam.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{Node: tc.preset, AllowMissing: true})
				if err != nil {
					t.Fatal(err)
				}
				rev = resp.GetNode().GetRevision()
			}
			for m, err := range tc.failNext {
				w.ipam.FailNext(m, 1, err)
			}
			a := w.agent(t)
			if err := a.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			n, ok := w.ipam.RegisteredNode(node)
			if !ok {
				t.Fatal("node not registered")
			}
			if !slices.Equal(n.GetPodCidrs(), tc.wantCIDRs) || !slices.Equal(n.GetAddresses(), tc.wantAddrs) {
				t.Errorf("node = addresses %v pod CIDRs %v, want %v and %v", n.GetAddresses(), n.GetPodCidrs(), tc.wantAddrs, tc.wantCIDRs)
			}
			if written := n.GetRevision() != rev; written != tc.wantWrite {
				t.Errorf("node written = %v (revision %q → %q), want %v", written, rev, n.GetRevision(), tc.wantWrite)
			}
			// A restart finds the node as it left it and writes nothing.
			before := n.GetRevision()
			if err := w.agent(t).Start(t.Context()); err != nil {
				t.Fatalf("second Start: %v", err)
			}
			if n, _ := w.ipam.RegisteredNode(node); n.GetRevision() != before {
				t.Errorf("restart rewrote the node: revision %s → %s", before, n.GetRevision())
			}
		})
	}
}

func TestStartFailureLeavesNotReady(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "ipam down")
	for _, tc := range []struct {
		name   string
		blocks []netip.Prefix
		inject func(w *world)
		retry  bool // whether a second Start succeeds once the cause is gone
	}{
		{name: "IPAM unavailable at the node read", blocks: []netip.Prefix{block4}, retry: true, inject: func(w *world) {
			w.ipam.FailNext("GetNode", 1, unavailable)
		}},
		{name: "IPAM unavailable at registration", blocks: []netip.Prefix{block4}, retry: true, inject: func(w *world) {
			w.ipam.FailNext("UpdateNode", 1, unavailable)
		}},
		{name: "IPAM unavailable at the claim", blocks: []netip.Prefix{block4}, retry: true, inject: func(w *world) {
			w.ipam.FailNext("ClaimBlock", 1, unavailable)
		}},
		{name: "device creation fails", blocks: []netip.Prefix{block4}, retry: true, inject: func(w *world) {
			w.nl.FailOn(nlfake.NodeNS, "LinkAdd", 1, unix.ENOMEM)
		}},
		{name: "tunnel creation fails", blocks: []netip.Prefix{block4}, retry: true, inject: func(w *world) {
			w.nl.FailOn(nlfake.NodeNS, "LinkAdd", 2, unix.ENOMEM)
		}},
		{name: "IPAM unavailable at the release of addresses of no endpoint", blocks: []netip.Prefix{block4}, retry: true, inject: func(w *world) {
			w.ipam.FailNext("GarbageCollect", 1, unavailable)
		}},
		{name: "datapath configuration fails", blocks: []netip.Prefix{block4}, retry: true, inject: func(w *world) {
			w.bpf.FailOn(bpffake.OpConfigure, 1, errors.New("map full"))
		}},
		{name: "no router IP", inject: func(*world) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nodedev.ModeTunnel, tc.blocks...)
			tc.inject(w)
			a := w.agent(t)
			if err := a.Start(t.Context()); err == nil {
				t.Fatal("Start succeeded, want an error")
			}
			if a.Ready() == nil {
				t.Error("Ready() = nil after a failed Start")
			}
			if st := a.NodeStatus(); st.GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY {
				t.Errorf("readiness %v, want NOT_READY", st.GetReadiness())
			}
			if !tc.retry {
				return
			}
			if err := a.Start(t.Context()); err != nil {
				t.Fatalf("retried Start: %v", err)
			}
			if err := a.Ready(); err != nil {
				t.Errorf("Ready() after the retry = %v", err)
			}
			if _, ok := w.nl.Link(nlfake.NodeNS, nodedev.VXLANDevice); !ok {
				t.Error("tunnel device missing after the retry")
			}
		})
	}
}

func TestNodeStatusReportsMissingDevicesDegraded(t *testing.T) {
	for _, dev := range []string{nodedev.HostDevice, nodedev.VXLANDevice} {
		t.Run(dev, func(t *testing.T) {
			w := newWorld(t, nodedev.ModeTunnel, block4)
			a := w.agent(t)
			if err := a.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := w.nl.DeleteLink(nlfake.NodeNS, dev); err != nil {
				t.Fatal(err)
			}
			st := a.NodeStatus()
			if st.GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_DEGRADED ||
				!slices.Contains(st.GetReasons(), "device "+dev+" missing") {
				t.Errorf("readiness %v reasons %v, want DEGRADED with %s missing", st.GetReadiness(), st.GetReasons(), dev)
			}
			for _, d := range st.GetDevices() {
				if d.GetName() == dev && d.GetPresent() {
					t.Errorf("device %s present = %v", d.GetName(), d.GetPresent())
				}
			}
			state, _ := a.Readiness()
			if state != datapathv1alpha1.ReadinessState_READINESS_STATE_DEGRADED {
				t.Errorf("Readiness() = %v, want DEGRADED", state)
			}
			// A restart re-creates it.
			if err := w.agent(t).Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if st := a.NodeStatus(); st.GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_READY {
				t.Errorf("after restart: readiness %v (%v), want READY", st.GetReadiness(), st.GetReasons())
			}
		})
	}
}

// TestStartRestoresAndReplaysDeletes restarts an agent on the state of a
// previous one: endpoints come back, remote nodes given by API come back,
// and a DEL queued while it was down is run.
func TestStartRestoresAndReplaysDeletes(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel, block4)
	first := w.agent(t)
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var eps []*datapathv1alpha1.Endpoint
	for _, id := range []string{"keep", "queued"} {
		// The path must exist: CreateEndpoint checks it before opening it.
		path := filepath.Join(t.TempDir(), id)
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		w.nl.AddNamespace(path)
		ep, err := first.Endpoints().CreateEndpoint(t.Context(), &datapathv1alpha1.CreateEndpointRequest{
			Attachment: &datapathv1alpha1.Attachment{ContainerId: id, InterfaceName: "eth0"}, NetnsPath: path,
		})
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		eps = append(eps, ep)
	}
	remoteNode := &datapathv1alpha1.RemoteNode{Name: "node-b", NodeIps: []string{"192.0.2.20"}, PodCidrs: []string{"10.0.2.0/24"}}
	if _, err := first.Remotes().UpsertRemoteNode(remoteNode, ""); err != nil {
		t.Fatalf("upsert remote node: %v", err)
	}
	first.Close()

	// axon-cni queues a DEL while the agent is down.
	b, err := json.Marshal(map[string]string{"containerID": "queued", "ifName": "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.cfg.DeleteQueue, "queued-eth0.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	second := w.agent(t)
	if err := second.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Endpoints().GetEndpoint(eps[0].GetAttachment()); err != nil {
		t.Errorf("endpoint keep not restored: %v", err)
	}
	if _, err := second.Endpoints().GetEndpoint(eps[1].GetAttachment()); err == nil {
		t.Error("queued DEL not replayed: endpoint still there")
	}
	if left, _ := os.ReadDir(w.cfg.DeleteQueue); len(left) != 0 {
		t.Errorf("delete queue holds %d files after the replay", len(left))
	}
	// The replayed DEL left its release to the release worker: one pass.
	second.Endpoints().RetryReleases(t.Context())
	if got := len(w.ipam.Allocations()); got != 1 {
		t.Errorf("IPAM allocations = %d, want 1 (the kept endpoint's)", got)
	}
	keepIP := endpointIP(t, eps[0])
	if _, err := w.bpf.Endpoint(keepIP); err != nil {
		t.Errorf("map entry of the kept endpoint %s: %v", keepIP, err)
	}
	if _, err := w.bpf.Endpoint(endpointIP(t, eps[1])); err == nil {
		t.Error("map entry of the deleted endpoint still there")
	}
	remotes, err := w.bpf.RemoteBlocks()
	if err != nil {
		t.Fatal(err)
	}
	if got := remotes[netip.MustParsePrefix("10.0.2.0/24")]; got != netip.MustParseAddr("192.0.2.20") {
		t.Errorf("remote block of the API-given node → %v, want 192.0.2.20 (all: %v)", got, remotes)
	}
	names := []string{}
	for _, n := range second.Remotes().ListRemoteNodes() {
		names = append(names, n.GetName())
	}
	if !slices.Contains(names, "node-b") {
		t.Errorf("remote nodes after restart = %v, want node-b among them", names)
	}
}

// TestStartReleasesAllocationsOfNoEndpoint is issue item 4: an agent
// killed during ADDs leaves allocations that no endpoint owns (IPAM
// answered, the record was never written). The restarted agent releases
// them before it takes ADDs, and keeps every other allocation: its
// endpoints', its health endpoint's (even without a record) and other
// nodes'.
func TestStartReleasesAllocationsOfNoEndpoint(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel, block4)
	first := w.agent(t)
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kept")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w.nl.AddNamespace(path)
	kept := &datapathv1alpha1.Attachment{ContainerId: "kept", InterfaceName: "eth0"}
	if _, err := first.Endpoints().CreateEndpoint(t.Context(), &datapathv1alpha1.CreateEndpointRequest{Attachment: kept, NetnsPath: path}); err != nil {
		t.Fatal(err)
	}
	// The ADDs the crash cut short: IPAM answered, no record was written.
	for _, c := range []string{"cut-1", "cut-2"} {
		if _, err := w.ipam.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{
			Handle: &ipamv1alpha1.OwnerHandle{ContainerId: c, InterfaceName: "eth0"}, Node: node,
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The health endpoint's addresses, its record not written yet.
	hatt := health.Attachment(node)
	if _, err := w.ipam.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: hatt.GetContainerId(), InterfaceName: hatt.GetInterfaceName()}, Node: node,
	}); err != nil {
		t.Fatal(err)
	}
	// Another node's pod.
	if _, err := w.ipam.Put(&ipamv1alpha1.Allocation{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "elsewhere", InterfaceName: "eth0"}, Node: "node-b",
		Addresses: []*ipamv1alpha1.AllocatedAddress{{Ip: "10.0.2.5"}},
	}); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second := w.agent(t)
	if err := second.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range w.ipam.Allocations() {
		got = append(got, a.GetNode()+":"+a.GetHandle().GetContainerId())
	}
	want := []string{node + ":" + hatt.GetContainerId(), "node-b:elsewhere", node + ":kept"}
	if !slices.Equal(got, want) {
		t.Errorf("allocations after the restart = %v, want %v", got, want)
	}
	if _, err := second.Endpoints().GetEndpoint(kept); err != nil {
		t.Errorf("endpoint kept: %v", err)
	}
}

func endpointIP(t *testing.T, ep *datapathv1alpha1.Endpoint) netip.Addr {
	t.Helper()
	addrs := endpoint.Addrs(ep)
	if len(addrs) == 0 {
		t.Fatalf("endpoint %v has no address", ep)
	}
	return addrs[0].Addr()
}

func TestNewRefusesWhatTheNodeCannotDo(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(w *world, cfg *agent.Config, deps *agent.Deps)
		want error // nil: any error
	}{
		{"unknown routing mode", func(_ *world, cfg *agent.Config, _ *agent.Deps) { cfg.RoutingMode = "bgp" }, nil},
		{"unknown tunnel protocol", func(_ *world, cfg *agent.Config, _ *agent.Deps) { cfg.TunnelProtocol = "gre" }, nil},
		{"no IPAM", func(_ *world, _ *agent.Config, deps *agent.Deps) { deps.IPAM = nil }, nil},
		{"masquerade without rules", func(_ *world, _ *agent.Config, deps *agent.Deps) { deps.Masquerade = nil }, nil},
		{"Geneve on a kernel without it", func(w *world, cfg *agent.Config, _ *agent.Deps) {
			cfg.TunnelProtocol = nodedev.TunnelGeneve
			w.nl.SetKindSupported(nlfake.KindGeneve, false)
		}, nodedev.ErrNoGeneve},
		{"BIG TCP with Geneve", func(_ *world, cfg *agent.Config, _ *agent.Deps) {
			cfg.TunnelProtocol, cfg.BigTCP = nodedev.TunnelGeneve, true
		}, nodedev.ErrBigTCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nodedev.ModeTunnel, block4)
			cfg := w.cfg
			deps := agent.Deps{Namespaces: w.nl, Datapath: w.bpf, IPAM: w.ipam, Masquerade: w.rules, Sysctl: w.sysctls.write}
			tc.edit(w, &cfg, &deps)
			a, err := agent.New(cfg, deps, slog.New(slog.DiscardHandler))
			if err == nil {
				a.Close()
				t.Fatal("New succeeded, want an error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("New: %v, want %v", err, tc.want)
			}
			if n := w.nl.OpenHandles(); n != 0 {
				t.Errorf("%d netlink handles left open", n)
			}
		})
	}
}

func TestStartWithGeneveAndFixedMTU(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel, block4)
	w.cfg.TunnelProtocol, w.cfg.MTU = nodedev.TunnelGeneve, 1400
	a := w.agent(t)
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	tunnel, ok := w.nl.Link(nlfake.NodeNS, nodedev.GeneveDevice)
	if !ok {
		t.Fatalf("%s missing", nodedev.GeneveDevice)
	}
	if _, ok := w.nl.Link(nlfake.NodeNS, nodedev.VXLANDevice); ok {
		t.Errorf("%s created with Geneve", nodedev.VXLANDevice)
	}
	if _, ok := w.nl.Link(nlfake.NodeNS, "axon_gnvprobe"); ok {
		t.Error("the Geneve probe device was left behind")
	}
	c, _ := w.bpf.Config()
	if !c.Geneve || c.TunnelIfindex != tunnel.Attrs().Index {
		t.Errorf("datapath config %+v, want Geneve on ifindex %d", c, tunnel.Attrs().Index)
	}
	for _, dev := range []string{nodedev.HostDevice, nodedev.NetDevice, nodedev.GeneveDevice} {
		if l, _ := w.nl.Link(nlfake.NodeNS, dev); l == nil || l.Attrs().MTU != 1400 {
			t.Errorf("%s MTU = %v, want the configured 1400", dev, l)
		}
	}
	if w.rules.overlay != nodedev.GeneveDevice {
		t.Errorf("masquerade exempts %q, want %s", w.rules.overlay, nodedev.GeneveDevice)
	}
	if got := a.NodeConfig(); got.GetMtu() != 1400 || got.GetTunnelPort() != nodedev.GenevePort {
		t.Errorf("NodeConfig MTU %d port %d, want 1400 and %d", got.GetMtu(), got.GetTunnelPort(), nodedev.GenevePort)
	}
}

// TestRunHealthKeepsTheHealthEndpoint: the health loop creates the node's
// health endpoint (NodeConfig reports its address), a GC of every network
// leaves it alone, and the loop re-creates it after its veth vanished.
func TestRunHealthKeepsTheHealthEndpoint(t *testing.T) {
	w := newWorld(t, nodedev.ModeTunnel, block4)
	a := w.agent(t)
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// nl.Linux's Ensure bind-mounts the namespace there; nlfake's keeps no
	// file, and endpoint creation checks the path.
	if err := os.WriteFile(health.NetnsPath(w.cfg.StateDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.RunHealth(ctx, 10*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	healthIP := func() (string, error) {
		ips := a.NodeConfig().GetHealthIps()
		if len(ips) != 1 {
			return "", fmt.Errorf("health IPs %v, want one", ips)
		}
		return ips[0], nil
	}
	testpoll.Until(t, 5*time.Second, func() error { _, err := healthIP(); return err })

	removed, _, err := a.Endpoints().GarbageCollect(t.Context(), "", nil, 0, false)
	if err != nil || len(removed) != 0 {
		t.Fatalf("GC of every network removed %v, %v; want nothing", removed, err)
	}
	att := health.Attachment(node)
	if err := w.nl.DeleteLink(nlfake.NodeNS, veth.HostName(att.GetContainerId(), att.GetInterfaceName())); err != nil {
		t.Fatal(err)
	}
	testpoll.Until(t, 5*time.Second, func() error {
		if _, ok := w.nl.Link(nlfake.NodeNS, veth.HostName(att.GetContainerId(), att.GetInterfaceName())); !ok {
			return errors.New("health veth not re-created")
		}
		_, err := healthIP()
		return err
	})
	if n := len(w.ipam.Allocations()); n != 1 {
		t.Errorf("IPAM allocations %d, want the health endpoint's only", n)
	}
}

// TestNodeAddrsFollowTheNode: the programs' node addresses are the node's
// unicast addresses (--node-ip's and the others), and follow an address
// added later.
func TestNodeAddrsFollowTheNode(t *testing.T) {
	w := newWorld(t, nodedev.ModeNative, block4, block6)
	a := w.agent(t)
	if err := a.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	c, _ := w.bpf.Config()
	for _, want := range []netip.Addr{nodeIP, router4} {
		if !slices.Contains(c.NodeAddrs, want) {
			t.Errorf("node addresses %v, want %v among them", c.NodeAddrs, want)
		}
	}
	h, err := w.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	host, err := h.LinkByName(nodedev.HostDevice)
	if err != nil {
		t.Fatal(err)
	}
	extra := netip.MustParseAddr("198.51.100.9")
	if err := h.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: extra.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	go a.RunNodeAddrs(t.Context(), 10*time.Millisecond)
	testpoll.Until(t, 5*time.Second, func() error {
		if c, _ := w.bpf.Config(); !slices.Contains(c.NodeAddrs, extra) {
			return fmt.Errorf("node addresses %v lack %v", c.NodeAddrs, extra)
		}
		return nil
	})
}
