package etcdtest

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gate admits a member's client RPCs until the member stops.
//
// A crash is simulated by stopping raft at once (EtcdServer.HardStop),
// which closes the member's storage; an RPC handler using the store after
// that dereferences the closed database and panics the whole test binary (a
// serializable Get does). etcd's own Close avoids that by stopping its gRPC
// server first, but then it hands leadership over gracefully, which is not
// a crash. So Stop closes the gate before raft stops: new RPCs fail with
// Unavailable, running ones are cancelled and waited for.
type gate struct {
	mu     sync.Mutex
	closed bool
	ctx    context.Context // done when the gate closes
	cancel context.CancelFunc
	active sync.WaitGroup // running RPCs
}

func newGate() *gate {
	g := &gate{}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

// errStopped is what a client sees from a member that is stopping.
var errStopped = status.Error(codes.Unavailable, "etcdtest: member stopped")

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

// close refuses new RPCs, cancels the running ones and waits up to timeout
// for their handlers to return. It reports whether they did.
func (g *gate) close(timeout time.Duration) bool {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
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

// serverOptions returns gRPC server options that pass every RPC through g.
func (g *gate) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
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
