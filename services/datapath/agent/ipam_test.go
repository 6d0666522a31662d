package agent_test

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/internal/etcdtest"
	"github.com/axon-cni/axon/services/ipam/allocator"
	ipamserver "github.com/axon-cni/axon/services/ipam/server"
)

// realIPAM serves the IPAM allocator on an embedded etcd over an in-memory
// gRPC connection.
func realIPAM(t *testing.T) (*allocator.Allocator, ipamv1alpha1.IPAMServiceClient) {
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

// TestStartOnHostScopePodCIDR is issue item 9 against the real IPAM: the
// operator registered the node with its Kubernetes pod CIDR, which a
// host-scope pool made a block; the datapath starts, and starts again,
// without dropping it.
func TestStartOnHostScopePodCIDR(t *testing.T) {
	alloc, client := realIPAM(t)
	ctx := t.Context()
	if _, err := alloc.CreatePool(ctx, &ipamv1alpha1.Pool{
		Name: "nodes", Mode: ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE, Default: true, Ipv4: &ipamv1alpha1.PoolFamily{},
	}); err != nil {
		t.Fatalf("create pool: %v", err)
	}
	if _, err := alloc.CreateNode(ctx, &ipamv1alpha1.Node{Name: node, PodCidrs: []string{block4.String()}}); err != nil {
		t.Fatalf("register node: %v", err)
	}
	w := newWorld(t, nodedev.ModeTunnel)
	for i := range 2 { // a start and a restart
		a, err := agent.New(w.cfg, agent.Deps{Namespaces: w.nl, Datapath: w.bpf, IPAM: client, Masquerade: w.rules, Sysctl: w.sysctls.write}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		if err := a.Start(ctx); err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		if !w.hasAddr(nodedev.HostDevice, router4) {
			t.Errorf("start %d: router IP %s not on %s", i+1, router4, nodedev.HostDevice)
		}
	}
	n, err := alloc.GetNode(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n.GetPodCidrs(), []string{block4.String()}) || !slices.Equal(n.GetAddresses(), []string{nodeIP.String()}) {
		t.Errorf("node = addresses %v pod CIDRs %v; want [%s] and [%s]", n.GetAddresses(), n.GetPodCidrs(), nodeIP, block4)
	}
	// The host-scope block is masqueraded.
	if last := w.rules.applied[len(w.rules.applied)-1]; !slices.Contains(last, block4) {
		t.Errorf("masqueraded %v, want %s among them", last, block4)
	}
}
