package e2e

import (
	"fmt"
	"sync"
	"testing"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// TestBackendChurnUnderLoad: clients on both nodes open connection after
// connection (TCP, and connected UDP sockets) through a ClusterIP while
// its backends, two on each node, are added and removed on both nodes,
// every non-empty subset in turn. Every backend stays healthy throughout,
// so no connection may fail, and each is answered by one of them.
func TestBackendChurnUnderLoad(t *testing.T) {
	e := newEnv(t, 2)
	a, d := e.addPod(0, "pod-a"), e.addPod(1, "pod-d")
	backends := []*pod{e.addPod(0, "pod-b1"), e.addPod(0, "pod-b2"), e.addPod(1, "pod-c1"), e.addPod(1, "pod-c2")}
	names := map[string]bool{}
	for _, p := range backends {
		serveName(t, p, 8080)
		names[p.name] = true
	}
	for _, p := range backends {
		e.eventually(func() error { return e.tryPing(a.netns, p.ip) })
		e.eventually(func() error { return e.tryPing(d.netns, p.ip) })
	}
	// set i (1 to 15) holds the backends of its bits.
	services := func(i int) []*datapathv1alpha1.Service {
		var ips, nodes []string
		for j, p := range backends {
			if i&(1<<j) != 0 {
				ips = append(ips, p.ip)
				nodes = append(nodes, e.cluster.Nodes[j/2].Name)
			}
		}
		return []*datapathv1alpha1.Service{
			clusterIP("10.96.0.30", 80, commonv1alpha1.Protocol_PROTOCOL_TCP, 8080, nodes, ips...),
			clusterIP("10.96.0.30", 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 8080, nodes, ips...),
		}
	}
	clients := []datapathv1alpha1.DatapathServiceClient{e.datapathClient(0), e.datapathClient(1)}
	upsert := func(i int) error {
		for node, c := range clients {
			if _, err := c.UpsertServices(t.Context(), &datapathv1alpha1.UpsertServicesRequest{Services: services(i), ReplaceAll: true}); err != nil {
				return fmt.Errorf("UpsertServices of set %d on node %d: %w", i, node, err)
			}
		}
		return nil
	}
	if err := upsert(15); err != nil {
		t.Fatal(err)
	}

	const minSwitches, minConns = 30, 150 // two rounds of the 15 sets; connections per client
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		switches int
		failures []string
		reached  = map[string]int{}
		stop     = make(chan struct{})
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := upsert(i%15 + 1); err != nil {
				fail("%v", err)
				return
			}
			mu.Lock()
			switches++
			mu.Unlock()
		}
	}()
	var load sync.WaitGroup
	for _, client := range []*pod{a, d} {
		load.Add(1)
		go func() {
			defer load.Done()
			for n := 0; ; n++ {
				mu.Lock()
				done := (switches >= minSwitches && n >= minConns) || len(failures) > 10
				mu.Unlock()
				if done {
					return
				}
				network, addr := "tcp", "10.96.0.30:80"
				if n%2 == 1 {
					network, addr = "udp", "10.96.0.30:53"
				}
				name, err := askName(client, network, addr)
				switch {
				case err != nil:
					fail("connection %d: %v", n, err)
				case !names[name]:
					fail("connection %d, %s %s from %s: answered %q", n, network, addr, client.name, name)
				default:
					mu.Lock()
					reached[name]++
					mu.Unlock()
				}
			}
		}()
	}
	load.Wait()
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		t.Error(f)
	}
	if len(failures) > 0 {
		t.Logf("node-1 counters %v\nnode-2 counters %v", e.stats(0), e.stats(1))
	}
	if len(reached) != len(backends) {
		t.Errorf("connections reached only %v", reached)
	}
	t.Logf("%d backend switches; connections reached %v", switches, reached)
}
