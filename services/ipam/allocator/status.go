package allocator

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/iprange"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// satAdd adds with saturation at math.MaxUint64.
func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// satSub subtracts, flooring at 0; a saturated a (math.MaxUint64, a count
// too large to hold) stays saturated.
func satSub(a, b uint64) uint64 {
	switch {
	case a == math.MaxUint64:
		return a
	case b > a:
		return 0
	}
	return a - b
}

// usableIn counts the addresses of block that may be handed out: its size
// minus the union of the reserved ranges inside it and the first/last
// addresses of outer that fall in it (each address counted once, however
// many reasons make it unusable).
func usableIn(fs *pool.FamilySpec, outer, block netip.Prefix) uint64 {
	br := iprange.FromPrefix(block)
	var in []iprange.Range
	for _, rr := range fs.Reserved {
		if !rr.Overlaps(br) {
			continue
		}
		from, to := rr.From, rr.To
		if from.Less(br.From) {
			from = br.From
		}
		if br.To.Less(to) {
			to = br.To
		}
		in = append(in, iprange.Range{From: from, To: to})
	}
	merged := iprange.Merge(in)
	var taken uint64
	for _, r := range merged {
		taken = satAdd(taken, r.Size())
	}
	reserved := func(a netip.Addr) bool {
		return slices.ContainsFunc(merged, func(r iprange.Range) bool { return r.Contains(a) })
	}
	r := iprange.FromPrefix(outer)
	if block.Contains(r.From) && !reserved(r.From) {
		taken = satAdd(taken, 1)
	}
	if r.To.Is4() && outer.Bits() < 31 && block.Contains(r.To) && !reserved(r.To) {
		taken = satAdd(taken, 1)
	}
	return satSub(cidr.Size(block), taken)
}

// withPoolStatus returns a copy of p with its usage filled in.
func (a *Allocator) withPoolStatus(ctx context.Context, p *ipamv1alpha1.Pool) (*ipamv1alpha1.Pool, error) {
	parsed, err := pool.Parse(p)
	if err != nil {
		return nil, err
	}
	out := proto.CloneOf(p)
	fams := parsed.FamilyList()
	var ops []clientv3.Op
	for _, f := range fams {
		ops = append(ops,
			clientv3.OpGet(a.keys.allocFamily(parsed.Name, f), clientv3.WithPrefix(), clientv3.WithCountOnly()),
			clientv3.OpGet(a.keys.holdFamily(parsed.Name, f), clientv3.WithPrefix(), clientv3.WithCountOnly()))
	}
	resp, err := a.store.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("usage of pool %q: %w: %w", parsed.Name, ErrUnavailable, err)
	}
	blocks := a.blocks.snapshot(func(b *blockRecord) bool { return b.Pool == parsed.Name })
	nodes := map[string]bool{}
	status := &ipamv1alpha1.PoolStatus{}
	for i, f := range fams {
		fs := parsed.Family(f)
		u := &ipamv1alpha1.FamilyUsage{Family: f}
		allocated := uint64(resp.Responses[2*i].GetResponseRange().Count)
		u.Held = uint64(resp.Responses[2*i+1].GetResponseRange().Count)
		var routers uint64
		for _, e := range blocks {
			b := e.val
			if pool.FamilyOf(b.CIDR.Addr()) != f {
				continue
			}
			u.BlocksClaimed++
			nodes[b.Node] = true
			if b.RouterIP != "" {
				routers++
			}
			if parsed.Mode == pool.HostScope {
				u.Capacity = satAdd(u.Capacity, usableIn(fs, b.Outer, b.CIDR))
			}
		}
		if parsed.Mode == pool.ClusterScope {
			for _, c := range fs.CIDRs {
				u.Capacity = satAdd(u.Capacity, usableIn(fs, c, c))
				u.BlocksTotal = satAdd(u.BlocksTotal, cidr.BlockCount(c, fs.BlockBits))
			}
		}
		u.Capacity = satSub(u.Capacity, routers)
		u.Allocated = satSub(allocated, routers)
		status.Usage = append(status.Usage, u)
	}
	status.NodeCount = uint32(len(nodes))
	out.Status = status
	return out, nil
}

// NodeUsage counts, per node, pool and family, the addresses allocated to
// pods (router IPs excluded), from one keys-only read of every address.
type NodeUsage struct {
	Node, Pool string
	Family     pool.Family
	Allocated  uint64
}

// UsageByNode returns the allocated-address counts of every node.
func (a *Allocator) UsageByNode(ctx context.Context) ([]NodeUsage, error) {
	resp, err := a.store.Get(ctx, a.keys.allocs(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("read allocations: %w: %w", ErrUnavailable, err)
	}
	type k struct {
		node, pool string
		fam        pool.Family
	}
	counts := map[k]uint64{}
	routers := map[string]bool{}
	blocks := a.blocks.snapshot(nil)
	for _, e := range blocks {
		if e.val.RouterIP != "" {
			routers[e.val.RouterIP] = true
		}
	}
	for _, kv := range resp.Kvs {
		// alloc/<pool>/<family>/<block>/<ip>
		parts := strings.Split(string(kv.Key[len(a.keys.allocs()):]), "/")
		if len(parts) != 4 || routers[parts[3]] {
			continue
		}
		bp, err := cidr.ParseKey(parts[2])
		if err != nil {
			continue
		}
		e, ok := blocks[a.keys.block(bp)]
		if !ok {
			continue
		}
		counts[k{e.val.Node, parts[0], pool.FamilyOf(bp.Addr())}]++
	}
	out := make([]NodeUsage, 0, len(counts))
	for key, n := range counts {
		out = append(out, NodeUsage{Node: key.node, Pool: key.pool, Family: key.fam, Allocated: n})
	}
	return out, nil
}
