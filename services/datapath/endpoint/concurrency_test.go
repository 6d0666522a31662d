package endpoint

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
)

// Many pods created and deleted in parallel, with retries of the same ADD
// racing each other, leave the node consistent: one veth, record,
// allocation, device entry and map entries per live endpoint, distinct
// pod keys and endpoint IDs.
func TestConcurrentCreateDelete(t *testing.T) {
	const pods = 24
	e := newTestManager(t, testOpts{dualStack: true})
	ns := make([]string, pods+8)
	for i := range ns {
		ns[i] = e.podNS(fmt.Sprintf("pod%d", i))
	}
	id := func(i int) string { return fmt.Sprintf("c%d", i) }

	// Phase 1: every pod created twice at once (a runtime's retry).
	var wg sync.WaitGroup
	eps := make([][2]*datapathv1alpha1.Endpoint, pods)
	errs := make(chan error, 4*pods)
	for i := range pods {
		for j := range 2 {
			wg.Go(func() {
				ep, err := e.m.CreateEndpoint(t.Context(), createReq(id(i), "eth0", ns[i]))
				if err != nil {
					errs <- fmt.Errorf("create %s: %w", id(i), err)
					return
				}
				eps[i][j] = ep
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range pods {
		if !proto.Equal(eps[i][0], eps[i][1]) {
			t.Errorf("racing ADDs of %s returned different endpoints", id(i))
		}
	}

	// Phase 2: the even pods deleted while new pods are created.
	errs = make(chan error, 2*pods)
	for i := 0; i < pods; i += 2 {
		wg.Go(func() {
			if _, err := e.m.DeleteEndpoint(t.Context(), attachment(id(i), "eth0")); err != nil {
				errs <- fmt.Errorf("delete %s: %w", id(i), err)
			}
		})
	}
	for i := pods; i < pods+8; i++ {
		wg.Go(func() {
			if _, err := e.m.CreateEndpoint(t.Context(), createReq(id(i), "eth0", ns[i])); err != nil {
				errs <- fmt.Errorf("create %s: %w", id(i), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var live []int
	for i := 1; i < pods; i += 2 {
		live = append(live, i)
	}
	for i := pods; i < pods+8; i++ {
		live = append(live, i)
	}
	if n := len(e.linkNames(nlfake.NodeNS)); n != len(live) {
		t.Errorf("%d veths, want %d", n, len(live))
	}
	if n := len(e.records()); n != len(live) {
		t.Errorf("%d records, want %d", n, len(live))
	}
	e.settleReleases()
	if n := len(e.ipam.Allocations()); n != len(live) {
		t.Errorf("%d allocations, want %d", n, len(live))
	}
	if n := len(e.bpf.Devices()); n != len(live) {
		t.Errorf("%d device entries, want %d", n, len(live))
	}
	if n := len(e.bpf.Endpoints()); n != 2*len(live) {
		t.Errorf("%d endpoint entries, want %d", n, 2*len(live))
	}
	keys, ids := map[uint32]string{}, map[uint32]string{}
	for _, i := range live {
		ep, err := e.m.GetEndpoint(attachment(id(i), "eth0"))
		if err != nil {
			t.Fatalf("endpoint %s: %v", id(i), err)
		}
		e.assertWired(ep)
		key := e.bpf.Devices()[e.hostIndex(ep.GetAttachment())]
		if other, ok := keys[key]; ok {
			t.Errorf("pods %s and %s share key %d", id(i), other, key)
		}
		keys[key] = id(i)
		if other, ok := ids[ep.GetEndpointId()]; ok {
			t.Errorf("endpoints %s and %s share ID %d", id(i), other, ep.GetEndpointId())
		}
		ids[ep.GetEndpointId()] = id(i)
	}
	for i := 0; i < pods; i += 2 {
		e.assertNoEndpoint(attachment(id(i), "eth0"), ns[i])
	}
}
