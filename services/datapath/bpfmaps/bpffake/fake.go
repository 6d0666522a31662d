// Package bpffake is an in-memory [bpfmaps.Datapath]: endpoint, device and
// remote-block entries, the node configuration, which interfaces carry
// which programs, and the service load balancer's entries and flows
// ([bpfmaps.LBMaps]). It validates input as the real maps do (same sentinel
// errors from bpf/datapath), can emulate a full map, and can fail any
// method's nth call, so the agent's rollbacks are testable without BPF.
package bpffake

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// Method names for FailOn, SetFail and Calls (IsEndpointDevice, which
// returns no error, only for Calls).
const (
	OpPutEndpoint      = "PutEndpoint"
	OpDeleteEndpoint   = "DeleteEndpoint"
	OpEndpoint         = "Endpoint"
	OpEndpointAddrs    = "EndpointAddrs"
	OpPutDevice        = "PutDevice"
	OpDeleteDevice     = "DeleteDevice"
	OpDevice           = "Device"
	OpPutRemote        = "PutRemote"
	OpDeleteRemote     = "DeleteRemote"
	OpRemoteBlocks     = "RemoteBlocks"
	OpConfigure        = "Configure"
	OpAttachEndpoint   = "AttachEndpoint"
	OpAttachOverlay    = "AttachOverlay"
	OpAttachUnderlay   = "AttachUnderlay"
	OpIsEndpointDevice = "IsEndpointDevice"
	OpAttachSocketLB   = "AttachSocketLB"
)

// Fake is an in-memory datapath. The zero value is not usable; use [New].
// It is safe for concurrent use.
type Fake struct {
	mu        sync.Mutex
	endpoints map[netip.Addr]bpfmaps.Endpoint
	devices   map[int]uint32
	remotes   map[netip.Prefix]netip.Addr
	config    *bpfmaps.Config
	progs     map[int]bool
	overlay   int
	underlay  int
	socketLB  bool
	capacity  int
	links     func() map[string]int
	fail      func(op string) error
	rules     []*rule
	calls     map[string]int
	lb        *lbState
}

type rule struct {
	op   string
	left int
	err  error
}

var _ bpfmaps.Datapath = (*Fake)(nil)

// New returns an empty datapath whose maps have no size limit.
func New() *Fake {
	return &Fake{
		endpoints: map[netip.Addr]bpfmaps.Endpoint{}, devices: map[int]uint32{},
		remotes: map[netip.Prefix]netip.Addr{}, progs: map[int]bool{}, calls: map[string]int{},
	}
}

// SetCapacity limits each map (endpoints, devices, remote blocks) to n
// entries: adding one more fails with E2BIG as a full BPF hash map does;
// replacing an entry still works. 0 removes the limit.
func (f *Fake) SetCapacity(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.capacity = n
}

// SetInterfaces tells the fake which interfaces the node has, as a
// function returning their ifindexes by name (nlfake's Indexes of its node
// namespace fits). With it, as with the real programs, AttachEndpoint fails
// with ENODEV and IsEndpointDevice is false for an ifindex no interface
// has, and EndpointProgramProblems finds the device by name. Without it
// every ifindex exists and every name is a missing device. links runs with
// the fake's lock held, so it must not call the fake.
func (f *Fake) SetInterfaces(links func() map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links = links
}

// exists reports whether an interface has ifindex. Caller holds f.mu.
func (f *Fake) exists(ifindex int) bool {
	if f.links == nil {
		return true
	}
	for _, i := range f.links() {
		if i == ifindex {
			return true
		}
	}
	return false
}

// SetFail installs a hook every method consults first with its name (the
// Op constants); a non-nil error is returned and nothing changes. nil
// removes it. IsEndpointDevice and EndpointProgramProblems, which return
// no error, do not consult it.
func (f *Fake) SetFail(fn func(op string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// FailOn makes the nth call (1 for the next) of op from now on fail with
// err, once, changing nothing.
func (f *Fake) FailOn(op string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{op: op, left: n, err: err})
}

// Calls counts the calls of op, failed ones included.
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// call records op and returns its injected error. Caller holds f.mu.
func (f *Fake) call(op string) error {
	f.calls[op]++
	if f.fail != nil {
		if err := f.fail(op); err != nil {
			return err
		}
	}
	for i, r := range f.rules {
		if r.op == op {
			r.left--
			if r.left <= 0 {
				f.rules = slices.Delete(f.rules, i, i+1)
				return r.err
			}
		}
	}
	return nil
}
