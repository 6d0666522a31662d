package lb

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// HostPort maps a port of the node to a pod's address and port (Kubernetes
// hostPort): a frontend entry of type HOST_PORT with the pod as its only,
// local, backend. The API's services never list or replace such entries.
type HostPort struct {
	// Addr is the node address, or the unspecified address of the pod's
	// family for every node address.
	Addr netip.Addr
	// Port is the node's port.
	Port uint16
	// Proto is the IANA protocol number (6, 17).
	Proto uint8
	// Backend is the pod's address and port.
	Backend netip.AddrPort
}

func (h HostPort) frontend() frontend { return frontend{addr: h.Addr, port: h.Port, proto: h.Proto} }

// hostPort is a HOST_PORT entry as the Manager holds it.
type hostPort struct {
	id      uint32
	backend netip.AddrPort
}

// PutHostPorts writes host port entries, replacing any of the same
// frontend (the last pod to map a host port takes it). On error those
// written stay; the caller removes them with DeleteHostPorts.
func (m *Manager) PutHostPorts(ctx context.Context, hps []HostPort) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	for _, h := range hps {
		fe := h.frontend()
		if m.services[fe] != nil {
			return fmt.Errorf("%w: host port %s is a service's frontend", ErrInvalid, fe)
		}
		old, ok := m.hostPorts[fe]
		id := old.id
		if !ok {
			id = m.ids.alloc()
		}
		e := bpfmaps.LBEntry{
			Key: bpfmaps.LBKey{Addr: h.Addr, Port: h.Port, Proto: h.Proto},
			Service: bpfmaps.LBService{ID: id, Type: bpfmaps.LBTypeHostPort,
				Active: []bpfmaps.LBBackend{{Addr: h.Backend.Addr(), Port: h.Backend.Port(), Local: true}}},
		}
		if err := m.maps.PutServices([]bpfmaps.LBEntry{e}); err != nil {
			if !ok {
				m.ids.release(id)
			}
			return fmt.Errorf("host port %s: %w", fe, err)
		}
		m.hostPorts[fe] = hostPort{id: id, backend: h.Backend}
	}
	m.log.DebugContext(ctx, "host ports written", "count", len(hps))
	return nil
}

// DeleteHostPorts removes host port entries; missing ones, and those
// another pod has taken since (another backend), are skipped.
func (m *Manager) DeleteHostPorts(ctx context.Context, hps []HostPort) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(); err != nil {
		return err
	}
	var keys []bpfmaps.LBKey
	for _, h := range hps {
		// A service's upsert may have replaced the entry since: it stays.
		if hp, ok := m.hostPorts[h.frontend()]; ok && hp.backend == h.Backend && m.services[h.frontend()] == nil {
			keys = append(keys, bpfmaps.LBKey{Addr: h.Addr, Port: h.Port, Proto: h.Proto})
		}
	}
	if err := m.maps.DeleteServices(keys); err != nil {
		return fmt.Errorf("delete host ports: %w", err)
	}
	for _, h := range hps {
		// (A service that replaced the entry has an ID of its own.)
		if hp, ok := m.hostPorts[h.frontend()]; ok && hp.backend == h.Backend {
			m.ids.release(hp.id)
			delete(m.hostPorts, h.frontend())
		}
	}
	m.log.DebugContext(ctx, "host ports deleted", "count", len(keys))
	return nil
}
