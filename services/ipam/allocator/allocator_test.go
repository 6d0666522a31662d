package allocator

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

func v4Pool(name string, def bool, blockBits uint32, cidrs ...string) *ipamv1alpha1.Pool {
	return &ipamv1alpha1.Pool{Name: name, Default: def, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: cidrs, BlockPrefixLength: blockBits}}
}

func mustPool(t *testing.T, a *Allocator, p *ipamv1alpha1.Pool) *ipamv1alpha1.Pool {
	t.Helper()
	out, err := a.CreatePool(t.Context(), p)
	if err != nil {
		t.Fatalf("CreatePool(%s): %v", p.GetName(), err)
	}
	return out
}

func mustNode(t *testing.T, a *Allocator, name string, podCIDRs ...string) {
	t.Helper()
	if _, err := a.CreateNode(t.Context(), &ipamv1alpha1.Node{Name: name, Addresses: []string{"192.168.0.1"}, PodCidrs: podCIDRs}); err != nil {
		t.Fatalf("CreateNode(%s): %v", name, err)
	}
}

func allocReq(node, cid string) *ipamv1alpha1.AllocateIPRequest {
	return &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: cid, InterfaceName: "eth0"}, Node: node}
}

func mustAlloc(t *testing.T, a *Allocator, req *ipamv1alpha1.AllocateIPRequest) *ipamv1alpha1.Allocation {
	t.Helper()
	out, err := a.Allocate(t.Context(), req)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", req.GetHandle().GetContainerId(), err)
	}
	return out
}

func wantErr(t *testing.T, err, sentinel error, contains string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error = %v, want %v", err, sentinel)
	}
	if contains != "" && !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q does not mention %q", err, contains)
	}
}

func TestPoolLifecycle(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	p := mustPool(t, a, v4Pool("default", true, 0, "10.0.0.0/16"))
	if got := p.GetIpv4().GetBlockPrefixLength(); got != 26 {
		t.Errorf("block size default = %d, want 26", got)
	}
	if u := p.GetStatus().GetUsage()[0]; u.GetBlocksTotal() != 1024 || u.GetCapacity() != 65534 {
		t.Errorf("usage = %v, want 1024 blocks and 65534 addresses", u)
	}
	// Idempotent retry, then the error cases.
	if _, err := a.CreatePool(ctx, v4Pool("default", true, 26, "10.0.0.0/16")); err != nil {
		t.Fatalf("identical retry: %v", err)
	}
	_, err := a.CreatePool(ctx, v4Pool("default", true, 0, "10.1.0.0/16"))
	wantErr(t, err, ErrExists, "different spec")
	_, err = a.CreatePool(ctx, v4Pool("other", false, 0, "10.0.128.0/20"))
	wantErr(t, err, ErrPrecondition, "overlaps 10.0.0.0/16")
	_, err = a.CreatePool(ctx, v4Pool("second-default", true, 0, "10.2.0.0/16"))
	wantErr(t, err, ErrPrecondition, "already the default")
	_, err = a.CreatePool(ctx, v4Pool("Bad_Name", false, 0, "10.3.0.0/16"))
	wantErr(t, err, ErrInvalid, "DNS-1123")
	_, err = a.CreatePool(ctx, v4Pool("tiny", false, 12, "10.3.0.0/16"))
	wantErr(t, err, ErrInvalid, "does not fit")

	mustNode(t, a, "n1")
	alloc := mustAlloc(t, a, allocReq("n1", "c1"))
	_, err = a.DeletePool(ctx, "default", "")
	wantErr(t, err, ErrPrecondition, "allocated addresses")

	// Adding a CIDR is fine; removing the one holding a block is not.
	up := v4Pool("default", true, 26, "10.0.0.0/16", "10.9.0.0/16")
	if _, err := a.UpdatePool(ctx, up, "", false); err != nil {
		t.Fatalf("add CIDR: %v", err)
	}
	_, err = a.UpdatePool(ctx, v4Pool("default", true, 26, "10.9.0.0/16"), "", false)
	wantErr(t, err, ErrPrecondition, "cannot remove")
	_, err = a.UpdatePool(ctx, up, "1", false)
	wantErr(t, err, ErrConflict, "revision")

	if _, _, err := a.Release(ctx, Handle{"c1", "eth0"}, alloc.GetSequence(), false); err != nil {
		t.Fatal(err)
	}
	// The node's router IP is still allocated from the pool.
	_, err = a.DeletePool(ctx, "default", "")
	wantErr(t, err, ErrPrecondition, "allocated")
	if _, err := a.DeleteNode(ctx, "n1", ""); err != nil {
		t.Fatal(err)
	}
	resp, err := a.DeletePool(ctx, "default", "")
	if err != nil {
		t.Fatalf("DeletePool after node removal: %v", err)
	}
	if resp.GetReleasedBlocks() != 0 {
		t.Errorf("released %d blocks; DeleteNode should have released them", resp.GetReleasedBlocks())
	}
	if _, err := a.DeletePool(ctx, "default", ""); err != nil {
		t.Errorf("deleting a missing pool: %v", err)
	}
	_, err = a.GetPool(ctx, "default")
	wantErr(t, err, ErrNotFound, "")
}

func TestAllocateReleaseIdempotent(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, v4Pool("default", true, 28, "10.10.0.0/24"))
	mustNode(t, a, "n1")

	first := mustAlloc(t, a, allocReq("n1", "c1"))
	addr := first.GetAddresses()[0]
	if addr.GetPrefixLength() != 32 || addr.GetGateway() == "" || addr.GetGateway() == addr.GetIp() {
		t.Fatalf("address = %v, want a /32 with a distinct gateway", addr)
	}
	block := netip.MustParsePrefix(addr.GetBlock())
	ip := netip.MustParseAddr(addr.GetIp())
	if ip == block.Addr() && block.Addr() == netip.MustParseAddr("10.10.0.0") {
		t.Errorf("got the pool's network address %s", ip)
	}
	again := mustAlloc(t, a, allocReq("n1", "c1"))
	if again.GetAddresses()[0].GetIp() != addr.GetIp() || again.GetSequence() != first.GetSequence() {
		t.Errorf("retry gave %v, want the same allocation %v", again, first)
	}
	_, err := a.Allocate(ctx, allocReq("n2", "c1"))
	wantErr(t, err, ErrNotFound, "not registered")
	mustNode(t, a, "n2")
	_, err = a.Allocate(ctx, allocReq("n2", "c1"))
	wantErr(t, err, ErrPrecondition, "allocated on node")

	got, err := a.GetAllocationByIP(ctx, addr.GetIp())
	if err != nil || got.GetHandle().GetContainerId() != "c1" {
		t.Fatalf("GetAllocationByIP = %v, %v", got, err)
	}
	_, err = a.GetAllocationByIP(ctx, addr.GetGateway())
	wantErr(t, err, ErrNotFound, "router IP")

	// A late release guarded by an old sequence must not free a newer
	// allocation of the same handle.
	if rel, _, err := a.Release(ctx, Handle{"c1", "eth0"}, first.GetSequence(), false); err != nil || rel == nil {
		t.Fatalf("Release = %v, %v", rel, err)
	}
	second := mustAlloc(t, a, allocReq("n1", "c1"))
	if rel, _, err := a.Release(ctx, Handle{"c1", "eth0"}, first.GetSequence(), false); err != nil || rel != nil {
		t.Fatalf("stale Release = %v, %v; want nothing released", rel, err)
	}
	if _, err := a.GetAllocation(ctx, Handle{"c1", "eth0"}); err != nil {
		t.Fatalf("newer allocation gone after stale release: %v", err)
	}
	if _, _, err := a.Release(ctx, Handle{"c1", "eth0"}, second.GetSequence(), false); err != nil {
		t.Fatal(err)
	}
	if rel, _, err := a.Release(ctx, Handle{"c1", "eth0"}, 0, false); err != nil || rel != nil {
		t.Fatalf("second Release = %v, %v; want success with nothing", rel, err)
	}
	_, err = a.Allocate(ctx, &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "c9"}, Node: "n1"})
	wantErr(t, err, ErrInvalid, "interface_name")
}

func TestExhaustionAndBlocks(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	// A /28 cut into two /29 blocks: 16 addresses minus network, broadcast
	// and one router IP leave 13.
	mustPool(t, a, v4Pool("small", true, 29, "10.20.0.0/28"))
	mustNode(t, a, "n1")
	seen := map[string]bool{}
	for i := range 13 {
		alloc := mustAlloc(t, a, allocReq("n1", fmt.Sprintf("c%d", i)))
		ip := alloc.GetAddresses()[0].GetIp()
		if seen[ip] || ip == "10.20.0.0" || ip == "10.20.0.15" {
			t.Fatalf("allocation %d got %s (duplicate or reserved)", i, ip)
		}
		seen[ip] = true
	}
	_, err := a.Allocate(ctx, allocReq("n1", "overflow"))
	wantErr(t, err, ErrExhausted, `pool "small"`)
	blocks, _, err := a.ListBlocks(ctx, BlockFilter{Node: "n1"}, "", 100)
	if err != nil || len(blocks) != 2 {
		t.Fatalf("ListBlocks = %v, %v; want the 2 blocks", blocks, err)
	}
	n, err := a.GetNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(n.GetStatus().GetRouterIps()) != 1 || n.GetStatus().GetUsage()[0].GetUsage().GetAllocated() != 13 {
		t.Errorf("node status = %v", n.GetStatus())
	}
	_, err = a.ReleaseBlock(ctx, blocks[0].GetCidr(), "", "")
	wantErr(t, err, ErrPrecondition, "")
}

func TestDualStackAllOrNothing(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, &ipamv1alpha1.Pool{
		Name: "ds", Default: true,
		Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.30.0.0/24"}},
		// One /126 block: 4 addresses minus the network address and the
		// router IP leave two for pods.
		Ipv6: &ipamv1alpha1.PoolFamily{Cidrs: []string{"fd00:30::/126"}, BlockPrefixLength: 126},
	})
	mustNode(t, a, "n1")
	for i := range 2 {
		alloc := mustAlloc(t, a, allocReq("n1", fmt.Sprintf("c%d", i)))
		if len(alloc.GetAddresses()) != 2 || alloc.GetAddresses()[0].GetFamily() != commonv1alpha1.IPFamily_IP_FAMILY_IPV4 {
			t.Fatalf("allocation = %v, want IPv4 then IPv6", alloc.GetAddresses())
		}
	}
	_, err := a.Allocate(ctx, allocReq("n1", "third"))
	wantErr(t, err, ErrExhausted, "")
	p, err := a.GetPool(ctx, "ds")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.GetStatus().GetUsage()[0].GetAllocated(); got != 2 {
		t.Errorf("IPv4 allocated = %d after a failed dual-stack allocation, want 2 (nothing leaked)", got)
	}
	// Asking for IPv4 only still works.
	req := allocReq("n1", "v4only")
	req.Families = []commonv1alpha1.IPFamily{commonv1alpha1.IPFamily_IP_FAMILY_IPV4}
	if alloc := mustAlloc(t, a, req); len(alloc.GetAddresses()) != 1 {
		t.Errorf("v4-only allocation = %v", alloc.GetAddresses())
	}
}

func TestRequestedIPs(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	p := v4Pool("default", true, 26, "10.40.0.0/24")
	p.Ipv4.ReservedRanges = []*commonv1alpha1.AddressRange{{Start: "10.40.0.200", End: "10.40.0.210"}}
	mustPool(t, a, p)
	mustNode(t, a, "n1")
	mustNode(t, a, "n2")
	req := allocReq("n1", "c1")
	req.RequestedIps = []string{"10.40.0.77"}
	if got := mustAlloc(t, a, req).GetAddresses()[0].GetIp(); got != "10.40.0.77" {
		t.Fatalf("got %s, want the requested 10.40.0.77", got)
	}
	tests := []struct {
		name, node, ip string
		err            error
		contains       string
	}{
		{"taken", "n1", "10.40.0.77", ErrExists, "allocated or held"},
		{"outside every pool", "n1", "10.99.0.1", ErrPrecondition, "in no pool"},
		{"reserved range", "n1", "10.40.0.205", ErrPrecondition, "reserved"},
		{"network address", "n1", "10.40.0.0", ErrPrecondition, "reserved"},
		{"another node's block", "n2", "10.40.0.78", ErrPrecondition, "belongs to node"},
		{"malformed", "n1", "10.40.0.300", ErrInvalid, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := allocReq(tt.node, "x-"+tt.name)
			req.RequestedIps = []string{tt.ip}
			_, err := a.Allocate(ctx, req)
			wantErr(t, err, tt.err, tt.contains)
		})
	}
}

func TestPoolSelection(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	mustPool(t, a, v4Pool("default", true, 0, "10.50.0.0/16"))
	mustPool(t, a, v4Pool("blue", false, 0, "10.51.0.0/16"))
	low := v4Pool("web-low", false, 0, "10.52.0.0/16")
	low.PodSelector = &commonv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	mustPool(t, a, low)
	high := v4Pool("web-high", false, 0, "10.53.0.0/16")
	high.PodSelector = &commonv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	high.Priority = 10
	mustPool(t, a, high)
	mustNode(t, a, "n1")
	tests := []struct {
		name string
		mod  func(*ipamv1alpha1.AllocateIPRequest)
		want string
		err  error
	}{
		{"default", func(*ipamv1alpha1.AllocateIPRequest) {}, "default", nil},
		{"requested pool", func(r *ipamv1alpha1.AllocateIPRequest) { r.RequestedPools = []string{"blue"} }, "blue", nil},
		{"unknown requested pool", func(r *ipamv1alpha1.AllocateIPRequest) { r.RequestedPools = []string{"nope"} }, "", ErrNotFound},
		{"namespace annotation", func(r *ipamv1alpha1.AllocateIPRequest) {
			r.Pod = &ipamv1alpha1.PodInfo{NamespaceAnnotations: map[string]string{PoolAnnotation: "blue"}}
		}, "blue", nil},
		{"selector by priority", func(r *ipamv1alpha1.AllocateIPRequest) {
			r.Pod = &ipamv1alpha1.PodInfo{Labels: map[string]string{"app": "web"}}
		}, "web-high", nil},
		{"request beats selector", func(r *ipamv1alpha1.AllocateIPRequest) {
			r.Pod = &ipamv1alpha1.PodInfo{Labels: map[string]string{"app": "web"}}
			r.RequestedPools = []string{"blue"}
		}, "blue", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := allocReq("n1", fmt.Sprintf("sel-%d", i))
			tt.mod(req)
			alloc, err := a.Allocate(t.Context(), req)
			if tt.err != nil {
				wantErr(t, err, tt.err, "")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := alloc.GetAddresses()[0].GetPool(); got != tt.want {
				t.Errorf("pool = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestGarbageCollect(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, v4Pool("default", true, 0, "10.60.0.0/16"))
	mustNode(t, a, "n1")
	mustNode(t, a, "n2")
	for _, c := range []string{"live", "dead1", "dead2"} {
		mustAlloc(t, a, allocReq("n1", c))
	}
	mustAlloc(t, a, allocReq("n2", "other-node"))
	zero := time.Duration(0)
	dry, err := a.GarbageCollect(ctx, "n1", []Handle{{"live", "eth0"}}, &zero, true)
	if err != nil || len(dry) != 2 {
		t.Fatalf("dry run = %v, %v; want 2", dry, err)
	}
	// The default minimum age protects fresh allocations.
	if got, err := a.GarbageCollect(ctx, "n1", []Handle{{"live", "eth0"}}, nil, false); err != nil || len(got) != 0 {
		t.Fatalf("GC with min age = %v, %v; want nothing released", got, err)
	}
	got, err := a.GarbageCollect(ctx, "n1", []Handle{{"live", "eth0"}}, &zero, false)
	if err != nil || len(got) != 2 {
		t.Fatalf("GC = %v, %v; want dead1 and dead2", got, err)
	}
	for _, c := range []string{"dead1", "dead2"} {
		_, err := a.GetAllocation(ctx, Handle{c, "eth0"})
		wantErr(t, err, ErrNotFound, "")
	}
	for _, c := range []string{"live", "other-node"} {
		if _, err := a.GetAllocation(ctx, Handle{c, "eth0"}); err != nil {
			t.Errorf("%s collected: %v", c, err)
		}
	}
	_, err = a.GarbageCollect(ctx, "ghost", nil, nil, false)
	wantErr(t, err, ErrNotFound, "")
}

func TestDeleteNodeReleasesEverything(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, v4Pool("default", true, 28, "10.70.0.0/24"))
	mustNode(t, a, "n1")
	for i := range 20 {
		mustAlloc(t, a, allocReq("n1", fmt.Sprintf("c%d", i)))
	}
	resp, err := a.DeleteNode(ctx, "n1", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetReleasedAllocations()) != 20 || len(resp.GetReleasedBlocks()) != 2 {
		t.Fatalf("released %d allocations and %v, want 20 and 2 blocks", len(resp.GetReleasedAllocations()), resp.GetReleasedBlocks())
	}
	p, err := a.GetPool(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if u := p.GetStatus().GetUsage()[0]; u.GetAllocated() != 0 || u.GetBlocksClaimed() != 0 {
		t.Errorf("pool usage after DeleteNode = %v, want empty", u)
	}
	if again, err := a.DeleteNode(ctx, "n1", ""); err != nil || len(again.GetReleasedAllocations()) != 0 {
		t.Errorf("repeat DeleteNode = %v, %v", again, err)
	}
}

func TestRestartSeesSameState(t *testing.T) {
	cli := newClient(t)
	root := testRoot(t)
	a := newAllocator(t, cli, root)
	mustPool(t, a, v4Pool("default", true, 0, "10.80.0.0/16"))
	mustNode(t, a, "n1")
	var want []*ipamv1alpha1.Allocation
	for i := range 10 {
		want = append(want, mustAlloc(t, a, allocReq("n1", fmt.Sprintf("c%02d", i))))
	}
	a.Close()
	b := newAllocator(t, cli, root)
	got, next, err := b.ListAllocations(t.Context(), AllocationFilter{Node: "n1"}, "", 100)
	if err != nil || next != "" {
		t.Fatalf("ListAllocations = %v, %q", err, next)
	}
	if len(got) != len(want) {
		t.Fatalf("after restart %d allocations, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].GetAddresses()[0].GetIp() != want[i].GetAddresses()[0].GetIp() || got[i].GetSequence() != want[i].GetSequence() {
			t.Errorf("allocation %d = %v, want %v", i, got[i], want[i])
		}
	}
	// A new allocation after restart does not reuse any address.
	fresh := mustAlloc(t, b, allocReq("n1", "after-restart"))
	for _, w := range want {
		if w.GetAddresses()[0].GetIp() == fresh.GetAddresses()[0].GetIp() {
			t.Fatalf("address %s handed out twice", fresh.GetAddresses()[0].GetIp())
		}
	}
}
