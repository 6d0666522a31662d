package allocator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The allocator reaches etcd through a store, which fails fast while etcd
// is unreachable. Left to itself, the etcd client waits for a connection
// until the caller's deadline: every call would hang for as long as its
// caller is willing to wait and then report the caller's own
// DeadlineExceeded, when it should report the store's Unavailable (which
// the contract calls retryable) at once. So each request is bounded by
// Config.RequestTimeout, requests in flight when a CheckStore finds the
// store down are cut short, and while it is known to be down (the last
// CheckStore failed) requests fail without being sent. So a call fails
// within about a health interval of an outage, while a slow but answering
// etcd (a loaded machine) still gets the whole request timeout. The
// caller's own deadline or cancellation still wins when it comes first.

// errStoreDown is what a request fails with while the store is known to
// be down; callers wrap it in ErrUnavailable like any etcd error.
var errStoreDown = errors.New("etcd is unreachable (the last health check failed)")

// errStoreTimeout is what a request fails with when etcd does not answer
// within the request timeout. It is not context.DeadlineExceeded: the
// caller's deadline has not passed, and the server maps that to
// DeadlineExceeded, not Unavailable.
var errStoreTimeout = errors.New("etcd did not answer in time")

// store is the allocator's etcd key-value API, bounded as described above.
// Watches do not go through it: they wait for etcd by design.
type store struct {
	kv clientv3.KV
	// timeout bounds each request; 0 leaves them unbounded, as during
	// start-up, which waits for etcd as long as its context allows.
	timeout time.Duration
	// down is set while the last CheckStore failed.
	down atomic.Bool

	mu sync.Mutex
	// up is cancelled when a CheckStore finds the store down, which cuts
	// short the requests in flight; the next CheckStore that passes
	// replaces it.
	up       context.Context
	cancelUp context.CancelFunc
}

// upContext returns the context cancelled when the store is next found
// down.
func (s *store) upContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up == nil {
		s.up, s.cancelUp = context.WithCancel(context.Background())
	}
	return s.up
}

// setDown records a failed (true) or passed (false) check and reports
// whether that changed the state.
func (s *store) setDown(down bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down.Swap(down) == down {
		return false
	}
	if down && s.cancelUp != nil {
		s.cancelUp()
		s.up, s.cancelUp = nil, nil
	}
	return true
}

// storeCall runs one request of s under the request timeout.
func storeCall[R any](ctx context.Context, s *store, fn func(context.Context) (R, error)) (R, error) {
	var zero R
	if s.down.Load() {
		return zero, errStoreDown
	}
	if s.timeout <= 0 {
		return fn(ctx)
	}
	reqCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	up := s.upContext()
	stop := context.AfterFunc(up, cancel)
	defer stop()
	r, err := fn(reqCtx)
	if err != nil && ctx.Err() == nil && up.Err() != nil {
		return zero, fmt.Errorf("%w: %v", errStoreDown, err)
	}
	if err != nil && ctx.Err() == nil && reqCtx.Err() != nil {
		// The etcd error is context.DeadlineExceeded: not wrapped, so that
		// the call is not taken for one its caller gave up on.
		return zero, fmt.Errorf("%w (%s): %v", errStoreTimeout, s.timeout, err)
	}
	return r, err
}

// Get is clientv3.KV's Get, bounded.
func (s *store) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return storeCall(ctx, s, func(ctx context.Context) (*clientv3.GetResponse, error) { return s.kv.Get(ctx, key, opts...) })
}

// Delete is clientv3.KV's Delete, bounded.
func (s *store) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	return storeCall(ctx, s, func(ctx context.Context) (*clientv3.DeleteResponse, error) { return s.kv.Delete(ctx, key, opts...) })
}

// Txn starts a transaction whose Commit is bounded.
func (s *store) Txn(ctx context.Context) clientv3.Txn { return &storeTxn{s: s, ctx: ctx} }

// storeTxn collects a transaction and sends it on Commit, so that the
// request timeout starts when the transaction is sent.
type storeTxn struct {
	s                *store
	ctx              context.Context
	cmps             []clientv3.Cmp
	thenOps, elseOps []clientv3.Op
}

// If adds compares, as clientv3.Txn's.
func (t *storeTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, cs...)
	return t
}

// Then adds the operations done when the compares hold.
func (t *storeTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.thenOps = append(t.thenOps, ops...)
	return t
}

// Else adds the operations done when a compare fails.
func (t *storeTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.elseOps = append(t.elseOps, ops...)
	return t
}

// Commit sends the transaction, bounded as every request of the store.
func (t *storeTxn) Commit() (*clientv3.TxnResponse, error) {
	return storeCall(t.ctx, t.s, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return t.s.kv.Txn(ctx).If(t.cmps...).Then(t.thenOps...).Else(t.elseOps...).Commit()
	})
}

// CheckStore runs a quorum read, which is what every write needs too, and
// records its outcome: while it fails, the allocator's requests fail at
// once with ErrUnavailable; the first check that passes lets them through
// again. The daemon's health check calls it, so the service's health and
// the gate agree. A check cut short by its own context's cancellation (the
// daemon stopping) records nothing.
func (a *Allocator) CheckStore(ctx context.Context) error {
	_, err := a.store.kv.Get(ctx, a.keys.root+"health", clientv3.WithCountOnly())
	switch {
	case err == nil:
		if a.store.setDown(false) {
			a.log.Info("etcd answers again; serving requests")
		}
		return nil
	case errors.Is(ctx.Err(), context.Canceled):
	default:
		if a.store.setDown(true) {
			a.log.Warn("etcd does not answer; failing requests at once until it does", "err", err)
		}
	}
	return fmt.Errorf("etcd quorum read: %w", err)
}
