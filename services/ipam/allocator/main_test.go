package allocator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/axon-cni/axon/services/internal/embedetcd"
)

// One embedded etcd serves every test of the package; each test works
// under its own key root, so tests never see each other's state.
var testEtcdURL string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "axon-allocator-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv, err := embedetcd.Start(embedetcd.Config{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testEtcdURL = srv.ClientURL()
	code := m.Run()
	srv.Close()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var rootSeq atomic.Int64

func newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{testEtcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// testRoot returns a key root unique to this test.
func testRoot(t testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("/test/%s-%d/", name, rootSeq.Add(1))
}

// newAllocator starts an allocator (an IPAM replica) under root.
func newAllocator(t testing.TB, cli *clientv3.Client, root string, mutate ...func(*Config)) *Allocator {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Root = root
	for _, m := range mutate {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := New(ctx, cli, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}
