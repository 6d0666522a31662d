package e2e

import (
	"fmt"
	"sync"
	"testing"
)

// TestManyPodsInParallel wires 60 pods on one node at once, as a runtime
// starting a busy node does: every pod gets its own address, pods reach
// each other, and deleting them all (in parallel too) leaves nothing.
func TestManyPodsInParallel(t *testing.T) {
	const n = 60
	e := newEnv(t, 1)
	pods := make([]*pod, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			p, err := e.tryAddPod(0, fmt.Sprintf("p%02d", i))
			if err != nil {
				t.Error(err)
			}
			pods[i] = p
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[string]string{}
	for _, p := range pods {
		if other, dup := seen[p.ip]; dup {
			t.Fatalf("%s and %s both got %s", p.name, other, p.ip)
		}
		seen[p.ip] = p.name
	}
	e.ping(pods[0].netns, pods[n-1].ip)
	e.ping(pods[n/2].netns, pods[1].ip)
	for _, p := range pods {
		wg.Go(func() {
			if err := e.tryDelPod(p); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	e.assertNothingLeft(0)
}
