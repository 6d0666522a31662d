package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/etcdtest"
)

// replicaSet is the IPAM replicas of a fault test; replicas are killed and
// started while workers use them.
type replicaSet struct {
	t       *testing.T
	cluster *etcdtest.Cluster
	root    string
	mu      sync.Mutex
	live    []*replica
}

type replica struct {
	alloc *Allocator
	cli   *clientv3.Client
}

func (rs *replicaSet) start() {
	rs.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: rs.cluster.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		rs.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Root = rs.root
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := New(ctx, cli, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		rs.t.Fatal(err)
	}
	rs.mu.Lock()
	rs.live = append(rs.live, &replica{a, cli})
	rs.mu.Unlock()
}

// kill stops a replica abruptly: its etcd client closes under the requests
// in flight, as when the process dies.
func (rs *replicaSet) kill() {
	rs.mu.Lock()
	r := rs.live[0]
	rs.live = rs.live[1:]
	rs.mu.Unlock()
	_ = r.cli.Close()
	r.alloc.Close()
}

func (rs *replicaSet) pick(rng *rand.Rand) *Allocator {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.live[rng.IntN(len(rs.live))].alloc
}

func (rs *replicaSet) closeAll() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.live {
		_ = r.cli.Close()
		r.alloc.Close()
	}
	rs.live = nil
}

// Operations of the history: one per handle allocation and release, each
// spanning every attempt until the one that succeeded, so an attempt that
// failed after committing is covered by the interval.
type opInput struct {
	allocate bool
	handle   string
	ip       string // for a release: the address the handle held
}

// allocModel is the allocator's specification for one address (the history
// is partitioned by address): at most one handle holds it at a time.
var allocModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byIP := map[string][]porcupine.Operation{}
		for _, op := range history {
			in := op.Input.(opInput)
			ip := in.ip
			if in.allocate {
				ip = op.Output.(string)
			}
			byIP[ip] = append(byIP[ip], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byIP {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		holder, in := state.(string), input.(opInput)
		if in.allocate {
			return holder == "" || holder == in.handle, in.handle
		}
		return holder == in.handle, ""
	},
	DescribeOperation: func(input, output any) string {
		in := input.(opInput)
		if in.allocate {
			return fmt.Sprintf("allocate(%s) -> %v", in.handle, output)
		}
		return fmt.Sprintf("release(%s, %s)", in.handle, in.ip)
	},
}

// TestFaultsLinearizable allocates and releases through three IPAM
// replicas on a three-member etcd while the etcd leader and another member
// are killed and restarted and an IPAM replica is killed mid-request. The
// recorded history must be linearizable, no address may be held twice, and
// after GC nothing may leak.
func TestFaultsLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection run; skipped in -short mode")
	}
	cluster := etcdtest.New(t, 3)
	rs := &replicaSet{t: t, cluster: cluster, root: testRoot(t)}
	for range 3 {
		rs.start()
	}
	t.Cleanup(rs.closeAll)
	setup := rs.pick(rand.New(rand.NewPCG(1, 1)))
	ctx := t.Context()
	if _, err := setup.CreatePool(ctx, v4Pool("default", true, 27, "10.200.0.0/20")); err != nil {
		t.Fatal(err)
	}
	const nodes, workers = 4, 12
	for i := range nodes {
		if _, err := setup.CreateNode(ctx, &ipamv1alpha1.Node{Name: fmt.Sprintf("n%d", i)}); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu        sync.Mutex
		history   []porcupine.Operation
		believed  = map[string]string{} // handle -> ip the worker holds
		abandoned = map[string]bool{}
		// abandonedAt is when each abandoned allocation was first tried.
		abandonedAt = map[string]int64{}
		errorsSeen  atomic.Int64
	)
	begin := time.Now()
	now := func() int64 { return time.Since(begin).Nanoseconds() }
	stop := make(chan struct{})

	// retry runs fn against a random live replica until it succeeds and
	// returns the time of the first attempt. With mayAbandon it may give up
	// after a failure, like a runtime that lost track of a pod.
	retry := func(rng *rand.Rand, mayAbandon bool, fn func(a *Allocator, ctx context.Context) error) (int64, bool) {
		call := now()
		for {
			opCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
			err := fn(rs.pick(rng), opCtx)
			cancel()
			if err == nil {
				return call, true
			}
			if ctx.Err() != nil {
				return call, false
			}
			errorsSeen.Add(1)
			if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrConflict) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !isClosedClient(err) {
				t.Errorf("unexpected error: %v", err)
				return call, false
			}
			if mayAbandon && rng.IntN(4) == 0 {
				return call, false // a runtime that lost track of the pod
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			node := fmt.Sprintf("n%d", w%nodes)
			var mine []string
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if len(mine) > 0 && rng.IntN(3) == 0 {
					j := rng.IntN(len(mine))
					h := mine[j]
					mine = append(mine[:j], mine[j+1:]...)
					mu.Lock()
					ip := believed[h]
					mu.Unlock()
					call, ok := retry(rng, false, func(a *Allocator, c context.Context) error {
						_, _, err := a.Release(c, Handle{h, "eth0"}, 0, false)
						return err
					})
					if !ok {
						return
					}
					mu.Lock()
					delete(believed, h)
					history = append(history, porcupine.Operation{ClientId: w, Input: opInput{handle: h, ip: ip}, Call: call, Return: now()})
					mu.Unlock()
					continue
				}
				h := fmt.Sprintf("w%d-%d", w, i)
				var ip string
				call, ok := retry(rng, true, func(a *Allocator, c context.Context) error {
					alloc, err := a.Allocate(c, allocReq(node, h))
					if err == nil {
						ip = alloc.GetAddresses()[0].GetIp()
					}
					return err
				})
				ret := now()
				mu.Lock()
				if ok {
					believed[h] = ip
					history = append(history, porcupine.Operation{ClientId: w, Input: opInput{allocate: true, handle: h}, Output: ip, Call: call, Return: ret})
					mine = append(mine, h)
				} else {
					abandoned[h] = true
					abandonedAt[h] = call
				}
				mu.Unlock()
			}
		})
	}

	// The faults, while the workers run.
	step := func(d time.Duration) { time.Sleep(d) }
	step(700 * time.Millisecond)
	leader, err := cluster.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cluster.Stop(leader)
	step(700 * time.Millisecond)
	rs.kill() // an IPAM replica dies mid-request
	step(500 * time.Millisecond)
	cluster.Restart(t, leader)
	rs.start()
	step(700 * time.Millisecond)
	other := (leader + 1) % 3
	cluster.Stop(other)
	step(700 * time.Millisecond)
	cluster.Restart(t, other)
	step(700 * time.Millisecond)
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	// An abandoned allocation may have taken effect without its worker
	// learning it: read its outcome back and check it as an operation that
	// took effect at some point between its first try and the end of the
	// run, holding its address to the end (GC releases it only below).
	end := now()
	probe := rs.pick(rand.New(rand.NewPCG(3, 3)))
	took := 0
	for h := range abandoned {
		al, err := probe.GetAllocation(ctx, Handle{h, "eth0"})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("read back abandoned allocation %s: %v", h, err)
		}
		took++
		history = append(history, porcupine.Operation{ClientId: workers, Input: opInput{allocate: true, handle: h},
			Output: al.GetAddresses()[0].GetIp(), Call: abandonedAt[h], Return: end})
	}
	t.Logf("%d operations (%d abandoned allocations, %d of which took effect), %d failed attempts retried",
		len(history), len(abandoned), took, errorsSeen.Load())

	res, info := porcupine.CheckOperationsVerbose(allocModel, history, 30*time.Second)
	if res != porcupine.Ok {
		path := t.TempDir() + "/history.html"
		_ = porcupine.VisualizePath(allocModel, info, path)
		t.Fatalf("history is %s (visualization: %s)", res, path)
	}

	// GC with the live handles of every node releases exactly the
	// allocations whose outcome the workers never learned.
	a := rs.pick(rand.New(rand.NewPCG(2, 2)))
	zero := time.Duration(0)
	var live []Handle
	for h := range believed {
		live = append(live, Handle{h, "eth0"})
	}
	for i := range nodes {
		released, err := a.GarbageCollect(ctx, fmt.Sprintf("n%d", i), live, &zero, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range released {
			if !abandoned[r.GetHandle().GetContainerId()] {
				t.Errorf("GC released %s, which a worker still holds", r.GetHandle().GetContainerId())
			}
		}
	}
	allocs, _, err := a.ListAllocations(ctx, AllocationFilter{}, "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != len(believed) {
		t.Errorf("%d allocations after GC, workers hold %d", len(allocs), len(believed))
	}
	seen := map[string]bool{}
	for _, al := range allocs {
		ip := al.GetAddresses()[0].GetIp()
		if seen[ip] {
			t.Errorf("address %s held twice", ip)
		}
		seen[ip] = true
		if believed[al.GetHandle().GetContainerId()] != ip {
			t.Errorf("%s holds %s, its worker believes %q", al.GetHandle().GetContainerId(), ip, believed[al.GetHandle().GetContainerId()])
		}
	}
	keys, err := a.cli.Get(ctx, a.keys.allocs(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	routers := len(a.blocks.snapshot(func(b *blockRecord) bool { return b.RouterIP != "" }))
	if int(keys.Count) != len(allocs)+routers {
		t.Errorf("%d address keys for %d allocations and %d router IPs: leaked addresses", keys.Count, len(allocs), routers)
	}
}

// isClosedClient reports the error of a request cut by its replica's
// death (the etcd client closed under it).
func isClosedClient(err error) bool {
	return strings.Contains(err.Error(), "client connection is closing")
}

// TestAllocModelDetectsDoubleAllocation proves the checker is not vacuous.
func TestAllocModelDetectsDoubleAllocation(t *testing.T) {
	ok := []porcupine.Operation{
		{Input: opInput{allocate: true, handle: "a"}, Output: "10.0.0.1", Call: 0, Return: 10},
		{Input: opInput{handle: "a", ip: "10.0.0.1"}, Call: 20, Return: 30},
		{Input: opInput{allocate: true, handle: "b"}, Output: "10.0.0.1", Call: 25, Return: 40},
	}
	if !porcupine.CheckOperations(allocModel, ok) {
		t.Fatal("reuse after a concurrent release judged illegal")
	}
	bad := []porcupine.Operation{
		{Input: opInput{allocate: true, handle: "a"}, Output: "10.0.0.1", Call: 0, Return: 10},
		{Input: opInput{allocate: true, handle: "b"}, Output: "10.0.0.1", Call: 11, Return: 20},
		{Input: opInput{handle: "a", ip: "10.0.0.1"}, Call: 21, Return: 30},
	}
	if porcupine.CheckOperations(allocModel, bad) {
		t.Fatal("double allocation judged linearizable")
	}
}
