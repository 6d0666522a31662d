// Package fakeipam is an in-memory IPAM client for the datapath's tests:
// one pool, one node whose blocks are configured up front, node records
// with revisions (GetNode, UpdateNode), allocations by owner handle with
// sequence numbers, and a block watch the test drives.
// It answers with the status codes the IPAM service documents, and any
// method can be made to fail (say Unavailable for the next few calls).
// Methods the datapath does not call panic (the embedded nil interface).
package fakeipam

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// Config is the IPAM world the fake serves.
type Config struct {
	// Node is the node whose blocks Blocks are.
	Node string
	// Pool names the pool; "default" when empty.
	Pool string
	// PoolCIDRs are the pool's CIDRs, as ListPools reports them.
	PoolCIDRs []netip.Prefix
	// Blocks are Node's blocks, at most one per family. The first address
	// after the network address is the node's router IP; AllocateIP hands
	// out the others (not an IPv4 block's broadcast address).
	Blocks []netip.Prefix
	// GCMinAge is GarbageCollect's min_age for requests without one.
	GCMinAge time.Duration
}

// IPAM is the fake client. It is safe for concurrent use.
type IPAM struct {
	ipamv1alpha1.IPAMServiceClient

	cfg Config

	mu      sync.Mutex
	nodes   map[string]*ipamv1alpha1.Node
	allocs  map[handleKey]*ipamv1alpha1.Allocation
	used    map[netip.Addr]handleKey
	seq     uint64
	rev     uint64 // the last node revision handed out
	remote  map[string]*blockEvent
	streams map[*watchStream]bool
	fail    func(method string) error
	rules   []*rule
	calls   map[string]int
}

var _ ipamv1alpha1.IPAMServiceClient = (*IPAM)(nil)

type handleKey struct{ container, iface string }

func (k handleKey) String() string { return k.container + "/" + k.iface }

// blockEvent is another node's block and that node's addresses.
type blockEvent struct {
	block *ipamv1alpha1.Block
	addrs []string
}

type rule struct {
	method string
	left   int
	err    error
}

// New returns a fake serving cfg. Node is not registered until UpdateNode.
func New(cfg Config) *IPAM {
	if cfg.Pool == "" {
		cfg.Pool = "default"
	}
	return &IPAM{
		cfg: cfg, nodes: map[string]*ipamv1alpha1.Node{}, allocs: map[handleKey]*ipamv1alpha1.Allocation{},
		used: map[netip.Addr]handleKey{}, remote: map[string]*blockEvent{}, streams: map[*watchStream]bool{},
		calls: map[string]int{},
	}
}

// FailNext makes the next n calls of method (such as "AllocateIP") fail
// with err, e.g. status.Error(codes.Unavailable, ...).
func (f *IPAM) FailNext(method string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{method: method, left: n, err: err})
}

// SetFail installs a hook every call consults first with its method name;
// a non-nil error is returned and nothing changes. nil removes it.
func (f *IPAM) SetFail(fn func(method string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// Calls counts the calls of method, failed ones included.
func (f *IPAM) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// call records method and returns its injected error. Caller holds f.mu.
func (f *IPAM) call(method string) error {
	f.calls[method]++
	if f.fail != nil {
		if err := f.fail(method); err != nil {
			return err
		}
	}
	for i, r := range f.rules {
		if r.method == method {
			r.left--
			if r.left <= 0 {
				f.rules = slices.Delete(f.rules, i, i+1)
			}
			return r.err
		}
	}
	return nil
}

func familyOf(p netip.Prefix) commonv1alpha1.IPFamily {
	if p.Addr().Is4() {
		return commonv1alpha1.IPFamily_IP_FAMILY_IPV4
	}
	return commonv1alpha1.IPFamily_IP_FAMILY_IPV6
}

func routerOf(b netip.Prefix) netip.Addr { return b.Masked().Addr().Next() }

// block describes one of the node's blocks. Caller holds f.mu.
func (f *IPAM) block(b netip.Prefix) *ipamv1alpha1.Block {
	var allocated uint64
	for ip := range f.used {
		if b.Contains(ip) {
			allocated++
		}
	}
	return &ipamv1alpha1.Block{
		Cidr: b.Masked().String(), Pool: f.cfg.Pool, Family: familyOf(b), Node: f.cfg.Node,
		RouterIp: routerOf(b).String(), Allocated: allocated,
	}
}

// UpdateNode replaces a node's spec (addresses, pod CIDRs), or registers it
// with allow_missing, as the service does: an expected_revision that does
// not match gives Aborted; an unchanged spec keeps the revision; dropping a
// pod CIDR that is one of the node's blocks gives FailedPrecondition.
func (f *IPAM) UpdateNode(_ context.Context, req *ipamv1alpha1.UpdateNodeRequest, _ ...grpc.CallOption) (*ipamv1alpha1.UpdateNodeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("UpdateNode"); err != nil {
		return nil, err
	}
	n := req.GetNode()
	if n.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "node name is required")
	}
	cur, ok := f.nodes[n.GetName()]
	switch {
	case !ok && !req.GetAllowMissing():
		return nil, status.Errorf(codes.NotFound, "node %q not found", n.GetName())
	case !ok && req.GetExpectedRevision() != "":
		return nil, status.Errorf(codes.Aborted, "node %q does not exist but expected_revision is set", n.GetName())
	case ok && req.GetExpectedRevision() != "" && req.GetExpectedRevision() != cur.GetRevision():
		return nil, status.Errorf(codes.Aborted, "node %q is at revision %s, not %s", n.GetName(), cur.GetRevision(), req.GetExpectedRevision())
	case ok && slices.Equal(cur.GetAddresses(), n.GetAddresses()) && slices.Equal(cur.GetPodCidrs(), n.GetPodCidrs()):
		return &ipamv1alpha1.UpdateNodeResponse{Node: proto.CloneOf(cur)}, nil
	}
	for _, c := range cur.GetPodCidrs() {
		if !slices.Contains(n.GetPodCidrs(), c) && f.isBlockOf(n.GetName(), c) {
			return nil, status.Errorf(codes.FailedPrecondition, "node %q: pod CIDR %s is in use as a block of pool %q", n.GetName(), c, f.cfg.Pool)
		}
	}
	f.rev++
	stored := &ipamv1alpha1.Node{
		Name: n.GetName(), Addresses: slices.Clone(n.GetAddresses()), PodCidrs: slices.Clone(n.GetPodCidrs()),
		Revision: strconv.FormatUint(f.rev, 10),
	}
	f.nodes[n.GetName()] = stored
	return &ipamv1alpha1.UpdateNodeResponse{Node: proto.CloneOf(stored)}, nil
}

// isBlockOf reports whether cidr is a block of node: one of Config.Blocks
// for Config.Node, a SetRemoteBlock block for the others. Caller holds f.mu.
func (f *IPAM) isBlockOf(node, cidr string) bool {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return false
	}
	if node == f.cfg.Node && slices.ContainsFunc(f.cfg.Blocks, func(b netip.Prefix) bool { return b.Masked() == p.Masked() }) {
		return true
	}
	be, ok := f.remote[p.Masked().String()]
	return ok && be.block.GetNode() == node
}

// GetNode returns a registered node with its revision; NotFound when it is
// not registered. The status (router IPs, usage) is not modelled.
func (f *IPAM) GetNode(_ context.Context, req *ipamv1alpha1.GetNodeRequest, _ ...grpc.CallOption) (*ipamv1alpha1.GetNodeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetNode"); err != nil {
		return nil, err
	}
	n, ok := f.nodes[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "node %q not found", req.GetName())
	}
	return &ipamv1alpha1.GetNodeResponse{Node: proto.CloneOf(n)}, nil
}

// ClaimBlock returns the configured node's blocks of the family asked for
// (all without one), with their router IPs.
func (f *IPAM) ClaimBlock(_ context.Context, req *ipamv1alpha1.ClaimBlockRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ClaimBlockResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ClaimBlock"); err != nil {
		return nil, err
	}
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	if _, ok := f.nodes[req.GetNode()]; !ok {
		return nil, status.Errorf(codes.NotFound, "node %q is not registered", req.GetNode())
	}
	if req.GetNode() != f.cfg.Node {
		return nil, status.Errorf(codes.ResourceExhausted, "pool %q has no free block", f.cfg.Pool)
	}
	resp := &ipamv1alpha1.ClaimBlockResponse{}
	for _, b := range f.cfg.Blocks {
		if fam := req.GetFamily(); fam == commonv1alpha1.IPFamily_IP_FAMILY_UNSPECIFIED || fam == familyOf(b) {
			resp.Blocks = append(resp.Blocks, f.block(b))
		}
	}
	return resp, nil
}

func handleOf(h *ipamv1alpha1.OwnerHandle) (handleKey, error) {
	if h.GetContainerId() == "" || h.GetInterfaceName() == "" {
		return handleKey{}, status.Error(codes.InvalidArgument, "handle: container_id and interface_name are required")
	}
	return handleKey{h.GetContainerId(), h.GetInterfaceName()}, nil
}

// free returns the first free address of block b. Caller holds f.mu.
func (f *IPAM) free(b netip.Prefix) (netip.Addr, bool) {
	b = b.Masked()
	last := netip.Addr{}
	if b.Addr().Is4() {
		// The broadcast address.
		a := b.Addr().As4()
		for i := b.Bits(); i < 32; i++ {
			a[i/8] |= 1 << (7 - i%8)
		}
		last = netip.AddrFrom4(a)
	}
	for ip := routerOf(b).Next(); ip.IsValid() && b.Contains(ip) && ip != last; ip = ip.Next() {
		if _, taken := f.used[ip]; !taken {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// AllocateIP allocates one address per family of the node's blocks (or
// per family asked for, in that order) to a handle; a retry with the same
// handle returns the existing allocation. Requested IPs are honoured when
// free and in a block. Pools, selectors and sticky holds are not modelled.
func (f *IPAM) AllocateIP(_ context.Context, req *ipamv1alpha1.AllocateIPRequest, _ ...grpc.CallOption) (*ipamv1alpha1.AllocateIPResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AllocateIP"); err != nil {
		return nil, err
	}
	key, err := handleOf(req.GetHandle())
	if err != nil {
		return nil, err
	}
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	if _, ok := f.nodes[req.GetNode()]; !ok {
		return nil, status.Errorf(codes.NotFound, "node %q is not registered", req.GetNode())
	}
	if a, ok := f.allocs[key]; ok {
		if a.GetNode() != req.GetNode() {
			return nil, status.Errorf(codes.FailedPrecondition, "handle %s is allocated on node %q", key, a.GetNode())
		}
		return &ipamv1alpha1.AllocateIPResponse{Allocation: proto.CloneOf(a)}, nil
	}
	if req.GetNode() != f.cfg.Node {
		return nil, status.Errorf(codes.ResourceExhausted, "pool %q has no block for node %q", f.cfg.Pool, req.GetNode())
	}
	var requested []netip.Addr
	for _, s := range req.GetRequestedIps() {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "requested IP %q: %v", s, err)
		}
		requested = append(requested, ip)
	}
	alloc := &ipamv1alpha1.Allocation{
		Handle: proto.CloneOf(req.GetHandle()), Node: req.GetNode(), PodNamespace: req.GetPod().GetNamespace(),
		PodName: req.GetPod().GetName(), StickyKey: req.GetStickyKey(), CreateTime: timestamppb.Now(),
	}
	blocks, err := f.blocksFor(req.GetFamilies())
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, b := range blocks {
		ip, ok := f.free(b)
		if i := slices.IndexFunc(requested, func(r netip.Addr) bool { return r.Is4() == b.Addr().Is4() }); i >= 0 {
			ip = requested[i]
			if !b.Contains(ip) || ip == routerOf(b) || ip == b.Masked().Addr() {
				return nil, status.Errorf(codes.FailedPrecondition, "requested IP %s is not in the node's block %s", ip, b)
			}
			if owner, taken := f.used[ip]; taken {
				return nil, status.Errorf(codes.AlreadyExists, "requested IP %s is allocated to %s", ip, owner)
			}
			ok = true
		}
		if !ok {
			return nil, status.Errorf(codes.ResourceExhausted, "pool %q: block %s has no free address", f.cfg.Pool, b)
		}
		ips = append(ips, ip)
		alloc.Addresses = append(alloc.Addresses, &ipamv1alpha1.AllocatedAddress{
			Ip: ip.String(), Family: familyOf(b), PrefixLength: uint32(ip.BitLen()),
			Gateway: routerOf(b).String(), Pool: f.cfg.Pool, Block: b.Masked().String(),
		})
	}
	// All-or-nothing: addresses are taken only once every family has one.
	for _, ip := range ips {
		f.used[ip] = key
	}
	f.seq++
	alloc.Sequence = f.seq
	f.allocs[key] = alloc
	return &ipamv1alpha1.AllocateIPResponse{Allocation: proto.CloneOf(alloc)}, nil
}

// blocksFor returns the node's block of each family wanted, in that order;
// every block when none is named.
func (f *IPAM) blocksFor(fams []commonv1alpha1.IPFamily) ([]netip.Prefix, error) {
	if len(fams) == 0 {
		if len(f.cfg.Blocks) == 0 {
			return nil, status.Error(codes.FailedPrecondition, "no pool serves a wanted family")
		}
		return f.cfg.Blocks, nil
	}
	var out []netip.Prefix
	for _, fam := range fams {
		i := slices.IndexFunc(f.cfg.Blocks, func(b netip.Prefix) bool { return familyOf(b) == fam })
		if i < 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "no pool serves family %v", fam)
		}
		out = append(out, f.cfg.Blocks[i])
	}
	return out, nil
}

// release frees a's addresses and forgets it. Caller holds f.mu.
func (f *IPAM) release(key handleKey, a *ipamv1alpha1.Allocation) {
	for _, ad := range a.GetAddresses() {
		if ip, err := netip.ParseAddr(ad.GetIp()); err == nil {
			delete(f.used, ip)
		}
	}
	delete(f.allocs, key)
}

// ReleaseIP releases a handle's allocation; a missing one, or one with
// another sequence than expected_sequence, is success with no allocation.
func (f *IPAM) ReleaseIP(_ context.Context, req *ipamv1alpha1.ReleaseIPRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ReleaseIPResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ReleaseIP"); err != nil {
		return nil, err
	}
	key, err := handleOf(req.GetHandle())
	if err != nil {
		return nil, err
	}
	a, ok := f.allocs[key]
	if !ok || (req.GetExpectedSequence() != 0 && req.GetExpectedSequence() != a.GetSequence()) {
		return &ipamv1alpha1.ReleaseIPResponse{}, nil
	}
	f.release(key, a)
	return &ipamv1alpha1.ReleaseIPResponse{Allocation: a}, nil
}

// GetAllocation looks an allocation up by handle or address; NotFound when
// there is none.
func (f *IPAM) GetAllocation(_ context.Context, req *ipamv1alpha1.GetAllocationRequest, _ ...grpc.CallOption) (*ipamv1alpha1.GetAllocationResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetAllocation"); err != nil {
		return nil, err
	}
	var key handleKey
	switch k := req.GetKey().(type) {
	case *ipamv1alpha1.GetAllocationRequest_Handle:
		var err error
		if key, err = handleOf(k.Handle); err != nil {
			return nil, err
		}
	case *ipamv1alpha1.GetAllocationRequest_Ip:
		ip, err := netip.ParseAddr(k.Ip)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "ip %q: %v", k.Ip, err)
		}
		var ok bool
		if key, ok = f.used[ip]; !ok {
			return nil, status.Errorf(codes.NotFound, "address %s is not allocated", ip)
		}
	default:
		return nil, status.Error(codes.InvalidArgument, "one of handle or ip is required")
	}
	a, ok := f.allocs[key]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no allocation for %s", key)
	}
	return &ipamv1alpha1.GetAllocationResponse{Allocation: proto.CloneOf(a)}, nil
}

// GarbageCollect releases the node's allocations whose handles are not
// live and that are older than min_age (Config.GCMinAge when unset).
func (f *IPAM) GarbageCollect(_ context.Context, req *ipamv1alpha1.GarbageCollectRequest, _ ...grpc.CallOption) (*ipamv1alpha1.GarbageCollectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GarbageCollect"); err != nil {
		return nil, err
	}
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	minAge := f.cfg.GCMinAge
	if req.GetMinAge() != nil {
		minAge = req.GetMinAge().AsDuration()
	}
	live := map[handleKey]bool{}
	for _, h := range req.GetLiveHandles() {
		live[handleKey{h.GetContainerId(), h.GetInterfaceName()}] = true
	}
	cutoff := time.Now().Add(-minAge)
	resp := &ipamv1alpha1.GarbageCollectResponse{}
	for _, key := range f.sortedHandles() {
		a := f.allocs[key]
		if a.GetNode() != req.GetNode() || live[key] || a.GetCreateTime().AsTime().After(cutoff) {
			continue
		}
		resp.Released = append(resp.Released, proto.CloneOf(a))
		if !req.GetDryRun() {
			f.release(key, a)
		}
	}
	return resp, nil
}

// sortedHandles lists the allocated handles in order. Caller holds f.mu.
func (f *IPAM) sortedHandles() []handleKey {
	keys := make([]handleKey, 0, len(f.allocs))
	for k := range f.allocs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b handleKey) int {
		if a.container != b.container {
			if a.container < b.container {
				return -1
			}
			return 1
		}
		if a.iface < b.iface {
			return -1
		}
		if a.iface > b.iface {
			return 1
		}
		return 0
	})
	return keys
}

// ListPools returns the one pool, in a single page.
func (f *IPAM) ListPools(_ context.Context, _ *ipamv1alpha1.ListPoolsRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ListPoolsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ListPools"); err != nil {
		return nil, err
	}
	p := &ipamv1alpha1.Pool{Name: f.cfg.Pool, Mode: ipamv1alpha1.PoolMode_POOL_MODE_CLUSTER_SCOPE, Default: true}
	for _, c := range f.cfg.PoolCIDRs {
		fam := &p.Ipv6
		if c.Addr().Is4() {
			fam = &p.Ipv4
		}
		if *fam == nil {
			*fam = &ipamv1alpha1.PoolFamily{}
		}
		(*fam).Cidrs = append((*fam).Cidrs, c.Masked().String())
	}
	return &ipamv1alpha1.ListPoolsResponse{Pools: []*ipamv1alpha1.Pool{p}}, nil
}

// ListBlocks returns the node's blocks and the other nodes' (SetRemoteBlock)
// matching the request's node, pool and family, in a single page.
func (f *IPAM) ListBlocks(_ context.Context, req *ipamv1alpha1.ListBlocksRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ListBlocksResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ListBlocks"); err != nil {
		return nil, err
	}
	resp := &ipamv1alpha1.ListBlocksResponse{}
	for _, b := range f.allBlocks() {
		if (req.GetNode() == "" || req.GetNode() == b.block.GetNode()) && (req.GetPool() == "" || req.GetPool() == b.block.GetPool()) &&
			(req.GetFamily() == commonv1alpha1.IPFamily_IP_FAMILY_UNSPECIFIED || req.GetFamily() == b.block.GetFamily()) {
			resp.Blocks = append(resp.Blocks, proto.CloneOf(b.block))
		}
	}
	return resp, nil
}

// allBlocks returns the node's blocks, then the others by CIDR. Caller
// holds f.mu.
func (f *IPAM) allBlocks() []*blockEvent {
	var out []*blockEvent
	var addrs []string
	if n, ok := f.nodes[f.cfg.Node]; ok {
		addrs = n.GetAddresses()
	}
	for _, b := range f.cfg.Blocks {
		out = append(out, &blockEvent{block: f.block(b), addrs: addrs})
	}
	cidrs := make([]string, 0, len(f.remote))
	for c := range f.remote {
		cidrs = append(cidrs, c)
	}
	slices.Sort(cidrs)
	for _, c := range cidrs {
		out = append(out, f.remote[c])
	}
	return out
}

// Allocations returns copies of the live allocations, by handle.
func (f *IPAM) Allocations() []*ipamv1alpha1.Allocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*ipamv1alpha1.Allocation, 0, len(f.allocs))
	for _, k := range f.sortedHandles() {
		out = append(out, proto.CloneOf(f.allocs[k]))
	}
	return out
}

// Holders returns which handle ("container/interface") holds each
// allocated address.
func (f *IPAM) Holders() map[netip.Addr]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[netip.Addr]string, len(f.used))
	for ip, k := range f.used {
		out[ip] = k.String()
	}
	return out
}

// RegisteredNode returns a copy of a registered node.
func (f *IPAM) RegisteredNode(name string) (*ipamv1alpha1.Node, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(n), true
}
