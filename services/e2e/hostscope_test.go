package e2e

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/internal/etcdtest"
	"github.com/axon-cni/axon/services/ipam/allocator"
	ipamserver "github.com/axon-cni/axon/services/ipam/server"
)

// inProcessIPAM serves the real IPAM allocator on an embedded etcd over an
// in-memory gRPC connection.
func inProcessIPAM(t *testing.T) (*allocator.Allocator, ipamv1alpha1.IPAMServiceClient) {
	t.Helper()
	cli := etcdtest.Single(t).Client(t)
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	alloc, err := allocator.New(ctx, cli, allocator.DefaultConfig(), log)
	if err != nil {
		t.Fatalf("start allocator: %v", err)
	}
	t.Cleanup(alloc.Close)
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	ipamv1alpha1.RegisterIPAMServiceServer(srv, ipamserver.New(alloc, ipamserver.NewMetrics(prometheus.NewRegistry(), alloc), log))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///ipam",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return alloc, ipamv1alpha1.NewIPAMServiceClient(conn)
}

// TestStartOnHostScopePodCIDR: the operator registered the node with its
// Kubernetes pod CIDR, which a host-scope pool made a block; the node agent
// (on fake netlink and maps, against the real IPAM) starts, and starts
// again, without dropping the pod CIDR from the node, which IPAM would
// refuse (the agent could never restart).
func TestStartOnHostScopePodCIDR(t *testing.T) {
	const node = "node-a"
	nodeIP := netip.MustParseAddr("192.0.2.10")
	podCIDR := netip.MustParsePrefix("10.0.1.0/24")
	alloc, client := inProcessIPAM(t)
	ctx := t.Context()
	if _, err := alloc.CreatePool(ctx, &ipamv1alpha1.Pool{
		Name: "nodes", Mode: ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE, Default: true, Ipv4: &ipamv1alpha1.PoolFamily{},
	}); err != nil {
		t.Fatalf("create pool: %v", err)
	}
	if _, err := alloc.CreateNode(ctx, &ipamv1alpha1.Node{Name: node, PodCidrs: []string{podCIDR.String()}}); err != nil {
		t.Fatalf("register node: %v", err)
	}

	nl := nlfake.New()
	h, err := nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0peer"}); err != nil {
		t.Fatal(err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	bpf := bpffake.New()
	bpf.SetInterfaces(func() map[string]int { return nl.Indexes(nlfake.NodeNS) })
	cfg := agent.Config{NodeName: node, NodeIPs: []netip.Addr{nodeIP}, RoutingMode: nodedev.ModeTunnel, StateDir: t.TempDir()}
	for i := range 2 { // a start and a restart
		a, err := agent.New(cfg, agent.Deps{
			Namespaces: nl, Datapath: bpf, IPAM: client, Sysctl: func(string, string) error { return nil },
		}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(ctx); err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		a.Close()
	}
	n, err := alloc.GetNode(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n.GetPodCidrs(), []string{podCIDR.String()}) || !slices.Equal(n.GetAddresses(), []string{nodeIP.String()}) {
		t.Errorf("node = addresses %v pod CIDRs %v; want [%s] and [%s]", n.GetAddresses(), n.GetPodCidrs(), nodeIP, podCIDR)
	}
}
