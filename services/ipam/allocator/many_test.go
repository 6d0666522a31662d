package allocator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// revision returns etcd's current revision: every transaction that writes
// adds one, so its growth counts write transactions.
func revision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(t.Context(), "/axon-revision-probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestAllocateManySharesTransactions allocates a burst of pods of one node
// in one call: every pod gets its own address, and the writes take a few
// transactions, not one per pod.
func TestAllocateManySharesTransactions(t *testing.T) {
	const pods = 60 // two batches (maxBatchJobs), all in the node's first block
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 26, "10.92.0.0/16"))
	mustNode(t, a, "n1")
	mustAlloc(t, a, allocReq("n1", "first")) // the node's block exists

	var reqs []*ipamv1alpha1.AllocateIPRequest
	for i := range pods {
		reqs = append(reqs, allocReq("n1", fmt.Sprint("pod-", i)))
	}
	before := revision(t, cli)
	resps, errs := a.AllocateMany(t.Context(), reqs)
	txns := revision(t, cli) - before
	seen := map[string]string{}
	for i, resp := range resps {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		al := resp.GetAllocation()
		if got := al.GetHandle().GetContainerId(); got != reqs[i].GetHandle().GetContainerId() {
			t.Errorf("result %d is for %s, want %s (results out of order)", i, got, reqs[i].GetHandle().GetContainerId())
		}
		ip := al.GetAddresses()[0].GetIp()
		if other, dup := seen[ip]; dup {
			t.Errorf("%s handed to %s and %s", ip, other, al.GetHandle().GetContainerId())
		}
		seen[ip] = al.GetHandle().GetContainerId()
	}
	t.Logf("%d pods, %d transactions", pods, txns)
	// Two transactions (the compares on the node, pool and block count once
	// in a batch; without that, four), with slack for a lost race.
	if txns > 3 {
		t.Errorf("%d pods took %d transactions, want a few", pods, txns)
	}

	// A retry of the whole call returns the same allocations.
	again, errs := a.AllocateMany(t.Context(), reqs)
	for i := range again {
		if errs[i] != nil {
			t.Fatalf("retry of request %d: %v", i, errs[i])
		}
		if again[i].GetAllocation().GetAddresses()[0].GetIp() != resps[i].GetAllocation().GetAddresses()[0].GetIp() {
			t.Errorf("retry of request %d got another address", i)
		}
	}
}

// TestAllocateManyErrorsAreOwn checks that each request of a call fails or
// succeeds on its own.
func TestAllocateManyErrorsAreOwn(t *testing.T) {
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 26, "10.93.0.0/16"))
	mustNode(t, a, "n1")
	taken := mustAlloc(t, a, allocReq("n1", "owner")).GetAddresses()[0].GetIp()

	wantIP := allocReq("n1", "wants-taken")
	wantIP.RequestedIps = []string{taken}
	reqs := []*ipamv1alpha1.AllocateIPRequest{
		allocReq("n1", "ok-1"),
		allocReq("n1", ""),          // empty handle
		allocReq("nowhere", "lost"), // unregistered node
		wantIP,                      // address of another owner
		allocReq("n1", "twice"),
		allocReq("n1", "twice"), // the same handle again: the same allocation
		allocReq("n1", "ok-2"),
	}
	resps, errs := a.AllocateMany(t.Context(), reqs)
	wantErr(t, errs[1], ErrInvalid, "container_id")
	wantErr(t, errs[2], ErrNotFound, "nowhere")
	wantErr(t, errs[3], ErrExists, taken)
	for _, i := range []int{0, 4, 5, 6} {
		if errs[i] != nil {
			t.Errorf("request %d (%s): %v", i, reqs[i].GetHandle().GetContainerId(), errs[i])
		}
	}
	if t.Failed() {
		return
	}
	if a, b := resps[4].GetAllocation(), resps[5].GetAllocation(); a.GetSequence() != b.GetSequence() || a.GetAddresses()[0].GetIp() != b.GetAddresses()[0].GetIp() {
		t.Errorf("one handle twice in a call got two allocations: %v and %v", a, b)
	}
	allocs, _, err := a.ListAllocations(t.Context(), AllocationFilter{}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 4 { // owner, ok-1, twice, ok-2
		t.Errorf("%d allocations stored, want 4", len(allocs))
	}
}

// TestAllocateManyAcrossReplicas runs bursts of several nodes through
// several replicas at once, with small blocks so claims race too: every
// pod gets an address of its own, and every burst's pods are all stored.
func TestAllocateManyAcrossReplicas(t *testing.T) {
	const (
		replicas = 3
		nodes    = 4
		workers  = 12
		bursts   = 6
		burst    = 8
	)
	reps := newReplicas(t, newClient(t), replicas, nodes, "10.94.0.0/20")
	var mu sync.Mutex
	owner := map[string]string{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for b := range bursts {
				node := fmt.Sprintf("n%d", (w+b)%nodes)
				var reqs []*ipamv1alpha1.AllocateIPRequest
				for k := range burst {
					reqs = append(reqs, allocReq(node, fmt.Sprintf("w%d-b%d-%d", w, b, k)))
				}
				resps, errs := reps[(w+b)%replicas].AllocateMany(t.Context(), reqs)
				mu.Lock()
				for k, err := range errs {
					if err != nil {
						t.Errorf("%s: %v", reqs[k].GetHandle().GetContainerId(), err)
						continue
					}
					ip := resps[k].GetAllocation().GetAddresses()[0].GetIp()
					if other, dup := owner[ip]; dup {
						t.Errorf("%s handed to %s and %s", ip, other, reqs[k].GetHandle().GetContainerId())
					}
					owner[ip] = reqs[k].GetHandle().GetContainerId()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	allocs, _, err := reps[0].ListAllocations(t.Context(), AllocationFilter{}, "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	if want := workers * bursts * burst; len(allocs) != want || len(owner) != want {
		t.Errorf("%d allocations stored, %d distinct addresses handed out; want %d", len(allocs), len(owner), want)
	}
}

// TestAllocateManyOwnTimeouts checks that each request of a call runs on
// its own timeout: one that has run out is not committed, and does not
// fail the others.
func TestAllocateManyOwnTimeouts(t *testing.T) {
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 26, "10.98.0.0/16"))
	mustNode(t, a, "n1")
	late := allocReq("n1", "late")
	late.Timeout = durationpb.New(time.Nanosecond)
	bad := allocReq("n1", "bad-timeout")
	bad.Timeout = durationpb.New(-time.Second)
	patient := allocReq("n1", "patient")
	patient.Timeout = durationpb.New(time.Minute)
	_, errs := a.AllocateMany(t.Context(), []*ipamv1alpha1.AllocateIPRequest{allocReq("n1", "plain"), late, bad, patient})
	if errs[0] != nil || errs[3] != nil {
		t.Fatalf("requests with time left failed: %v, %v", errs[0], errs[3])
	}
	if !errors.Is(errs[1], context.DeadlineExceeded) {
		t.Errorf("request out of time: err = %v, want DeadlineExceeded", errs[1])
	}
	wantErr(t, errs[2], ErrInvalid, "timeout")
	if _, err := a.GetAllocation(t.Context(), Handle{"late", "eth0"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("the request out of time was committed: GetAllocation = %v", err)
	}
}
