package fakeipam

import (
	"net/netip"

	"google.golang.org/protobuf/proto"

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
