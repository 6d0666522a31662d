package allocator

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

func TestEmptyBlocksGoBackAfterGrace(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	a := newAllocator(t, newClient(t), testRoot(t), func(c *Config) {
		c.Now = clock.Now
		c.SweepInterval = 0 // the test sweeps by hand
	})
	ctx := t.Context()
	mustPool(t, a, v4Pool("default", true, 29, "10.120.0.0/24"))
	mustNode(t, a, "n1")
	// /29 blocks: 8 addresses, the first block also holds the router IP.
	var allocs []string
	for i := range 20 {
		c := fmt.Sprintf("c%d", i)
		mustAlloc(t, a, allocReq("n1", c))
		allocs = append(allocs, c)
	}
	before, _, err := a.ListBlocks(ctx, BlockFilter{Node: "n1"}, "", 100)
	if err != nil || len(before) < 3 {
		t.Fatalf("blocks = %v, %v; want at least 3", before, err)
	}
	for _, c := range allocs {
		if _, _, err := a.Release(ctx, Handle{c, "eth0"}, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.releaseEmptyBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := a.ListBlocks(ctx, BlockFilter{Node: "n1"}, "", 100); len(got) != len(before) {
		t.Fatalf("blocks released before the grace period: %d left of %d", len(got), len(before))
	}
	clock.advance(time.Hour)
	if err := a.releaseEmptyBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	after, _, err := a.ListBlocks(ctx, BlockFilter{Node: "n1"}, "", 100)
	if err != nil || len(after) != 1 || after[0].GetRouterIp() == "" {
		t.Fatalf("after the grace period = %v, %v; want only the router's block", after, err)
	}
}

func TestHostScope(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, &ipamv1alpha1.Pool{
		Name: "host", Default: true, Mode: ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE,
		Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.244.0.0/16"}},
	})
	mustNode(t, a, "n1", "10.244.1.0/29")
	mustNode(t, a, "n2", "10.244.1.0/29") // overlapping: whoever claims first owns it
	mustNode(t, a, "outside", "10.99.0.0/24")

	blocks, err := a.ClaimBlock(ctx, "n1", "", 0, "")
	if err != nil || len(blocks) != 1 || blocks[0].GetCidr() != "10.244.1.0/29" || blocks[0].GetRouterIp() != "10.244.1.1" {
		t.Fatalf("ClaimBlock = %v, %v; want the pod CIDR with router 10.244.1.1", blocks, err)
	}
	_, err = a.ClaimBlock(ctx, "n1", "host", 0, "more")
	wantErr(t, err, ErrPrecondition, "claim_id")
	// 8 addresses minus network, broadcast and router: 5 pods.
	for i := range 5 {
		ip := mustAlloc(t, a, allocReq("n1", fmt.Sprintf("c%d", i))).GetAddresses()[0].GetIp()
		if !netip.MustParsePrefix("10.244.1.0/29").Contains(netip.MustParseAddr(ip)) {
			t.Fatalf("address %s outside the node's pod CIDR", ip)
		}
	}
	_, err = a.Allocate(ctx, allocReq("n1", "full"))
	wantErr(t, err, ErrExhausted, "pod CIDR")
	_, err = a.Allocate(ctx, allocReq("n2", "x"))
	wantErr(t, err, ErrPrecondition, "belongs to node")
	_, err = a.Allocate(ctx, allocReq("outside", "y"))
	wantErr(t, err, ErrPrecondition, "no ipv4 pod CIDR")
	_, err = a.ReleaseBlock(ctx, "10.244.1.0/29", "", "")
	wantErr(t, err, ErrPrecondition, "")
	_, err = a.UpdateNode(ctx, &ipamv1alpha1.Node{Name: "n1", Addresses: []string{"192.168.0.1"}}, "", false)
	wantErr(t, err, ErrPrecondition, "in use")
}
