// Package etcdtest runs real etcd for tests: a single embedded member, or a
// cluster of several members in the test's process, on loopback ports, with
// fault injection (stop a member as if it crashed, restart it with its data).
//
// Everything it starts is stopped in t.Cleanup, also when the test fails.
// Timeouts are short (20ms heartbeat, 200ms election) so that a failover
// takes well under a second; etcd's own errors go to t.Log while the test
// runs and are dropped afterwards.
//
// Each member is reached through a small TCP proxy on the address it
// advertises, so that stopping it cuts every connection to it at once, as a
// crash would, and so that its advertised ports stay reserved across
// restarts.
//
// As with a real crash, a write that reaches a follower after its leader
// stopped but before a new one is elected is forwarded to the dead leader
// and lost: it fails only after etcd's request timeout (5s plus two election
// timeouts). After stopping the leader, wait with [Cluster.Leader], or retry
// writes with short per-attempt timeouts.
package etcdtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/axon-cni/axon/services/internal/embedetcd"
)

const (
	tickMs     = 20
	electionMs = 200
	// startAttempts bounds how often a member's start is retried, on
	// fresh ports, after a port chosen for it was taken before etcd bound
	// it.
	startAttempts = 5
	// readyTimeout bounds the wait for members to serve.
	readyTimeout = 20 * time.Second
	// dialTimeout is the DialTimeout of the clients this package makes.
	dialTimeout = 2 * time.Second
)

// errClosed is returned by operations on a cluster whose test has ended.
var errClosed = errors.New("etcd test cluster is closed")

// Cluster is a set of embedded etcd members forming one etcd cluster. Its
// methods are safe for concurrent use.
type Cluster struct {
	members []*member
	log     *testLog
	closed  atomic.Bool

	clientMu sync.Mutex
	client   *clientv3.Client // used by WaitHealthy; made on first use
}

// member is one etcd member. Its name, data directory and advertised URLs
// (its proxies') stay the same across Stop and Restart; each instance
// listens on fresh ports behind the proxies.
type member struct {
	cfg           *embed.Config // template for every instance
	client, peers *proxy
	log           *testLog

	op sync.Mutex // serializes starting and stopping
	// closing counts stopped instances still closing their listeners.
	closing sync.WaitGroup

	mu    sync.Mutex
	etcd  *embed.Etcd  // nil while stopped
	gate  *gate        // admits the instance's client RPCs
	quiet *atomic.Bool // set while the instance starts or stops
}

// Option changes how [New] configures the members.
type Option func(*options)

type options struct {
	fsync bool
}

// Durable makes every member fsync its write-ahead log before it
// acknowledges a write, as a production etcd does. Without it members skip
// fsync: a test's data need not survive a machine crash, only a member's,
// and tests run faster. Benchmarks that compare against the store's own
// ceiling want it, so both sides pay for the disk.
func Durable() Option { return func(o *options) { o.fsync = true } }

// Single starts a one-member etcd cluster with its data in t.TempDir() and
// waits until it serves. It is stopped in t.Cleanup.
func Single(t testing.TB) *Cluster {
	t.Helper()
	return New(t, 1)
}

// New starts an etcd cluster of the given number of members, all in this
// process, each with its own data directory under t.TempDir() and client and
// peer URLs on free 127.0.0.1 ports, and waits until every member serves.
// Every member, and every client made by [Cluster.Client], is stopped in
// t.Cleanup. Members skip fsync unless [Durable] is given.
func New(t testing.TB, members int, opts ...Option) *Cluster {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if members < 1 {
		t.Fatalf("etcdtest.New: %d members, want at least 1", members)
	}
	log := &testLog{t: t}
	// Cleanups run last-registered first: the members stop before their
	// data directory is removed, and log until they have stopped.
	t.Cleanup(log.close)
	dir := t.TempDir()
	c := &Cluster{log: log}
	t.Cleanup(c.close)
	if err := c.start(dir, members, o); err != nil {
		t.Fatalf("etcdtest: start %d-member cluster: %v", members, err)
	}
	return c
}

// start creates the members and starts them all, then waits until each is
// ready.
func (c *Cluster) start(dir string, n int, o options) error {
	token := fmt.Sprintf("etcdtest-%d-%s", os.Getpid(), rand.Text())
	var initial []string
	for i := range n {
		m := &member{log: c.log}
		var err error
		if m.client, err = newProxy(); err != nil {
			return err
		}
		if m.peers, err = newProxy(); err != nil {
			m.client.close()
			return err
		}
		c.members = append(c.members, m)

		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.AdvertiseClientUrls = []url.URL{*m.client.url()}
		cfg.AdvertisePeerUrls = []url.URL{*m.peers.url()}
		cfg.InitialClusterToken = token
		cfg.TickMs = tickMs
		cfg.ElectionMs = electionMs
		cfg.UnsafeNoFsync = !o.fsync
		cfg.EnableGRPCGateway = false
		cfg.LogLevel = "error"
		m.cfg = cfg
		initial = append(initial, cfg.Name+"="+m.peers.url().String())
	}
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	// Members of a new cluster become ready only together, once they
	// reach each other, so all start before any is waited for.
	for _, m := range c.members {
		if err := m.start(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, m := range c.members {
		if err := m.waitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// start starts an instance of the member on fresh ports, from its data
// directory, and points its proxies at it.
func (m *member) start() error {
	var err error
	for range startAttempts {
		if err = m.startOnce(); err == nil || !embedetcd.IsAddrInUse(err) {
			break
		}
	}
	return err
}

func (m *member) startOnce() error {
	clientURL, err := freeURL()
	if err != nil {
		return err
	}
	peerURL, err := freeURL()
	if err != nil {
		return err
	}
	g := newGate()
	quiet := new(atomic.Bool)
	quiet.Store(true) // a failed start is reported as an error
	cfg := *m.cfg
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.GRPCAdditionalServerOptions = g.serverOptions()
	// etcd's Fatal would exit the test binary silently: panic instead.
	core := embedetcd.ZapCore(slog.New(&testHandler{log: m.log, member: cfg.Name}), zapcore.ErrorLevel, quiet)
	lg := zap.New(core, zap.WithFatalHook(zapcore.WriteThenPanic))
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	e, err := embed.StartEtcd(&cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", cfg.Name, err)
	}
	quiet.Store(false)
	m.mu.Lock()
	m.etcd, m.gate, m.quiet = e, g, quiet
	m.mu.Unlock()
	m.client.up(clientURL.Host)
	m.peers.up(peerURL.Host)
	return nil
}

// waitReady waits until the running member has joined its cluster.
func (m *member) waitReady(ctx context.Context) error {
	e := m.get()
	if e == nil {
		return fmt.Errorf("member %s is stopped", m.cfg.Name)
	}
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("member %s failed while starting: %w", m.cfg.Name, err)
	case <-ctx.Done():
		return fmt.Errorf("member %s not ready: %w", m.cfg.Name, ctx.Err())
	}
}

// get returns the running instance, or nil.
func (m *member) get() *embed.Etcd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd
}

// stop stops the member as a crash would: every connection to it closes,
// its running client RPCs end, and raft stops at once, with no leadership
// transfer, closing the data directory. The instance's listeners, no longer
// reachable, close in the background: that can take a second.
func (m *member) stop() {
	m.mu.Lock()
	e, g, quiet := m.etcd, m.gate, m.quiet
	m.etcd, m.gate, m.quiet = nil, nil, nil
	m.mu.Unlock()
	if e == nil {
		return
	}
	quiet.Store(true)
	m.client.down()
	m.peers.down()
	if !g.close(readyTimeout) {
		m.log.logf("etcdtest: member %s: client RPCs still running %v after stop", m.cfg.Name, readyTimeout)
	}
	e.Server.HardStop()
	m.closing.Go(e.Close)
}

// Endpoints returns the client URLs of all members, stopped ones included,
// in member order.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.cfg.AdvertiseClientUrls[0].String()
	}
	return eps
}

// Client returns a client to all members' endpoints, which fails over
// between them. It is closed in t.Cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := newClient(c.Endpoints())
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
	})
}

// Leader returns the index of the member that leads the cluster: a running
// member that a majority of all members follow. It waits for one until ctx
// is done.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	for {
		if i, ok := c.leader(); ok {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no etcd leader: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (c *Cluster) leader() (int, bool) {
	votes := make(map[uint64]int)
	ids := make(map[uint64]int)
	for i, m := range c.members {
		if e := m.get(); e != nil {
			ids[uint64(e.Server.MemberID())] = i
			votes[uint64(e.Server.Leader())]++
		}
	}
	for id, n := range votes {
		if i, running := ids[id]; running && n > len(c.members)/2 {
			return i, true
		}
	}
	return -1, false
}

// Stop stops member i as if its process crashed: abruptly, without handing
// over leadership. Its data directory stays for [Cluster.Restart]. Stopping a
// stopped member does nothing.
func (c *Cluster) Stop(i int) {
	m := c.members[i]
	m.op.Lock()
	defer m.op.Unlock()
	m.stop()
}

// Restart starts stopped member i again with its data directory, name and
// URLs, as a member of the existing cluster, and waits until it has
// rejoined. If the running members, i included, are not a majority, the
// member cannot rejoin yet, and Restart returns once it runs: restart more
// members, then use [Cluster.WaitHealthy]. Restarting a running member does
// nothing. Restart fails the test with t.Fatalf, so from a goroutine other
// than the test's a failure ends only that goroutine.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	if err := c.restart(i); err != nil {
		t.Fatalf("etcdtest: restart member %d: %v", i, err)
	}
}

func (c *Cluster) restart(i int) error {
	m := c.members[i]
	m.op.Lock()
	defer m.op.Unlock()
	if c.closed.Load() {
		return errClosed
	}
	if m.get() != nil {
		return nil
	}
	if err := m.start(); err != nil {
		return err
	}
	if !c.quorumRunning() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := m.waitReady(ctx); err != nil {
		m.stop()
		return err
	}
	return nil
}

// quorumRunning reports whether a majority of members runs.
func (c *Cluster) quorumRunning() bool {
	running := 0
	for _, m := range c.members {
		if m.get() != nil {
			running++
		}
	}
	return running > len(c.members)/2
}

// WaitHealthy waits until a linearizable read, which needs a quorum,
// succeeds through a client to all members, or until ctx is done.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	c.clientMu.Lock()
	if c.client == nil {
		if c.closed.Load() {
			c.clientMu.Unlock()
			return errClosed
		}
		cli, err := newClient(c.Endpoints())
		if err != nil {
			c.clientMu.Unlock()
			return err
		}
		c.client = cli
	}
	cli := c.client
	c.clientMu.Unlock()
	for {
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(tctx, "etcdtest/health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd cluster not healthy: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// close stops everything the cluster started; it runs in t.Cleanup.
func (c *Cluster) close() {
	c.closed.Store(true)
	c.clientMu.Lock()
	if c.client != nil {
		_ = c.client.Close()
		c.client = nil
	}
	c.clientMu.Unlock()
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Go(func() {
			m.op.Lock()
			defer m.op.Unlock()
			m.stop()
			m.closing.Wait()
			m.client.close()
			m.peers.close()
		})
	}
	wg.Wait()
}

// freeURL returns an http URL on a 127.0.0.1 port that was free a moment
// ago; the caller retries on other ports if it is taken before etcd binds
// it.
func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return url.URL{}, err
	}
	return url.URL{Scheme: "http", Host: addr}, nil
}
