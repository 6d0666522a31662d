package datapath

import "fmt"

// The port gates of the service lookups (datapath.h, AXON_LB_PORT_*):
// axon_lb_ports says which destination ports have frontends (of which
// scopes), axon_ct_ports which source ports REPLY entries of the tracker
// may have. The programs skip the lookups a packet's ports are not gated
// for. A set gate only costs a lookup: none is ever cleared.
const (
	lbPortFrontend = 1 // AXON_LB_PORT_FRONTEND
	lbPortInternal = 2 // AXON_LB_PORT_INTERNAL
	numPorts       = 1 << 16
)

// markFrontendPorts opens the gates of entries' frontends; the caller
// holds lbMu and writes the entries afterwards. The gates written are kept
// in o.lbPorts, read whole on the first call.
func (o *Objects) markFrontendPorts(entries []ServiceEntry) error {
	if o.lbPorts == nil {
		ports := make([]uint32, numPorts)
		if err := readAll(o.maps.AxonLbPorts, func(k, v uint32) { ports[k] = v }); err != nil {
			return fmt.Errorf("read frontend ports: %w", err)
		}
		o.lbPorts = ports
	}
	changed := map[uint32]bool{}
	for _, e := range entries {
		want := uint32(lbPortFrontend)
		if e.Frontend.Scope == ScopeInternal {
			want |= lbPortInternal
		}
		if p := uint32(e.Frontend.Port); o.lbPorts[p]&want != want {
			o.lbPorts[p] |= want
			changed[p] = true
		}
	}
	if len(changed) == 0 {
		return nil
	}
	keys, vals := make([]uint32, 0, len(changed)), make([]uint32, 0, len(changed))
	for p := range changed {
		keys, vals = append(keys, p), append(vals, o.lbPorts[p])
	}
	if _, err := o.maps.AxonLbPorts.BatchUpdate(keys, vals, nil); err != nil {
		o.lbPorts = nil // read again: some may be written
		return fmt.Errorf("open frontend port gates: %w", err)
	}
	return nil
}

// fillFrontendPorts opens the gates of every frontend in place: once, when
// axon_lb_ports is created beside existing frontends (an upgrade).
func (o *Objects) fillFrontendPorts() error {
	var entries []ServiceEntry
	if err := readAll(o.maps.AxonLbServices, func(k podAxonLbKey, _ podAxonLbService) {
		entries = append(entries, ServiceEntry{Frontend: frontendFrom(k)})
	}); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	o.lbMu.Lock()
	defer o.lbMu.Unlock()
	return o.markFrontendPorts(entries)
}

// fillReplyPorts opens the gates of every REPLY entry's source port in the
// tracker: when axon_ct_ports is created beside an existing tracker, and
// again once older programs, which do not open them, no longer run.
func (o *Objects) fillReplyPorts() error {
	ports := map[uint32]bool{}
	if err := readAll(o.maps.AxonCt, func(k podAxonCtKey, _ podAxonCtEntry) {
		if k.Dir == ctReply {
			ports[uint32(portFrom16(k.Sport))] = true
		}
	}); err != nil {
		return fmt.Errorf("read connection tracker: %w", err)
	}
	if len(ports) == 0 {
		return nil
	}
	keys, vals := make([]uint32, 0, len(ports)), make([]uint32, 0, len(ports))
	for p := range ports {
		keys, vals = append(keys, p), append(vals, 1)
	}
	if _, err := o.maps.AxonCtPorts.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("open reply port gates: %w", err)
	}
	return nil
}
