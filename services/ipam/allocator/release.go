package allocator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/paging"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

func decodeReservation(v []byte) (*ipamv1alpha1.Reservation, error) {
	r := &ipamv1alpha1.Reservation{}
	if err := protojson.Unmarshal(v, r); err != nil {
		return nil, fmt.Errorf("decode reservation: %w", err)
	}
	return r, nil
}

// Release releases the allocation of h. With expectedSeq it releases only
// that allocation. Releasing nothing is success (nil allocation). A sticky
// allocation leaves its addresses held for its key unless discardHold.
func (a *Allocator) Release(ctx context.Context, h Handle, expectedSeq uint64, discardHold bool) (*ipamv1alpha1.Allocation, []*ipamv1alpha1.Reservation, error) {
	if err := h.validate(); err != nil {
		return nil, nil, err
	}
	hkey := a.keys.handle(h)
	for range a.cfg.MaxAttempts {
		resp, err := a.store.Get(ctx, hkey)
		if err != nil {
			return nil, nil, fmt.Errorf("release %s: %w: %w", h, ErrUnavailable, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, nil, nil
		}
		seq := resp.Kvs[0].CreateRevision
		if expectedSeq != 0 && uint64(seq) != expectedSeq {
			return nil, nil, nil // that allocation is gone; a newer one stays
		}
		alloc, err := decodeAllocation(resp.Kvs[0].Value, seq)
		if err != nil {
			return nil, nil, err
		}
		done, holds, err := a.releaseTxn(ctx, hkey, alloc, discardHold)
		if err != nil {
			return nil, nil, err
		}
		if done {
			return alloc, holds, nil
		}
	}
	return nil, nil, fmt.Errorf("release %s: contention did not settle: %w", h, ErrConflict)
}

type addrRef struct {
	pool  string
	block netip.Prefix
	addr  netip.Addr
	fam   pool.Family
}

func allocAddrs(alloc *ipamv1alpha1.Allocation) ([]addrRef, error) {
	var out []addrRef
	for _, ad := range alloc.GetAddresses() {
		addr, err := netip.ParseAddr(ad.GetIp())
		if err != nil {
			return nil, fmt.Errorf("stored allocation has bad address %q: %w", ad.GetIp(), err)
		}
		block, err := netip.ParsePrefix(ad.GetBlock())
		if err != nil {
			return nil, fmt.Errorf("stored allocation has bad block %q: %w", ad.GetBlock(), err)
		}
		out = append(out, addrRef{pool: ad.GetPool(), block: block, addr: addr, fam: pool.FamilyOf(addr)})
	}
	return out, nil
}

// releaseTxn deletes one allocation, guarded by its sequence on the handle
// and on every address, and writes sticky holds. done is false if the
// allocation changed under us.
func (a *Allocator) releaseTxn(ctx context.Context, hkey string, alloc *ipamv1alpha1.Allocation, discardHold bool) (bool, []*ipamv1alpha1.Reservation, error) {
	seq := int64(alloc.GetSequence())
	addrs, err := allocAddrs(alloc)
	if err != nil {
		return false, nil, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(hkey), "=", seq)}
	ops := []clientv3.Op{clientv3.OpDelete(hkey)}
	if key := alloc.GetStickyKey(); key != "" {
		owner := a.keys.stickyOwner(key)
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(owner), "=", seq)},
			[]clientv3.Op{clientv3.OpDelete(owner)}, nil))
	}
	var holds []*ipamv1alpha1.Reservation
	hold := alloc.GetStickyHold().AsDuration()
	makeHolds := alloc.GetStickyKey() != "" && hold > 0 && !discardHold
	now := a.cfg.Now().UTC()
	for _, ar := range addrs {
		akey := a.keys.alloc(ar.pool, ar.block, ar.addr)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(akey), "=", seq))
		ops = append(ops, clientv3.OpDelete(akey))
		if !makeHolds {
			continue
		}
		// A key holds one address per family: an older hold of the key
		// (say, a manual reservation elsewhere) is dropped for this one.
		old, err := a.readHold(ctx, ar.fam, alloc.GetStickyKey())
		if err != nil {
			return false, nil, err
		}
		path := a.keys.hold(ar.pool, ar.block, ar.addr)
		index := a.keys.holdKey(ar.fam, alloc.GetStickyKey())
		if old != nil && old.path != path {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(old.path), "=", old.rev))
			ops = append(ops, clientv3.OpDelete(old.path))
		}
		r := &ipamv1alpha1.Reservation{
			Ip: ar.addr.String(), Family: ar.fam, Pool: ar.pool, Key: alloc.GetStickyKey(),
			Kind:       ipamv1alpha1.ReservationKind_RESERVATION_KIND_STICKY_HOLD,
			ExpireTime: timestamppb.New(now.Add(hold)), CreateTime: timestamppb.New(now),
		}
		val, err := protoJSON(r)
		if err != nil {
			return false, nil, err
		}
		ops = append(ops, clientv3.OpPut(path, val), clientv3.OpPut(index, path))
		holds = append(holds, r)
	}
	resp, err := a.store.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, nil, fmt.Errorf("release %s: %w: %w", hkey, ErrUnavailable, err)
	}
	if !resp.Succeeded {
		return false, nil, nil
	}
	if !makeHolds {
		for _, ar := range addrs {
			a.markFree(ar.block, ar.addr)
		}
	}
	return true, holds, nil
}

// GarbageCollect releases every allocation on node whose handle is not live
// and that is older than minAge (nil: the configured default).
func (a *Allocator) GarbageCollect(ctx context.Context, node string, live []Handle, minAge *time.Duration, dryRun bool) ([]*ipamv1alpha1.Allocation, error) {
	for _, h := range live {
		if err := h.validate(); err != nil {
			return nil, err
		}
	}
	if _, err := a.lookupNode(ctx, node); err != nil {
		return nil, err
	}
	age := a.cfg.GCMinAge
	if minAge != nil {
		age = *minAge
	}
	liveSet := map[Handle]bool{}
	for _, h := range live {
		liveSet[h] = true
	}
	allocs, err := a.nodeAllocations(ctx, node)
	if err != nil {
		return nil, err
	}
	cutoff := a.cfg.Now().Add(-age)
	var released []*ipamv1alpha1.Allocation
	for _, alloc := range allocs {
		h := Handle{alloc.GetHandle().GetContainerId(), alloc.GetHandle().GetInterfaceName()}
		if liveSet[h] || alloc.GetCreateTime().AsTime().After(cutoff) {
			continue
		}
		if dryRun {
			released = append(released, alloc)
			continue
		}
		got, _, err := a.Release(ctx, h, alloc.GetSequence(), false)
		if err != nil {
			return released, err
		}
		if got != nil {
			released = append(released, got)
		}
	}
	return released, nil
}

// nodeAllocations returns every allocation with an address in node's
// blocks, in handle order.
func (a *Allocator) nodeAllocations(ctx context.Context, node string) ([]*ipamv1alpha1.Allocation, error) {
	if err := a.blocks.refresh(ctx); err != nil {
		return nil, err
	}
	blocks := a.blocks.group(node)
	handles := map[string]int64{}
	for _, name := range sortedKeys(blocks) {
		b := blocks[name].val
		resp, err := a.store.Get(ctx, a.keys.allocBlock(b.Pool, b.CIDR), clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("list allocations of block %s: %w: %w", b.CIDR, ErrUnavailable, err)
		}
		for _, kv := range resp.Kvs {
			var rec addrRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil || rec.Router != "" {
				continue
			}
			handles[a.keys.handle(Handle{rec.ContainerID, rec.Interface})] = kv.CreateRevision
		}
	}
	var out []*ipamv1alpha1.Allocation
	keys := sortedKeys(handles)
	for chunk := range slices.Chunk(keys, 64) {
		ops := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			ops[i] = clientv3.OpGet(k)
		}
		resp, err := a.store.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read allocations: %w: %w", ErrUnavailable, err)
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 || kvs[0].CreateRevision != handles[chunk[i]] {
				continue // released or re-allocated since
			}
			alloc, err := decodeAllocation(kvs[0].Value, kvs[0].CreateRevision)
			if err != nil {
				return nil, err
			}
			out = append(out, alloc)
		}
	}
	return out, nil
}

// GetAllocation returns the allocation of a handle.
func (a *Allocator) GetAllocation(ctx context.Context, h Handle) (*ipamv1alpha1.Allocation, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	resp, err := a.store.Get(ctx, a.keys.handle(h))
	if err != nil {
		return nil, fmt.Errorf("get allocation %s: %w: %w", h, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("no allocation for %s: %w", h, ErrNotFound)
	}
	return decodeAllocation(resp.Kvs[0].Value, resp.Kvs[0].CreateRevision)
}

// GetAllocationByIP returns the allocation holding addr.
func (a *Allocator) GetAllocationByIP(ctx context.Context, s string) (*ipamv1alpha1.Allocation, error) {
	addr, err := cidr.ParseAddr(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var key string
	for _, e := range a.blocks.snapshot(func(b *blockRecord) bool { return b.CIDR.Contains(addr) }) {
		key = a.keys.alloc(e.val.Pool, e.val.CIDR, addr)
	}
	if key == "" {
		return nil, fmt.Errorf("%s is in no claimed block: %w", addr, ErrNotFound)
	}
	resp, err := a.store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get allocation of %s: %w: %w", addr, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s is not allocated: %w", addr, ErrNotFound)
	}
	var rec addrRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	if rec.Router != "" {
		return nil, fmt.Errorf("%s is the router IP of node %q, not a pod allocation: %w", addr, rec.Router, ErrNotFound)
	}
	return a.GetAllocation(ctx, Handle{rec.ContainerID, rec.Interface})
}

// AllocationFilter narrows ListAllocations.
type AllocationFilter struct {
	Node, Pool, Namespace string
}

func (f AllocationFilter) match(alloc *ipamv1alpha1.Allocation) bool {
	if f.Node != "" && alloc.GetNode() != f.Node {
		return false
	}
	if f.Namespace != "" && alloc.GetPodNamespace() != f.Namespace {
		return false
	}
	if f.Pool != "" && !slices.ContainsFunc(alloc.GetAddresses(), func(ad *ipamv1alpha1.AllocatedAddress) bool { return ad.GetPool() == f.Pool }) {
		return false
	}
	return true
}

// ListAllocations returns up to limit allocations matching f in handle
// order, after the handle key after (empty: from the start), and the key to
// continue after ("" when done). A page ends early at Config.MaxPageBytes.
func (a *Allocator) ListAllocations(ctx context.Context, f AllocationFilter, after string, limit int) ([]*ipamv1alpha1.Allocation, string, error) {
	start := a.keys.handles()
	if after != "" {
		start = a.keys.handles() + after + "\x00"
	}
	end := prefixEnd(a.keys.handles())
	var out []*ipamv1alpha1.Allocation
	budget, last := paging.NewBudget(a.cfg.MaxPageBytes), ""
	for {
		resp, err := a.store.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(512))
		if err != nil {
			return nil, "", fmt.Errorf("list allocations: %w: %w", ErrUnavailable, err)
		}
		for _, kv := range resp.Kvs {
			alloc, err := decodeAllocation(kv.Value, kv.CreateRevision)
			if err != nil {
				return nil, "", err
			}
			if !f.match(alloc) {
				continue
			}
			if !budget.Take(alloc) {
				return out, last, nil
			}
			out = append(out, alloc)
			last = string(kv.Key)[len(a.keys.handles()):]
			if len(out) == limit {
				next := string(kv.Key)[len(a.keys.handles()):]
				if !resp.More && kv == resp.Kvs[len(resp.Kvs)-1] {
					next = ""
				}
				return out, next, nil
			}
		}
		if !resp.More {
			return out, "", nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
