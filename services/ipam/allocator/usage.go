package allocator

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// blockUsage is this allocator's view of which addresses of one block are
// taken (allocated, held or a router IP). It is loaded from etcd on first
// use and kept current by our own writes; another replica's allocations
// make our transaction fail, after which the view is reloaded, and its
// releases are seen when a block that looks full is re-read (see
// Config.UsageMaxAge). Addresses picked by an in-flight allocation are
// pending, so concurrent allocations of this replica never race for the
// same address.
type blockUsage struct {
	mu       sync.Mutex
	loaded   bool
	loadedAt time.Time
	used     map[netip.Addr]bool
	pending  map[netip.Addr]bool
	cursor   uint64
	// full is set when a scan found no free address, so later picks skip
	// the block at once until an address is freed or the view reloads.
	full bool
}

// usageOf returns the loaded usage view of block b.
func (a *Allocator) usageOf(ctx context.Context, b *blockRecord) (*blockUsage, error) {
	a.usageMu.Lock()
	u, ok := a.usage[b.CIDR]
	if !ok {
		u = &blockUsage{}
		a.usage[b.CIDR] = u
	}
	a.usageMu.Unlock()

	u.mu.Lock()
	defer u.mu.Unlock()
	if u.loaded {
		return u, nil
	}
	resp, err := a.store.Txn(ctx).Then(
		clientv3.OpGet(a.keys.allocBlock(b.Pool, b.CIDR), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(a.keys.holdBlock(b.Pool, b.CIDR), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("load usage of block %s: %w: %w", b.CIDR, ErrUnavailable, err)
	}
	u.used = map[netip.Addr]bool{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			if addr, err := netip.ParseAddr(lastSegment(string(kv.Key))); err == nil {
				u.used[addr] = true
			}
		}
	}
	if u.pending == nil {
		u.pending = map[netip.Addr]bool{}
	}
	u.loaded, u.loadedAt = true, a.cfg.Now()
	return u, nil
}

// age is how long ago the view was read from etcd.
func (u *blockUsage) age(now time.Time) time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	return now.Sub(u.loadedAt)
}

// invalidate makes the next use of block reload its usage from etcd.
func (a *Allocator) invalidate(block netip.Prefix) {
	a.usageMu.Lock()
	u := a.usage[block]
	a.usageMu.Unlock()
	if u != nil {
		u.mu.Lock()
		u.loaded, u.full = false, false
		u.mu.Unlock()
	}
}

// pick reserves the next free usable address of b for an in-flight
// allocation, scanning from where the last pick stopped (next fit), so a
// just-freed address is not handed out again at once.
func (u *blockUsage) pick(fs *pool.FamilySpec, b *blockRecord) (netip.Addr, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.full {
		return netip.Addr{}, false
	}
	size := cidr.Size(b.CIDR)
	// Blocks are at most 2^(128-122) or 2^(32-outer) addresses in practice;
	// bound the scan so a huge host-scope IPv6 block stays cheap.
	limit := min(size, uint64(1)<<20)
	for i := range limit {
		off := (u.cursor + i) % size
		addr, ok := cidr.Nth(b.CIDR, off)
		if !ok || u.used[addr] || u.pending[addr] || !fs.Usable(b.Outer, addr) || addr.String() == b.RouterIP {
			continue
		}
		u.pending[addr] = true
		u.cursor = (off + 1) % size
		return addr, true
	}
	// Pending addresses may come back; only a block with none is full.
	u.full = len(u.pending) == 0
	return netip.Addr{}, false
}

// claimAddr marks a specific address pending; false if it is taken.
// heldByUs says the address is taken by a hold this allocation consumes.
func (u *blockUsage) claimAddr(addr netip.Addr, heldByUs bool) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if (u.used[addr] && !heldByUs) || u.pending[addr] {
		return false
	}
	u.pending[addr] = true
	return true
}

// settle ends an in-flight allocation of addr: committed marks it used.
func (u *blockUsage) settle(addr netip.Addr, committed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.pending, addr)
	if committed {
		u.used[addr] = true
	} else {
		u.full = false
	}
}

// free records that addr was released by us.
func (a *Allocator) markFree(block netip.Prefix, addr netip.Addr) {
	a.usageMu.Lock()
	u := a.usage[block]
	a.usageMu.Unlock()
	if u != nil {
		u.mu.Lock()
		delete(u.used, addr)
		u.full = false
		u.mu.Unlock()
	}
}
