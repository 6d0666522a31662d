package allocator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
	"github.com/axon-cni/axon/services/ipam/cidr"
	"github.com/axon-cni/axon/services/ipam/pool"
)

// PoolAnnotation on a namespace names the pool(s) for its pods.
const PoolAnnotation = "ipam.axon.io/pool"

// famPlan is what one family of an allocation will take.
type famPlan struct {
	fam   pool.Family
	pool  poolRef
	block blockRef
	addr  netip.Addr
	usage *blockUsage
	// hold is the sticky key's reservation of this family: consumed when
	// its address is the one taken, dropped otherwise.
	hold *holdRef
}

// Allocate allocates one address per wanted family for a handle on a node,
// all or nothing, in one transaction. A retry for the same handle returns
// the existing allocation.
func (a *Allocator) Allocate(ctx context.Context, req *ipamv1alpha1.AllocateIPRequest) (*ipamv1alpha1.Allocation, error) {
	resp, err := a.AllocateIP(ctx, req)
	return resp.GetAllocation(), err
}

// AllocateIP is Allocate that also reports whether a sticky hold was
// restored.
func (a *Allocator) AllocateIP(ctx context.Context, req *ipamv1alpha1.AllocateIPRequest) (*ipamv1alpha1.AllocateIPResponse, error) {
	r, err := checkAllocateRequest(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := r.context(ctx)
	defer cancel()
	return a.allocate(ctx, r, 0)
}

// AllocateMany serves several allocations at once (AllocateIPs), each as
// AllocateIP and on its own, in request order. All are planned first and
// their transactions queued together, so they share etcd transactions.
func (a *Allocator) AllocateMany(ctx context.Context, reqs []*ipamv1alpha1.AllocateIPRequest) ([]*ipamv1alpha1.AllocateIPResponse, []error) {
	resps := make([]*ipamv1alpha1.AllocateIPResponse, len(reqs))
	errs := make([]error, len(reqs))
	pending := make([]*pendingAlloc, len(reqs))
	ctxs := make([]context.Context, len(reqs))
	var jobs []*commitJob
	for i, req := range reqs {
		r, err := checkAllocateRequest(req)
		if err != nil {
			errs[i] = err
			continue
		}
		// Each request runs on its caller's own time.
		var cancel context.CancelFunc
		ctxs[i], cancel = r.context(ctx)
		defer cancel()
		pa, done, err := a.prepareAllocation(ctxs[i], r)
		if pa == nil {
			resps[i], errs[i] = done, err
			continue
		}
		pending[i] = pa
		jobs = append(jobs, pa.job)
	}
	a.enqueue(jobs...)
	var wg sync.WaitGroup
	for i, pa := range pending {
		if pa == nil {
			continue
		}
		wg.Go(func() {
			resp, retry, err := a.finishAllocation(ctxs[i], pa)
			if retry {
				resp, err = a.allocate(ctxs[i], pa.req, 1)
			}
			resps[i], errs[i] = resp, err
		})
	}
	wg.Wait()
	return resps, errs
}

// allocateRequest is a checked AllocateIPRequest.
type allocateRequest struct {
	*ipamv1alpha1.AllocateIPRequest
	h         Handle
	requested map[pool.Family]netip.Addr
}

func checkAllocateRequest(req *ipamv1alpha1.AllocateIPRequest) (allocateRequest, error) {
	r := allocateRequest{AllocateIPRequest: req, h: Handle{req.GetHandle().GetContainerId(), req.GetHandle().GetInterfaceName()}}
	if err := r.h.validate(); err != nil {
		return r, err
	}
	if err := checkAllocateLimits(req); err != nil {
		return r, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var err error
	if r.requested, err = parseRequested(req); err != nil {
		return r, err
	}
	if d := req.GetStickyHold(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return r, fmt.Errorf("sticky_hold must be a non-negative duration: %w", ErrInvalid)
	}
	if d := req.GetTimeout(); d != nil && (d.CheckValid() != nil || d.AsDuration() <= 0) {
		return r, fmt.Errorf("timeout must be a positive duration: %w", ErrInvalid)
	}
	return r, nil
}

// Bounds of an AllocateIPRequest beyond its owner handle (documented in
// ipam.proto).
const (
	maxRequestedPools = 8
	maxRequestedIPs   = 2
	maxFamilies       = 2
)

// checkAllocateLimits checks the strings and maps of req against their
// documented limits, before any of them reaches the store or a message.
func checkAllocateLimits(req *ipamv1alpha1.AllocateIPRequest) error {
	pod := req.GetPod()
	return bounded.First(
		bounded.String("node", req.GetNode(), bounded.DNSSubdomain),
		bounded.Strings("requested_pools", req.GetRequestedPools(), maxRequestedPools, bounded.DNSLabel),
		bounded.Strings("requested_ips", req.GetRequestedIps(), maxRequestedIPs, bounded.Address),
		bounded.Count("families", len(req.GetFamilies()), maxFamilies),
		bounded.String("sticky_key", req.GetStickyKey(), bounded.Key),
		bounded.String("pod.namespace", pod.GetNamespace(), bounded.DNSLabel),
		bounded.String("pod.name", pod.GetName(), bounded.DNSSubdomain),
		bounded.Labels("pod.labels", pod.GetLabels()),
		bounded.Labels("pod.namespace_labels", pod.GetNamespaceLabels()),
		bounded.Annotations("pod.namespace_annotations", pod.GetNamespaceAnnotations()),
	)
}

// context is ctx bounded by the request's own timeout, if it has one.
func (r allocateRequest) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if d := r.GetTimeout(); d != nil {
		return context.WithTimeout(ctx, d.AsDuration())
	}
	return ctx, func() {}
}

// allocate plans and commits an allocation until a transaction holds,
// starting at attempt.
func (a *Allocator) allocate(ctx context.Context, r allocateRequest, attempt int) (*ipamv1alpha1.AllocateIPResponse, error) {
	for ; attempt < a.cfg.MaxAttempts; attempt++ {
		pa, done, err := a.prepareAllocation(ctx, r)
		if pa == nil {
			return done, err
		}
		a.enqueue(pa.job)
		resp, retry, err := a.finishAllocation(ctx, pa)
		if !retry {
			return resp, err
		}
	}
	return nil, fmt.Errorf("allocate for %s on node %q: contention did not settle after %d attempts: %w", r.h, r.GetNode(), a.cfg.MaxAttempts, ErrConflict)
}

// pendingAlloc is an allocation planned and queued for commit.
type pendingAlloc struct {
	req   allocateRequest
	n     nodeRef
	plans []famPlan
	alloc *ipamv1alpha1.Allocation
	job   *commitJob
}

// prepareAllocation plans an allocation and builds its transaction. With
// no pending allocation it returns the answer instead: an existing
// allocation of the handle, or the error.
func (a *Allocator) prepareAllocation(ctx context.Context, r allocateRequest) (*pendingAlloc, *ipamv1alpha1.AllocateIPResponse, error) {
	n, err := a.lookupNode(ctx, r.GetNode())
	if err != nil {
		return nil, nil, err
	}
	plans, err := a.plan(ctx, n, r.AllocateIPRequest, r.requested)
	if err != nil {
		if existing, ok, gerr := a.existing(ctx, a.keys.handle(r.h), r.GetNode()); gerr != nil || ok {
			// A retry of an allocation that already succeeded must not
			// fail because the pool filled up since.
			return nil, &ipamv1alpha1.AllocateIPResponse{Allocation: existing}, gerr
		}
		return nil, nil, err
	}
	pa := &pendingAlloc{req: r, n: n, plans: plans}
	if err := a.buildAllocation(ctx, pa); err != nil {
		for _, p := range plans {
			p.usage.settle(p.addr, false)
		}
		return nil, nil, err
	}
	return pa, nil, nil
}

// finishAllocation waits for a pending allocation's transaction and settles
// its plans. retry says the transaction lost a race: plan again.
func (a *Allocator) finishAllocation(ctx context.Context, pa *pendingAlloc) (_ *ipamv1alpha1.AllocateIPResponse, retry bool, _ error) {
	resp, err := pa.job.wait(ctx)
	alloc, committed, err := a.commitResult(ctx, pa, resp, err)
	restored := false
	for _, p := range pa.plans {
		p.usage.settle(p.addr, committed)
		restored = restored || (committed && p.hold != nil && p.hold.addr == p.addr)
	}
	if err != nil {
		return nil, false, err
	}
	if alloc != nil {
		return &ipamv1alpha1.AllocateIPResponse{Allocation: alloc, StickyRestored: restored}, false, nil
	}
	for _, p := range pa.plans {
		a.invalidate(p.block.CIDR)
	}
	return nil, true, nil
}

// existing returns the stored allocation of hkey, if any, checking it is on
// node.
func (a *Allocator) existing(ctx context.Context, hkey, node string) (*ipamv1alpha1.Allocation, bool, error) {
	resp, err := a.store.Get(ctx, hkey)
	if err != nil {
		return nil, false, fmt.Errorf("read handle: %w: %w", ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	alloc, err := existingOn(resp.Kvs[0], node)
	return alloc, err == nil, err
}

// existingOn decodes a stored handle for a retried allocation: it must be
// on the node the retry names.
func existingOn(kv *mvccpb.KeyValue, node string) (*ipamv1alpha1.Allocation, error) {
	alloc, err := decodeAllocation(kv.Value, kv.CreateRevision)
	if err != nil {
		return nil, err
	}
	if alloc.GetNode() != node {
		h := alloc.GetHandle()
		return nil, fmt.Errorf("handle %s/%s is allocated on node %q, not %q: %w", h.GetContainerId(), h.GetInterfaceName(), alloc.GetNode(), node, ErrPrecondition)
	}
	return alloc, nil
}

// Allocation records, written once per allocation, are binary protobuf:
// protojson cost several times the CPU of the rest of the commit. Records
// written far less often (pools, nodes, reservations) stay JSON.

func encodeAllocation(alloc *ipamv1alpha1.Allocation) (string, error) {
	b, err := proto.Marshal(alloc)
	if err != nil {
		return "", fmt.Errorf("encode allocation: %w: %w", ErrInvalid, err)
	}
	return string(b), nil
}

func decodeAllocation(v []byte, seq int64) (*ipamv1alpha1.Allocation, error) {
	alloc := &ipamv1alpha1.Allocation{}
	if err := proto.Unmarshal(v, alloc); err != nil {
		return nil, fmt.Errorf("decode allocation: %w", err)
	}
	alloc.Sequence = uint64(seq)
	return alloc, nil
}

// parseRequested parses the requested IPs, at most one per family.
func parseRequested(req *ipamv1alpha1.AllocateIPRequest) (map[pool.Family]netip.Addr, error) {
	out := map[pool.Family]netip.Addr{}
	for _, s := range req.GetRequestedIps() {
		addr, err := cidr.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("requested_ips: %w: %w", ErrInvalid, err)
		}
		f := pool.FamilyOf(addr)
		if _, dup := out[f]; dup {
			return nil, fmt.Errorf("requested_ips: more than one %s address: %w", familyKey(f), ErrInvalid)
		}
		if fams := req.GetFamilies(); len(fams) > 0 && !slices.Contains(fams, f) {
			return nil, fmt.Errorf("requested_ips: %s is of a family not asked for: %w", addr, ErrInvalid)
		}
		out[f] = addr
	}
	for _, f := range req.GetFamilies() {
		if f != pool.IPv4 && f != pool.IPv6 {
			return nil, fmt.Errorf("families: unknown family %v: %w", f, ErrInvalid)
		}
	}
	return out, nil
}

// plan chooses pool, block and address for every wanted family. Addresses
// it returns are pending in their block's usage; the caller settles them.
func (a *Allocator) plan(ctx context.Context, n nodeRef, req *ipamv1alpha1.AllocateIPRequest, requested map[pool.Family]netip.Addr) (plans []famPlan, err error) {
	defer func() {
		if err != nil {
			for _, p := range plans {
				p.usage.settle(p.addr, false)
			}
			plans = nil
		}
	}()
	fams := req.GetFamilies()
	explicit := len(fams) > 0
	if !explicit {
		fams = a.servedFamilies(requested)
	}
	for _, f := range slices.Compact(slices.Clone(fams)) {
		var hold *holdRef
		if key := req.GetStickyKey(); key != "" {
			if hold, err = a.readHold(ctx, f, key); err != nil {
				return plans, err
			}
		}
		if fp, ok, err := a.planFromHold(ctx, n, f, hold, requested[f]); err != nil {
			return plans, err
		} else if ok {
			plans = append(plans, fp)
			continue
		}
		p, err := a.choosePool(ctx, n, req, f, requested[f])
		if errors.Is(err, errNoPool) && !explicit {
			continue
		}
		if err != nil {
			return plans, err
		}
		fp, err := a.chooseAddress(ctx, n, p, f, requested[f], false)
		if err != nil {
			return plans, err
		}
		fp.hold = hold // an unusable hold is dropped by the allocation
		plans = append(plans, fp)
	}
	if len(plans) == 0 {
		return nil, fmt.Errorf("no pool serves any family for this pod (create a default pool): %w", ErrPrecondition)
	}
	return plans, nil
}

var errNoPool = errors.New("no pool for family")

// choosePool picks the pool of family f: a requested IP's pool, then
// requested pools, the namespace annotation, selectors, the default pool.
func (a *Allocator) choosePool(ctx context.Context, n nodeRef, req *ipamv1alpha1.AllocateIPRequest, f pool.Family, want netip.Addr) (poolRef, error) {
	pools := a.pools.snapshot(nil)
	if want.IsValid() {
		for _, e := range pools {
			fs := e.val.parsed.Family(f)
			if fs == nil {
				continue
			}
			if _, ok := fs.CIDRContaining(want); ok && e.val.parsed.Mode == pool.ClusterScope {
				return poolRef{e.val, e.modRev}, nil
			}
			if pc, ok := hostPodCIDR(n.node, e.val.parsed, f); ok && e.val.parsed.Mode == pool.HostScope && pc.Contains(want) {
				return poolRef{e.val, e.modRev}, nil
			}
		}
		return poolRef{}, fmt.Errorf("requested IP %s is in no pool that can serve node %q: %w", want, n.node.GetName(), ErrPrecondition)
	}
	named := func(names []string, what string) (poolRef, bool, error) {
		for _, name := range names {
			p, err := a.lookupPool(ctx, name)
			if err != nil {
				return poolRef{}, false, fmt.Errorf("%s: %w", what, err)
			}
			if p.parsed.Family(f) != nil {
				return p, true, nil
			}
		}
		return poolRef{}, false, nil
	}
	if names := req.GetRequestedPools(); len(names) > 0 {
		// An explicit request is binding: a family none of its pools serves
		// is not taken from elsewhere.
		p, ok, err := named(names, "requested_pools")
		if err != nil || ok {
			return p, err
		}
		return poolRef{}, fmt.Errorf("requested_pools %v serve no %s addresses: %w: %w", names, familyKey(f), errNoPool, ErrPrecondition)
	}
	if v := req.GetPod().GetNamespaceAnnotations()[PoolAnnotation]; v != "" {
		var names []string
		for s := range strings.SplitSeq(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				names = append(names, s)
			}
		}
		if p, ok, err := named(names, "namespace annotation "+PoolAnnotation); err != nil || ok {
			return p, err
		}
	}
	var best *poolRef
	for _, name := range sortedKeys(pools) {
		e := pools[name]
		sp := e.val.parsed
		if sp.Family(f) == nil || !sp.SelectsPod(req.GetPod().GetLabels(), req.GetPod().GetNamespaceLabels()) {
			continue
		}
		if best == nil || sp.Priority > best.parsed.Priority {
			best = &poolRef{e.val, e.modRev}
		}
	}
	if best != nil {
		return *best, nil
	}
	p, err := a.defaultPool(ctx, f)
	if errors.Is(err, ErrNotFound) {
		return poolRef{}, fmt.Errorf("no pool serves %s for this pod: %w: %w", familyKey(f), errNoPool, ErrPrecondition)
	}
	return p, err
}

// chooseAddress picks a free address of pool p on node n: the requested one,
// or the next free one of the node's blocks, claiming a block when all are
// full.
func (a *Allocator) chooseAddress(ctx context.Context, n nodeRef, p poolRef, f pool.Family, want netip.Addr, heldByUs bool) (famPlan, error) {
	if want.IsValid() {
		return a.chooseRequested(ctx, n, p, f, want, heldByUs)
	}
	fs := p.parsed.Family(f)
	node := n.node.GetName()
	blocks := a.nodeBlocks(node, p.parsed.Name, f)
	// pickAny picks from the node's blocks, re-reading a block that looks
	// full when its view is older than maxAge.
	pickAny := func(maxAge time.Duration) (famPlan, bool, error) {
		for _, blk := range blocks {
			u, err := a.usageOf(ctx, blk.blockRecord)
			if err != nil {
				return famPlan{}, false, err
			}
			addr, ok := u.pick(fs, blk.blockRecord)
			if !ok && u.age(a.cfg.Now()) >= maxAge {
				a.invalidate(blk.CIDR)
				if u, err = a.usageOf(ctx, blk.blockRecord); err != nil {
					return famPlan{}, false, err
				}
				addr, ok = u.pick(fs, blk.blockRecord)
			}
			if ok {
				return famPlan{fam: f, pool: p, block: blk, addr: addr, usage: u}, true, nil
			}
		}
		return famPlan{}, false, nil
	}
	// Pods starting together on a node share one new block: while one
	// allocation claims it, the others wait and pick from it. Each wait
	// ends in a new block to pick from or in an error of the claim; none is
	// counted as an attempt.
	for {
		if fp, ok, err := pickAny(a.cfg.UsageMaxAge); err != nil || ok {
			return fp, err
		}
		if p.parsed.Mode == pool.HostScope && len(blocks) > 0 {
			if fp, ok, err := pickAny(0); err != nil || ok {
				return fp, err
			}
			blk := blocks[0]
			return famPlan{}, fmt.Errorf("pod CIDR %s of node %q in host-scope pool %q is full (%d usable addresses): %w",
				blk.CIDR, node, p.parsed.Name, usableIn(fs, blk.Outer, blk.CIDR), ErrExhausted)
		}
		turn := claimKey{node, p.parsed.Name, f}
		flight, mine := a.claimTurn(turn)
		if mine {
			fp, err := a.claimAndPick(ctx, n, p, f, blocks, pickAny)
			if errors.Is(err, errNewBlockTaken) {
				a.claimDone(turn, nil)
				blocks = a.nodeBlocks(node, p.parsed.Name, f)
				continue
			}
			a.claimDone(turn, err)
			return fp, err
		}
		select {
		case <-flight.done:
		case <-ctx.Done():
			return famPlan{}, fmt.Errorf("wait for node %q's block claim: %w: %w", node, ErrUnavailable, ctx.Err())
		}
		blocks = a.nodeBlocks(node, p.parsed.Name, f)
		if err := flight.err; errors.Is(err, ErrExhausted) || errors.Is(err, ErrPrecondition) {
			// The pool has no block for this node: re-read its blocks
			// once before saying so. Other failures (the claimer's
			// deadline, etcd) are the claimer's own: claim again.
			if fp, ok, perr := pickAny(0); perr != nil || ok {
				return fp, perr
			}
			return famPlan{}, err
		}
	}
}

// claimAndPick claims a new block of p for node n and picks an address of it.
func (a *Allocator) claimAndPick(ctx context.Context, n nodeRef, p poolRef, f pool.Family, blocks []blockRef, pickAny func(time.Duration) (famPlan, bool, error)) (famPlan, error) {
	fs := p.parsed.Family(f)
	blk, err := a.claimBlock(ctx, n, p, f, claimOpts{})
	if errors.Is(err, ErrExhausted) && len(blocks) > 0 {
		// Before refusing, re-read the node's blocks: another replica may
		// have released addresses in them.
		if fp, ok, perr := pickAny(0); perr != nil || ok {
			return fp, perr
		}
	}
	if err != nil {
		return famPlan{}, err
	}
	if a.testHookClaimed != nil {
		a.testHookClaimed(blk.blockRecord)
	}
	u, err := a.usageOf(ctx, blk.blockRecord)
	if err != nil {
		return famPlan{}, err
	}
	if addr, ok := u.pick(fs, blk.blockRecord); ok {
		return famPlan{fam: f, pool: p, block: blk, addr: addr, usage: u}, nil
	}
	// Allocations that read the node's blocks once the claim landed (not
	// waiting for the claim) may have taken every address before this one
	// picked: claim again.
	podAddrs := usableIn(fs, blk.Outer, blk.CIDR)
	if blk.RouterIP != "" {
		podAddrs--
	}
	if podAddrs > 0 {
		return famPlan{}, errNewBlockTaken
	}
	return famPlan{}, fmt.Errorf("new block %s of pool %q has no usable address: %w", blk.CIDR, p.parsed.Name, ErrExhausted)
}

// errNewBlockTaken says other allocations took every address of the block
// just claimed: the claimer claims again.
var errNewBlockTaken = errors.New("new block taken by other allocations")

// chooseRequested plans the requested address want of pool p on node n.
// Everything that can be judged without a block is judged before one is
// claimed: a refused request changes nothing.
func (a *Allocator) chooseRequested(ctx context.Context, n nodeRef, p poolRef, f pool.Family, want netip.Addr, heldByUs bool) (famPlan, error) {
	fs := p.parsed.Family(f)
	node := n.node.GetName()
	// outer is the range want must lie in; wantBlock the block holding it
	// (host scope: none to name, the node's pod CIDR is its only block).
	var outer, wantBlock netip.Prefix
	if p.parsed.Mode == pool.HostScope {
		pc, ok := hostPodCIDR(n.node, p.parsed, f)
		if !ok || !pc.Contains(want) {
			return famPlan{}, fmt.Errorf("requested IP %s is outside node %q's pod CIDR in host-scope pool %q: %w", want, node, p.parsed.Name, ErrPrecondition)
		}
		outer = pc
	} else {
		c, ok := fs.CIDRContaining(want)
		if !ok {
			return famPlan{}, fmt.Errorf("requested IP %s is outside the CIDRs of pool %q: %w", want, p.parsed.Name, ErrPrecondition)
		}
		outer, wantBlock = c, cidr.BlockOf(want, fs.BlockBits)
	}
	if !fs.Usable(outer, want) {
		return famPlan{}, fmt.Errorf("requested IP %s is reserved (network, broadcast or reserved range): %w", want, ErrPrecondition)
	}
	blk, err := a.ensureBlock(ctx, n, p, f, wantBlock)
	if err != nil {
		return famPlan{}, err
	}
	if !blk.CIDR.Contains(want) {
		return famPlan{}, fmt.Errorf("requested IP %s is outside node %q's block %s: %w", want, node, blk.CIDR, ErrPrecondition)
	}
	if want.String() == blk.RouterIP {
		return famPlan{}, fmt.Errorf("requested IP %s is node %q's router IP: %w", want, node, ErrPrecondition)
	}
	u, err := a.usageOf(ctx, blk.blockRecord)
	if err != nil {
		return famPlan{}, err
	}
	if !u.claimAddr(want, heldByUs) {
		return famPlan{}, fmt.Errorf("requested IP %s is allocated or held: %w", want, ErrExists)
	}
	return famPlan{fam: f, pool: p, block: blk, addr: want, usage: u}, nil
}

// ensureBlock returns the node's block want (or, for host scope, its pod
// CIDR block), claiming it if nobody has.
func (a *Allocator) ensureBlock(ctx context.Context, n nodeRef, p poolRef, f pool.Family, want netip.Prefix) (blockRef, error) {
	if want.IsValid() {
		if e, ok := a.blocks.get(a.keys.block(want)); ok {
			if e.val.Node != n.node.GetName() || e.val.Pool != p.parsed.Name {
				return blockRef{}, fmt.Errorf("block %s belongs to node %q (pool %q): %w", want, e.val.Node, e.val.Pool, ErrPrecondition)
			}
			return blockRef{e.val, e.modRev}, nil
		}
	} else if blks := a.nodeBlocks(n.node.GetName(), p.parsed.Name, f); len(blks) > 0 {
		return blks[0], nil
	}
	return a.claimBlock(ctx, n, p, f, claimOpts{want: want})
}

// buildAllocation builds the transaction that writes a pending
// allocation's handle and addresses.
func (a *Allocator) buildAllocation(ctx context.Context, pa *pendingAlloc) error {
	h, n, req := pa.req.h, pa.n, pa.req
	now := a.cfg.Now().UTC()
	alloc := &ipamv1alpha1.Allocation{
		Handle:       &ipamv1alpha1.OwnerHandle{ContainerId: h.ContainerID, InterfaceName: h.Interface},
		Node:         n.node.GetName(),
		PodNamespace: req.GetPod().GetNamespace(),
		PodName:      req.GetPod().GetName(),
		CreateTime:   timestamppb.New(now),
	}
	if req.GetStickyKey() != "" {
		alloc.StickyKey = req.GetStickyKey()
		hold := a.cfg.StickyHold
		if req.GetStickyHold() != nil {
			hold = req.GetStickyHold().AsDuration()
		}
		alloc.StickyHold = durationpb.New(hold)
	}
	hkey := a.keys.handle(h)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(hkey), "=", 0),
		clientv3.Compare(clientv3.ModRevision(a.keys.node(n.node.GetName())), "=", n.rev),
	}
	var ops []clientv3.Op
	elseOps := []clientv3.Op{clientv3.OpGet(hkey)}
	written := []string{hkey}
	if key := req.GetStickyKey(); key != "" {
		// One live allocation per sticky key: a re-created pod whose old
		// incarnation is not yet released must wait for that release.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(a.keys.stickyOwner(key)), "=", 0))
		ops = append(ops, clientv3.OpPut(a.keys.stickyOwner(key), hkey))
		elseOps = append(elseOps, clientv3.OpGet(a.keys.stickyOwner(key)))
		written = append(written, a.keys.stickyOwner(key))
	}
	rec := mustJSON(addrRecord{ContainerID: h.ContainerID, Interface: h.Interface})
	for _, p := range pa.plans {
		gw := a.routerIP(n.node.GetName(), p.fam)
		alloc.Addresses = append(alloc.Addresses, &ipamv1alpha1.AllocatedAddress{
			Ip: p.addr.String(), Family: p.fam, PrefixLength: uint32(p.addr.BitLen()),
			Gateway: gw, Pool: p.pool.parsed.Name, Block: p.block.CIDR.String(),
		})
		akey := a.keys.alloc(p.pool.parsed.Name, p.block.CIDR, p.addr)
		cmps = append(cmps,
			clientv3.Compare(clientv3.ModRevision(a.keys.pool(p.pool.parsed.Name)), "=", p.pool.rev),
			clientv3.Compare(clientv3.ModRevision(a.keys.block(p.block.CIDR)), "=", p.block.rev),
			clientv3.Compare(clientv3.CreateRevision(akey), "=", 0),
		)
		ops = append(ops, clientv3.OpPut(akey, rec))
		written = append(written, akey)
		addrHold := a.keys.hold(p.pool.parsed.Name, p.block.CIDR, p.addr)
		if p.hold != nil {
			// Consume the sticky key's hold, or drop it if its address
			// could not be used here.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(p.hold.path), "=", p.hold.rev),
				clientv3.Compare(clientv3.ModRevision(p.hold.index), "=", p.hold.indexRev))
			ops = append(ops, clientv3.OpDelete(p.hold.path), clientv3.OpDelete(p.hold.index))
		}
		if p.hold == nil || p.hold.path != addrHold {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(addrHold), "=", 0))
		}
	}
	val, err := encodeAllocation(alloc)
	if err != nil {
		return err
	}
	ops = append(ops, clientv3.OpPut(hkey, val))
	pa.alloc = alloc
	pa.job = newCommitJob(ctx, cmps, ops, elseOps, written)
	return nil
}

// commitResult interprets a pending allocation's transaction. It returns
// (nil, false, nil) when the transaction lost a race and the caller should
// plan again.
func (a *Allocator) commitResult(ctx context.Context, pa *pendingAlloc, resp *clientv3.TxnResponse, err error) (*ipamv1alpha1.Allocation, bool, error) {
	h, n, req, alloc := pa.req.h, pa.n, pa.req, pa.alloc
	if err != nil {
		return nil, false, fmt.Errorf("allocate for %s: %w: %w", h, ErrUnavailable, err)
	}
	if resp.Succeeded {
		alloc.Sequence = uint64(resp.Header.Revision)
		for _, p := range pa.plans {
			if p.hold != nil && p.hold.path != a.keys.hold(p.pool.parsed.Name, p.block.CIDR, p.addr) {
				a.markFree(p.hold.block, p.hold.addr)
			}
		}
		return alloc, true, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		existing, err := existingOn(kvs[0], n.node.GetName())
		return existing, false, err
	}
	if len(resp.Responses) > 1 {
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			return nil, false, fmt.Errorf("sticky key %q is in use by the live allocation %s; retry once it is released: %w",
				req.GetStickyKey(), string(kvs[0].Value)[len(a.keys.handles()):], ErrConflict)
		}
	}
	// Something we read changed: the node, a pool, a block, or an address
	// was taken by another replica. Re-read what may be stale; the caller
	// reloads the blocks' usage.
	if err := a.nodes.reload(ctx, a.keys.node(n.node.GetName())); err != nil {
		return nil, false, err
	}
	for _, p := range pa.plans {
		if err := a.pools.reload(ctx, a.keys.pool(p.pool.parsed.Name)); err != nil {
			return nil, false, err
		}
		if err := a.blocks.reload(ctx, a.keys.block(p.block.CIDR)); err != nil {
			return nil, false, err
		}
	}
	return nil, false, nil
}

// routerIP returns the node's router IP of family f, or "" if it has none.
func (a *Allocator) routerIP(node string, f pool.Family) string {
	for _, e := range a.blocks.group(node) {
		if b := e.val; b.RouterIP != "" && pool.FamilyOf(b.CIDR.Addr()) == f {
			return b.RouterIP
		}
	}
	return ""
}

// servedFamilies returns the families an allocation without explicit
// families asks for: those some pool serves (from the watch-fed cache, so a
// single-stack cluster does not look for the other family in etcd on every
// allocation), plus those of requested IPs.
func (a *Allocator) servedFamilies(requested map[pool.Family]netip.Addr) []pool.Family {
	served := map[pool.Family]bool{}
	for _, e := range a.pools.snapshot(nil) {
		for _, f := range e.val.parsed.FamilyList() {
			served[f] = true
		}
	}
	var out []pool.Family
	for _, f := range pool.Families {
		if _, ok := requested[f]; ok || served[f] {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		// Nothing cached: let the lookups consult etcd.
		return pool.Families
	}
	return out
}
