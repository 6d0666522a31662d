package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/axon-cni/axon/bpf/testpoll"
	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// Tests of the rules that keep one address from going to two owners across
// pools, nodes and replicas, and of refused requests leaving no trace.

func hostPool(name string, def bool, cidrs ...string) *ipamv1alpha1.Pool {
	return &ipamv1alpha1.Pool{Name: name, Default: def, Mode: ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE,
		Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: cidrs}}
}

func blocksOf(t *testing.T, a *Allocator, node string) []*ipamv1alpha1.Block {
	t.Helper()
	bl, _, err := a.ListBlocks(t.Context(), BlockFilter{Node: node}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return bl
}

// A sticky pod of a host-scope pool re-created on another node must get an
// address of that node's pod CIDR, never its old node's address.
func TestHostScopeStickyStaysInPodCIDR(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, hostPool("host", true, "10.244.0.0/16"))
	mustNode(t, a, "n1", "10.244.1.0/24")
	mustNode(t, a, "n2", "10.244.2.0/24")
	first := mustAlloc(t, a, stickyReq("n1", "pod-a", "ns/web-0"))
	old := first.GetAddresses()[0].GetIp()
	if _, _, err := a.Release(ctx, Handle{"pod-a", "eth0"}, 0, false); err != nil {
		t.Fatal(err)
	}
	moved, err := a.AllocateIP(ctx, stickyReq("n2", "pod-b", "ns/web-0"))
	if err != nil {
		t.Fatal(err)
	}
	got := moved.GetAllocation().GetAddresses()[0].GetIp()
	if !netip.MustParsePrefix("10.244.2.0/24").Contains(netip.MustParseAddr(got)) || moved.GetStickyRestored() {
		t.Fatalf("re-created on n2: %s (restored %v), want a new address of n2's pod CIDR", got, moved.GetStickyRestored())
	}
	// The old address stays n1's to give: held until the hold is dropped,
	// never a second time while n2's pod has it.
	for i := range 300 {
		al, err := a.Allocate(ctx, allocReq("n1", fmt.Sprintf("x%d", i)))
		if err != nil {
			break
		}
		if ip := al.GetAddresses()[0].GetIp(); ip == got {
			t.Fatalf("%s handed out on n1 while n2's pod has it (old address %s)", got, old)
		}
	}
}

// Host-scope blocks come from node pod CIDRs: one that overlaps another
// node's block or a cluster-scope pool is refused, and so is a cluster pool
// over a claimed host-scope block.
func TestHostScopeOverlapsRefused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, a *Allocator)
		node  string
		pools []string // requested pools of the allocation on node
	}{
		{"pod CIDR inside another node's", func(t *testing.T, a *Allocator) {
			mustPool(t, a, hostPool("host", true, "10.244.0.0/16"))
			mustNode(t, a, "n1", "10.244.1.0/24")
			mustAlloc(t, a, allocReq("n1", "first"))
			mustNode(t, a, "n2", "10.244.1.0/25")
		}, "n2", nil},
		{"pod CIDR around another node's", func(t *testing.T, a *Allocator) {
			mustPool(t, a, hostPool("host", true, "10.244.0.0/16"))
			mustNode(t, a, "n1", "10.244.1.128/25")
			mustAlloc(t, a, allocReq("n1", "first"))
			mustNode(t, a, "n2", "10.244.1.0/24")
		}, "n2", nil},
		{"pod CIDR in a cluster-scope pool", func(t *testing.T, a *Allocator) {
			mustPool(t, a, v4Pool("default", true, 26, "10.0.0.0/16"))
			mustPool(t, a, hostPool("host", false)) // accepts any pod CIDR
			mustNode(t, a, "n1", "10.0.0.0/24")
		}, "n1", []string{"host"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(t, newClient(t), testRoot(t))
			tc.setup(t, a)
			before := blocksOf(t, a, tc.node)
			r := allocReq(tc.node, "second")
			r.RequestedPools = tc.pools
			_, err := a.Allocate(t.Context(), r)
			wantErr(t, err, ErrPrecondition, "overlaps")
			if after := blocksOf(t, a, tc.node); len(after) != len(before) {
				t.Errorf("blocks of %s: %d before, %d after the refused allocation", tc.node, len(before), len(after))
			}
		})
	}

	// A claim through another replica that this replica's caches do not
	// show yet (its watch lags): the overlapping claim is refused all the
	// same (before, the check read the caches and let it pass).
	t.Run("overlapping claim through another replica", func(t *testing.T) {
		cli, root := newClient(t), testRoot(t)
		a, b := newAllocator(t, cli, root), newAllocator(t, cli, root)
		mustPool(t, a, hostPool("host", true, "10.244.0.0/16"))
		mustNode(t, a, "n1", "10.244.1.0/24")
		mustNode(t, a, "n2", "10.244.1.0/25")
		if _, err := b.ClaimBlock(t.Context(), "n1", "", pool.IPv4, ""); err != nil {
			t.Fatal(err)
		}
		// Let a's watch deliver n1's block, then take it out again: a lag.
		bkey := a.keys.block(netip.MustParsePrefix("10.244.1.0/24"))
		testpoll.Until(t, 5*time.Second, func() error {
			if _, ok := a.blocks.get(bkey); !ok {
				return fmt.Errorf("block %s not in the watch cache", bkey)
			}
			return nil
		})
		a.blocks.mu.Lock()
		a.blocks.deleteLocked(bkey)
		a.blocks.mu.Unlock()
		_, err := a.Allocate(t.Context(), allocReq("n2", "second"))
		wantErr(t, err, ErrPrecondition, "overlaps block 10.244.1.0/24")
	})

	t.Run("cluster pool over a host-scope block", func(t *testing.T) {
		a := newAllocator(t, newClient(t), testRoot(t))
		mustPool(t, a, hostPool("host", true))
		mustNode(t, a, "n1", "10.9.1.0/24")
		mustAlloc(t, a, allocReq("n1", "first"))
		_, err := a.CreatePool(t.Context(), v4Pool("wide", false, 26, "10.9.0.0/16"))
		wantErr(t, err, ErrPrecondition, "overlaps block 10.9.1.0/24")
		mustPool(t, a, v4Pool("narrow", false, 26, "10.9.2.0/24"))
		_, err = a.UpdatePool(t.Context(), v4Pool("narrow", false, 26, "10.9.2.0/24", "10.9.1.0/25"), "", false)
		wantErr(t, err, ErrPrecondition, "overlaps block 10.9.1.0/24")
	})
}

// requested_pools binds: a family none of them serves is an error when the
// family was asked for, and left out otherwise, never taken from another pool.
func TestRequestedPoolsBind(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	mustPool(t, a, &ipamv1alpha1.Pool{Name: "default", Default: true,
		Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.30.0.0/16"}},
		Ipv6: &ipamv1alpha1.PoolFamily{Cidrs: []string{"fd00:30::/64"}}})
	mustPool(t, a, v4Pool("blue", false, 0, "10.31.0.0/16"))
	mustNode(t, a, "n1")

	r := allocReq("n1", "v6")
	r.RequestedPools = []string{"blue"}
	r.Families = []commonv1alpha1.IPFamily{pool.IPv6}
	_, err := a.Allocate(t.Context(), r)
	wantErr(t, err, ErrPrecondition, "requested_pools")

	r = allocReq("n1", "implicit")
	r.RequestedPools = []string{"blue"}
	got := mustAlloc(t, a, r)
	if len(got.GetAddresses()) != 1 || got.GetAddresses()[0].GetPool() != "blue" {
		t.Errorf("addresses %v, want one IPv4 address of blue", got.GetAddresses())
	}
}

// A reservation pins its CIDR to its pool: removing the CIDR is refused, so
// no other pool can take the address over.
func TestPoolUpdateKeepsReservedCIDRs(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	ctx := t.Context()
	mustPool(t, a, v4Pool("a", true, 26, "10.50.0.0/24", "10.51.0.0/24"))
	if _, err := a.ReserveIP(ctx, "10.51.0.3", "ns/db-0", nil); err != nil {
		t.Fatal(err)
	}
	_, err := a.UpdatePool(ctx, v4Pool("a", true, 26, "10.50.0.0/24"), "", false)
	wantErr(t, err, ErrPrecondition, "10.51.0.3")
	if _, err := a.UnreserveIP(ctx, "10.51.0.3", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdatePool(ctx, v4Pool("a", true, 26, "10.50.0.0/24"), "", false); err != nil {
		t.Fatalf("remove the CIDR once unreserved: %v", err)
	}
}

// A requested IP that is refused claims no block and takes no router IP.
func TestRefusedRequestedIPChangesNothing(t *testing.T) {
	a := newAllocator(t, newClient(t), testRoot(t))
	p := v4Pool("default", true, 26, "10.40.0.0/24")
	p.Ipv4.ReservedRanges = []*commonv1alpha1.AddressRange{{Cidr: "10.40.0.192/26"}}
	mustPool(t, a, p)
	mustPool(t, a, hostPool("host", false, "10.45.0.0/16"))
	mustNode(t, a, "n1", "10.45.1.0/24")
	for _, tc := range []struct {
		ip    string
		pools []string
	}{
		{"10.40.0.0", nil},              // network address of the pool
		{"10.40.0.255", nil},            // broadcast
		{"10.40.0.200", nil},            // reserved range
		{"10.40.1.7", nil},              // in no pool
		{"10.45.2.7", []string{"host"}}, // outside the node's pod CIDR
	} {
		r := allocReq("n1", "x"+tc.ip)
		r.RequestedIps = []string{tc.ip}
		r.RequestedPools = tc.pools
		if _, err := a.Allocate(t.Context(), r); err == nil {
			t.Errorf("requested %s: allocated, want an error", tc.ip)
		}
	}
	if bl := blocksOf(t, a, "n1"); len(bl) != 0 {
		t.Errorf("refused requests claimed blocks: %v", bl)
	}
}

// Addresses released through another replica are handed out again: a
// block that looks full is re-read when its view is old, and always before
// the pool is called exhausted.
func TestReleasesThroughAnotherReplica(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxAge bool // re-read views at once (UsageMaxAge 0) instead of the default
	}{
		{"pool exhausted", false},
		{"old view", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, root := newClient(t), testRoot(t)
			var mutate []func(*Config)
			if tc.maxAge {
				mutate = append(mutate, func(c *Config) { c.UsageMaxAge = 0 })
			}
			ra := newAllocator(t, cli, root, mutate...)
			rb := newAllocator(t, cli, root)
			ctx := t.Context()
			cidr := "10.20.0.0/28" // exactly one /28 block: full means exhausted
			if tc.maxAge {
				cidr = "10.20.0.0/24" // room for more blocks
			}
			mustPool(t, ra, v4Pool("small", true, 28, cidr))
			mustNode(t, ra, "n1")
			// Fill n1's one block.
			n := 0
			for {
				if _, err := ra.Allocate(ctx, allocReq("n1", fmt.Sprintf("c%d", n))); err != nil {
					if tc.maxAge {
						t.Fatal(err)
					}
					break // the pool is exhausted
				}
				n++
				if bl := blocksOf(t, ra, "n1"); tc.maxAge && bl[0].GetAllocated() == bl[0].GetCapacity() {
					break
				}
			}
			for i := range n {
				if _, _, err := rb.Release(ctx, Handle{fmt.Sprintf("c%d", i), "eth0"}, 0, false); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := ra.Allocate(ctx, allocReq("n1", "again")); err != nil {
				t.Fatalf("replica A after B released %d addresses of n1: %v", n, err)
			}
			if bl := blocksOf(t, ra, "n1"); len(bl) != 1 {
				t.Errorf("n1 has %d blocks, want its one block reused", len(bl))
			}
		})
	}
}

func TestUsableIn(t *testing.T) {
	outer := netip.MustParsePrefix("10.41.0.0/24")
	tests := []struct {
		name     string
		reserved [][2]string
		block    string
		want     uint64
	}{
		{"whole pool, no reservations", nil, "10.41.0.0/24", 254},
		{"reservations covering network and broadcast", [][2]string{{"10.41.0.0", "10.41.0.9"}, {"10.41.0.192", "10.41.0.255"}}, "10.41.0.0/24", 182},
		{"overlapping reservations", [][2]string{{"10.41.0.10", "10.41.0.20"}, {"10.41.0.15", "10.41.0.30"}}, "10.41.0.0/24", 254 - 21},
		{"adjacent reservations", [][2]string{{"10.41.0.10", "10.41.0.19"}, {"10.41.0.20", "10.41.0.29"}}, "10.41.0.0/24", 254 - 20},
		{"block fully reserved", [][2]string{{"10.41.0.192", "10.41.0.255"}}, "10.41.0.192/26", 0},
		{"first block", [][2]string{{"10.41.0.1", "10.41.0.1"}}, "10.41.0.0/26", 62},
		{"middle block untouched", [][2]string{{"10.41.0.1", "10.41.0.1"}}, "10.41.0.64/26", 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := v4Pool("p", false, 26, outer.String())
			for _, r := range tc.reserved {
				p.Ipv4.ReservedRanges = append(p.Ipv4.ReservedRanges, &commonv1alpha1.AddressRange{Start: r[0], End: r[1]})
			}
			parsed, err := pool.Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := usableIn(parsed.Family(pool.IPv4), outer, netip.MustParsePrefix(tc.block)); got != tc.want {
				t.Errorf("usableIn = %d, want %d", got, tc.want)
			}
		})
	}
}

// A block claim that finds the node's router key taken without seeing the
// block that carries it neither retries the same transaction until it gives
// up nor hands out an address without a gateway: it re-reads the blocks and
// uses the router of another replica's block, or takes a leftover key over.
func TestClaimBlockFindsRouterTaken(t *testing.T) {
	t.Run("leftover router key", func(t *testing.T) {
		cli := newClient(t)
		a := newAllocator(t, cli, testRoot(t))
		mustPool(t, a, v4Pool("default", true, 26, "10.60.0.0/16"))
		mustNode(t, a, "n1")
		if _, err := cli.Put(t.Context(), a.keys.router("n1", pool.IPv4), "10.60.255.1"); err != nil {
			t.Fatal(err)
		}
		al := mustAlloc(t, a, allocReq("n1", "c1"))
		bl := blocksOf(t, a, "n1")
		if len(bl) != 1 || bl[0].GetRouterIp() == "" || al.GetAddresses()[0].GetGateway() != bl[0].GetRouterIp() {
			t.Errorf("blocks %v, gateway %q: want the block to carry the router IP and be the gateway", bl, al.GetAddresses()[0].GetGateway())
		}
	})
	t.Run("another replica's block not seen yet", func(t *testing.T) {
		cli, root := newClient(t), testRoot(t)
		a := newAllocator(t, cli, root)
		mustPool(t, a, v4Pool("default", true, 26, "10.61.0.0/16"))
		mustNode(t, a, "n1")
		// The other replica's first block of n1, written behind a's back
		// (its watch may deliver it any time; the outcome must not depend
		// on when).
		b := newAllocator(t, cli, root)
		first, err := b.ClaimBlock(t.Context(), "n1", "", pool.IPv4, "")
		if err != nil || len(first) == 0 {
			t.Fatalf("claim on the other replica: %v, %v", first, err)
		}
		al := mustAlloc(t, a, allocReq("n1", "c1"))
		if gw := al.GetAddresses()[0].GetGateway(); gw != first[0].GetRouterIp() || gw == "" {
			t.Errorf("gateway %q, want the other replica's router IP %q", gw, first[0].GetRouterIp())
		}
	})
}

// Two replicas claim overlapping pod CIDRs of two nodes at once: one claim
// wins, the other is refused, never both.
func TestHostScopeRacingOverlapsOneWins(t *testing.T) {
	cli := newClient(t)
	for round := range 10 {
		root := testRoot(t) + fmt.Sprintf("r%d/", round)
		a, b := newAllocator(t, cli, root), newAllocator(t, cli, root)
		mustPool(t, a, hostPool("host", true, "10.244.0.0/16"))
		mustNode(t, a, "n1", "10.244.1.0/24")
		mustNode(t, a, "n2", "10.244.1.0/25")
		testpoll.Until(t, 5*time.Second, func() error { _, err := b.lookupNode(t.Context(), "n2"); return err })
		errs := make(chan error, 2)
		go func() { _, err := a.ClaimBlock(t.Context(), "n1", "", pool.IPv4, ""); errs <- err }()
		go func() { _, err := b.ClaimBlock(t.Context(), "n2", "", pool.IPv4, ""); errs <- err }()
		first, second := <-errs, <-errs
		if (first == nil) == (second == nil) {
			t.Fatalf("round %d: overlapping claims returned %v and %v, want exactly one refused", round, first, second)
		}
		if err := errors.Join(first, second); !errors.Is(err, ErrPrecondition) {
			t.Errorf("round %d: refused with %v, want ErrPrecondition", round, err)
		}
	}
}

// Claims and releases of cluster-scope blocks, a busy cluster's churn, do
// not make host-scope claims run out of attempts.
func TestHostScopeClaimsUnderClusterChurn(t *testing.T) {
	cli, root := newClient(t), testRoot(t)
	a := newAllocator(t, cli, root, func(c *Config) { c.MaxAttempts = 4 })
	churner := newAllocator(t, cli, root)
	mustPool(t, a, v4Pool("busy", false, 28, "10.50.0.0/16"))
	mustPool(t, a, hostPool("host", true, "10.244.0.0/16"))
	mustNode(t, a, "churn")
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				bl, err := churner.ClaimBlock(ctx, "churn", "busy", pool.IPv4, fmt.Sprintf("w%d-%d", w, i))
				if err != nil {
					continue
				}
				_, _ = churner.ReleaseBlock(ctx, bl[0].GetCidr(), "churn", "")
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	for i := range 30 {
		node := fmt.Sprintf("h%d", i)
		mustNode(t, a, node, fmt.Sprintf("10.244.%d.0/24", i))
		if _, err := a.ClaimBlock(t.Context(), node, "", pool.IPv4, ""); err != nil {
			t.Fatalf("host-scope claim of %s during cluster churn: %v", node, err)
		}
	}
}
