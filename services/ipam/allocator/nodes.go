package allocator

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
	"github.com/axon-cni/axon/services/internal/paging"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

var subdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// validateNode checks a node spec and returns it normalized for storage.
func validateNode(in *ipamv1alpha1.Node) (*ipamv1alpha1.Node, error) {
	if in == nil {
		return nil, fmt.Errorf("node is required: %w", ErrInvalid)
	}
	var errs []error
	if len(in.GetName()) > 253 || !subdomainRE.MatchString(in.GetName()) {
		errs = append(errs, fmt.Errorf("node name %s must be a DNS-1123 subdomain", bounded.Quote(in.GetName())))
	}
	n := &ipamv1alpha1.Node{Name: in.GetName()}
	for _, s := range in.GetAddresses() {
		addr, err := cidr.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("addresses: %w", err))
			continue
		}
		n.Addresses = append(n.Addresses, addr.String())
	}
	seen := map[pool.Family]bool{}
	for _, s := range in.GetPodCidrs() {
		p, err := cidr.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("pod_cidrs: %w", err))
			continue
		}
		f := pool.FamilyOf(p.Addr())
		if seen[f] {
			errs = append(errs, fmt.Errorf("pod_cidrs: more than one %s CIDR", familyKey(f)))
		}
		seen[f] = true
		n.PodCidrs = append(n.PodCidrs, p.String())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return n, nil
}

func sameNodeSpec(a, b *ipamv1alpha1.Node) bool {
	return a.GetName() == b.GetName() && slices.Equal(a.GetAddresses(), b.GetAddresses()) && slices.Equal(a.GetPodCidrs(), b.GetPodCidrs())
}

// CreateNode registers a node; a retry with the same spec returns it.
func (a *Allocator) CreateNode(ctx context.Context, in *ipamv1alpha1.Node) (*ipamv1alpha1.Node, error) {
	n, err := validateNode(in)
	if err != nil {
		return nil, err
	}
	now := timestamppb.New(a.cfg.Now())
	n.CreateTime, n.UpdateTime = now, now
	val, err := protoJSON(n)
	if err != nil {
		return nil, err
	}
	key := a.keys.node(n.GetName())
	resp, err := a.store.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("create node %q: %w: %w", n.GetName(), ErrUnavailable, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		cur, err := decodeNode(key, kvs[0].Value)
		if err != nil {
			return nil, err
		}
		if !sameNodeSpec(cur, n) {
			return nil, fmt.Errorf("node %q exists with a different spec: %w", n.GetName(), ErrExists)
		}
		cur.Revision = strconv.FormatInt(kvs[0].ModRevision, 10)
		return a.withNodeStatus(ctx, cur)
	}
	a.nodes.put(key, n, resp.Header.Revision)
	n.Revision = strconv.FormatInt(resp.Header.Revision, 10)
	return a.withNodeStatus(ctx, n)
}

// GetNode returns a registered node with its router IPs and usage.
func (a *Allocator) GetNode(ctx context.Context, name string) (*ipamv1alpha1.Node, error) {
	key := a.keys.node(name)
	resp, err := a.store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get node %q: %w: %w", name, ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("node %q is not registered: %w", name, ErrNotFound)
	}
	n, err := decodeNode(key, resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	n.Revision = strconv.FormatInt(resp.Kvs[0].ModRevision, 10)
	return a.withNodeStatus(ctx, n)
}

// ListNodes returns up to limit nodes after the name after, in name order,
// and the name to continue after ("" when done). A page ends early at
// Config.MaxPageBytes.
func (a *Allocator) ListNodes(ctx context.Context, after string, limit int) ([]*ipamv1alpha1.Node, string, error) {
	start := a.keys.nodes()
	if after != "" {
		start = a.keys.node(after) + "\x00"
	}
	resp, err := a.store.Get(ctx, start, clientv3.WithRange(prefixEnd(a.keys.nodes())), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, "", fmt.Errorf("list nodes: %w: %w", ErrUnavailable, err)
	}
	var out []*ipamv1alpha1.Node
	budget := paging.NewBudget(a.cfg.MaxPageBytes)
	for _, kv := range resp.Kvs {
		n, err := decodeNode(string(kv.Key), kv.Value)
		if err != nil {
			return nil, "", err
		}
		n.Revision = strconv.FormatInt(kv.ModRevision, 10)
		if n, err = a.withNodeStatus(ctx, n); err != nil {
			return nil, "", err
		}
		if !budget.Take(n) {
			return out, out[len(out)-1].GetName(), nil
		}
		out = append(out, n)
	}
	next := ""
	if resp.More && len(out) > 0 {
		next = out[len(out)-1].GetName()
	}
	return out, next, nil
}

// UpdateNode replaces a node's addresses and pod CIDRs, or registers it
// with allowMissing.
func (a *Allocator) UpdateNode(ctx context.Context, in *ipamv1alpha1.Node, expectedRev string, allowMissing bool) (*ipamv1alpha1.Node, error) {
	n, err := validateNode(in)
	if err != nil {
		return nil, err
	}
	key := a.keys.node(n.GetName())
	for range a.cfg.MaxAttempts {
		resp, err := a.store.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("update node %q: %w: %w", n.GetName(), ErrUnavailable, err)
		}
		if len(resp.Kvs) == 0 {
			if !allowMissing {
				return nil, fmt.Errorf("node %q is not registered: %w", n.GetName(), ErrNotFound)
			}
			if expectedRev != "" {
				return nil, fmt.Errorf("node %q does not exist but expected_revision is set: %w", n.GetName(), ErrConflict)
			}
			return a.CreateNode(ctx, in)
		}
		kv := resp.Kvs[0]
		if expectedRev != "" && expectedRev != strconv.FormatInt(kv.ModRevision, 10) {
			return nil, fmt.Errorf("node %q is at revision %d, not %s: %w", n.GetName(), kv.ModRevision, expectedRev, ErrConflict)
		}
		cur, err := decodeNode(key, kv.Value)
		if err != nil {
			return nil, err
		}
		if sameNodeSpec(cur, n) {
			cur.Revision = strconv.FormatInt(kv.ModRevision, 10)
			return a.withNodeStatus(ctx, cur)
		}
		if err := a.checkPodCIDRRemoval(cur, n); err != nil {
			return nil, err
		}
		stored := proto.CloneOf(n)
		stored.CreateTime, stored.UpdateTime = cur.GetCreateTime(), timestamppb.New(a.cfg.Now())
		val, err := protoJSON(stored)
		if err != nil {
			return nil, err
		}
		txn, err := a.store.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, val)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update node %q: %w: %w", n.GetName(), ErrUnavailable, err)
		}
		if txn.Succeeded {
			a.nodes.put(key, stored, txn.Header.Revision)
			stored.Revision = strconv.FormatInt(txn.Header.Revision, 10)
			return a.withNodeStatus(ctx, stored)
		}
	}
	return nil, fmt.Errorf("update node %q: contention: %w", n.GetName(), ErrConflict)
}

// checkPodCIDRRemoval refuses to drop a pod CIDR that is a claimed block.
func (a *Allocator) checkPodCIDRRemoval(cur, next *ipamv1alpha1.Node) error {
	for _, s := range cur.GetPodCidrs() {
		if slices.Contains(next.GetPodCidrs(), s) {
			continue
		}
		p, err := cidr.ParsePrefix(s)
		if err != nil {
			continue
		}
		if e, ok := a.blocks.get(a.keys.block(p)); ok && e.val.Node == cur.GetName() {
			return fmt.Errorf("node %q: pod CIDR %s is in use as a block of pool %q; release its addresses first: %w", cur.GetName(), s, e.val.Pool, ErrPrecondition)
		}
	}
	return nil
}

// DeleteNode unregisters a node, then releases every allocation on it and
// every block it owns. It also finishes the cleanup of a node whose
// deletion was interrupted, so it is safe to repeat.
func (a *Allocator) DeleteNode(ctx context.Context, name, expectedRev string) (*ipamv1alpha1.DeleteNodeResponse, error) {
	key := a.keys.node(name)
	resp, err := a.store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("delete node %q: %w: %w", name, ErrUnavailable, err)
	}
	if len(resp.Kvs) > 0 {
		modRev := resp.Kvs[0].ModRevision
		if expectedRev != "" && expectedRev != strconv.FormatInt(modRev, 10) {
			return nil, fmt.Errorf("node %q is at revision %d, not %s: %w", name, modRev, expectedRev, ErrConflict)
		}
		// Unregistering first stops new claims and allocations on the node:
		// they compare its revision.
		txn, err := a.store.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
			Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return nil, fmt.Errorf("delete node %q: %w: %w", name, ErrUnavailable, err)
		}
		if !txn.Succeeded {
			return nil, fmt.Errorf("node %q changed while being deleted: %w", name, ErrConflict)
		}
		a.nodes.remove(key, txn.Header.Revision)
	}
	out := &ipamv1alpha1.DeleteNodeResponse{}
	allocs, err := a.nodeAllocations(ctx, name)
	if err != nil {
		return nil, err
	}
	for _, alloc := range allocs {
		got, _, err := a.Release(ctx, Handle{alloc.GetHandle().GetContainerId(), alloc.GetHandle().GetInterfaceName()}, alloc.GetSequence(), false)
		if err != nil {
			return out, err
		}
		if got != nil {
			out.ReleasedAllocations = append(out.ReleasedAllocations, got)
		}
	}
	for _, e := range a.blocks.group(name) {
		b := e.val
		ops := []clientv3.Op{clientv3.OpDelete(a.keys.block(b.CIDR))}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(a.keys.block(b.CIDR)), "=", e.modRev)}
		if b.RouterIP != "" {
			rip, err := cidr.ParseAddr(b.RouterIP)
			if err == nil {
				ops = append(ops, clientv3.OpDelete(a.keys.alloc(b.Pool, b.CIDR, rip)),
					clientv3.OpDelete(a.keys.router(name, pool.FamilyOf(rip))))
			}
		}
		txn, err := a.store.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return out, fmt.Errorf("release block %s of node %q: %w: %w", b.CIDR, name, ErrUnavailable, err)
		}
		if txn.Succeeded {
			a.blocks.remove(a.keys.block(b.CIDR), txn.Header.Revision)
			a.invalidate(b.CIDR)
			out.ReleasedBlocks = append(out.ReleasedBlocks, b.CIDR.String())
		}
	}
	if _, err := a.store.Delete(ctx, a.keys.claim(name, ""), clientv3.WithPrefix()); err != nil {
		return out, fmt.Errorf("drop claims of node %q: %w: %w", name, ErrUnavailable, err)
	}
	return out, nil
}

// withNodeStatus returns n with its router IPs and per-pool usage.
func (a *Allocator) withNodeStatus(ctx context.Context, n *ipamv1alpha1.Node) (*ipamv1alpha1.Node, error) {
	out := proto.CloneOf(n)
	st := &ipamv1alpha1.NodeStatus{}
	blocks := a.blocks.group(n.GetName())
	type pf struct {
		pool string
		fam  pool.Family
	}
	usage := map[pf]*ipamv1alpha1.FamilyUsage{}
	var order []pf
	for _, k := range sortedKeys(blocks) {
		e := blocks[k]
		b := e.val
		f := pool.FamilyOf(b.CIDR.Addr())
		if b.RouterIP != "" {
			st.RouterIps = append(st.RouterIps, b.RouterIP)
		}
		blk, err := a.blockProto(ctx, blockRef{b, e.modRev})
		if err != nil {
			return nil, err
		}
		key := pf{b.Pool, f}
		u, ok := usage[key]
		if !ok {
			u = &ipamv1alpha1.FamilyUsage{Family: f}
			usage[key] = u
			order = append(order, key)
		}
		u.BlocksClaimed++
		u.Capacity = satAdd(u.Capacity, blk.GetCapacity())
		u.Allocated += blk.GetAllocated()
		u.Held += blk.GetHeld()
	}
	for _, k := range order {
		st.Usage = append(st.Usage, &ipamv1alpha1.NodePoolUsage{Pool: k.pool, Usage: usage[k]})
	}
	out.Status = st
	return out, nil
}

// blockProto renders a block with its current counts.
func (a *Allocator) blockProto(ctx context.Context, b blockRef) (*ipamv1alpha1.Block, error) {
	resp, err := a.store.Txn(ctx).Then(
		clientv3.OpGet(a.keys.allocBlock(b.Pool, b.CIDR), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(a.keys.holdBlock(b.Pool, b.CIDR), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("usage of block %s: %w: %w", b.CIDR, ErrUnavailable, err)
	}
	var fs *pool.FamilySpec
	if e, ok := a.pools.get(a.keys.pool(b.Pool)); ok {
		fs = e.val.parsed.Family(pool.FamilyOf(b.CIDR.Addr()))
	}
	return toBlockProto(b, uint64(resp.Responses[0].GetResponseRange().Count), uint64(resp.Responses[1].GetResponseRange().Count), fs), nil
}
