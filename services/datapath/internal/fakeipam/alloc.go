package fakeipam

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

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
