package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// normalizePool returns the spec as stored: output-only fields cleared,
// defaults written out, so equal specs compare equal.
func normalizePool(in *ipamv1alpha1.Pool) *ipamv1alpha1.Pool {
	p := proto.CloneOf(in)
	p.Revision, p.CreateTime, p.UpdateTime, p.Status = "", nil, nil, nil
	if p.GetMode() == ipamv1alpha1.PoolMode_POOL_MODE_UNSPECIFIED {
		p.Mode = ipamv1alpha1.PoolMode_POOL_MODE_CLUSTER_SCOPE
	}
	for f, fs := range map[pool.Family]*ipamv1alpha1.PoolFamily{pool.IPv4: p.GetIpv4(), pool.IPv6: p.GetIpv6()} {
		if fs != nil && fs.GetBlockPrefixLength() == 0 && p.GetMode() == ipamv1alpha1.PoolMode_POOL_MODE_CLUSTER_SCOPE {
			fs.BlockPrefixLength = pool.DefaultBlockBits4
			if f == pool.IPv6 {
				fs.BlockPrefixLength = pool.DefaultBlockBits6
			}
		}
	}
	return p
}

// sameSpec reports whether two normalized pools have the same spec.
func sameSpec(a, b *ipamv1alpha1.Pool) bool {
	a, b = proto.CloneOf(a), proto.CloneOf(b)
	for _, p := range []*ipamv1alpha1.Pool{a, b} {
		p.Revision, p.CreateTime, p.UpdateTime, p.Status = "", nil, nil, nil
	}
	return proto.Equal(a, b)
}

// listPools reads every pool at one revision.
func (a *Allocator) listPools(ctx context.Context) (map[string]*storedPool, map[string]int64, int64, error) {
	resp, err := a.store.Get(ctx, a.keys.pools(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list pools: %w: %w", ErrUnavailable, err)
	}
	pools := map[string]*storedPool{}
	revs := map[string]int64{}
	for _, kv := range resp.Kvs {
		sp, err := decodePool(string(kv.Key), kv.Value)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("decode pool %s: %w", kv.Key, err)
		}
		pools[sp.parsed.Name] = sp
		revs[sp.parsed.Name] = kv.ModRevision
	}
	return pools, revs, resp.Header.Revision, nil
}

// checkAgainstPools checks that p overlaps no other pool and is not a
// second default of a family.
func checkAgainstPools(p *pool.Pool, others map[string]*storedPool) error {
	var errs []error
	for _, name := range sortedKeys(others) {
		o := others[name].parsed
		if o.Name == p.Name {
			continue
		}
		for _, f := range p.FamilyList() {
			of := o.Family(f)
			if of == nil {
				continue
			}
			if p.Default && o.Default {
				errs = append(errs, fmt.Errorf("pool %q is already the default %s pool", o.Name, familyKey(f)))
			}
			for _, c := range p.Family(f).CIDRs {
				for _, oc := range of.CIDRs {
					if c.Overlaps(oc) {
						errs = append(errs, fmt.Errorf("CIDR %s overlaps %s of pool %q", c, oc, o.Name))
					}
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pool %q: %w: %w", p.Name, ErrPrecondition, err)
	}
	return nil
}

// CreatePool creates a pool; a retry with the same spec returns the stored
// pool.
func (a *Allocator) CreatePool(ctx context.Context, in *ipamv1alpha1.Pool) (*ipamv1alpha1.Pool, error) {
	parsed, err := pool.Parse(in)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	spec := normalizePool(in)
	for range a.cfg.MaxAttempts {
		pools, _, rev, err := a.listPools(ctx)
		if err != nil {
			return nil, err
		}
		if cur, ok := pools[parsed.Name]; ok {
			if sameSpec(cur.spec, spec) {
				return a.withPoolStatus(ctx, cur.spec)
			}
			return nil, fmt.Errorf("pool %q exists with a different spec: %w", parsed.Name, ErrExists)
		}
		if err := checkAgainstPools(parsed, pools); err != nil {
			return nil, err
		}
		blocksResp, err := a.store.Get(ctx, a.keys.blocks(), clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			return nil, fmt.Errorf("create pool %q: %w: %w", parsed.Name, ErrUnavailable, err)
		}
		if err := checkAgainstBlocks(parsed, blocksResp.Kvs); err != nil {
			return nil, err
		}
		now := timestamppb.New(a.cfg.Now())
		stored := proto.CloneOf(spec)
		stored.CreateTime, stored.UpdateTime = now, now
		val, err := protoJSON(stored)
		if err != nil {
			return nil, err
		}
		key := a.keys.pool(parsed.Name)
		resp, err := a.store.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			// No pool was created or changed, and no block claimed, since
			// the overlap checks.
			clientv3.Compare(clientv3.ModRevision(a.keys.pools()), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(a.keys.blocks()), "<", rev+1).WithPrefix(),
		).Then(clientv3.OpPut(key, val)).Commit()
		if err != nil {
			return nil, fmt.Errorf("create pool %q: %w: %w", parsed.Name, ErrUnavailable, err)
		}
		if resp.Succeeded {
			a.pools.put(key, &storedPool{spec: stored, parsed: parsed}, resp.Header.Revision)
			stored.Revision = strconv.FormatInt(resp.Header.Revision, 10)
			return a.withPoolStatus(ctx, stored)
		}
	}
	return nil, fmt.Errorf("create pool %q: pools kept changing: %w", parsed.Name, ErrConflict)
}

// GetPool returns a pool with its usage.
func (a *Allocator) GetPool(ctx context.Context, name string) (*ipamv1alpha1.Pool, error) {
	resp, err := a.store.Get(ctx, a.keys.pool(name))
	if err != nil {
		return nil, fmt.Errorf("get pool %q: %w: %w", name, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	sp, err := decodePool(name, resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	sp.spec.Revision = strconv.FormatInt(resp.Kvs[0].ModRevision, 10)
	return a.withPoolStatus(ctx, sp.spec)
}

// ListPools returns every pool in name order, with usage.
func (a *Allocator) ListPools(ctx context.Context) ([]*ipamv1alpha1.Pool, error) {
	pools, revs, _, err := a.listPools(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*ipamv1alpha1.Pool, 0, len(pools))
	for _, name := range sortedKeys(pools) {
		p := pools[name].spec
		p.Revision = strconv.FormatInt(revs[name], 10)
		withStatus, err := a.withPoolStatus(ctx, p)
		if err != nil {
			return nil, err
		}
		out = append(out, withStatus)
	}
	return out, nil
}

// UpdatePool replaces a pool's spec, or creates it with allowMissing.
func (a *Allocator) UpdatePool(ctx context.Context, in *ipamv1alpha1.Pool, expectedRev string, allowMissing bool) (*ipamv1alpha1.Pool, error) {
	parsed, err := pool.Parse(in)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	spec := normalizePool(in)
	key := a.keys.pool(parsed.Name)
	for range a.cfg.MaxAttempts {
		pools, revs, rev, err := a.listPools(ctx)
		if err != nil {
			return nil, err
		}
		cur, exists := pools[parsed.Name]
		if !exists {
			if !allowMissing {
				return nil, fmt.Errorf("pool %q: %w", parsed.Name, ErrNotFound)
			}
			if expectedRev != "" {
				return nil, fmt.Errorf("pool %q does not exist but expected_revision is set: %w", parsed.Name, ErrConflict)
			}
			return a.CreatePool(ctx, in)
		}
		if expectedRev != "" && expectedRev != strconv.FormatInt(revs[parsed.Name], 10) {
			return nil, fmt.Errorf("pool %q is at revision %d, not %s: %w", parsed.Name, revs[parsed.Name], expectedRev, ErrConflict)
		}
		if sameSpec(cur.spec, spec) {
			cur.spec.Revision = strconv.FormatInt(revs[parsed.Name], 10)
			return a.withPoolStatus(ctx, cur.spec)
		}
		if cur.parsed.Mode != parsed.Mode {
			return nil, fmt.Errorf("pool %q: mode cannot change: %w", parsed.Name, ErrInvalid)
		}
		if err := checkAgainstPools(parsed, pools); err != nil {
			return nil, err
		}
		read, err := a.store.Txn(ctx).Then(
			clientv3.OpGet(a.keys.blocks(), clientv3.WithPrefix(), clientv3.WithRev(rev)),
			clientv3.OpGet(a.keys.holdPool(parsed.Name), clientv3.WithPrefix(), clientv3.WithRev(rev)),
		).Commit()
		if err != nil {
			return nil, fmt.Errorf("update pool %q: %w: %w", parsed.Name, ErrUnavailable, err)
		}
		blockKVs, holdKVs := read.Responses[0].GetResponseRange().Kvs, read.Responses[1].GetResponseRange().Kvs
		if err := errors.Join(checkBlocksFit(parsed, cur.parsed, blockKVs), checkAgainstBlocks(parsed, blockKVs), checkHoldsFit(parsed, holdKVs)); err != nil {
			return nil, err
		}
		stored := proto.CloneOf(spec)
		stored.CreateTime, stored.UpdateTime = cur.spec.GetCreateTime(), timestamppb.New(a.cfg.Now())
		val, err := protoJSON(stored)
		if err != nil {
			return nil, err
		}
		resp, err := a.store.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", revs[parsed.Name]),
			clientv3.Compare(clientv3.ModRevision(a.keys.pools()), "<", rev+1).WithPrefix(),
			// No block was claimed, and no address of the pool reserved,
			// since the checks read them.
			clientv3.Compare(clientv3.ModRevision(a.keys.blocks()), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(a.keys.holdPool(parsed.Name)), "<", rev+1).WithPrefix(),
		).Then(clientv3.OpPut(key, val)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update pool %q: %w: %w", parsed.Name, ErrUnavailable, err)
		}
		if resp.Succeeded {
			a.pools.put(key, &storedPool{spec: stored, parsed: parsed}, resp.Header.Revision)
			stored.Revision = strconv.FormatInt(resp.Header.Revision, 10)
			return a.withPoolStatus(ctx, stored)
		}
	}
	return nil, fmt.Errorf("update pool %q: pools kept changing: %w", parsed.Name, ErrConflict)
}

// checkBlocksFit refuses a pool update that would strand claimed blocks: a
// removed CIDR or a changed block size with blocks still claimed.
func checkBlocksFit(next, cur *pool.Pool, kvs []*mvccpb.KeyValue) error {
	var errs []error
	for _, kv := range kvs {
		b, err := decodeBlock(string(kv.Key), kv.Value)
		if err != nil || b.Pool != cur.Name {
			continue
		}
		f := pool.FamilyOf(b.CIDR.Addr())
		nf, cf := next.Family(f), cur.Family(f)
		switch {
		case nf == nil:
			errs = append(errs, fmt.Errorf("%s is still served: block %s is claimed by node %q", familyKey(f), b.CIDR, b.Node))
		case next.Mode == pool.ClusterScope && nf.BlockBits != cf.BlockBits:
			errs = append(errs, fmt.Errorf("%s block size cannot change while block %s is claimed", familyKey(f), b.CIDR))
		case next.Mode == pool.ClusterScope && !slices.ContainsFunc(nf.CIDRs, func(c netip.Prefix) bool { return cidr.Contains(c, b.CIDR) }):
			errs = append(errs, fmt.Errorf("cannot remove the CIDR holding block %s claimed by node %q", b.CIDR, b.Node))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pool %q: %w: %w", next.Name, ErrPrecondition, err)
	}
	return nil
}

// checkAgainstBlocks refuses a cluster-scope pool whose CIDRs overlap a
// block claimed for another pool (a node's pod CIDR in a host-scope pool).
func checkAgainstBlocks(p *pool.Pool, kvs []*mvccpb.KeyValue) error {
	if p.Mode != pool.ClusterScope {
		return nil
	}
	var errs []error
	for _, kv := range kvs {
		b, err := decodeBlock(string(kv.Key), kv.Value)
		if err != nil || b.Pool == p.Name {
			continue
		}
		fs := p.Family(pool.FamilyOf(b.CIDR.Addr()))
		if fs == nil {
			continue
		}
		for _, c := range fs.CIDRs {
			if c.Overlaps(b.CIDR) {
				errs = append(errs, fmt.Errorf("CIDR %s overlaps block %s of node %q in pool %q", c, b.CIDR, b.Node, b.Pool))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pool %q: %w: %w", p.Name, ErrPrecondition, err)
	}
	return nil
}

// checkHoldsFit refuses a pool update that would leave a reservation
// outside the pool: another pool could then hand its address out too.
func checkHoldsFit(next *pool.Pool, kvs []*mvccpb.KeyValue) error {
	var errs []error
	for _, kv := range kvs {
		r, err := decodeReservation(kv.Value)
		if err != nil {
			continue
		}
		addr, err := netip.ParseAddr(r.GetIp())
		if err != nil {
			continue
		}
		fs := next.Family(pool.FamilyOf(addr))
		switch {
		case fs == nil:
			errs = append(errs, fmt.Errorf("%s is still served: %s is reserved for %q", familyKey(pool.FamilyOf(addr)), addr, r.GetKey()))
		case next.Mode == pool.ClusterScope:
			if _, ok := fs.CIDRContaining(addr); !ok {
				errs = append(errs, fmt.Errorf("cannot remove the CIDR holding %s, reserved for %q (unreserve it first)", addr, r.GetKey()))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pool %q: %w: %w", next.Name, ErrPrecondition, err)
	}
	return nil
}

// DeletePool deletes a pool that has no allocated address, releasing its
// blocks and dropping its reservations. Deleting a missing pool succeeds.
func (a *Allocator) DeletePool(ctx context.Context, name, expectedRev string) (*ipamv1alpha1.DeletePoolResponse, error) {
	key := a.keys.pool(name)
	for range a.cfg.MaxAttempts {
		get, err := a.store.Txn(ctx).Then(
			clientv3.OpGet(key),
			clientv3.OpGet(a.keys.allocPool(name), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
			clientv3.OpGet(a.keys.blocks(), clientv3.WithPrefix()),
			clientv3.OpGet(a.keys.holdPool(name), clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return nil, fmt.Errorf("delete pool %q: %w: %w", name, ErrUnavailable, err)
		}
		poolKV := get.Responses[0].GetResponseRange().Kvs
		if len(poolKV) == 0 {
			return &ipamv1alpha1.DeletePoolResponse{}, nil
		}
		modRev := poolKV[0].ModRevision
		if expectedRev != "" && expectedRev != strconv.FormatInt(modRev, 10) {
			return nil, fmt.Errorf("pool %q is at revision %d, not %s: %w", name, modRev, expectedRev, ErrConflict)
		}
		if allocs := get.Responses[1].GetResponseRange().Kvs; len(allocs) > 0 {
			return nil, fmt.Errorf("pool %q still has %d allocated addresses (%s): %w", name, len(allocs), describeAllocKeys(allocs), ErrPrecondition)
		}
		ops := []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(a.keys.holdPool(name), clientv3.WithPrefix())}
		var released uint32
		for _, kv := range get.Responses[2].GetResponseRange().Kvs {
			b, err := decodeBlock(string(kv.Key), kv.Value)
			if err != nil || b.Pool != name {
				continue
			}
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			released++
		}
		holds := get.Responses[3].GetResponseRange().Kvs
		for _, kv := range holds {
			r, err := decodeReservation(kv.Value)
			if err == nil {
				ops = append(ops, clientv3.OpDelete(a.keys.holdKey(r.GetFamily(), r.GetKey())))
			}
		}
		rev := get.Header.Revision
		resp, err := a.store.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", modRev),
			clientv3.Compare(clientv3.CreateRevision(a.keys.allocPool(name)), "=", 0).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(a.keys.blocks()), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(a.keys.holdPool(name)), "<", rev+1).WithPrefix(),
		).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("delete pool %q: %w: %w", name, ErrUnavailable, err)
		}
		if resp.Succeeded {
			a.pools.remove(key, resp.Header.Revision)
			return &ipamv1alpha1.DeletePoolResponse{ReleasedBlocks: released, DroppedReservations: uint32(len(holds))}, nil
		}
	}
	return nil, fmt.Errorf("delete pool %q: pool kept changing: %w", name, ErrConflict)
}

// describeAllocKeys summarizes alloc/ keys for an error message: how many
// per block, at most a few blocks.
func describeAllocKeys(kvs []*mvccpb.KeyValue) string {
	perBlock := map[string]int{}
	for _, kv := range kvs {
		parts := strings.Split(string(kv.Key), "/")
		if len(parts) >= 2 {
			perBlock[parts[len(parts)-2]]++
		}
	}
	var out []string
	for _, b := range sortedKeys(perBlock) {
		if len(out) == 5 {
			out = append(out, "...")
			break
		}
		out = append(out, fmt.Sprintf("%d in block %s", perBlock[b], strings.Replace(b, "_", "/", 1)))
	}
	return strings.Join(out, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
