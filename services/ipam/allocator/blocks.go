package allocator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// nodeRef is a registered node as read, with the revision writes compare.
type nodeRef struct {
	node *ipamv1alpha1.Node
	rev  int64
}

// poolRef is a pool as read, with the revision writes compare.
type poolRef struct {
	*storedPool
	rev int64
}

// lookupNode returns a registered node, re-reading etcd on a cache miss.
func (a *Allocator) lookupNode(ctx context.Context, name string) (nodeRef, error) {
	if name == "" {
		return nodeRef{}, fmt.Errorf("node name is required: %w", ErrInvalid)
	}
	key := a.keys.node(name)
	if e, ok := a.nodes.get(key); ok {
		return nodeRef{e.val, e.modRev}, nil
	}
	resp, err := a.store.Get(ctx, key)
	if err != nil {
		return nodeRef{}, fmt.Errorf("read node %q: %w: %w", name, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nodeRef{}, fmt.Errorf("node %q is not registered: %w", name, ErrNotFound)
	}
	n, err := decodeNode(key, resp.Kvs[0].Value)
	if err != nil {
		return nodeRef{}, err
	}
	a.nodes.put(key, n, resp.Kvs[0].ModRevision)
	return nodeRef{n, resp.Kvs[0].ModRevision}, nil
}

// lookupPool returns a pool, re-reading etcd on a cache miss.
func (a *Allocator) lookupPool(ctx context.Context, name string) (poolRef, error) {
	key := a.keys.pool(name)
	if e, ok := a.pools.get(key); ok {
		return poolRef{e.val, e.modRev}, nil
	}
	resp, err := a.store.Get(ctx, key)
	if err != nil {
		return poolRef{}, fmt.Errorf("read pool %q: %w: %w", name, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return poolRef{}, fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	sp, err := decodePool(key, resp.Kvs[0].Value)
	if err != nil {
		return poolRef{}, err
	}
	a.pools.put(key, sp, resp.Kvs[0].ModRevision)
	return poolRef{sp, resp.Kvs[0].ModRevision}, nil
}

// defaultPool returns the default pool of family f, re-listing on a miss.
func (a *Allocator) defaultPool(ctx context.Context, f pool.Family) (poolRef, error) {
	find := func() (poolRef, bool) {
		for _, e := range a.pools.snapshot(func(sp *storedPool) bool { return sp.parsed.Default && sp.parsed.Family(f) != nil }) {
			return poolRef{e.val, e.modRev}, true
		}
		return poolRef{}, false
	}
	if p, ok := find(); ok {
		return p, nil
	}
	if err := a.pools.refresh(ctx); err != nil {
		return poolRef{}, err
	}
	if p, ok := find(); ok {
		return p, nil
	}
	return poolRef{}, fmt.Errorf("no default %s pool: %w", familyKey(f), ErrNotFound)
}

// blockRef is a claimed block as read, with the revision writes compare.
type blockRef struct {
	*blockRecord
	rev int64
}

// nodeBlocks returns the node's blocks of a pool and family, oldest first.
func (a *Allocator) nodeBlocks(node, poolName string, f pool.Family) []blockRef {
	var out []blockRef
	for _, e := range a.blocks.group(node) {
		if b := e.val; b.Pool == poolName && pool.FamilyOf(b.CIDR.Addr()) == f {
			out = append(out, blockRef{e.val, e.modRev})
		}
	}
	slices.SortFunc(out, func(x, y blockRef) int {
		if c := x.ClaimTime.Compare(y.ClaimTime); c != 0 {
			return c
		}
		return x.CIDR.Addr().Compare(y.CIDR.Addr())
	})
	return out
}

// hasRouter reports whether node already has a router IP of family f.
func (a *Allocator) hasRouter(node string, f pool.Family) bool {
	return a.routerIP(node, f) != ""
}

// takesRouter reports whether a first block of p for f should carry the
// node's router IP: p is the family's default pool, or there is none.
func (a *Allocator) takesRouter(p *pool.Pool, f pool.Family) bool {
	if p.Default {
		return true
	}
	return len(a.pools.snapshot(func(sp *storedPool) bool { return sp.parsed.Default && sp.parsed.Family(f) != nil })) == 0
}

// claimOpts narrows a block claim.
type claimOpts struct {
	// want is a specific block to claim (a requested IP's block); zero means
	// any free block.
	want netip.Prefix
	// claimID makes the claim idempotent under that id.
	claimID string
}

// claimKey names the blocks of one node, pool and family, which this
// replica claims one at a time.
type claimKey struct {
	node, pool string
	fam        pool.Family
}

// claimFlight is one allocation's claim of a block for a claimKey; the
// others wait for done and then read err.
type claimFlight struct {
	done chan struct{}
	err  error // the claim's error, set before done closes
}

// claimTurn returns the claim in flight for k and whether it is the
// caller's: if mine, the caller claims and ends it with claimDone;
// otherwise it waits for the flight's done.
func (a *Allocator) claimTurn(k claimKey) (_ *claimFlight, mine bool) {
	a.claimMu.Lock()
	defer a.claimMu.Unlock()
	if f, busy := a.claiming[k]; busy {
		return f, false
	}
	f := &claimFlight{done: make(chan struct{})}
	a.claiming[k] = f
	return f, true
}

// claimDone ends the caller's claim for k with its error.
func (a *Allocator) claimDone(k claimKey, err error) {
	a.claimMu.Lock()
	defer a.claimMu.Unlock()
	f := a.claiming[k]
	f.err = err
	close(f.done)
	delete(a.claiming, k)
}

// claimBlock claims a block of p for family f on node n, in one
// transaction that also takes the node's router IP when it has none.
func (a *Allocator) claimBlock(ctx context.Context, n nodeRef, p poolRef, f pool.Family, o claimOpts) (blockRef, error) {
	fs := p.parsed.Family(f)
	if fs == nil {
		return blockRef{}, fmt.Errorf("pool %q serves no %s addresses: %w", p.parsed.Name, familyKey(f), ErrPrecondition)
	}
	tried := map[netip.Prefix]bool{}
	// staleRouter is the revision of a router key a failed attempt found
	// that no block carries (a leftover): the next attempt takes it over.
	var staleRouter int64
	for range a.cfg.MaxAttempts {
		var cand, outer netip.Prefix
		var guard []clientv3.Cmp
		var guardOps []clientv3.Op
		switch {
		case p.parsed.Mode == pool.HostScope:
			pc, ok := hostPodCIDR(n.node, p.parsed, f)
			if !ok {
				return blockRef{}, fmt.Errorf("node %q has no %s pod CIDR accepted by host-scope pool %q: %w", n.node.GetName(), familyKey(f), p.parsed.Name, ErrPrecondition)
			}
			rev, err := a.checkHostBlock(ctx, n.node.GetName(), f, pc)
			if err != nil {
				return blockRef{}, err
			}
			// The check holds at rev as long as no pool changed and no
			// host-scope block was claimed since: cluster-scope blocks lie
			// in their pools' CIDRs, which the check kept apart from pc.
			// So the claims of cluster-scope blocks, the churn of a busy
			// cluster, do not make this claim retry.
			guard = []clientv3.Cmp{
				clientv3.Compare(clientv3.ModRevision(a.keys.pools()), "<", rev+1).WithPrefix(),
				clientv3.Compare(clientv3.ModRevision(a.keys.hostClaim()), "<", rev+1),
			}
			guardOps = []clientv3.Op{clientv3.OpPut(a.keys.hostClaim(), cidr.Key(pc))}
			cand, outer = pc, pc
		case o.want.IsValid():
			cand = o.want
			var ok bool
			if outer, ok = fs.CIDRContaining(cand.Addr()); !ok || !cidr.Contains(outer, cand) {
				return blockRef{}, fmt.Errorf("block %s is outside the CIDRs of pool %q: %w", cand, p.parsed.Name, ErrPrecondition)
			}
		default:
			var ok bool
			cand, outer, ok = a.freeBlock(fs, tried)
			if !ok {
				u, _ := a.withPoolStatus(ctx, p.spec)
				return blockRef{}, fmt.Errorf("pool %q has no free %s block (%s): %w", p.parsed.Name, familyKey(f), describeUsage(u, f), ErrExhausted)
			}
		}
		tried[cand] = true
		rec := &blockRecord{CIDR: cand, Pool: p.parsed.Name, Node: n.node.GetName(), ClaimTime: a.cfg.Now().UTC(), Outer: outer}
		bkey := a.keys.block(cand)
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(bkey), "=", 0),
			clientv3.Compare(clientv3.ModRevision(a.keys.node(n.node.GetName())), "=", n.rev),
			clientv3.Compare(clientv3.ModRevision(a.keys.pool(p.parsed.Name)), "=", p.rev),
		}
		cmps = append(cmps, guard...)
		ops := guardOps
		rkey := a.keys.router(n.node.GetName(), f)
		var routerAddr netip.Addr
		if !a.hasRouter(n.node.GetName(), f) && a.takesRouter(p.parsed, f) {
			if addr, ok := firstUsable(fs, rec); ok {
				routerAddr = addr
				rec.RouterIP = addr.String()
				if staleRouter != 0 {
					cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(rkey), "=", staleRouter))
				} else {
					cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(rkey), "=", 0))
				}
				ops = append(ops,
					clientv3.OpPut(rkey, addr.String()),
					clientv3.OpPut(a.keys.alloc(rec.Pool, cand, addr), mustJSON(addrRecord{Router: rec.Node})))
			}
		}
		ckey := ""
		if o.claimID != "" {
			ckey = a.keys.claim(n.node.GetName(), o.claimID) + "/" + familyKey(f)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ckey), "=", 0))
			ops = append(ops, clientv3.OpPut(ckey, cidr.Key(cand)))
		}
		ops = append(ops, clientv3.OpPut(bkey, mustJSON(rec)))
		var elseOps []clientv3.Op
		elseOps = append(elseOps, clientv3.OpGet(bkey), clientv3.OpGet(rkey))
		if ckey != "" {
			elseOps = append(elseOps, clientv3.OpGet(ckey))
		}
		resp, err := a.store.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
		if err != nil {
			return blockRef{}, fmt.Errorf("claim block %s for node %q: %w: %w", cand, rec.Node, ErrUnavailable, err)
		}
		if resp.Succeeded {
			a.blocks.put(bkey, rec, resp.Header.Revision)
			// A view of the CIDR from an earlier claim, released since
			// (perhaps through another replica), is stale.
			a.invalidate(cand)
			if routerAddr.IsValid() {
				if u, err := a.usageOf(ctx, rec); err == nil {
					u.settle(routerAddr, true)
				}
			}
			return blockRef{rec, resp.Header.Revision}, nil
		}
		// Learn why: the block may be someone's now, the claim id used, or
		// the node or pool changed.
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if b, err := decodeBlock(bkey, kvs[0].Value); err == nil {
				a.blocks.put(bkey, b, kvs[0].ModRevision)
				if b.Node == rec.Node && b.Pool == rec.Pool && (p.parsed.Mode == pool.HostScope || o.want.IsValid()) {
					return blockRef{b, kvs[0].ModRevision}, nil
				}
				if p.parsed.Mode == pool.HostScope || o.want.IsValid() {
					return blockRef{}, fmt.Errorf("block %s belongs to node %q (pool %q): %w", cand, b.Node, b.Pool, ErrPrecondition)
				}
			}
		}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; routerAddr.IsValid() {
			staleRouter = 0
			if len(kvs) > 0 {
				// The node has a router IP this replica's block cache does
				// not show: another replica's claim the watch has not
				// delivered yet, or a leftover no block carries. Re-list the
				// blocks (rare) to tell which.
				if err := a.blocks.refresh(ctx); err != nil {
					return blockRef{}, err
				}
				if !a.hasRouter(n.node.GetName(), f) {
					staleRouter = kvs[0].ModRevision
				}
			}
		}
		if ckey != "" {
			if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) > 0 {
				prev, err := cidr.ParseKey(string(kvs[0].Value))
				if err == nil {
					if e, ok := a.blocks.get(a.keys.block(prev)); ok {
						return blockRef{e.val, e.modRev}, nil
					}
				}
			}
		}
		if n, err = a.refreshNode(ctx, n.node.GetName()); err != nil {
			return blockRef{}, err
		}
		if p, err = a.refreshPool(ctx, p.parsed.Name); err != nil {
			return blockRef{}, err
		}
	}
	return blockRef{}, fmt.Errorf("claim a %s block of pool %q: contention: %w", familyKey(f), p.parsed.Name, ErrConflict)
}

// checkHostBlock refuses a node's pod CIDR as a host-scope block when it
// overlaps another claimed block or a cluster-scope pool's CIDR: the same
// address would be handed out twice. Pod CIDRs come from whoever registers
// nodes (the Kubernetes node IPAM controller keeps them apart); this catches
// a misconfiguration. It reads pools and blocks afresh, not from the caches,
// and returns the revision the check holds at, which the claim compares: a
// claim on another replica in the same instant cannot slip past it. A node
// claims its host-scope block once per family, so the read is rare.
func (a *Allocator) checkHostBlock(ctx context.Context, node string, f pool.Family, pc netip.Prefix) (int64, error) {
	pools, _, rev, err := a.listPools(ctx)
	if err != nil {
		return 0, err
	}
	for _, name := range sortedKeys(pools) {
		sp := pools[name].parsed
		fs := sp.Family(f)
		if sp.Mode != pool.ClusterScope || fs == nil {
			continue
		}
		for _, c := range fs.CIDRs {
			if c.Overlaps(pc) {
				return 0, fmt.Errorf("pod CIDR %s of node %q overlaps CIDR %s of cluster-scope pool %q: %w", pc, node, c, sp.Name, ErrPrecondition)
			}
		}
	}
	resp, err := a.store.Get(ctx, a.keys.blocks(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return 0, fmt.Errorf("list blocks: %w: %w", ErrUnavailable, err)
	}
	for _, kv := range resp.Kvs {
		b, err := decodeBlock(string(kv.Key), kv.Value)
		if err != nil || b.CIDR == pc || !b.CIDR.Overlaps(pc) {
			continue
		}
		return 0, fmt.Errorf("pod CIDR %s of node %q overlaps block %s of node %q (pool %q): %w", pc, node, b.CIDR, b.Node, b.Pool, ErrPrecondition)
	}
	return rev, nil
}

// refreshNode re-reads a node into the cache and returns it.
func (a *Allocator) refreshNode(ctx context.Context, name string) (nodeRef, error) {
	if err := a.nodes.reload(ctx, a.keys.node(name)); err != nil {
		return nodeRef{}, err
	}
	return a.lookupNode(ctx, name)
}

// refreshPool re-reads a pool into the cache and returns it.
func (a *Allocator) refreshPool(ctx context.Context, name string) (poolRef, error) {
	if err := a.pools.reload(ctx, a.keys.pool(name)); err != nil {
		return poolRef{}, err
	}
	return a.lookupPool(ctx, name)
}

// freeBlock picks an unclaimed block of fs, starting at a random offset so
// concurrent claims by many nodes rarely collide.
func (a *Allocator) freeBlock(fs *pool.FamilySpec, tried map[netip.Prefix]bool) (netip.Prefix, netip.Prefix, bool) {
	for _, c := range fs.CIDRs {
		total := cidr.BlockCount(c, fs.BlockBits)
		start := rand.Uint64N(total)
		// Scan at most a bounded number of candidates per CIDR; a nearly
		// full huge pool is not scanned to the end.
		limit := min(total, uint64(1)<<20)
		for i := range limit {
			b, ok := cidr.NthBlock(c, fs.BlockBits, (start+i)%total)
			if !ok || tried[b] {
				continue
			}
			if _, claimed := a.blocks.get(a.keys.block(b)); claimed {
				continue
			}
			return b, c, true
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

// firstUsable returns the address of b a router IP is taken from: the
// first that may be handed out, skipping the block's own first address
// (usable by pods, but a gateway ending in .0 confuses people and tools).
func firstUsable(fs *pool.FamilySpec, b *blockRecord) (netip.Addr, bool) {
	for i := range min(cidr.Size(b.CIDR), 1<<16) {
		if i == 0 && cidr.Size(b.CIDR) > 2 {
			continue
		}
		addr, ok := cidr.Nth(b.CIDR, i)
		if ok && fs.Usable(b.Outer, addr) {
			return addr, true
		}
	}
	return netip.Addr{}, false
}

// hostPodCIDR returns the node's pod CIDR of family f that host-scope pool
// p accepts.
func hostPodCIDR(n *ipamv1alpha1.Node, p *pool.Pool, f pool.Family) (netip.Prefix, bool) {
	fs := p.Family(f)
	if fs == nil {
		return netip.Prefix{}, false
	}
	for _, s := range n.GetPodCidrs() {
		pc, err := cidr.ParsePrefix(s)
		if err != nil || pool.FamilyOf(pc.Addr()) != f {
			continue
		}
		if len(fs.CIDRs) == 0 || slices.ContainsFunc(fs.CIDRs, func(c netip.Prefix) bool { return cidr.Contains(c, pc) }) {
			return pc, true
		}
	}
	return netip.Prefix{}, false
}

func describeUsage(p *ipamv1alpha1.Pool, f pool.Family) string {
	for _, u := range p.GetStatus().GetUsage() {
		if u.GetFamily() == f {
			return fmt.Sprintf("%d of %d blocks claimed, %d of %d addresses allocated, %d held",
				u.GetBlocksClaimed(), u.GetBlocksTotal(), u.GetAllocated(), u.GetCapacity(), u.GetHeld())
		}
	}
	return "no usage"
}

// toBlockProto renders a block for the API.
func toBlockProto(b blockRef, allocated, held uint64, fs *pool.FamilySpec) *ipamv1alpha1.Block {
	out := &ipamv1alpha1.Block{
		Cidr:      b.CIDR.String(),
		Pool:      b.Pool,
		Family:    pool.FamilyOf(b.CIDR.Addr()),
		Node:      b.Node,
		RouterIp:  b.RouterIP,
		ClaimTime: timestamppb.New(b.ClaimTime),
		Revision:  strconv.FormatInt(b.rev, 10),
		Allocated: allocated,
		Held:      held,
	}
	if b.RouterIP != "" {
		out.Allocated = satSub(out.Allocated, 1)
	}
	if fs != nil {
		out.Capacity = usableIn(fs, b.Outer, b.CIDR)
		if b.RouterIP != "" {
			out.Capacity = satSub(out.Capacity, 1)
		}
	}
	return out
}
