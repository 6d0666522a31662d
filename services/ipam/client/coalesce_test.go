package client

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// fakeIPAM answers allocations with the handle's container ID as address,
// fails handles named "bad", records how calls were sent, and holds every
// call until release is closed.
type fakeIPAM struct {
	ipamv1alpha1.IPAMServiceClient
	release       chan struct{}
	unimplemented bool

	mu        sync.Mutex
	single    int   // AllocateIP calls
	batches   []int // sizes of AllocateIPs calls
	started   chan struct{}
	cancelled chan struct{} // a call's context ended while it was held
}

func newFake() *fakeIPAM {
	return &fakeIPAM{release: make(chan struct{}), started: make(chan struct{}, 100), cancelled: make(chan struct{}, 100)}
}

func answer(req *ipamv1alpha1.AllocateIPRequest) (*ipamv1alpha1.AllocateIPResponse, *ipamv1alpha1.Status) {
	id := req.GetHandle().GetContainerId()
	if id == "bad" {
		return nil, &ipamv1alpha1.Status{Code: int32(codes.ResourceExhausted), Message: "pool \"default\" is full"}
	}
	return &ipamv1alpha1.AllocateIPResponse{Allocation: &ipamv1alpha1.Allocation{
		Addresses: []*ipamv1alpha1.AllocatedAddress{{Ip: id}},
	}}, nil
}

func (f *fakeIPAM) wait(ctx context.Context) error {
	f.started <- struct{}{}
	select {
	case <-f.release:
		return nil
	case <-ctx.Done():
		f.cancelled <- struct{}{}
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (f *fakeIPAM) AllocateIP(ctx context.Context, req *ipamv1alpha1.AllocateIPRequest, _ ...grpc.CallOption) (*ipamv1alpha1.AllocateIPResponse, error) {
	f.mu.Lock()
	f.single++
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	resp, st := answer(req)
	if st != nil {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return resp, nil
}

func (f *fakeIPAM) AllocateIPs(ctx context.Context, req *ipamv1alpha1.AllocateIPsRequest, _ ...grpc.CallOption) (*ipamv1alpha1.AllocateIPsResponse, error) {
	if f.unimplemented {
		return nil, status.Error(codes.Unimplemented, "unknown method AllocateIPs")
	}
	f.mu.Lock()
	f.batches = append(f.batches, len(req.GetRequests()))
	f.mu.Unlock()
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	out := &ipamv1alpha1.AllocateIPsResponse{}
	for _, r := range req.GetRequests() {
		resp, st := answer(r)
		if st != nil {
			out.Results = append(out.Results, &ipamv1alpha1.AllocateIPResult{Result: &ipamv1alpha1.AllocateIPResult_Error{Error: st}})
			continue
		}
		out.Results = append(out.Results, &ipamv1alpha1.AllocateIPResult{Result: &ipamv1alpha1.AllocateIPResult_Response{Response: resp}})
	}
	return out, nil
}

func req(id string) *ipamv1alpha1.AllocateIPRequest {
	return &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: id, InterfaceName: "eth0"}, Node: "n1"}
}

// result is one AllocateIP call's outcome.
type result struct {
	id  string
	ip  string
	err error
}

// burst starts the first maxInflight calls, waits until they are in
// flight, then starts ids; it returns every call's outcome once release
// is closed.
func burst(t *testing.T, c *Coalescing, f *fakeIPAM, ids []string) <-chan result {
	t.Helper()
	out := make(chan result, maxInflight+len(ids))
	call := func(ctx context.Context, id string) {
		resp, err := c.AllocateIP(ctx, req(id))
		ip := ""
		if addrs := resp.GetAllocation().GetAddresses(); len(addrs) > 0 {
			ip = addrs[0].GetIp()
		}
		out <- result{id, ip, err}
	}
	for i := range maxInflight {
		go call(t.Context(), fmt.Sprint("lead-", i))
		<-f.started
	}
	for _, id := range ids {
		go call(t.Context(), id)
	}
	return out
}

// waitQueued waits until n calls are queued behind those in flight.
func waitQueued(c *Coalescing, n int) {
	for queued := 0; queued < n; {
		time.Sleep(time.Millisecond)
		c.mu.Lock()
		queued = len(c.queue)
		c.mu.Unlock()
	}
}

func TestCoalescesWhileInFlight(t *testing.T) {
	f := newFake()
	c := New(f)
	ids := []string{"a", "b", "bad", "c", "d"}
	out := burst(t, c, f, ids)
	waitQueued(c, len(ids))
	close(f.release)
	got := map[string]result{}
	for range maxInflight + len(ids) {
		r := <-out
		got[r.id] = r
	}
	for _, id := range ids {
		r := got[id]
		switch {
		case id == "bad":
			if status.Code(r.err) != codes.ResourceExhausted || status.Convert(r.err).Message() != `pool "default" is full` {
				t.Errorf("bad: err = %v, want the service's RESOURCE_EXHAUSTED", r.err)
			}
		case r.err != nil || r.ip != id:
			t.Errorf("%s: got %q, %v", id, r.ip, r.err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.single != maxInflight || len(f.batches) != 1 || f.batches[0] != len(ids) {
		t.Errorf("sent %d lone calls and batches %v; want %d lone calls, then one batch of %d", f.single, f.batches, maxInflight, len(ids))
	}
}

func TestFallsBackWithoutAllocateIPs(t *testing.T) {
	f := newFake()
	f.unimplemented = true
	c := New(f)
	ids := []string{"a", "b", "c"}
	out := burst(t, c, f, ids)
	waitQueued(c, len(ids))
	close(f.release)
	for range maxInflight + len(ids) {
		if r := <-out; r.err != nil || r.ip != r.id {
			t.Errorf("%s: got %q, %v", r.id, r.ip, r.err)
		}
	}
	// Later calls skip the batch call altogether.
	if _, err := c.AllocateIP(t.Context(), req("later")); err != nil {
		t.Fatal(err)
	}
	if !c.unbatched.Load() {
		t.Error("an older service's Unimplemented was not remembered")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := maxInflight + len(ids) + 1; f.single != want {
		t.Errorf("%d AllocateIP calls, want %d", f.single, want)
	}
}

func TestAbandonedBatchIsCancelled(t *testing.T) {
	f := newFake()
	c := New(f)
	defer close(f.release)
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 1)
	go func() {
		_, err := c.AllocateIP(ctx, req("gone"))
		errs <- err
	}()
	<-f.started
	cancel()
	select {
	case err := <-errs:
		if status.Code(err) != codes.Canceled {
			t.Errorf("err = %v, want CANCELED", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled caller still waits for the service")
	}
	// The call nobody waits for any more is cancelled.
	select {
	case <-f.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the service still works on a call nobody waits for")
	}
}
