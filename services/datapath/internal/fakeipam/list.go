package fakeipam

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

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
