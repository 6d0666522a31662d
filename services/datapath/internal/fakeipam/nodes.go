package fakeipam

import (
	"context"
	"net/netip"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

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

// UpdateNode registers or updates a node (allow_missing registers it).
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
	if _, ok := f.nodes[n.GetName()]; !ok && !req.GetAllowMissing() {
		return nil, status.Errorf(codes.NotFound, "node %q not found", n.GetName())
	}
	stored := proto.CloneOf(n)
	f.nodes[n.GetName()] = stored
	return &ipamv1alpha1.UpdateNodeResponse{Node: proto.CloneOf(stored)}, nil
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
