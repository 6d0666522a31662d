package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/paging"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// holdRef is a reservation as read: its holds/ key and the holdkeys/ index
// entry naming it, each with the revision writes compare.
type holdRef struct {
	path     string
	rev      int64
	index    string
	indexRev int64
	res      *ipamv1alpha1.Reservation
	addr     netip.Addr
	block    netip.Prefix
}

func (h *holdRef) expired(now time.Time) bool {
	return h.res.GetExpireTime() != nil && !h.res.GetExpireTime().AsTime().After(now)
}

// readHold returns the reservation key holds in family f, or nil.
func (a *Allocator) readHold(ctx context.Context, f pool.Family, key string) (*holdRef, error) {
	index := a.keys.holdKey(f, key)
	resp, err := a.store.Get(ctx, index)
	if err != nil {
		return nil, fmt.Errorf("read hold of %q: %w: %w", key, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	path := string(resp.Kvs[0].Value)
	hresp, err := a.store.Get(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("read hold of %q: %w: %w", key, ErrUnavailable, err)
	}
	if len(hresp.Kvs) == 0 {
		return nil, nil // a dangling index: the next hold of the key replaces it
	}
	return a.holdFromKV(path, hresp.Kvs[0].Value, hresp.Kvs[0].ModRevision, index, resp.Kvs[0].ModRevision)
}

func (a *Allocator) holdFromKV(path string, v []byte, rev int64, index string, indexRev int64) (*holdRef, error) {
	res, err := decodeReservation(v)
	if err != nil {
		return nil, err
	}
	addr, err := netip.ParseAddr(res.GetIp())
	if err != nil {
		return nil, fmt.Errorf("hold %s: %w", path, err)
	}
	// holds/<pool>/<family>/<block>/<ip>
	parts := strings.Split(path, "/")
	block, err := cidr.ParseKey(parts[len(parts)-2])
	if err != nil {
		return nil, fmt.Errorf("hold %s: %w", path, err)
	}
	return &holdRef{path: path, rev: rev, index: index, indexRev: indexRev, res: res, addr: addr, block: block}, nil
}

// planFromHold plans family f of an allocation from the sticky key's hold,
// if the held address can be used on node n. ok is false when it cannot; the
// hold is then dropped by the allocation.
func (a *Allocator) planFromHold(ctx context.Context, n nodeRef, f pool.Family, hold *holdRef, want netip.Addr) (famPlan, bool, error) {
	if hold == nil || hold.expired(a.cfg.Now()) || (want.IsValid() && want != hold.addr) {
		return famPlan{}, false, nil
	}
	p, err := a.lookupPool(ctx, hold.res.GetPool())
	if errors.Is(err, ErrNotFound) {
		return famPlan{}, false, nil
	}
	if err != nil {
		return famPlan{}, false, err
	}
	if p.parsed.Family(f) == nil {
		return famPlan{}, false, nil
	}
	fp, err := a.chooseAddress(ctx, n, p, f, hold.addr, true)
	if errors.Is(err, ErrPrecondition) || errors.Is(err, ErrExists) {
		return famPlan{}, false, nil // held in another node's block, or taken
	}
	if err != nil {
		return famPlan{}, false, err
	}
	fp.hold = hold
	return fp, true, nil
}

// locate finds the pool and block an address belongs to: the cluster-scope
// pool whose CIDR contains it, or the claimed host-scope block holding it.
func (a *Allocator) locate(addr netip.Addr) (poolRef, netip.Prefix, netip.Prefix, error) {
	f := pool.FamilyOf(addr)
	for _, e := range a.pools.snapshot(nil) {
		fs := e.val.parsed.Family(f)
		if fs == nil || e.val.parsed.Mode != pool.ClusterScope {
			continue
		}
		if outer, ok := fs.CIDRContaining(addr); ok {
			return poolRef{e.val, e.modRev}, cidr.BlockOf(addr, fs.BlockBits), outer, nil
		}
	}
	for _, e := range a.blocks.snapshot(func(b *blockRecord) bool { return b.CIDR.Contains(addr) }) {
		if pe, ok := a.pools.get(a.keys.pool(e.val.Pool)); ok {
			return poolRef{pe.val, pe.modRev}, e.val.CIDR, e.val.Outer, nil
		}
	}
	return poolRef{}, netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%s is in no pool: %w", addr, ErrPrecondition)
}

// ReserveIP holds addr for key until ttl passes (nil: until UnreserveIP).
func (a *Allocator) ReserveIP(ctx context.Context, ip, key string, ttl *time.Duration) (*ipamv1alpha1.Reservation, error) {
	addr, err := cidr.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if key == "" {
		return nil, fmt.Errorf("key is required: %w", ErrInvalid)
	}
	if ttl != nil && *ttl <= 0 {
		return nil, fmt.Errorf("ttl must be positive: %w", ErrInvalid)
	}
	f := pool.FamilyOf(addr)
	for range a.cfg.MaxAttempts {
		p, block, outer, err := a.locate(addr)
		if err != nil {
			return nil, err
		}
		fs := p.parsed.Family(f)
		if !fs.Usable(outer, addr) {
			return nil, fmt.Errorf("%s is a network, broadcast or reserved-range address: %w", addr, ErrPrecondition)
		}
		if e, ok := a.blocks.get(a.keys.block(block)); ok && e.val.RouterIP == addr.String() {
			return nil, fmt.Errorf("%s is the router IP of node %q: %w", addr, e.val.Node, ErrPrecondition)
		}
		path := a.keys.hold(p.parsed.Name, block, addr)
		index := a.keys.holdKey(f, key)
		akey := a.keys.alloc(p.parsed.Name, block, addr)
		cur, err := a.store.Txn(ctx).Then(clientv3.OpGet(path), clientv3.OpGet(index), clientv3.OpGet(akey)).Commit()
		if err != nil {
			return nil, fmt.Errorf("reserve %s: %w: %w", addr, ErrUnavailable, err)
		}
		holdKV, indexKV, allocKV := cur.Responses[0].GetResponseRange().Kvs, cur.Responses[1].GetResponseRange().Kvs, cur.Responses[2].GetResponseRange().Kvs
		if len(allocKV) > 0 {
			return nil, fmt.Errorf("%s is allocated: %w", addr, ErrExists)
		}
		now := a.cfg.Now().UTC()
		res := &ipamv1alpha1.Reservation{
			Ip: addr.String(), Family: f, Pool: p.parsed.Name, Key: key,
			Kind: ipamv1alpha1.ReservationKind_RESERVATION_KIND_MANUAL, CreateTime: timestamppb.New(now),
		}
		if ttl != nil {
			res.ExpireTime = timestamppb.New(now.Add(*ttl))
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(akey), "=", 0)}
		if len(holdKV) > 0 {
			old, err := decodeReservation(holdKV[0].Value)
			if err != nil {
				return nil, err
			}
			if old.GetKey() != key {
				return nil, fmt.Errorf("%s is held for key %q: %w", addr, old.GetKey(), ErrExists)
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(path), "=", holdKV[0].ModRevision))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(path), "=", 0))
		}
		if len(indexKV) > 0 {
			if string(indexKV[0].Value) != path {
				return nil, fmt.Errorf("key %q already holds another %s address (%s): %w", key, familyKey(f), lastSegment(string(indexKV[0].Value)), ErrPrecondition)
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(index), "=", indexKV[0].ModRevision))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(index), "=", 0))
		}
		val, err := protoJSON(res)
		if err != nil {
			return nil, err
		}
		resp, err := a.store.Txn(ctx).If(cmps...).Then(clientv3.OpPut(path, val), clientv3.OpPut(index, path)).Commit()
		if err != nil {
			return nil, fmt.Errorf("reserve %s: %w: %w", addr, ErrUnavailable, err)
		}
		if resp.Succeeded {
			a.invalidate(block)
			return res, nil
		}
	}
	return nil, fmt.Errorf("reserve %s: contention: %w", addr, ErrConflict)
}

// UnreserveIP drops the reservation of ip, or every reservation of key.
func (a *Allocator) UnreserveIP(ctx context.Context, ip, key string) ([]*ipamv1alpha1.Reservation, error) {
	var holds []*holdRef
	switch {
	case ip != "":
		addr, err := cidr.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		p, block, _, err := a.locate(addr)
		if err != nil {
			return nil, nil // in no pool: nothing can be held there
		}
		path := a.keys.hold(p.parsed.Name, block, addr)
		resp, err := a.store.Get(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("unreserve %s: %w: %w", addr, ErrUnavailable, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, nil
		}
		h, err := a.holdFromKV(path, resp.Kvs[0].Value, resp.Kvs[0].ModRevision, "", 0)
		if err != nil {
			return nil, err
		}
		h.index = a.keys.holdKey(pool.FamilyOf(addr), h.res.GetKey())
		holds = append(holds, h)
	case key != "":
		for _, f := range pool.Families {
			h, err := a.readHold(ctx, f, key)
			if err != nil {
				return nil, err
			}
			if h != nil {
				holds = append(holds, h)
			}
		}
	default:
		return nil, fmt.Errorf("one of ip or key is required: %w", ErrInvalid)
	}
	var dropped []*ipamv1alpha1.Reservation
	for _, h := range holds {
		ok, err := a.dropHold(ctx, h)
		if err != nil {
			return dropped, err
		}
		if ok {
			dropped = append(dropped, h.res)
		}
	}
	return dropped, nil
}

// dropHold deletes a hold if unchanged, and its index entry if the entry
// still names it.
func (a *Allocator) dropHold(ctx context.Context, h *holdRef) (bool, error) {
	resp, err := a.store.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(h.path), "=", h.rev)).Then(
		clientv3.OpDelete(h.path),
		clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(h.index), "=", h.path)}, []clientv3.Op{clientv3.OpDelete(h.index)}, nil),
	).Commit()
	if err != nil {
		return false, fmt.Errorf("drop hold of %s: %w: %w", h.addr, ErrUnavailable, err)
	}
	if resp.Succeeded {
		a.markFree(h.block, h.addr)
	}
	return resp.Succeeded, nil
}

// ListReservations returns up to limit live reservations, optionally of one
// pool or key, in key order after after. A page ends early at
// Config.MaxPageBytes.
func (a *Allocator) ListReservations(ctx context.Context, poolName, key, after string, limit int) ([]*ipamv1alpha1.Reservation, string, error) {
	prefix := a.keys.holds()
	if poolName != "" {
		prefix = a.keys.holdPool(poolName)
	}
	start := prefix
	if after != "" {
		start = a.keys.holds() + after + "\x00"
	}
	now := a.cfg.Now()
	var out []*ipamv1alpha1.Reservation
	budget, last := paging.NewBudget(a.cfg.MaxPageBytes), ""
	for {
		resp, err := a.store.Get(ctx, start, clientv3.WithRange(prefixEnd(prefix)), clientv3.WithLimit(512))
		if err != nil {
			return nil, "", fmt.Errorf("list reservations: %w: %w", ErrUnavailable, err)
		}
		for _, kv := range resp.Kvs {
			h, err := a.holdFromKV(string(kv.Key), kv.Value, kv.ModRevision, "", 0)
			if err != nil || h.expired(now) || (key != "" && h.res.GetKey() != key) {
				continue
			}
			if !budget.Take(h.res) {
				return out, last, nil
			}
			out = append(out, h.res)
			last = string(kv.Key)[len(a.keys.holds()):]
			if len(out) == limit {
				return out, last, nil
			}
		}
		if !resp.More {
			return out, "", nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// sweepHolds drops expired holds, making their addresses free.
func (a *Allocator) sweepHolds(ctx context.Context) error {
	resp, err := a.store.Get(ctx, a.keys.holds(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("sweep holds: %w: %w", ErrUnavailable, err)
	}
	now := a.cfg.Now()
	for _, kv := range resp.Kvs {
		h, err := a.holdFromKV(string(kv.Key), kv.Value, kv.ModRevision, "", 0)
		if err != nil || !h.expired(now) {
			continue
		}
		h.index = a.keys.holdKey(h.res.GetFamily(), h.res.GetKey())
		if _, err := a.dropHold(ctx, h); err != nil {
			return err
		}
	}
	return nil
}
