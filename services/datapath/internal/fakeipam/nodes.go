package fakeipam

import (
	"context"
	"net/netip"
	"slices"
	"strconv"

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
