package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/axon-cni/axon/services/internal/etcdtest"
	"github.com/axon-cni/axon/services/ipam/allocator"
)

const (
	scaleNodes       = 5000
	scalePodsPerNode = 30
	scaleClients     = 64
)

// scaleResult is what the scale run measured.
type scaleResult struct {
	Nodes, PodsPerNode, Clients int
	RegisterTime                time.Duration // registering the nodes
	Elapsed                     time.Duration // the allocations
	Allocations                 int           // successful allocations
	Errors                      int
	FirstErr                    string
	P50, P99, Max               time.Duration
	KV                          kvCounts
	CPU                         time.Duration
	Others                      time.Duration // CPU used by other processes meanwhile

	Listed      int // allocations found by ListAllocations
	Duplicates  int // addresses held by more than one allocation
	AllocKeys   int64
	Blocks      int64
	VerifyTime  time.Duration
	DBSize      int64
	HeapBefore  uint64 // HeapInuse after registering the nodes
	HeapInuse   uint64 // after the allocations, after a GC
	Sys         uint64
	NumGC       uint32
	Goroutines  int
	Description string
	Profile     *profileSummary // a profiled run on the same cluster afterwards
}

func heapAfterGC() runtime.MemStats {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// runScale allocates scaleNodes×scalePodsPerNode addresses through the
// gRPC service with scaleClients clients on a single-member etcd, then
// checks that no address is held twice.
func runScale(t *testing.T) scaleResult {
	ctx := t.Context()
	c := etcdtest.Single(t)
	e := startAxon(t, c)
	r := scaleResult{Nodes: scaleNodes, PodsPerNode: scalePodsPerNode, Clients: scaleClients}

	start := time.Now()
	if err := e.registerNodes(ctx, "scale", scaleNodes, scaleClients); err != nil {
		t.Fatal(err)
	}
	r.RegisterTime = time.Since(start)
	r.HeapBefore = heapAfterGC().HeapInuse
	t.Logf("scale: registered %d nodes in %v", scaleNodes, r.RegisterTime.Round(time.Millisecond))

	cls := e.clients(t, scaleClients)
	var (
		next     atomic.Int64
		mu       sync.Mutex
		lats     []time.Duration
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
	)
	kv0, cpu0, sys0 := e.kv.snapshot(), cpuNow(), machineBusy()
	start = time.Now()
	for w := range scaleClients {
		wg.Go(func() {
			mine := make([]time.Duration, 0, scaleNodes*scalePodsPerNode/scaleClients+scalePodsPerNode)
			nerr := 0
			// Each client takes whole nodes: all of a node's pods are
			// allocated by one client, as one node's CNI plugin would.
			for {
				n := int(next.Add(1) - 1)
				if n >= scaleNodes || ctx.Err() != nil {
					break
				}
				for p := range scalePodsPerNode {
					t0 := time.Now()
					_, err := cls[w].AllocateIP(ctx, allocRequest("scale", nodeName("scale", n), n, p))
					if err != nil {
						nerr++
						s := err.Error()
						firstErr.CompareAndSwap(nil, &s)
						continue
					}
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			r.Errors += nerr
			mu.Unlock()
		})
	}
	wg.Wait()
	r.Elapsed = time.Since(start)
	r.CPU = cpuNow() - cpu0
	r.Others = max(0, machineBusy()-sys0-r.CPU)
	r.KV = e.kv.snapshot().sub(kv0)
	r.Allocations = len(lats)
	if p := firstErr.Load(); p != nil {
		r.FirstErr = *p
	}
	slices.Sort(lats)
	if len(lats) > 0 {
		r.P50, r.P99, r.Max = percentile(lats, 0.5), percentile(lats, 0.99), lats[len(lats)-1]
	}
	lats = nil
	ms := heapAfterGC()
	r.HeapInuse, r.Sys, r.NumGC, r.Goroutines = ms.HeapInuse, ms.Sys, ms.NumGC, runtime.NumGoroutine()
	t.Logf("scale: %d allocations (%d errors) in %v", r.Allocations, r.Errors, r.Elapsed.Round(time.Millisecond))

	start = time.Now()
	if err := verifyScale(ctx, e, &r); err != nil {
		t.Fatal(err)
	}
	r.VerifyTime = time.Since(start)
	if st, err := e.cli.Status(ctx, c.Endpoints()[0]); err == nil {
		r.DBSize = st.DbSize
	}
	t.Logf("scale: listed %d allocations, %d duplicate addresses, %d alloc keys, %d blocks",
		r.Listed, r.Duplicates, r.AllocKeys, r.Blocks)
	r.Profile = profileAxon(t, ctx, e, fmt.Sprintf("1 member, %d clients, after the scale run", profileConc), "scaleprof")
	return r
}

// verifyScale lists every allocation and counts addresses held twice, and
// cross-checks against the address keys in etcd.
func verifyScale(ctx context.Context, e *axonEnv, r *scaleResult) error {
	seen := make(map[string]string, scaleNodes*scalePodsPerNode)
	after := ""
	for {
		page, next, err := e.alloc.ListAllocations(ctx, allocator.AllocationFilter{}, after, 10000)
		if err != nil {
			return fmt.Errorf("list allocations: %w", err)
		}
		for _, a := range page {
			r.Listed++
			h := a.GetHandle().GetContainerId() + "/" + a.GetHandle().GetInterfaceName()
			for _, ad := range a.GetAddresses() {
				if prev, dup := seen[ad.GetIp()]; dup {
					r.Duplicates++
					if r.Duplicates == 1 {
						r.Description = fmt.Sprintf("%s held by %s and %s", ad.GetIp(), prev, h)
					}
					continue
				}
				seen[ad.GetIp()] = h
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	root := allocator.DefaultConfig().Root
	for _, q := range []struct {
		prefix string
		dst    *int64
	}{{root + "alloc/", &r.AllocKeys}, {root + "topology/blocks/", &r.Blocks}} {
		resp, err := e.cli.Get(ctx, q.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		*q.dst = resp.Count
	}
	return nil
}
