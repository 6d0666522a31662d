package lb

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/internal/periodic"
)

// leftBackends returns, per entry ID, the backends a plan takes away from
// UDP frontends: their flows must not stay pinned to them (a connected UDP
// socket in a pod would keep sending to a backend that is gone, see
// cilium/cilium#27300). TCP and SCTP flows are left to end on their own,
// as the contract promises. Caller holds m.mu, before the plan is taken.
func (m *Manager) leftBackends(p plan) map[uint32]map[netip.AddrPort]bool {
	out := map[uint32]map[netip.AddrPort]bool{}
	note := func(old *record, keep map[netip.AddrPort]bool) {
		for _, e := range old.entries {
			if e.Key.Proto != unix.IPPROTO_UDP {
				continue
			}
			for _, b := range slices.Concat(e.Service.Active, e.Service.Terminating) {
				ap := netip.AddrPortFrom(b.Addr, b.Port)
				if keep[ap] {
					continue
				}
				if out[e.Service.ID] == nil {
					out[e.Service.ID] = map[netip.AddrPort]bool{}
				}
				out[e.Service.ID][ap] = true
			}
		}
	}
	for _, fe := range p.changed {
		if old := m.services[fe]; old != nil {
			keep := map[netip.AddrPort]bool{}
			for _, b := range p.next[fe].svc.GetBackends() {
				keep[backendAddr(b)] = true
			}
			note(old, keep)
		}
	}
	for _, old := range p.removed {
		note(old, nil)
	}
	return out
}

// deleteFlows unpins the UDP flows of the given entries from the given
// backends: their next datagram picks a backend anew, while answers the
// old backend already sent still come back from the frontend (a request
// in flight when its backend is removed is answered, not lost). A failure
// is logged: the entries are written, and such a flow ends when its socket
// goes quiet (ExpireFlows). The node's own UDP sockets the socket
// programs connected to those backends are destroyed; their owners
// connect again.
func (m *Manager) deleteFlows(ctx context.Context, left map[uint32]map[netip.AddrPort]bool) {
	if len(left) == 0 {
		return
	}
	match := func(f bpfmaps.Flow) bool {
		return f.Proto == unix.IPPROTO_UDP && left[f.ServiceID][f.Backend]
	}
	n, err := m.maps.UnpinFlows(match)
	if err != nil {
		m.metrics.errors.WithLabelValues(reasonFlowDelete).Inc()
		m.log.WarnContext(ctx, "UDP flows to removed backends not cleared; they end when idle", "err", err)
	} else if n > 0 {
		m.log.DebugContext(ctx, "UDP flows to removed backends cleared", "flows", n)
	}
	n, err = m.maps.DestroySockets(match)
	if err != nil {
		m.metrics.errors.WithLabelValues(reasonSocketDestroy).Inc()
		m.log.WarnContext(ctx, "node's UDP sockets connected to removed backends not all destroyed", "err", err)
	}
	if n > 0 {
		m.log.DebugContext(ctx, "node's UDP sockets connected to removed backends destroyed", "sockets", n)
	}
}

// RunFlowGC removes the connection tracker's idle flows every interval
// until ctx ends; without maps it returns at once.
func (m *Manager) RunFlowGC(ctx context.Context, interval time.Duration) {
	if m.maps == nil {
		return
	}
	periodic.Every(ctx, interval, func() {
		n, err := m.maps.ExpireFlows()
		if err != nil {
			m.metrics.errors.WithLabelValues(reasonFlowGC).Inc()
			m.log.WarnContext(ctx, "expiring idle flows failed; retrying", "err", err, "in", interval)
			return
		}
		if n > 0 {
			m.log.DebugContext(ctx, "idle flows expired", "flows", n)
		}
	})
}
