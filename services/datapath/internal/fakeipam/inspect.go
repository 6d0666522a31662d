package fakeipam

import (
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

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

// Put stores a copy of a as an allocation, on whichever node it names (as
// another node's agent would have made it), with the next sequence number.
// It returns the stored copy; an address already held is an error.
func (f *IPAM) Put(a *ipamv1alpha1.Allocation) (*ipamv1alpha1.Allocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key, err := handleOf(a.GetHandle())
	if err != nil {
		return nil, err
	}
	a = proto.CloneOf(a)
	var ips []netip.Addr
	for _, ad := range a.GetAddresses() {
		ip, err := netip.ParseAddr(ad.GetIp())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "address %q: %v", ad.GetIp(), err)
		}
		if owner, taken := f.used[ip]; taken && owner != key {
			return nil, status.Errorf(codes.AlreadyExists, "address %s is allocated to %s", ip, owner)
		}
		ips = append(ips, ip)
	}
	if old, ok := f.allocs[key]; ok {
		f.release(key, old)
	}
	for _, ip := range ips {
		f.used[ip] = key
	}
	f.seq++
	a.Sequence = f.seq
	if a.CreateTime == nil {
		a.CreateTime = timestamppb.Now()
	}
	f.allocs[key] = a
	return proto.CloneOf(a), nil
}
