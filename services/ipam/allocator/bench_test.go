package allocator

import (
	"fmt"
	"testing"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// BenchmarkAllocate measures one allocation through the allocator (no
// gRPC) against the package's embedded etcd, on nodes of 100 pods.
func BenchmarkAllocate(b *testing.B) {
	a := newAllocator(b, newClient(b), testRoot(b))
	if _, err := a.CreatePool(b.Context(), v4Pool("default", true, 0, "10.0.0.0/8")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		node := fmt.Sprintf("n%d", i/100)
		if i%100 == 0 {
			b.StopTimer()
			if _, err := a.CreateNode(b.Context(), &ipamv1alpha1.Node{Name: node}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := a.Allocate(b.Context(), allocReq(node, fmt.Sprintf("c%d", i))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocateMany measures a burst of 32 pods of one node allocated
// in one AllocateMany call (the node agent's coalesced AllocateIPs), per
// allocation, on nodes of 96 pods.
func BenchmarkAllocateMany(b *testing.B) {
	const burst, perNode = 32, 96
	a := newAllocator(b, newClient(b), testRoot(b))
	if _, err := a.CreatePool(b.Context(), v4Pool("default", true, 0, "10.0.0.0/8")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	reqs := make([]*ipamv1alpha1.AllocateIPRequest, burst)
	for i := 0; b.Loop(); i++ {
		node := fmt.Sprintf("n%d", i*burst/perNode)
		if i*burst%perNode == 0 {
			b.StopTimer()
			if _, err := a.CreateNode(b.Context(), &ipamv1alpha1.Node{Name: node}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		for k := range reqs {
			reqs[k] = allocReq(node, fmt.Sprintf("c%d-%d", i, k))
		}
		_, errs := a.AllocateMany(b.Context(), reqs)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*burst), "ns/alloc")
}
