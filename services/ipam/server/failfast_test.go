package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/axon-cni/axon/bpf/testpoll"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/etcdtest"
	"github.com/axon-cni/axon/services/ipam/allocator"
)

// TestFailFastWhileEtcdIsDown stops etcd under a serving IPAM: every call
// fails with UNAVAILABLE well before its caller's deadline, first through
// the per-request timeout, then at once once the health check has seen
// the outage; a scrape answers at once with the last usage known; and
// calls succeed again when etcd is back, without a restart.
func TestFailFastWhileEtcdIsDown(t *testing.T) {
	cluster := etcdtest.Single(t)
	c, m, _, alloc := serveIPAM(t, cluster.Client(t), allocator.DefaultConfig())
	ctx := t.Context()
	if _, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{
		Name: "default", Default: true, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.1.0.0/24"}, BlockPrefixLength: 28},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: "n1", Addresses: []string{"192.168.1.1"}}}); err != nil {
		t.Fatal(err)
	}
	kept := &ipamv1alpha1.OwnerHandle{ContainerId: "kept", InterfaceName: "eth0"}
	if _, err := c.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{Handle: kept, Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := m.RefreshUsage(ctx); err != nil {
		t.Fatal(err)
	}

	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"GetPool", func(ctx context.Context) error {
			_, err := c.GetPool(ctx, &ipamv1alpha1.GetPoolRequest{Name: "default"})
			return err
		}},
		{"ListPools", func(ctx context.Context) error {
			_, err := c.ListPools(ctx, &ipamv1alpha1.ListPoolsRequest{})
			return err
		}},
		{"CreateNode", func(ctx context.Context) error {
			_, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: "n2", Addresses: []string{"192.168.1.2"}}})
			return err
		}},
		{"AllocateIP", func(ctx context.Context) error {
			_, err := c.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "new", InterfaceName: "eth0"}, Node: "n1"})
			return err
		}},
		{"AllocateIPs", func(ctx context.Context) error {
			resp, err := c.AllocateIPs(ctx, &ipamv1alpha1.AllocateIPsRequest{Requests: []*ipamv1alpha1.AllocateIPRequest{
				{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "b1", InterfaceName: "eth0"}, Node: "n1"},
				{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "b2", InterfaceName: "eth0"}, Node: "n1"},
			}})
			if err != nil {
				return err
			}
			for _, r := range resp.GetResults() {
				if e := r.GetError(); e != nil {
					return status.Error(codes.Code(e.GetCode()), e.GetMessage())
				}
			}
			return nil
		}},
		{"ReleaseIP", func(ctx context.Context) error {
			_, err := c.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{Handle: kept})
			return err
		}},
		{"GetAllocation", func(ctx context.Context) error {
			_, err := c.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{Handle: kept}})
			return err
		}},
		{"ListAllocations", func(ctx context.Context) error {
			_, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{Node: "n1"})
			return err
		}},
		{"GarbageCollect", func(ctx context.Context) error {
			_, err := c.GarbageCollect(ctx, &ipamv1alpha1.GarbageCollectRequest{Node: "n1", DryRun: true})
			return err
		}},
	}
	const deadline = 10 * time.Second
	callAll := func(t *testing.T) {
		t.Helper()
		for _, tc := range calls {
			cctx, cancel := context.WithTimeout(ctx, deadline)
			start := time.Now()
			err := tc.call(cctx)
			took := time.Since(start)
			cancel()
			if status.Code(err) != codes.Unavailable || took >= deadline/2 {
				t.Errorf("%s with etcd down = %v after %s; want UNAVAILABLE well before the %s deadline", tc.name, err, took, deadline)
			}
		}
	}

	cluster.Stop(0)
	// The daemon's health check, as it runs: each round bounded by the
	// interval. Calls in flight fail through their request timeout or when
	// a check finds etcd down, whichever comes first.
	checking, stopChecks := context.WithCancel(ctx)
	checksDone := make(chan struct{})
	go func() {
		defer close(checksDone)
		for checking.Err() == nil {
			cctx, cancel := context.WithTimeout(checking, 500*time.Millisecond)
			_ = alloc.CheckStore(cctx)
			<-cctx.Done()
			cancel()
		}
	}()
	t.Run("while the health check runs", callAll)
	stopChecks()
	<-checksDone
	checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := alloc.CheckStore(checkCtx); err == nil {
		t.Fatal("CheckStore passes with etcd stopped")
	}
	cancel()
	t.Run("once the health check failed", callAll)

	// A scrape reads no etcd: it answers at once, with the usage last read.
	scraped := make(chan error, 1)
	go func() {
		mfs, err := m.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "axon_ipam_pool_addresses" && len(mf.GetMetric()) > 0 {
				scraped <- err
				return
			}
		}
		scraped <- errors.Join(err, errors.New("no axon_ipam_pool_addresses"))
	}()
	select {
	case err := <-scraped:
		if err != nil {
			t.Errorf("scrape with etcd down: %v", err)
		}
	case <-time.After(deadline / 2):
		t.Errorf("a scrape with etcd down did not answer within %s", deadline/2)
	}

	cluster.Restart(t, 0)
	testpoll.Until(t, 20*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := alloc.CheckStore(cctx); err != nil {
			return err
		}
		_, err := c.AllocateIP(cctx, &ipamv1alpha1.AllocateIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "after", InterfaceName: "eth0"}, Node: "n1"})
		return err
	})
	if _, err := c.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{Handle: kept}); err != nil {
		t.Errorf("ReleaseIP once etcd is back: %v", err)
	}
}
