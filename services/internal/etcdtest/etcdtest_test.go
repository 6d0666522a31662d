package etcdtest

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestSingle(t *testing.T) {
	t.Parallel()
	c := Single(t)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get(k) = %v, want v", resp.Kvs)
	}
}

func TestClusterFailover(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := New(t, 3)
	t.Logf("3 members ready after %v", time.Since(start))
	if n := len(c.Endpoints()); n != 3 {
		t.Fatalf("%d endpoints, want 3", n)
	}
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	put := func(value string) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := cli.Put(pctx, "k", value); err != nil {
			t.Fatalf("Put(k, %s): %v", value, err)
		}
	}
	put("1")

	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mark := time.Now()
	c.Stop(leader)
	c.Stop(leader) // stopping twice is harmless
	t.Logf("stopped leader %d in %v", leader, time.Since(mark))
	mark = time.Now()
	next, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("leader after stopping member %d is still %d", leader, next)
	}
	t.Logf("member %d leads after %v", next, time.Since(mark))
	put("2")

	mark = time.Now()
	c.Restart(t, leader)
	c.Restart(t, leader) // restarting a running member is harmless
	t.Logf("restarted member %d in %v", leader, time.Since(mark))
	waitValue(t, ctx, c.Endpoints()[leader], "2")

	// Two of three down: no quorum, no writes.
	a, b := (leader+1)%3, (leader+2)%3
	c.Stop(a)
	c.Stop(b)
	wctx, wcancel := context.WithTimeout(ctx, time.Second)
	_, err = cli.Put(wctx, "k", "3")
	wcancel()
	if err == nil {
		t.Fatal("Put with two of three members stopped succeeded, want an error")
	}
	t.Logf("Put without quorum: %v", err)

	mark = time.Now()
	c.Restart(t, a)
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("healthy %v after restarting member %d", time.Since(mark), a)
	put("4")
}

// TestStopUnderLoad stops and restarts every member, from a goroutine other
// than the test's, while clients read (also serializably, which a stopped
// member must not serve), write, watch and keep a lease alive; it ends with
// a member stopped, which cleanup must cope with.
func TestStopUnderLoad(t *testing.T) {
	t.Parallel()
	c := New(t, 3)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAlive(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	watch := cli.Watch(ctx, "k")
	go func() {
		for range watch {
		}
	}()

	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		for i := range 3 {
			mark := time.Now()
			c.Stop(i)
			c.Stop(i) // stopping twice is harmless
			t.Logf("stopped member %d in %v", i, time.Since(mark))
			time.Sleep(50 * time.Millisecond)
			mark = time.Now()
			c.Restart(t, i)
			t.Logf("restarted member %d in %v", i, time.Since(mark))
		}
	}()
	var load sync.WaitGroup
	for _, op := range []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := cli.Put(ctx, "k", "v", clientv3.WithLease(lease.ID))
			return err
		},
		func(ctx context.Context) error { _, err := cli.Get(ctx, "k"); return err },
		func(ctx context.Context) error { _, err := cli.Get(ctx, "k", clientv3.WithSerializable()); return err },
	} {
		load.Go(func() {
			for {
				select {
				case <-chaosDone:
					return
				default:
				}
				octx, ocancel := context.WithTimeout(ctx, 500*time.Millisecond)
				_ = op(octx)
				ocancel()
			}
		})
	}
	load.Wait()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "k", "end", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("Put after restarts: %v", err)
	}
	c.Stop(1)
}

// TestRestartAll stops every member and restarts them one by one: the
// first Restart cannot wait for its member to rejoin, as there is no quorum.
func TestRestartAll(t *testing.T) {
	t.Parallel()
	c := New(t, 3)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "kept"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c.Stop(i)
	}
	for i := range 3 {
		c.Restart(t, i)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "kept" {
		t.Fatalf("Get(k) after restarting all = %v, want kept", resp.Kvs)
	}
}

// memberClient returns a client to one endpoint only.
func memberClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// waitValue waits until the member at endpoint serves key k with value
// want from its own store.
func waitValue(t *testing.T, ctx context.Context, endpoint, want string) {
	t.Helper()
	cli := memberClient(t, endpoint)
	mark := time.Now()
	for {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := cli.Get(gctx, "k", clientv3.WithSerializable())
		cancel()
		if err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == want {
			t.Logf("%s serves k=%s after %v", endpoint, want, time.Since(mark))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s does not serve k=%s: last %v, %v", endpoint, want, resp, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
