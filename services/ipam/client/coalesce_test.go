package client

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/bpf/testpoll"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/client/errinfo"
)

// fakeIPAM answers allocations with the handle's container ID as address,
// fails handles named "bad", records how calls were sent, and holds every
// call until release is closed.
type fakeIPAM struct {
	ipamv1alpha1.IPAMServiceClient
	release       chan struct{}
	unimplemented bool

	mu       sync.Mutex
	single   int                      // AllocateIP calls
	batches  []int                    // sizes of AllocateIPs calls, refused ones too
	seen     map[string]time.Duration // handles received, with their request's timeout
	released map[string]uint64        // ReleaseIP calls: handle -> expected sequence
	started  chan struct{}
}

func newFake() *fakeIPAM {
	return &fakeIPAM{release: make(chan struct{}), started: make(chan struct{}, 100),
		seen: map[string]time.Duration{}, released: map[string]uint64{}}
}

// answer gives the handle's container ID as address and 7 as sequence;
// "bad" fails, "zero" fails with an error that lacks a code.
func (f *fakeIPAM) answer(req *ipamv1alpha1.AllocateIPRequest) (*ipamv1alpha1.AllocateIPResponse, *ipamv1alpha1.Status) {
	id := req.GetHandle().GetContainerId()
	f.mu.Lock()
	f.seen[id] = req.GetTimeout().AsDuration()
	f.mu.Unlock()
	switch id {
	case "bad":
		return nil, &ipamv1alpha1.Status{Code: int32(codes.ResourceExhausted), Message: "pool \"default\" is full", Reason: errinfo.ReasonPoolExhausted}
	case "zero":
		return nil, &ipamv1alpha1.Status{Message: "no code"}
	}
	return &ipamv1alpha1.AllocateIPResponse{Allocation: &ipamv1alpha1.Allocation{
		Sequence: 7, Addresses: []*ipamv1alpha1.AllocatedAddress{{Ip: id}},
	}}, nil
}

func (f *fakeIPAM) ReleaseIP(_ context.Context, req *ipamv1alpha1.ReleaseIPRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ReleaseIPResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released[req.GetHandle().GetContainerId()] = req.GetExpectedSequence()
	return &ipamv1alpha1.ReleaseIPResponse{}, nil
}

func (f *fakeIPAM) wait(ctx context.Context) error {
	f.started <- struct{}{}
	select {
	case <-f.release:
		return nil
	case <-ctx.Done():
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
	resp, st := f.answer(req)
	if st != nil {
		return nil, errinfo.With(status.New(codes.Code(st.GetCode()), st.GetMessage()), st.GetReason()).Err()
	}
	return resp, nil
}

func (f *fakeIPAM) AllocateIPs(ctx context.Context, req *ipamv1alpha1.AllocateIPsRequest, _ ...grpc.CallOption) (*ipamv1alpha1.AllocateIPsResponse, error) {
	f.mu.Lock()
	f.batches = append(f.batches, len(req.GetRequests()))
	f.mu.Unlock()
	if f.unimplemented {
		return nil, status.Error(codes.Unimplemented, "unknown method AllocateIPs")
	}
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	out := &ipamv1alpha1.AllocateIPsResponse{}
	for _, r := range req.GetRequests() {
		resp, st := f.answer(r)
		if st != nil {
			out.Results = append(out.Results, &ipamv1alpha1.AllocateIPResult{Result: &ipamv1alpha1.AllocateIPResult_Error{Error: st}})
			continue
		}
		out.Results = append(out.Results, &ipamv1alpha1.AllocateIPResult{Result: &ipamv1alpha1.AllocateIPResult_Response{Response: resp}})
	}
	return out, nil
}

// req is the request of handle id; a "big-" one carries 900 KiB of
// namespace annotations.
func req(id string) *ipamv1alpha1.AllocateIPRequest {
	r := &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: id, InterfaceName: "eth0"}, Node: "n1"}
	if strings.HasPrefix(id, "big-") {
		r.Pod = &ipamv1alpha1.PodInfo{NamespaceAnnotations: map[string]string{"example.com/a": strings.Repeat("a", 900<<10)}}
	}
	return r
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
func waitQueued(t *testing.T, c *Coalescing, n int) {
	t.Helper()
	testpoll.Until(t, 10*time.Second, func() error {
		c.mu.Lock()
		queued := len(c.queue)
		c.mu.Unlock()
		if queued < n {
			return fmt.Errorf("%d calls queued, want %d (sent on their own?)", queued, n)
		}
		return nil
	})
}

func TestCoalescesWhileInFlight(t *testing.T) {
	f := newFake()
	c := New(f)
	ids := []string{"a", "b", "bad", "c", "d"}
	out := burst(t, c, f, ids)
	waitQueued(t, c, len(ids))
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

// Large requests are split into batches that fit gRPC's message limit.
func TestBatchesFitTheMessageLimit(t *testing.T) {
	f := newFake()
	c := New(f)
	ids := []string{"big-1", "big-2", "big-3"}
	out := burst(t, c, f, ids)
	waitQueued(t, c, len(ids))
	close(f.release)
	for range maxInflight + len(ids) {
		if r := <-out; r.err != nil || r.ip != r.id {
			t.Errorf("%s: got %q, %v", r.id, r.ip, r.err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Two of 900 KiB fit in 2 MiB, the third goes alone.
	if f.single != maxInflight+1 || len(f.batches) != 1 || f.batches[0] != 2 {
		t.Errorf("sent %d lone calls and batches %v; want %d lone calls and one batch of 2", f.single, f.batches, maxInflight+1)
	}
}

func TestFallsBackWithoutAllocateIPs(t *testing.T) {
	f := newFake()
	f.unimplemented = true
	c := New(f)
	now := time.Now()
	c.now = func() time.Time { return now }
	ids := []string{"a", "b", "c"}
	out := burst(t, c, f, ids)
	waitQueued(t, c, len(ids))
	close(f.release)
	for range maxInflight + len(ids) {
		if r := <-out; r.err != nil || r.ip != r.id {
			t.Errorf("%s: got %q, %v", r.id, r.ip, r.err)
		}
	}
	counts := func() (single, batches int) {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.single, len(f.batches)
	}
	single, batches := counts()
	if want := maxInflight + len(ids); single != want || batches != 1 {
		t.Errorf("%d AllocateIP and %d AllocateIPs calls, want %d and 1 (refused)", single, batches, want)
	}

	// Later calls skip the batch call, until the service may have been
	// upgraded.
	now = now.Add(unbatchedFor - time.Second)
	concurrent(t, c, "later-1", "later-2", "later-3")
	if s, b := counts(); s != single+3 || b != batches {
		t.Errorf("within %s of the refusal: %d AllocateIP and %d AllocateIPs calls more, want 3 and 0", unbatchedFor, s-single, b-batches)
	}
	now = now.Add(2 * time.Second)
	upgraded := newFake()
	c.IPAMServiceClient = upgraded
	out = burst(t, c, upgraded, ids)
	waitQueued(t, c, len(ids))
	close(upgraded.release)
	for range maxInflight + len(ids) {
		if r := <-out; r.err != nil || r.ip != r.id {
			t.Errorf("%s: got %q, %v", r.id, r.ip, r.err)
		}
	}
	if len(upgraded.batches) != 1 || upgraded.batches[0] != len(ids) {
		t.Errorf("after %s the upgraded service got batches %v, want one of %d", unbatchedFor, upgraded.batches, len(ids))
	}
}

// concurrent makes AllocateIP calls for ids at once and waits for them.
func concurrent(t *testing.T, c *Coalescing, ids ...string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if _, err := c.AllocateIP(t.Context(), req(id)); err != nil {
				t.Errorf("%s: %v", id, err)
			}
		})
	}
	wg.Wait()
}

// TestCancelledAfterSendReleases cancels a caller whose request is with
// the service: it waits for the answer and releases the allocation before
// it returns, so nothing outlives the failed call.
func TestCancelledAfterSendReleases(t *testing.T) {
	f := newFake()
	c := New(f)
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
		t.Fatalf("returned (%v) while its allocation was being made", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(f.release)
	if err := <-errs; status.Code(err) != codes.Canceled {
		t.Errorf("err = %v, want CANCELED", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq, ok := f.released["gone"]; !ok || seq != 7 {
		t.Errorf("released = %v, want gone released at sequence 7", f.released)
	}
}

// TestCancelledWhileQueued cancels a caller whose request waits behind
// those in flight: it returns at once and its request is never sent.
func TestCancelledWhileQueued(t *testing.T) {
	f := newFake()
	c := New(f)
	out := burst(t, c, f, nil)
	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 1)
	go func() {
		_, err := c.AllocateIP(ctx, req("queued"))
		errs <- err
	}()
	waitQueued(t, c, 1)
	cancel()
	select {
	case err := <-errs:
		if status.Code(err) != codes.Canceled {
			t.Errorf("err = %v, want CANCELED", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled queued caller still waits")
	}
	close(f.release)
	for range maxInflight {
		<-out
	}
	// A later call is answered, so the senders are done with the queue.
	if _, err := c.AllocateIP(t.Context(), req("after")); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, sent := f.seen["queued"]; sent {
		t.Error("the cancelled queued request was sent")
	}
}

// TestDeadlinesTravelPerRequest batches a caller with a short deadline and
// one with none: each request carries its own caller's time, and the short
// one does not cut the other's.
func TestDeadlinesTravelPerRequest(t *testing.T) {
	f := newFake()
	c := New(f)
	out := burst(t, c, f, []string{"patient"})
	short, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	errs := make(chan error, 1)
	go func() {
		_, err := c.AllocateIP(short, req("hurried"))
		errs <- err
	}()
	waitQueued(t, c, 2)
	close(f.release)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for range maxInflight + 1 {
		if r := <-out; r.err != nil {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.seen["hurried"]; d <= 0 || d > time.Minute {
		t.Errorf("hurried's request carried timeout %v, want its caller's (at most 1m)", d)
	}
	if d := f.seen["patient"]; d != 0 {
		t.Errorf("patient's request carried timeout %v, want none", d)
	}
	if len(f.batches) != 1 || f.batches[0] != 2 {
		t.Errorf("batches %v, want one of 2", f.batches)
	}
}

// TestErrorWithoutCode treats a result error without a code as an error.
func TestErrorWithoutCode(t *testing.T) {
	f := newFake()
	c := New(f)
	out := burst(t, c, f, []string{"zero", "fine"})
	waitQueued(t, c, 2)
	close(f.release)
	for range maxInflight + 2 {
		r := <-out
		if r.id == "zero" && status.Code(r.err) != codes.Internal {
			t.Errorf("zero: err = %v, want INTERNAL", r.err)
		}
		if r.id != "zero" && r.err != nil {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
}

// TestBatchedErrorKeepsReason keeps a result error's ErrorInfo reason, so
// an exhausted pool reads the same batched or not.
func TestBatchedErrorKeepsReason(t *testing.T) {
	f := newFake()
	c := New(f)
	out := burst(t, c, f, []string{"bad", "fine"})
	waitQueued(t, c, 2)
	close(f.release)
	for range maxInflight + 2 {
		r := <-out
		if r.id == "bad" && (status.Code(r.err) != codes.ResourceExhausted || errinfo.Reason(r.err) != errinfo.ReasonPoolExhausted) {
			t.Errorf("bad: err = %v (reason %q), want RESOURCE_EXHAUSTED with reason %s", r.err, errinfo.Reason(r.err), errinfo.ReasonPoolExhausted)
		}
		if r.id != "bad" && r.err != nil {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
}
