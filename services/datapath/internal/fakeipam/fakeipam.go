// Package fakeipam is an in-memory IPAM client for the datapath's tests:
// one pool, one node whose blocks are configured up front, node records
// with revisions (GetNode, UpdateNode), allocations by owner handle with
// sequence numbers, and a block watch the test drives.
// It answers with the status codes the IPAM service documents, and any
// method can be made to fail (say Unavailable for the next few calls).
// Methods the datapath does not call panic (the embedded nil interface).
package fakeipam

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// Config is the IPAM world the fake serves.
type Config struct {
	// Node is the node whose blocks Blocks are.
	Node string
	// Pool names the pool; "default" when empty.
	Pool string
	// PoolCIDRs are the pool's CIDRs, as ListPools reports them.
	PoolCIDRs []netip.Prefix
	// Blocks are Node's blocks, at most one per family. The first address
	// after the network address is the node's router IP; AllocateIP hands
	// out the others (not an IPv4 block's broadcast address).
	Blocks []netip.Prefix
	// GCMinAge is GarbageCollect's min_age for requests without one.
	GCMinAge time.Duration
}

// IPAM is the fake client. It is safe for concurrent use.
type IPAM struct {
	ipamv1alpha1.IPAMServiceClient

	cfg Config

	mu      sync.Mutex
	nodes   map[string]*ipamv1alpha1.Node
	allocs  map[handleKey]*ipamv1alpha1.Allocation
	used    map[netip.Addr]handleKey
	seq     uint64
	rev     uint64 // the last node revision handed out
	remote  map[string]*blockEvent
	streams map[*watchStream]bool
	fail    func(method string) error
	rules   []*rule
	calls   map[string]int
}

var _ ipamv1alpha1.IPAMServiceClient = (*IPAM)(nil)

type handleKey struct{ container, iface string }

func (k handleKey) String() string { return k.container + "/" + k.iface }

// blockEvent is another node's block and that node's addresses.
type blockEvent struct {
	block *ipamv1alpha1.Block
	addrs []string
}

type rule struct {
	method string
	left   int
	err    error
}

// New returns a fake serving cfg. Node is not registered until UpdateNode.
func New(cfg Config) *IPAM {
	if cfg.Pool == "" {
		cfg.Pool = "default"
	}
	return &IPAM{
		cfg: cfg, nodes: map[string]*ipamv1alpha1.Node{}, allocs: map[handleKey]*ipamv1alpha1.Allocation{},
		used: map[netip.Addr]handleKey{}, remote: map[string]*blockEvent{}, streams: map[*watchStream]bool{},
		calls: map[string]int{},
	}
}

// FailNext makes the next n calls of method (such as "AllocateIP") fail
// with err, e.g. status.Error(codes.Unavailable, ...).
func (f *IPAM) FailNext(method string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{method: method, left: n, err: err})
}

// SetFail installs a hook every call consults first with its method name;
// a non-nil error is returned and nothing changes. nil removes it.
func (f *IPAM) SetFail(fn func(method string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// Calls counts the calls of method, failed ones included.
func (f *IPAM) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// call records method and returns its injected error. Caller holds f.mu.
func (f *IPAM) call(method string) error {
	f.calls[method]++
	if f.fail != nil {
		if err := f.fail(method); err != nil {
			return err
		}
	}
	for i, r := range f.rules {
		if r.method == method {
			r.left--
			if r.left <= 0 {
				f.rules = slices.Delete(f.rules, i, i+1)
			}
			return r.err
		}
	}
	return nil
}
