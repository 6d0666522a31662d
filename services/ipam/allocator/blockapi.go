package allocator

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/paging"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// ClaimBlock claims blocks for a node: without claimID it makes sure the
// node has one block of the pool (empty: the default pool) per family;
// with claimID it claims one more per family, idempotently.
func (a *Allocator) ClaimBlock(ctx context.Context, node, poolName string, fam pool.Family, claimID string) ([]*ipamv1alpha1.Block, error) {
	n, err := a.lookupNode(ctx, node)
	if err != nil {
		return nil, err
	}
	fams := []pool.Family{fam}
	if fam == 0 {
		fams = pool.Families
	} else if fam != pool.IPv4 && fam != pool.IPv6 {
		return nil, fmt.Errorf("unknown family %v: %w", fam, ErrInvalid)
	}
	var out []*ipamv1alpha1.Block
	for _, f := range fams {
		var p poolRef
		if poolName == "" {
			p, err = a.defaultPool(ctx, f)
			if err != nil {
				if fam == 0 {
					continue
				}
				return nil, err
			}
		} else {
			if p, err = a.lookupPool(ctx, poolName); err != nil {
				return nil, err
			}
			if p.parsed.Family(f) == nil {
				if fam == 0 {
					continue
				}
				return nil, fmt.Errorf("pool %q serves no %s addresses: %w", poolName, familyKey(f), ErrPrecondition)
			}
		}
		if claimID != "" && p.parsed.Mode == pool.HostScope {
			return nil, fmt.Errorf("host-scope pool %q has exactly the node's pod CIDR; claim_id does not apply: %w", p.parsed.Name, ErrPrecondition)
		}
		var blk blockRef
		if claimID == "" {
			if existing := a.nodeBlocks(node, p.parsed.Name, f); len(existing) > 0 {
				blk = existing[0]
			}
		}
		if blk.blockRecord == nil {
			if blk, err = a.claimBlock(ctx, n, p, f, claimOpts{claimID: claimID}); err != nil {
				return nil, err
			}
		}
		bp, err := a.blockProto(ctx, blk)
		if err != nil {
			return nil, err
		}
		out = append(out, bp)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no pool to claim from: name a pool or create a default pool: %w", ErrNotFound)
	}
	return out, nil
}

// ReleaseBlock gives an empty block back to its pool.
func (a *Allocator) ReleaseBlock(ctx context.Context, s, node, expectedRev string) (*ipamv1alpha1.Block, error) {
	p, err := cidr.ParsePrefix(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	key := a.keys.block(p)
	resp, err := a.store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("release block %s: %w: %w", p, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	b, err := decodeBlock(key, resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	ref := blockRef{b, resp.Kvs[0].ModRevision}
	switch {
	case expectedRev != "" && expectedRev != strconv.FormatInt(ref.rev, 10):
		return nil, fmt.Errorf("block %s is at revision %d, not %s: %w", p, ref.rev, expectedRev, ErrConflict)
	case node != "" && b.Node != node:
		return nil, fmt.Errorf("block %s belongs to node %q, not %q: %w", p, b.Node, node, ErrPrecondition)
	case b.RouterIP != "":
		return nil, fmt.Errorf("block %s holds the router IP %s of node %q: %w", p, b.RouterIP, b.Node, ErrPrecondition)
	}
	if e, ok := a.pools.get(a.keys.pool(b.Pool)); ok && e.val.parsed.Mode == pool.HostScope {
		return nil, fmt.Errorf("block %s is node %q's pod CIDR in host-scope pool %q; it follows the node: %w", p, b.Node, b.Pool, ErrPrecondition)
	}
	bp, err := a.blockProto(ctx, ref)
	if err != nil {
		return nil, err
	}
	txn, err := a.store.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(key), "=", ref.rev),
		clientv3.Compare(clientv3.CreateRevision(a.keys.allocBlock(b.Pool, p)), "=", 0).WithPrefix(),
		clientv3.Compare(clientv3.CreateRevision(a.keys.holdBlock(b.Pool, p)), "=", 0).WithPrefix(),
	).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("release block %s: %w: %w", p, ErrUnavailable, err)
	}
	if !txn.Succeeded {
		return nil, fmt.Errorf("block %s still has allocated or held addresses, or changed: %w", p, ErrPrecondition)
	}
	a.blocks.remove(key, txn.Header.Revision)
	a.invalidate(p)
	return bp, nil
}

// BlockFilter narrows ListBlocks.
type BlockFilter struct {
	Node, Pool string
	Family     pool.Family
}

// ListBlocks returns up to limit claimed blocks matching f in key order
// after the block key after, and the key to continue after ("" when done).
// A page ends early at Config.MaxPageBytes.
func (a *Allocator) ListBlocks(ctx context.Context, f BlockFilter, after string, limit int) ([]*ipamv1alpha1.Block, string, error) {
	start := a.keys.blocks()
	if after != "" {
		start = a.keys.blocks() + after + "\x00"
	}
	end := prefixEnd(a.keys.blocks())
	var out []*ipamv1alpha1.Block
	budget, last := paging.NewBudget(a.cfg.MaxPageBytes), ""
	for {
		resp, err := a.store.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(512))
		if err != nil {
			return nil, "", fmt.Errorf("list blocks: %w: %w", ErrUnavailable, err)
		}
		for _, kv := range resp.Kvs {
			b, err := decodeBlock(string(kv.Key), kv.Value)
			if err != nil {
				return nil, "", err
			}
			if (f.Node != "" && b.Node != f.Node) || (f.Pool != "" && b.Pool != f.Pool) || (f.Family != 0 && pool.FamilyOf(b.CIDR.Addr()) != f.Family) {
				continue
			}
			bp, err := a.blockProto(ctx, blockRef{b, kv.ModRevision})
			if err != nil {
				return nil, "", err
			}
			if !budget.Take(bp) {
				return out, last, nil
			}
			out = append(out, bp)
			last = lastSegment(string(kv.Key))
			if len(out) == limit {
				if !resp.More && kv == resp.Kvs[len(resp.Kvs)-1] {
					return out, "", nil
				}
				return out, lastSegment(string(kv.Key)), nil
			}
		}
		if !resp.More {
			return out, "", nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// releaseEmptyBlocks gives back cluster-scope blocks that have been empty
// for the grace period. A node keeps one block of every pool and family:
// the one with its router IP, or else its oldest. Only this replica's sweeps run
// the emptiness clock; the release itself is a compare-and-swap that fails
// if an address was allocated meanwhile.
func (a *Allocator) releaseEmptyBlocks(ctx context.Context) error {
	type group struct {
		node, pool string
		fam        pool.Family
	}
	groups := map[group]bool{}
	for _, e := range a.blocks.snapshot(nil) {
		b := e.val
		if pe, ok := a.pools.get(a.keys.pool(b.Pool)); ok && pe.val.parsed.Mode == pool.ClusterScope {
			groups[group{b.Node, b.Pool, pool.FamilyOf(b.CIDR.Addr())}] = true
		}
	}
	now := a.cfg.Now()
	seen := map[netip.Prefix]bool{}
	for g := range groups {
		blocks := a.nodeBlocks(g.node, g.pool, g.fam) // oldest first
		keep := blocks[0].CIDR
		for _, b := range blocks {
			if b.RouterIP != "" {
				keep = b.CIDR
			}
		}
		for _, b := range blocks {
			if b.CIDR == keep {
				continue
			}
			bp, err := a.blockProto(ctx, b)
			if err != nil {
				return err
			}
			if bp.GetAllocated() > 0 || bp.GetHeld() > 0 {
				continue
			}
			seen[b.CIDR] = true
			since, ok := a.emptySince[b.CIDR]
			if !ok {
				a.emptySince[b.CIDR] = now
				continue
			}
			if now.Sub(since) < a.cfg.BlockReleaseGrace {
				continue
			}
			if _, err := a.ReleaseBlock(ctx, b.CIDR.String(), b.Node, strconv.FormatInt(b.rev, 10)); err != nil {
				a.log.Debug("empty block not released", "block", b.CIDR, "err", err)
				continue
			}
			a.log.Info("released empty block", "block", b.CIDR, "node", b.Node, "pool", b.Pool, "empty_for", now.Sub(since))
		}
	}
	for p := range a.emptySince {
		if !seen[p] {
			delete(a.emptySince, p)
		}
	}
	return nil
}
