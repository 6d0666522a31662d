package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/axon-cni/axon/bpf/testpoll"
	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

func TestWatchBlocks(t *testing.T) {
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	mustPool(t, a, v4Pool("default", true, 0, "10.100.0.0/16"))
	mustNode(t, a, "n1")
	mustAlloc(t, a, allocReq("n1", "before"))

	events := make(chan *ipamv1alpha1.WatchBlocksResponse, 64)
	done := make(chan error, 1)
	go func() {
		done <- a.WatchBlocks(ctx, BlockFilter{}, func(ev *ipamv1alpha1.WatchBlocksResponse) error {
			events <- ev
			return nil
		})
	}()
	next := func(want commonv1alpha1.EventType) *ipamv1alpha1.WatchBlocksResponse {
		t.Helper()
		select {
		case ev := <-events:
			if ev.GetType() != want {
				t.Fatalf("event %v, want %v", ev, want)
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatalf("no %v event", want)
			return nil
		}
	}
	first := next(commonv1alpha1.EventType_EVENT_TYPE_ADDED)
	if first.GetBlock().GetNode() != "n1" || first.GetBlock().GetRouterIp() == "" || first.GetNodeAddresses()[0] != "192.168.0.1" {
		t.Errorf("initial block event = %v", first)
	}
	next(commonv1alpha1.EventType_EVENT_TYPE_SYNCED)

	mustNode(t, a, "n2")
	mustAlloc(t, a, allocReq("n2", "on-n2"))
	added := next(commonv1alpha1.EventType_EVENT_TYPE_ADDED)
	if added.GetBlock().GetNode() != "n2" {
		t.Errorf("claim event = %v, want a block of n2", added)
	}
	if _, err := a.UpdateNode(ctx, &ipamv1alpha1.Node{Name: "n1", Addresses: []string{"192.168.0.99"}}, "", false); err != nil {
		t.Fatal(err)
	}
	mod := next(commonv1alpha1.EventType_EVENT_TYPE_MODIFIED)
	if mod.GetBlock().GetNode() != "n1" || mod.GetNodeAddresses()[0] != "192.168.0.99" {
		t.Errorf("address change event = %v", mod)
	}
	if _, err := a.DeleteNode(ctx, "n2", ""); err != nil {
		t.Fatal(err)
	}
	if del := next(commonv1alpha1.EventType_EVENT_TYPE_DELETED); del.GetBlock().GetCidr() != added.GetBlock().GetCidr() {
		t.Errorf("release event = %v, want %s", del, added.GetBlock().GetCidr())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchBlocks after cancel = %v", err)
	}
}

func TestWatchBlocksRelistsAfterCompaction(t *testing.T) {
	cli := newClient(t)
	a := newAllocator(t, cli, testRoot(t))
	mustPool(t, a, v4Pool("default", true, 0, "10.101.0.0/16"))
	mustNode(t, a, "n1")
	mustAlloc(t, a, allocReq("n1", "c1"))
	resp, err := cli.Get(t.Context(), "x")
	if err != nil {
		t.Fatal(err)
	}
	old := resp.Header.Revision
	mustAlloc(t, a, allocReq("n1", "c2"))
	if _, err := cli.Compact(t.Context(), old+1); err != nil {
		t.Fatal(err)
	}
	w := &blockWatch{a: a, send: func(*ipamv1alpha1.WatchBlocksResponse) error { return nil }}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := w.follow(ctx, old-1); !errors.Is(err, errRelist) {
		t.Fatalf("follow from a compacted revision = %v, want errRelist", err)
	}
}

// TestWatchCacheRelistsAfterCompaction: a cache whose watch resumes from a
// revision compacted meanwhile (its watch broke while the keys changed)
// re-lists and ends up with exactly the current keys.
func TestWatchCacheRelistsAfterCompaction(t *testing.T) {
	cli := newClient(t)
	ctx := t.Context()
	prefix := testRoot(t) + "cache/"
	if _, err := cli.Put(ctx, prefix+"a", "1"); err != nil {
		t.Fatal(err)
	}
	c := newWatchCache(cli, &store{kv: cli.KV}, prefix, slog.New(slog.DiscardHandler), func(_ string, v []byte) (string, error) { return string(v), nil })
	if err := c.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// While no watch runs: a key deleted, one changed, one added; then the
	// history is compacted away.
	for _, op := range []clientv3.Op{clientv3.OpDelete(prefix + "a"), clientv3.OpPut(prefix+"b", "2"), clientv3.OpPut(prefix+"b", "3"), clientv3.OpPut(prefix+"c", "4")} {
		if _, err := cli.Do(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cli.Get(ctx, prefix+"c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { c.run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	want := map[string]string{prefix + "b": "3", prefix + "c": "4"}
	testpoll.Until(t, 5*time.Second, func() error {
		got := map[string]string{}
		for k, e := range c.snapshot(nil) {
			got[k] = e.val
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("cache holds %v, want %v", got, want)
		}
		return nil
	})
}
