package allocator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/axon-cni/axon/services/ipam/pool"
)

// newReplicas starts n allocators (IPAM replicas) under one root, with a
// default pool of cidr in /28 blocks (small blocks force frequent claims,
// so claims race too) and nodes n0, n1, ….
func newReplicas(t *testing.T, cli *clientv3.Client, n, nodes int, cidr string) []*Allocator {
	t.Helper()
	root := testRoot(t)
	var reps []*Allocator
	for range n {
		reps = append(reps, newAllocator(t, cli, root))
	}
	mustPool(t, reps[0], v4Pool("default", true, 28, cidr))
	for i := range nodes {
		mustNode(t, reps[0], fmt.Sprintf("n%d", i))
	}
	return reps
}

// TestConcurrentReplicas runs many simulated nodes allocating and releasing
// through several allocators (IPAM replicas) at once, checking that no
// address is ever held by two owners and that nothing leaks.
func TestConcurrentReplicas(t *testing.T) {
	const (
		replicas = 3
		nodes    = 6
		workers  = 24
		ops      = 40
	)
	cli := newClient(t)
	reps := newReplicas(t, cli, replicas, nodes, "10.90.0.0/20")

	var mu sync.Mutex
	held := map[string]string{} // ip -> owner, while the owner has not begun releasing
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var mine []string
			for i := range ops {
				a := reps[rng.IntN(replicas)]
				if len(mine) > 0 && rng.IntN(3) == 0 {
					j := rng.IntN(len(mine))
					cid := mine[j]
					mine = append(mine[:j], mine[j+1:]...)
					alloc, err := a.GetAllocation(t.Context(), Handle{cid, "eth0"})
					if err != nil {
						t.Errorf("get %s: %v", cid, err)
						return
					}
					mu.Lock()
					delete(held, alloc.GetAddresses()[0].GetIp())
					mu.Unlock()
					if _, _, err := a.Release(t.Context(), Handle{cid, "eth0"}, alloc.GetSequence(), false); err != nil {
						t.Errorf("release %s: %v", cid, err)
						return
					}
					continue
				}
				cid := fmt.Sprintf("w%d-%d", w, i)
				alloc, err := a.Allocate(t.Context(), allocReq(fmt.Sprintf("n%d", w%nodes), cid))
				if err != nil {
					t.Errorf("allocate %s: %v", cid, err)
					return
				}
				ip := alloc.GetAddresses()[0].GetIp()
				mu.Lock()
				if other, dup := held[ip]; dup {
					t.Errorf("%s handed to %s while %s still holds it", ip, cid, other)
				}
				held[ip] = cid
				mu.Unlock()
				mine = append(mine, cid)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Every allocated address key belongs to a live allocation and vice
	// versa: nothing leaked, nothing lost.
	allocs, _, err := reps[0].ListAllocations(t.Context(), AllocationFilter{}, "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != len(held) {
		t.Errorf("%d allocations stored, %d expected", len(allocs), len(held))
	}
	resp, err := cli.Get(t.Context(), reps[0].keys.allocs(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	podAddrs := 0
	for _, kv := range resp.Kvs {
		var rec addrRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Router == "" {
			podAddrs++
		}
	}
	if podAddrs != len(held) {
		t.Errorf("%d address keys, %d live allocations: leaked or lost addresses", podAddrs, len(held))
	}
	seen := map[string]bool{}
	for _, a := range allocs {
		ip := a.GetAddresses()[0].GetIp()
		if seen[ip] {
			t.Errorf("duplicate address %s in final state", ip)
		}
		seen[ip] = true
	}
}

// TestBurstOnFreshNode starts many pods at once on a node with no block
// yet, as after a node joins: one replica claims one block for them all,
// not one block per pod.
func TestBurstOnFreshNode(t *testing.T) {
	const pods = 40 // fit one /26 block (61 pod addresses besides the router)
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 26, "10.91.0.0/16"))
	mustNode(t, a, "fresh")
	burst(t, a, "fresh", pods, func(id string, err error) {
		if err != nil {
			t.Errorf("allocate %s: %v", id, err)
		}
	})
	resp, err := cli.Get(t.Context(), a.keys.blocks(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 1 {
		t.Errorf("%d pods starting at once on a fresh node claimed %d blocks, want 1", pods, resp.Count)
	}
}

// TestBurstNeedingManyBlocks starts more pods at once than many small
// blocks hold: they wait for each other's claims, and all succeed.
func TestBurstNeedingManyBlocks(t *testing.T) {
	const pods = 250
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 28, "10.96.0.0/16"))
	mustNode(t, a, "busy")
	burst(t, a, "busy", pods, func(id string, err error) {
		if err != nil {
			t.Errorf("allocate %s: %v", id, err)
		}
	})
}

// TestBurstOnExhaustedPool starts pods at once on a node when the pool
// has no block left: each is refused as exhausted, none as a conflict.
func TestBurstOnExhaustedPool(t *testing.T) {
	const pods = 40
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 28, "10.97.0.0/28")) // one block
	mustNode(t, a, "first")
	mustNode(t, a, "late")
	mustAlloc(t, a, allocReq("first", "takes-the-block"))
	burst(t, a, "late", pods, func(id string, err error) {
		if !errors.Is(err, ErrExhausted) {
			t.Errorf("%s: err = %v, want ErrExhausted", id, err)
		}
	})
}

// burst allocates for pods handles on node at once, as pods starting
// together, and hands each outcome to check.
func burst(t *testing.T, a *Allocator, node string, pods int, check func(id string, err error)) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() {
			id := fmt.Sprintf("%s-%d", node, i)
			_, err := a.Allocate(t.Context(), allocReq(node, id))
			check(id, err)
		})
	}
	wg.Wait()
}

// TestClaimerWhoseBlockWasTakenClaimsAgain fills a block between its
// claim and the claimer's pick, as allocations that did not wait for the
// claim can: the claimer claims another block rather than refusing.
func TestClaimerWhoseBlockWasTakenClaimsAgain(t *testing.T) {
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 28, "10.98.0.0/16"))
	mustNode(t, a, "n1")
	p, err := a.lookupPool(t.Context(), "default")
	if err != nil {
		t.Fatal(err)
	}
	fs := p.parsed.Family(pool.IPv4)
	var once sync.Once
	a.testHookClaimed = func(b *blockRecord) {
		once.Do(func() {
			free := int(usableIn(fs, b.Outer, b.CIDR))
			if b.RouterIP != "" {
				free--
			}
			for i := range free {
				mustAlloc(t, a, allocReq("n1", fmt.Sprintf("early-%d", i)))
			}
		})
	}
	mustAlloc(t, a, allocReq("n1", "claimer"))
	if got := len(blocksOf(t, a, "n1")); got != 2 {
		t.Errorf("node has %d blocks, want 2 (the taken one and the claimer's)", got)
	}
}
