// Package client is the node side of the IPAM API: an IPAMServiceClient
// that sends a node's concurrent AllocateIP calls together, in one
// AllocateIPs call.
//
// Pods often start together on a node: when it joins, after it reboots, on
// a rollout. Each CNI ADD asks for addresses on its own; sent together, a
// burst costs the IPAM service a few requests and transactions instead of
// one of each per pod.
//
// It is IPAM's client library, meant to be imported by other services (the
// node agent's axon-datapath uses it): the one package of services/ipam
// that code outside IPAM may import. Everything else there is IPAM's own.
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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/client/errinfo"
)

const (
	// maxInflight calls are sent at once; calls made meanwhile wait and go
	// together in the next. A lone call is sent at once.
	maxInflight = 2
	// maxBatch bounds the requests of one AllocateIPs call (the service
	// takes up to 128).
	maxBatch = 64
	// maxBatchBytes bounds the encoded requests of one AllocateIPs call,
	// half of gRPC's default 4 MiB message limit: a request may carry up to
	// 256 KiB of namespace annotations and as much of each label set, so a
	// full batch of them would be refused whole. A request larger than
	// this alone still goes, alone.
	maxBatchBytes = 2 << 20
	// releaseTimeout bounds the release of an allocation whose caller gave
	// up while it was being made.
	releaseTimeout = 30 * time.Second
	// unbatchedFor is how long calls go one by one after the service said
	// it does not implement AllocateIPs. Then batching is tried again: in a
	// rolling upgrade the older replicas go away.
	unbatchedFor = time.Minute
)

// Coalescing is an IPAMServiceClient whose AllocateIP coalesces concurrent
// calls; every other method is the wrapped client's.
type Coalescing struct {
	ipamv1alpha1.IPAMServiceClient

	mu       sync.Mutex
	queue    []*call
	inflight int

	// unbatchedUntil is set when the service answered that it does not
	// implement AllocateIPs (an older version): until then calls are sent
	// one by one.
	unbatchedUntil atomic.Pointer[time.Time]
	now            func() time.Time
}

// New wraps c.
func New(c ipamv1alpha1.IPAMServiceClient) *Coalescing {
	return &Coalescing{IPAMServiceClient: c, now: time.Now}
}

// unbatched reports whether calls go one by one now.
func (c *Coalescing) unbatched() bool {
	until := c.unbatchedUntil.Load()
	return until != nil && c.now().Before(*until)
}

// call is one AllocateIP call waiting for its answer.
type call struct {
	ctx  context.Context
	req  *ipamv1alpha1.AllocateIPRequest
	resp *ipamv1alpha1.AllocateIPResponse
	err  error
	done chan struct{}
	// size is req's encoded size.
	size int
	// sent and abandoned are guarded by Coalescing.mu: a call is either
	// taken by a sender or given up by its caller while queued, never both.
	sent, abandoned bool
}

// AllocateIP allocates as IPAMService.AllocateIP does, in one AllocateIPs
// call with whatever other allocations are made meanwhile. A call with
// call options is sent on its own.
//
// A caller that gives up before its request is sent returns at once and
// the request is dropped. Once sent, the request carries the caller's
// deadline, so the service does not commit it later; a caller that is
// cancelled after that waits for the answer and releases what was
// allocated, so that no allocation outlives a failed call.
func (c *Coalescing) AllocateIP(ctx context.Context, req *ipamv1alpha1.AllocateIPRequest, opts ...grpc.CallOption) (*ipamv1alpha1.AllocateIPResponse, error) {
	if len(opts) > 0 || c.unbatched() {
		return c.IPAMServiceClient.AllocateIP(ctx, req, opts...)
	}
	cl := &call{ctx: ctx, req: req, done: make(chan struct{}), size: proto.Size(req)}
	c.mu.Lock()
	c.queue = append(c.queue, cl)
	lead := c.inflight < maxInflight
	if lead {
		c.inflight++
	}
	c.mu.Unlock()
	if lead {
		// The sender is not the caller, so a caller that gives up before
		// it is sent returns at once. It yields before taking the queue:
		// callers woken together by a finished call queue up first and go
		// together.
		go func() {
			runtime.Gosched()
			for c.sendNext() {
			}
		}()
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.mu.Lock()
		sent := cl.sent
		cl.abandoned = !sent
		c.mu.Unlock()
		if !sent {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		<-cl.done
	}
	if err := ctx.Err(); err != nil {
		if cl.err == nil {
			c.release(cl)
		}
		return nil, status.FromContextError(err).Err()
	}
	return cl.resp, cl.err
}

// release releases the allocation of a call whose caller gave up.
func (c *Coalescing) release(cl *call) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	// Best effort: what a failed release leaves is found by CNI GC.
	_, _ = c.IPAMServiceClient.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{
		Handle: cl.req.GetHandle(), ExpectedSequence: cl.resp.GetAllocation().GetSequence(),
	})
}

// sendNext sends the queue's next batch and reports whether calls are left
// waiting; when none are, its caller stops sending.
func (c *Coalescing) sendNext() bool {
	c.mu.Lock()
	var batch []*call
	size := 0
	for len(c.queue) > 0 && len(batch) < maxBatch {
		cl := c.queue[0]
		if !cl.abandoned && len(batch) > 0 && size+cl.size > maxBatchBytes {
			break // it starts the next batch
		}
		c.queue = c.queue[1:]
		if !cl.abandoned {
			cl.sent = true
			batch = append(batch, cl)
			size += cl.size
		}
	}
	c.mu.Unlock()

	c.send(batch)

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		c.inflight--
		return false
	}
	return true
}

// batchContext is the context a batch is sent with: it ends at the latest
// deadline of its calls, or never if one has none. Each request carries its
// own caller's deadline for the service.
func batchContext(calls []*call) (context.Context, context.CancelFunc) {
	var last time.Time
	for _, cl := range calls {
		d, ok := cl.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(context.Background(), last)
}

// withTimeout returns req carrying what is left of its caller's deadline.
func withTimeout(cl *call) *ipamv1alpha1.AllocateIPRequest {
	d, ok := cl.ctx.Deadline()
	if !ok {
		return cl.req
	}
	req := proto.CloneOf(cl.req)
	req.Timeout = durationpb.New(max(time.Until(d), time.Nanosecond))
	return req
}

// sendOne sends one call as AllocateIP, with its caller's deadline but
// not its cancellation: a cancelled caller waits for the answer.
func (c *Coalescing) sendOne(cl *call) {
	ctx := context.WithoutCancel(cl.ctx)
	cancel := context.CancelFunc(func() {})
	if d, ok := cl.ctx.Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
	}
	defer cancel()
	cl.resp, cl.err = c.IPAMServiceClient.AllocateIP(ctx, cl.req)
}

// send sends calls as one AllocateIPs call (a lone one as AllocateIP) and
// hands each its answer.
func (c *Coalescing) send(calls []*call) {
	defer func() {
		for _, cl := range calls {
			close(cl.done)
		}
	}()
	ctx, cancel := batchContext(calls)
	defer cancel()
	switch len(calls) {
	case 0:
		return
	case 1:
		c.sendOne(calls[0])
		return
	}
	reqs := make([]*ipamv1alpha1.AllocateIPRequest, len(calls))
	for i, cl := range calls {
		reqs[i] = withTimeout(cl)
	}
	resp, err := c.IPAMServiceClient.AllocateIPs(ctx, &ipamv1alpha1.AllocateIPsRequest{Requests: reqs})
	if status.Code(err) == codes.Unimplemented {
		until := c.now().Add(unbatchedFor)
		c.unbatchedUntil.Store(&until)
		var wg sync.WaitGroup
		for _, cl := range calls {
			wg.Go(func() { c.sendOne(cl) })
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
			code := codes.Code(r.Error.GetCode())
			if code == codes.OK {
				code = codes.Internal // an error without a code is still an error
			}
			// The reason says why, beyond the code (an exhausted pool).
			cl.err = errinfo.With(status.New(code, r.Error.GetMessage()), r.Error.GetReason()).Err()
		default:
			cl.err = status.Errorf(codes.Internal, "AllocateIPs result %d is empty", i)
		}
	}
}
