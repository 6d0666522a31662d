package lb

import (
	"fmt"
	"testing"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

// manyServices returns n cluster IP services of three backends each.
func manyServices(n int) []*datapathv1alpha1.Service {
	out := make([]*datapathv1alpha1.Service, n)
	for i := range n {
		out[i] = service(fmt.Sprintf("10.%d.%d.%d", 96+i>>16, i>>8&255, i&255), 80, tcp, clusterIP,
			fmt.Sprintf("10.1.%d.%d:8080", i>>8&255, i&255), fmt.Sprintf("10.2.%d.%d:8080", i>>8&255, i&255), fmt.Sprintf("10.3.%d.%d:8080", i>>8&255, i&255))
	}
	return out
}

// BenchmarkApply measures programming 10k services in one batch on the
// fake maps: the agent's own share of the 100 ms target.
func BenchmarkApply(b *testing.B) {
	svcs := manyServices(10_000)
	for b.Loop() {
		m := New(Config{NodeName: thisNode}, bpffake.New(), discard())
		if err := m.Restore(b.Context()); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Apply(b.Context(), svcs, nil, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListAll measures paging through 10k services, 1000 a page.
func BenchmarkListAll(b *testing.B) {
	m := New(Config{NodeName: thisNode}, bpffake.New(), discard())
	if err := m.Restore(b.Context()); err != nil {
		b.Fatal(err)
	}
	if _, err := m.Apply(b.Context(), manyServices(10_000), nil, false); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		q := Query{Limit: 1000}
		for {
			_, next, err := m.List(q)
			if err != nil {
				b.Fatal(err)
			}
			if next == "" {
				break
			}
			q.After = next
		}
	}
}
