package bpffake

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

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
