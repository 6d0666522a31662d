package fakeipam

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// watchStream is one WatchBlocks stream: an unbounded queue of events the
// fake fills and Recv drains, ended by the caller's context or by the fake.
type watchStream struct {
	// The stream methods the datapath does not call panic.
	grpc.ClientStream

	ctx    context.Context
	mu     sync.Mutex
	queue  []*ipamv1alpha1.WatchBlocksResponse
	err    error
	notify chan struct{}
}

func (s *watchStream) push(ev *ipamv1alpha1.WatchBlocksResponse) {
	s.mu.Lock()
	s.queue = append(s.queue, proto.CloneOf(ev))
	s.mu.Unlock()
	s.wake()
}

func (s *watchStream) end(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.wake()
}

func (s *watchStream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Recv returns the next event; after the queue, the error the stream was
// ended with, or the context's as a status.
func (s *watchStream) Recv() (*ipamv1alpha1.WatchBlocksResponse, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return ev, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-s.ctx.Done():
			return nil, status.FromContextError(s.ctx.Err()).Err()
		case <-s.notify:
		}
	}
}

// Context returns the stream's context.
func (s *watchStream) Context() context.Context { return s.ctx }

func event(t commonv1alpha1.EventType, b *blockEvent) *ipamv1alpha1.WatchBlocksResponse {
	return &ipamv1alpha1.WatchBlocksResponse{Type: t, Block: b.block, NodeAddresses: b.addrs}
}

// WatchBlocks opens a stream that, as the service does, first sends every
// block as ADDED and then SYNCED, then what the test sends with
// SetRemoteBlock, DeleteRemoteBlock and Push. Request filters are ignored.
func (f *IPAM) WatchBlocks(ctx context.Context, _ *ipamv1alpha1.WatchBlocksRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[ipamv1alpha1.WatchBlocksResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("WatchBlocks"); err != nil {
		return nil, err
	}
	s := &watchStream{ctx: ctx, notify: make(chan struct{}, 1)}
	for _, b := range f.allBlocks() {
		s.push(event(commonv1alpha1.EventType_EVENT_TYPE_ADDED, b))
	}
	s.push(&ipamv1alpha1.WatchBlocksResponse{Type: commonv1alpha1.EventType_EVENT_TYPE_SYNCED})
	f.streams[s] = true
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.streams, s)
	})
	return s, nil
}

// broadcast sends ev to every open stream. Caller holds f.mu.
func (f *IPAM) broadcast(ev *ipamv1alpha1.WatchBlocksResponse) {
	for s := range f.streams {
		s.push(ev)
	}
}

// SetRemoteBlock adds or changes another node's block (its node and pool
// taken from b) with that node's addresses, and sends it to open streams
// as ADDED or MODIFIED.
func (f *IPAM) SetRemoteBlock(b *ipamv1alpha1.Block, nodeAddrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := commonv1alpha1.EventType_EVENT_TYPE_ADDED
	if _, ok := f.remote[b.GetCidr()]; ok {
		t = commonv1alpha1.EventType_EVENT_TYPE_MODIFIED
	}
	be := &blockEvent{block: proto.CloneOf(b), addrs: append([]string(nil), nodeAddrs...)}
	f.remote[b.GetCidr()] = be
	f.broadcast(event(t, be))
}

// DeleteRemoteBlock removes another node's block and sends DELETED to
// open streams; an unknown one is ignored.
func (f *IPAM) DeleteRemoteBlock(cidr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	be, ok := f.remote[cidr]
	if !ok {
		return
	}
	delete(f.remote, cidr)
	f.broadcast(event(commonv1alpha1.EventType_EVENT_TYPE_DELETED, be))
}

// Push sends a raw event to every open stream, such as a SYNCED after a
// simulated re-list; it returns how many streams got it.
func (f *IPAM) Push(ev *ipamv1alpha1.WatchBlocksResponse) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broadcast(ev)
	return len(f.streams)
}

// EndWatches ends every open stream with err once its queued events are
// read, as a restarting IPAM service does (the datapath reconnects).
func (f *IPAM) EndWatches(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.streams {
		s.end(err)
		delete(f.streams, s)
	}
}

// Watchers counts the open streams.
func (f *IPAM) Watchers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams)
}
