package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/embedetcd"
	"github.com/axon-cni/axon/services/ipam/allocator"
	"github.com/axon-cni/axon/services/ipam/client"
	"github.com/axon-cni/axon/services/ipam/client/errinfo"
)

// methodCounts counts the calls a test server received, by full method.
type methodCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *methodCounts) get(method string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[method]
}

// testMetrics are a test server's metrics and the registry they are on.
type testMetrics struct {
	*Metrics
	reg *prometheus.Registry
}

// startServer serves IPAM over loopback gRPC against a fresh embedded etcd.
func startServer(t *testing.T) (ipamv1alpha1.IPAMServiceClient, testMetrics, *methodCounts) {
	t.Helper()
	return startServerWith(t, allocator.DefaultConfig())
}

// startServerWith is startServer with an allocator configuration.
func startServerWith(t *testing.T, cfg allocator.Config) (ipamv1alpha1.IPAMServiceClient, testMetrics, *methodCounts) {
	t.Helper()
	etcd, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.ClientURL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	c, m, calls, _ := serveIPAM(t, cli, cfg)
	return c, m, calls
}

// serveIPAM serves IPAM over loopback gRPC on the etcd cli reaches.
func serveIPAM(t *testing.T, cli *clientv3.Client, cfg allocator.Config) (ipamv1alpha1.IPAMServiceClient, testMetrics, *methodCounts, *allocator.Allocator) {
	t.Helper()
	alloc, err := allocator.New(t.Context(), cli, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alloc.Close)
	m := testMetrics{reg: prometheus.NewRegistry()}
	m.Metrics = NewMetrics(m.reg, alloc)
	calls := &methodCounts{n: map[string]int{}}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		calls.mu.Lock()
		calls.n[info.FullMethod]++
		calls.mu.Unlock()
		return h(ctx, req)
	}))
	ipamv1alpha1.RegisterIPAMServiceServer(srv, New(alloc, m.Metrics, slog.New(slog.DiscardHandler)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return ipamv1alpha1.NewIPAMServiceClient(conn), m, calls, alloc
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("code = %v (%v), want %v", got, err, code)
	}
}

func TestIPAMOverGRPC(t *testing.T) {
	c, m, _ := startServer(t)
	ctx := t.Context()

	_, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{Name: "bad", Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.0.0.1/8"}}}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{
		Name: "default", Default: true, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.0.0.0/27"}, BlockPrefixLength: 28},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "c", InterfaceName: "eth0"}, Node: "ghost"})
	wantCode(t, err, codes.NotFound)
	if _, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: "n1", Addresses: []string{"192.168.1.1"}}}); err != nil {
		t.Fatal(err)
	}

	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch, err := c.WatchBlocks(watchCtx, &ipamv1alpha1.WatchBlocksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := watch.Recv(); err != nil || ev.GetType() != commonv1alpha1.EventType_EVENT_TYPE_SYNCED {
		t.Fatalf("first watch event = %v, %v; want SYNCED (no blocks yet)", ev, err)
	}

	// A /27 in /28 blocks: 32 addresses minus network, broadcast and one
	// router IP.
	var n int
	for ; ; n++ {
		_, err := c.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{
			Handle: &ipamv1alpha1.OwnerHandle{ContainerId: fmt.Sprintf("c%02d", n), InterfaceName: "eth0"}, Node: "n1",
		})
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted)
			break
		}
	}
	if n != 29 {
		t.Errorf("allocated %d addresses from a /27, want 29", n)
	}
	if ev, err := watch.Recv(); err != nil || ev.GetType() != commonv1alpha1.EventType_EVENT_TYPE_ADDED || ev.GetNodeAddresses()[0] != "192.168.1.1" {
		t.Fatalf("watch event after claim = %v, %v", ev, err)
	}

	// Paging through every allocation, two at a time.
	var seen int
	token := ""
	for {
		resp, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{Node: "n1", PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		seen += len(resp.GetAllocations())
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if seen != n {
		t.Errorf("paged through %d allocations, want %d", seen, n)
	}
	_, err = c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{PageToken: "!!"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.ListNodes(ctx, &ipamv1alpha1.ListNodesRequest{PageSize: -1})
	wantCode(t, err, codes.InvalidArgument)

	_, err = c.DeletePool(ctx, &ipamv1alpha1.DeletePoolRequest{Name: "default"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = c.UpdatePool(ctx, &ipamv1alpha1.UpdatePoolRequest{Pool: &ipamv1alpha1.Pool{Name: "default", Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.0.0.0/27"}, BlockPrefixLength: 28}}, ExpectedRevision: "1"})
	wantCode(t, err, codes.Aborted)
	_, err = c.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{})
	wantCode(t, err, codes.InvalidArgument)

	rel, err := c.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "c00", InterfaceName: "eth0"}})
	if err != nil || rel.GetAllocation() == nil {
		t.Fatalf("ReleaseIP = %v, %v", rel, err)
	}
	gc, err := c.GarbageCollect(ctx, &ipamv1alpha1.GarbageCollectRequest{Node: "n1", MinAge: nil, DryRun: true})
	if err != nil || len(gc.GetReleased()) != 0 {
		t.Fatalf("dry-run GC with the default min age = %v, %v; want nothing", gc, err)
	}

	if err := m.RefreshUsage(ctx); err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "axon_ipam_allocations_total" {
				counts[label(m, "result")] = m.GetCounter().GetValue()
			}
			if mf.GetName() == "axon_ipam_pool_addresses" && label(m, "state") == "allocated" {
				counts["pool_allocated"] = m.GetGauge().GetValue()
			}
			if mf.GetName() == "axon_ipam_node_allocated_addresses" {
				counts["node_"+label(m, "node")] = m.GetGauge().GetValue()
			}
		}
	}
	if counts["OK"] != 29 || counts["ResourceExhausted"] != 1 || counts["NotFound"] != 1 || counts["pool_allocated"] != 28 || counts["node_n1"] != 28 {
		t.Errorf("metrics = %v, want 29 OK, 1 ResourceExhausted, 1 NotFound, 28 allocated in the pool and on n1", counts)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestAllocateIPsOverGRPC(t *testing.T) {
	c, _, calls := startServer(t)
	ctx := t.Context()
	if _, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{
		Name: "default", Default: true, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.1.0.0/16"}, BlockPrefixLength: 26},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: "n1", Addresses: []string{"192.168.1.1"}}}); err != nil {
		t.Fatal(err)
	}
	req := func(id, node string) *ipamv1alpha1.AllocateIPRequest {
		return &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: id, InterfaceName: "eth0"}, Node: node}
	}

	_, err := c.AllocateIPs(ctx, &ipamv1alpha1.AllocateIPsRequest{})
	wantCode(t, err, codes.InvalidArgument)
	tooMany := &ipamv1alpha1.AllocateIPsRequest{}
	for i := range maxAllocateBatch + 1 {
		tooMany.Requests = append(tooMany.Requests, req(fmt.Sprint("c", i), "n1"))
	}
	_, err = c.AllocateIPs(ctx, tooMany)
	wantCode(t, err, codes.InvalidArgument)

	resp, err := c.AllocateIPs(ctx, &ipamv1alpha1.AllocateIPsRequest{Requests: []*ipamv1alpha1.AllocateIPRequest{
		req("ok", "n1"), req("lost", "ghost"), req("", "n1"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []codes.Code{codes.OK, codes.NotFound, codes.InvalidArgument}
	for i, r := range resp.GetResults() {
		got := codes.OK
		if e := r.GetError(); e != nil {
			got = codes.Code(e.GetCode())
		} else if len(r.GetResponse().GetAllocation().GetAddresses()) != 1 {
			t.Errorf("result %d: no address in %v", i, r)
		}
		if got != want[i] {
			t.Errorf("result %d: code %v (%v), want %v", i, got, r.GetError(), want[i])
		}
	}
	if len(resp.GetResults()) != len(want) {
		t.Fatalf("%d results for %d requests", len(resp.GetResults()), len(want))
	}

	// A node agent's coalescing client: pods starting together each get
	// their own address.
	cc := client.New(c)
	before := calls.get(ipamv1alpha1.IPAMService_AllocateIPs_FullMethodName)
	const pods = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range pods {
		wg.Go(func() {
			r, err := cc.AllocateIP(ctx, req(fmt.Sprint("pod-", i), "n1"))
			if err != nil {
				t.Errorf("pod-%d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ip := r.GetAllocation().GetAddresses()[0].GetIp()
			if seen[ip] {
				t.Errorf("%s handed out twice", ip)
			}
			seen[ip] = true
		})
	}
	wg.Wait()
	if calls.get(ipamv1alpha1.IPAMService_AllocateIPs_FullMethodName) == before {
		t.Error("no AllocateIPs call: the 40 pods were not coalesced")
	}
	_, err = cc.AllocateIP(ctx, req("late", "ghost"))
	wantCode(t, err, codes.NotFound)
}

// TestPageTokensBelongToTheirList checks that a page token is accepted only
// by the list, with the same filters, that returned it.
func TestPageTokensBelongToTheirList(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := t.Context()
	for i, name := range []string{"a", "b"} {
		_, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{
			Name: name, Default: i == 0, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{fmt.Sprintf("10.%d.0.0/24", i)}, BlockPrefixLength: 28},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: "n1", Addresses: []string{"192.168.1.1"}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		_, err := c.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{
			Handle: &ipamv1alpha1.OwnerHandle{ContainerId: fmt.Sprintf("c%d", i), InterfaceName: "eth0"}, Node: "n1",
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	pools, err := c.ListPools(ctx, &ipamv1alpha1.ListPoolsRequest{PageSize: 1})
	if err != nil || pools.GetNextPageToken() == "" {
		t.Fatalf("ListPools first page = %v, %v; want a next page", pools, err)
	}
	allocs, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{Node: "n1", PageSize: 1})
	if err != nil || allocs.GetNextPageToken() == "" {
		t.Fatalf("ListAllocations first page = %v, %v; want a next page", allocs, err)
	}
	poolToken, allocToken := pools.GetNextPageToken(), allocs.GetNextPageToken()

	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"ListPools, own token", func() error {
			_, err := c.ListPools(ctx, &ipamv1alpha1.ListPoolsRequest{PageToken: poolToken})
			return err
		}, codes.OK},
		{"ListAllocations, own token", func() error {
			_, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{Node: "n1", PageToken: allocToken})
			return err
		}, codes.OK},
		{"ListPools, token of ListAllocations", func() error {
			_, err := c.ListPools(ctx, &ipamv1alpha1.ListPoolsRequest{PageToken: allocToken})
			return err
		}, codes.InvalidArgument},
		{"ListNodes, token of ListPools", func() error {
			_, err := c.ListNodes(ctx, &ipamv1alpha1.ListNodesRequest{PageToken: poolToken})
			return err
		}, codes.InvalidArgument},
		{"ListBlocks, token of ListPools", func() error {
			_, err := c.ListBlocks(ctx, &ipamv1alpha1.ListBlocksRequest{PageToken: poolToken})
			return err
		}, codes.InvalidArgument},
		{"ListAllocations, token of ListPools", func() error {
			_, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{PageToken: poolToken})
			return err
		}, codes.InvalidArgument},
		{"ListAllocations, token of another node's listing", func() error {
			_, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{Node: "n2", PageToken: allocToken})
			return err
		}, codes.InvalidArgument},
		{"ListReservations, token of ListPools", func() error {
			_, err := c.ListReservations(ctx, &ipamv1alpha1.ListReservationsRequest{PageToken: poolToken})
			return err
		}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.call(), tc.want)
		})
	}
}

// TestExhaustedCarriesReason: an exhausted pool's RESOURCE_EXHAUSTED
// carries the POOL_EXHAUSTED ErrorInfo, alone and in AllocateIPs results;
// other errors carry none.
func TestExhaustedCarriesReason(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := t.Context()
	if _, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{
		Name: "default", Default: true, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.2.0.0/28"}, BlockPrefixLength: 28},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: "n1", Addresses: []string{"192.168.1.1"}}}); err != nil {
		t.Fatal(err)
	}
	req := func(id, node string) *ipamv1alpha1.AllocateIPRequest {
		return &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: id, InterfaceName: "eth0"}, Node: node}
	}
	var exhausted error
	for n := 0; exhausted == nil; n++ {
		if n > 16 {
			t.Fatal("a /28 never ran out")
		}
		_, exhausted = c.AllocateIP(ctx, req(fmt.Sprint("c", n), "n1"))
	}
	wantCode(t, exhausted, codes.ResourceExhausted)
	if got := errinfo.Reason(exhausted); got != errinfo.ReasonPoolExhausted {
		t.Errorf("AllocateIP reason = %q, want %q", got, errinfo.ReasonPoolExhausted)
	}
	_, err := c.AllocateIP(ctx, req("lost", "ghost"))
	wantCode(t, err, codes.NotFound)
	if got := errinfo.Reason(err); got != "" {
		t.Errorf("NOT_FOUND reason = %q, want none", got)
	}

	resp, err := c.AllocateIPs(ctx, &ipamv1alpha1.AllocateIPsRequest{Requests: []*ipamv1alpha1.AllocateIPRequest{
		req("more", "n1"), req("lost", "ghost"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		code   codes.Code
		reason string
	}{{codes.ResourceExhausted, errinfo.ReasonPoolExhausted}, {codes.NotFound, ""}} {
		e := resp.GetResults()[i].GetError()
		if codes.Code(e.GetCode()) != want.code || e.GetReason() != want.reason {
			t.Errorf("result %d = %v, want code %v reason %q", i, e, want.code, want.reason)
		}
	}
}
