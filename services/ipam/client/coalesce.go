// Package client is the node side of the IPAM API: an IPAMServiceClient
// that sends a node's concurrent AllocateIP calls together, in one
// AllocateIPs call.
//
// Pods often start together on a node: when it joins, after it reboots, on
// a rollout. Each CNI ADD asks for addresses on its own; sent as one call,
// a burst costs the IPAM service one request and a few etcd transactions
// instead of one of each per pod.
package client

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

const (
	// maxInflight calls are sent at once; calls made meanwhile wait and go
	// together in the next. A lone call is sent at once.
	maxInflight = 2
	// maxBatch bounds the requests of one AllocateIPs call (the service
	// takes up to 128).
	maxBatch = 64
)

// Coalescing is an IPAMServiceClient whose AllocateIP coalesces concurrent
// calls; every other method is the wrapped client's.
type Coalescing struct {
	ipamv1alpha1.IPAMServiceClient

	mu       sync.Mutex
	queue    []*call
	inflight int

	// unbatched is set when the service does not implement AllocateIPs
	// (an older version): calls are then sent one by one.
	unbatched atomic.Bool
}

// New wraps c.
func New(c ipamv1alpha1.IPAMServiceClient) *Coalescing {
	return &Coalescing{IPAMServiceClient: c}
}

// call is one AllocateIP call waiting for its answer.
type call struct {
	ctx  context.Context
	req  *ipamv1alpha1.AllocateIPRequest
	resp *ipamv1alpha1.AllocateIPResponse
	err  error
	done chan struct{}
	// abandon is set while the call is sent: the caller stopped waiting.
	abandon func()
}

// AllocateIP allocates as IPAMService.AllocateIP does, in one AllocateIPs
// call with whatever other allocations are made meanwhile. A call with
// call options is sent on its own.
func (c *Coalescing) AllocateIP(ctx context.Context, req *ipamv1alpha1.AllocateIPRequest, opts ...grpc.CallOption) (*ipamv1alpha1.AllocateIPResponse, error) {
	if len(opts) > 0 || c.unbatched.Load() {
		return c.IPAMServiceClient.AllocateIP(ctx, req, opts...)
	}
	cl := &call{ctx: ctx, req: req, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, cl)
	lead := c.inflight < maxInflight
	if lead {
		c.inflight++
	}
	c.mu.Unlock()
	if lead {
		// The sender is not the caller, so a caller that gives up returns
		// at once. It yields before taking the queue: callers woken
		// together by a finished call queue up first and go together.
		go func() {
			runtime.Gosched()
			for c.sendNext() {
			}
		}()
	}
	select {
	case <-cl.done:
		return cl.resp, cl.err
	case <-ctx.Done():
		c.mu.Lock()
		if cl.abandon != nil {
			cl.abandon()
		}
		c.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// sendNext sends the queue's next batch and reports whether calls are left
// waiting; when none are, its caller stops sending.
func (c *Coalescing) sendNext() bool {
	c.mu.Lock()
	n := min(len(c.queue), maxBatch)
	batch := c.queue[:n:n]
	c.queue = c.queue[n:]
	var live []*call
	for _, cl := range batch {
		if cl.ctx.Err() == nil {
			live = append(live, cl)
		}
	}
	ctx, cancel := batchContext(live)
	defer cancel()
	waiting := int64(len(live))
	for _, cl := range live {
		cl.abandon = func() {
			// Calls whose callers all gave up are not waited for.
			waiting--
			if waiting == 0 {
				cancel()
			}
		}
	}
	c.mu.Unlock()

	for _, cl := range batch {
		if err := cl.ctx.Err(); err != nil {
			cl.err = status.FromContextError(err).Err()
			close(cl.done)
		}
	}
	c.send(ctx, live)

	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range live {
		cl.abandon = nil
	}
	if len(c.queue) == 0 {
		c.inflight--
		return false
	}
	return true
}

// batchContext is the context a batch is sent with: it ends at the
// earliest deadline of its calls (the service drops work whose caller gave
// up) and when cancelled.
func batchContext(calls []*call) (context.Context, context.CancelFunc) {
	var first time.Time
	for _, cl := range calls {
		if d, ok := cl.ctx.Deadline(); ok && (first.IsZero() || d.Before(first)) {
			first = d
		}
	}
	if first.IsZero() {
		return context.WithCancel(context.Background())
	}
	return context.WithDeadline(context.Background(), first)
}

// send sends calls as one AllocateIPs call (a lone one as AllocateIP) and
// hands each its answer.
func (c *Coalescing) send(ctx context.Context, calls []*call) {
	defer func() {
		for _, cl := range calls {
			close(cl.done)
		}
	}()
	switch len(calls) {
	case 0:
		return
	case 1:
		calls[0].resp, calls[0].err = c.IPAMServiceClient.AllocateIP(ctx, calls[0].req)
		return
	}
	reqs := make([]*ipamv1alpha1.AllocateIPRequest, len(calls))
	for i, cl := range calls {
		reqs[i] = cl.req
	}
	resp, err := c.IPAMServiceClient.AllocateIPs(ctx, &ipamv1alpha1.AllocateIPsRequest{Requests: reqs})
	if status.Code(err) == codes.Unimplemented {
		c.unbatched.Store(true)
		var wg sync.WaitGroup
		for _, cl := range calls {
			wg.Go(func() { cl.resp, cl.err = c.IPAMServiceClient.AllocateIP(ctx, cl.req) })
		}
		wg.Wait()
		return
	}
	if err == nil && len(resp.GetResults()) != len(calls) {
		err = status.Errorf(codes.Internal, "AllocateIPs answered %d requests with %d results", len(calls), len(resp.GetResults()))
	}
	for i, cl := range calls {
		if err != nil {
			cl.err = err
			continue
		}
		switch r := resp.GetResults()[i].GetResult().(type) {
		case *ipamv1alpha1.AllocateIPResult_Response:
			cl.resp = r.Response
		case *ipamv1alpha1.AllocateIPResult_Error:
			cl.err = status.Error(codes.Code(r.Error.GetCode()), r.Error.GetMessage())
		default:
			cl.err = status.Errorf(codes.Internal, "AllocateIPs result %d is empty", i)
		}
	}
}
