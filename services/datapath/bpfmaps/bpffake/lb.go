package bpffake

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"golang.org/x/sys/unix"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// Method names of the load balancer's side for FailOn, SetFail and Calls.
const (
	OpPutServices    = "PutServices"
	OpDeleteServices = "DeleteServices"
	OpServices       = "Services"
	OpDeleteFlows    = "DeleteFlows"
	OpUnpinFlows     = "UnpinFlows"
	OpExpireFlows    = "ExpireFlows"
	OpDestroySockets = "DestroySockets"
	OpUsage          = "Usage"
)

// Map names the fake reports in Usage: lb.ServiceMap's and the
// connection tracker's.
const (
	ServiceMap = "axon_lb_services"
	FlowMap    = "axon_ct"
)

var _ bpfmaps.LBMaps = (*Fake)(nil)

// lbState is the fake's load balancer: frontend entries and the
// connection tracker's translated flows.
type lbState struct {
	services map[bpfmaps.LBKey]bpfmaps.LBService
	flows    []bpfmaps.Flow
	// sockets are the node's sockets the socket programs translated.
	sockets  []bpfmaps.Flow
	capacity int // of services; 0 for no limit
	// partial makes the next PutServices write putAfter entries, then fail
	// with putErr.
	partial  bool
	putAfter int
	putErr   error
	expire   func(bpfmaps.Flow) bool
}

// lbs returns the load balancer's state, creating it. Caller holds f.mu.
func (f *Fake) lbs() *lbState {
	if f.lb == nil {
		f.lb = &lbState{services: map[bpfmaps.LBKey]bpfmaps.LBService{}}
	}
	return f.lb
}

// SetServiceCapacity limits the service map to n frontend entries: adding
// one more fails with E2BIG as a full BPF hash map does; replacing one
// still works. 0 removes the limit. Usage reports n as the capacity.
func (f *Fake) SetServiceCapacity(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lbs().capacity = n
}

// FailPutServicesAfter makes the next PutServices call write its first n
// entries, then fail with err, as a real map write failing mid-batch does.
func (f *Fake) FailPutServicesAfter(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.lbs()
	s.partial, s.putAfter, s.putErr = true, n, err
}

// AddFlow seeds the connection tracker with a translated flow.
func (f *Fake) AddFlow(fl bpfmaps.Flow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lbs().flows = append(f.lbs().flows, fl)
}

// AddSocket records a node's socket the socket programs translated.
func (f *Fake) AddSocket(s bpfmaps.Flow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lbs().sockets = append(f.lbs().sockets, s)
}

// Sockets returns the node's translated sockets not destroyed.
func (f *Fake) Sockets() []bpfmaps.Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lbs().sockets)
}

// Flows returns the translated flows in the connection tracker.
func (f *Fake) Flows() []bpfmaps.Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lbs().flows)
}

// SetExpired tells ExpireFlows which flows are idle past their timeout;
// nil (the default) expires none.
func (f *Fake) SetExpired(idle func(bpfmaps.Flow) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lbs().expire = idle
}

// PutServices writes frontend entries in order; see bpfmaps.LBMaps.
func (f *Fake) PutServices(entries []bpfmaps.LBEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpPutServices); err != nil {
		return err
	}
	s := f.lbs()
	partial, after, perr := s.partial, s.putAfter, s.putErr
	s.partial = false
	for i, e := range entries {
		if partial && i == after {
			return perr
		}
		if err := checkLBEntry(e); err != nil {
			return err
		}
		if _, ok := s.services[e.Key]; !ok && s.capacity > 0 && len(s.services) >= s.capacity {
			return fmt.Errorf("put service %s:%d/%d: %w", e.Key.Addr, e.Key.Port, e.Key.Proto, unix.E2BIG)
		}
		s.services[e.Key] = cloneLBService(e.Service)
	}
	return nil
}

// DeleteServices removes frontend entries; missing ones are skipped.
func (f *Fake) DeleteServices(keys []bpfmaps.LBKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteServices); err != nil {
		return err
	}
	for _, k := range keys {
		delete(f.lbs().services, k)
	}
	return nil
}

// Services reads every frontend entry back, ordered by key.
func (f *Fake) Services() ([]bpfmaps.LBEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpServices); err != nil {
		return nil, err
	}
	return f.lbEntries(), nil
}

// LBEntries returns a copy of the frontend entries, ordered by key.
func (f *Fake) LBEntries() []bpfmaps.LBEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lbEntries()
}

// lbEntries copies the entries out. Caller holds f.mu.
func (f *Fake) lbEntries() []bpfmaps.LBEntry {
	keys := slices.SortedFunc(maps.Keys(f.lbs().services), compareLBKey)
	out := make([]bpfmaps.LBEntry, 0, len(keys))
	for _, k := range keys {
		out = append(out, bpfmaps.LBEntry{Key: k, Service: cloneLBService(f.lbs().services[k])})
	}
	return out
}

// DeleteFlows removes the flows match selects.
func (f *Fake) DeleteFlows(match func(bpfmaps.Flow) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDeleteFlows); err != nil {
		return 0, err
	}
	s := f.lbs()
	n := len(s.flows)
	s.flows = slices.DeleteFunc(s.flows, match)
	return n - len(s.flows), nil
}

// DestroySockets destroys the node's translated UDP sockets match selects.
func (f *Fake) DestroySockets(match func(bpfmaps.Flow) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpDestroySockets); err != nil {
		return 0, err
	}
	s := f.lbs()
	n := len(s.sockets)
	s.sockets = slices.DeleteFunc(s.sockets, func(fl bpfmaps.Flow) bool {
		return fl.Proto == unix.IPPROTO_UDP && match(fl)
	})
	return n - len(s.sockets), nil
}

// UnpinFlows removes the flows match selects (the fake keeps no
// directions: an unpinned flow is gone).
func (f *Fake) UnpinFlows(match func(bpfmaps.Flow) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpUnpinFlows); err != nil {
		return 0, err
	}
	s := f.lbs()
	n := len(s.flows)
	s.flows = slices.DeleteFunc(s.flows, match)
	return n - len(s.flows), nil
}

// ExpireFlows removes the flows SetExpired's function calls idle.
func (f *Fake) ExpireFlows() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpExpireFlows); err != nil {
		return 0, err
	}
	s := f.lbs()
	if s.expire == nil {
		return 0, nil
	}
	n := len(s.flows)
	s.flows = slices.DeleteFunc(s.flows, s.expire)
	return n - len(s.flows), nil
}

// Usage reports the service map (capacity 0 when unlimited) and the
// connection tracker (its flows, capacity 0).
func (f *Fake) Usage() ([]bpfmaps.MapUsage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(OpUsage); err != nil {
		return nil, err
	}
	s := f.lbs()
	return []bpfmaps.MapUsage{
		{Name: ServiceMap, Entries: len(s.services), Capacity: s.capacity},
		{Name: FlowMap, Entries: len(s.flows)},
	}, nil
}

// checkLBEntry validates an entry as the real maps would.
func checkLBEntry(e bpfmaps.LBEntry) error {
	k, svc := e.Key, e.Service
	if !k.Addr.IsValid() || k.Addr.Is4In6() || k.Addr.Zone() != "" {
		return fmt.Errorf("%w: frontend %s", bpfdp.ErrInvalidAddress, k.Addr)
	}
	switch {
	case k.Proto != unix.IPPROTO_TCP && k.Proto != unix.IPPROTO_UDP && k.Proto != unix.IPPROTO_SCTP:
		return fmt.Errorf("service %s: protocol %d", k.Addr, k.Proto)
	case k.Scope != bpfmaps.LBScopeExternal && k.Scope != bpfmaps.LBScopeInternal:
		return fmt.Errorf("service %s: scope %d", k.Addr, k.Scope)
	case svc.ID == 0:
		return fmt.Errorf("service %s: ID 0", k.Addr)
	case svc.Type < bpfmaps.LBTypeClusterIP || svc.Type > bpfmaps.LBTypeHostPort:
		return fmt.Errorf("service %s: type %d", k.Addr, svc.Type)
	case len(svc.Meta) > bpfmaps.MaxLBMeta:
		return fmt.Errorf("service %s: meta of %d bytes, at most %d", k.Addr, len(svc.Meta), bpfmaps.MaxLBMeta)
	case len(svc.SourceRanges) > bpfmaps.MaxLBSourceRanges:
		return fmt.Errorf("service %s: %d source ranges, at most %d", k.Addr, len(svc.SourceRanges), bpfmaps.MaxLBSourceRanges)
	}
	if len(svc.Maglev) > 0 && len(svc.Maglev) != bpfmaps.MaglevTableSize {
		return fmt.Errorf("service %s: a Maglev table of %d entries, want %d", k.Addr, len(svc.Maglev), bpfmaps.MaglevTableSize)
	}
	for _, slot := range svc.Maglev {
		if int(slot) >= len(svc.Active) {
			return fmt.Errorf("service %s: Maglev table entry %d is not one of %d active backends", k.Addr, slot, len(svc.Active))
		}
	}
	for _, p := range svc.SourceRanges {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Is4() != k.Addr.Is4() {
			return fmt.Errorf("%w: source range %s of frontend %s", bpfdp.ErrInvalidPrefix, p, k.Addr)
		}
	}
	for _, b := range slices.Concat(svc.Active, svc.Terminating) {
		if !b.Addr.IsValid() || b.Addr.Is4() != k.Addr.Is4() || b.Addr.Is4In6() || b.Port == 0 {
			return fmt.Errorf("%w: backend %s:%d of frontend %s", bpfdp.ErrInvalidAddress, b.Addr, b.Port, k.Addr)
		}
	}
	return nil
}

func compareLBKey(a, b bpfmaps.LBKey) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
}

func cloneLBService(s bpfmaps.LBService) bpfmaps.LBService {
	s.Active, s.Terminating, s.Meta = slices.Clone(s.Active), slices.Clone(s.Terminating), slices.Clone(s.Meta)
	s.SourceRanges, s.Maglev = slices.Clone(s.SourceRanges), slices.Clone(s.Maglev)
	return s
}
