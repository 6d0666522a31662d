// Package bpffake is an in-memory [bpfmaps.Datapath]: endpoint, device and
// remote-block entries, the node configuration, and which interfaces carry
// which programs. It validates input as the real maps do (same sentinel
// errors from bpf/datapath), can emulate a full map, and can fail any
// method's nth call, so the agent's rollbacks are testable without BPF.
package bpffake

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
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
	OpPutRemote        = "PutRemote"
	OpDeleteRemote     = "DeleteRemote"
	OpRemoteBlocks     = "RemoteBlocks"
	OpConfigure        = "Configure"
	OpAttachEndpoint   = "AttachEndpoint"
	OpAttachOverlay    = "AttachOverlay"
	OpAttachUnderlay   = "AttachUnderlay"
	OpIsEndpointDevice = "IsEndpointDevice"
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
	capacity  int
	links     func() map[string]int
	fail      func(op string) error
	rules     []*rule
	calls     map[string]int
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

// full reports whether adding key to m would exceed the capacity.
func full[K comparable, V any](f *Fake, m map[K]V, key K) bool {
	_, ok := m[key]
	return !ok && f.capacity > 0 && len(m) >= f.capacity
}

func checkIfindex(i int) error {
	if i <= 0 || i > 1<<31-1 {
		return fmt.Errorf("%w: %d", bpfdp.ErrInvalidIfindex, i)
	}
	return nil
}

func checkMAC(hw net.HardwareAddr, what string) error {
	if len(hw) != 6 {
		return fmt.Errorf("%w: %s %q", bpfdp.ErrInvalidMAC, what, hw.String())
	}
	return nil
}

// unicast4 checks an underlay address: IPv4 (or IPv4-mapped), unicast.
func unicast4(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("%w: zero address", bpfdp.ErrInvalidAddress)
	}
	a = a.Unmap()
	if !a.Is4() {
		return a, fmt.Errorf("%w: %s", bpfdp.ErrIPv6Unsupported, a)
	}
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return a, fmt.Errorf("%w: %s is not a unicast address", bpfdp.ErrInvalidAddress, a)
	}
	return a, nil
}

// podAddr checks a pod address as the real maps do and unmaps it.
func podAddr(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("%w: zero address", bpfdp.ErrInvalidAddress)
	}
	a = a.Unmap()
	if a.Is4() {
		return unicast4(a)
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return a, fmt.Errorf("%w: %s is not a global or unique local IPv6 unicast address", bpfdp.ErrInvalidAddress, a)
	}
	return a, nil
}

// blockPrefix checks a remote block and masks it.
func blockPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("%w: %s", bpfdp.ErrInvalidPrefix, p)
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return p, fmt.Errorf("%w: %s", bpfdp.ErrInvalidPrefix, p)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	if a := p.Addr(); a.Is6() && (a.IsLinkLocalUnicast() || a.IsMulticast()) {
		return p, fmt.Errorf("%w: %s is link-local or multicast", bpfdp.ErrInvalidPrefix, p)
	}
	return p, nil
}

func cloneEndpoint(ep bpfmaps.Endpoint) bpfmaps.Endpoint {
	ep.PodMAC, ep.HostMAC = slices.Clone(ep.PodMAC), slices.Clone(ep.HostMAC)
	return ep
}

// PutEndpoint writes a pod address's entry.
func (f *Fake) PutEndpoint(ip netip.Addr, ep bpfmaps.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpPutEndpoint); err != nil {
		return err
	}
	ip, err := podAddr(ip)
	if err != nil {
		return err
	}
	if err := checkIfindex(ep.Ifindex); err != nil {
		return err
	}
	if err := checkMAC(ep.PodMAC, "pod MAC"); err != nil {
		return err
	}
	if err := checkMAC(ep.HostMAC, "host MAC"); err != nil {
		return err
	}
	if full(f, f.endpoints, ip) {
		return fmt.Errorf("put endpoint %s: %w", ip, unix.E2BIG)
	}
	f.endpoints[ip] = cloneEndpoint(ep)
	return nil
}

// DeleteEndpoint removes a pod address's entry; a missing one is success.
func (f *Fake) DeleteEndpoint(ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteEndpoint); err != nil {
		return err
	}
	ip, err := podAddr(ip)
	if err != nil {
		return err
	}
	delete(f.endpoints, ip)
	return nil
}

// Endpoint returns a pod address's entry; an error wrapping
// bpfdp.ErrNotFound when it has none.
func (f *Fake) Endpoint(ip netip.Addr) (bpfmaps.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpEndpoint); err != nil {
		return bpfmaps.Endpoint{}, err
	}
	ip, err := podAddr(ip)
	if err != nil {
		return bpfmaps.Endpoint{}, err
	}
	ep, ok := f.endpoints[ip]
	if !ok {
		return bpfmaps.Endpoint{}, fmt.Errorf("endpoint %s: %w", ip, bpfdp.ErrNotFound)
	}
	return cloneEndpoint(ep), nil
}

// EndpointAddrs lists the addresses with entries, sorted.
func (f *Fake) EndpointAddrs() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpEndpointAddrs); err != nil {
		return nil, err
	}
	return slices.SortedFunc(maps.Keys(f.endpoints), netip.Addr.Compare), nil
}

// PutDevice records which pod a host-side veth belongs to.
func (f *Fake) PutDevice(ifindex int, pod uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpPutDevice); err != nil {
		return err
	}
	if err := checkIfindex(ifindex); err != nil {
		return err
	}
	if full(f, f.devices, ifindex) {
		return fmt.Errorf("put device %d: %w", ifindex, unix.E2BIG)
	}
	f.devices[ifindex] = pod
	return nil
}

// DeleteDevice forgets a host-side veth; a missing one is success.
func (f *Fake) DeleteDevice(ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteDevice); err != nil {
		return err
	}
	if err := checkIfindex(ifindex); err != nil {
		return err
	}
	delete(f.devices, ifindex)
	return nil
}

// PutRemote routes another node's block to its IPv4 underlay address.
func (f *Fake) PutRemote(block netip.Prefix, nodeIP netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpPutRemote); err != nil {
		return err
	}
	block, err := blockPrefix(block)
	if err != nil {
		return err
	}
	if nodeIP, err = unicast4(nodeIP); err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	if full(f, f.remotes, block) {
		return fmt.Errorf("put remote %s: %w", block, unix.E2BIG)
	}
	f.remotes[block] = nodeIP
	return nil
}

// DeleteRemote forgets a remote block; a missing one is success.
func (f *Fake) DeleteRemote(block netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteRemote); err != nil {
		return err
	}
	block, err := blockPrefix(block)
	if err != nil {
		return err
	}
	delete(f.remotes, block)
	return nil
}

// RemoteBlocks lists the remote blocks and their nodes.
func (f *Fake) RemoteBlocks() (map[netip.Prefix]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpRemoteBlocks); err != nil {
		return nil, err
	}
	return maps.Clone(f.remotes), nil
}

// Configure writes the node configuration: a valid mode, the tunnel
// device in tunnel mode, an IPv4 unicast node address if any.
func (f *Fake) Configure(c bpfmaps.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpConfigure); err != nil {
		return err
	}
	switch c.Mode {
	case bpfmaps.ModeNative:
	case bpfmaps.ModeTunnel:
		if err := checkIfindex(c.TunnelIfindex); err != nil {
			return fmt.Errorf("tunnel mode needs the tunnel device: %w", err)
		}
	default:
		return fmt.Errorf("%w: %d", bpfdp.ErrInvalidMode, c.Mode)
	}
	if c.NodeIP.IsValid() {
		ip, err := unicast4(c.NodeIP)
		if err != nil {
			return fmt.Errorf("node address: %w", err)
		}
		c.NodeIP = ip
	}
	f.config = &c
	return nil
}

// AttachEndpoint puts the pod program on ifindex.
func (f *Fake) AttachEndpoint(ifindex int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpAttachEndpoint); err != nil {
		return err
	}
	if ifindex <= 0 {
		return fmt.Errorf("attach to ifindex %d: not an interface", ifindex)
	}
	if !f.exists(ifindex) {
		return fmt.Errorf("attach to ifindex %d: %w", ifindex, unix.ENODEV)
	}
	f.progs[ifindex] = true
	return nil
}

// IsEndpointDevice reports whether ifindex carries the pod program.
func (f *Fake) IsEndpointDevice(ifindex int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[OpIsEndpointDevice]++
	return f.progs[ifindex] && f.exists(ifindex)
}

// EndpointProgramProblems describes what is missing on hostName: the
// device (by the SetInterfaces lookup) or its program.
func (f *Fake) EndpointProgramProblems(hostName string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx, ok := 0, false
	if f.links != nil {
		idx, ok = f.links()[hostName]
	}
	switch {
	case !ok:
		return []string{fmt.Sprintf("no device %s", hostName)}
	case !f.progs[idx]:
		return []string{fmt.Sprintf("no program attached to %s", hostName)}
	}
	return nil
}

// AttachOverlay attaches the overlay programs to the tunnel device.
func (f *Fake) AttachOverlay(ifindex int) error {
	return f.attachNode(OpAttachOverlay, ifindex, &f.overlay)
}

// AttachUnderlay attaches the delivery program to the underlay device.
func (f *Fake) AttachUnderlay(ifindex int) error {
	return f.attachNode(OpAttachUnderlay, ifindex, &f.underlay)
}

func (f *Fake) attachNode(op string, ifindex int, to *int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(op); err != nil {
		return err
	}
	if err := checkIfindex(ifindex); err != nil {
		return fmt.Errorf("attach to ifindex %d: %w", ifindex, err)
	}
	*to = ifindex
	return nil
}

// Endpoints returns a copy of the endpoint entries.
func (f *Fake) Endpoints() map[netip.Addr]bpfmaps.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[netip.Addr]bpfmaps.Endpoint, len(f.endpoints))
	for ip, ep := range f.endpoints {
		out[ip] = cloneEndpoint(ep)
	}
	return out
}

// Devices returns a copy of the device entries: ifindex to pod key.
func (f *Fake) Devices() map[int]uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.devices)
}

// Config returns the configuration written last; false before any.
func (f *Fake) Config() (bpfmaps.Config, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.config == nil {
		return bpfmaps.Config{}, false
	}
	return *f.config, true
}

// EndpointPrograms lists the ifindexes carrying the pod program, sorted.
func (f *Fake) EndpointPrograms() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.progs))
}

// NodePrograms returns the ifindexes the overlay and underlay programs
// are attached to; 0 for none.
func (f *Fake) NodePrograms() (overlay, underlay int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.overlay, f.underlay
}

// DetachEndpoint removes the pod program from ifindex behind the agent's
// back, or as deleting the veth does.
func (f *Fake) DetachEndpoint(ifindex int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.progs, ifindex)
}
