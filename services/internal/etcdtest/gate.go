package etcdtest

import (
	"context"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// gate admits a member's client connections and RPCs until the member
// stops, so that Stop can cut clients off as a crash would.
//
// A crash is simulated by stopping raft at once (EtcdServer.HardStop), which
// closes the member's storage; an RPC reaching the member after that may use
// the closed store and panic the whole test binary (a serializable Get
// does). etcd's own Close avoids that by stopping its gRPC server first, but
// then it hands leadership over gracefully, which is not a crash. So Stop
// first closes the gate: the member's client connections are closed, new
// ones are refused, running RPCs are cancelled and waited for, and only
// then does raft stop.
type gate struct {
	credentials.TransportCredentials // insecure; ServerHandshake is wrapped

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	ctx    context.Context // done when the gate closes
	cancel context.CancelFunc
	active sync.WaitGroup // running RPCs
}

func newGate() *gate {
	g := &gate{
		TransportCredentials: insecure.NewCredentials(),
		conns:                make(map[net.Conn]struct{}),
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

// errStopped is what a client sees from a member that is stopping.
var errStopped = status.Error(codes.Unavailable, "etcdtest: member stopped")

// ServerHandshake admits a client connection and remembers it, to close it
// when the gate closes.
func (g *gate) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := g.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		_ = conn.Close()
		return nil, nil, errStopped
	}
	g.conns[conn] = struct{}{}
	return &gatedConn{Conn: conn, g: g}, info, nil
}

// Clone returns g itself: a gRPC server has one set of credentials.
func (g *gate) Clone() credentials.TransportCredentials { return g }

// gatedConn forgets itself when closed.
type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c.Conn)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// enter admits one RPC; its context ends when the gate closes. The caller
// calls done when the RPC's handler returns.
func (g *gate) enter(ctx context.Context) (_ context.Context, done func(), _ error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, nil, errStopped
	}
	g.active.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(g.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		g.active.Done()
	}, nil
}

// close closes all client connections and refuses new ones, cancels the
// running RPCs and waits up to timeout for their handlers to return. It
// reports whether they did.
func (g *gate) close(timeout time.Duration) bool {
	g.mu.Lock()
	g.closed = true
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	g.cancel()
	idle := make(chan struct{})
	go func() {
		g.active.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return true
	case <-time.After(timeout):
		return false
	}
}

// serverOptions returns gRPC server options that pass every connection and
// RPC through g.
func (g *gate) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(g),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			ctx, done, err := g.enter(ctx)
			if err != nil {
				return nil, err
			}
			defer done()
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			ctx, done, err := g.enter(ss.Context())
			if err != nil {
				return err
			}
			defer done()
			return handler(srv, &gatedStream{ServerStream: ss, ctx: ctx})
		}),
	}
}

// gatedStream is a server stream whose context ends when its gate closes;
// etcd's stream handlers (Watch, LeaseKeepAlive) return when it does.
type gatedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *gatedStream) Context() context.Context { return s.ctx }
