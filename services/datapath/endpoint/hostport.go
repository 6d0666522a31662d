package endpoint

import (
	"context"
	"fmt"
	"net/netip"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/lb"
)

// HostPorts programs the host ports of endpoints (lb.Manager).
type HostPorts interface {
	PutHostPorts(ctx context.Context, hps []lb.HostPort) error
	DeleteHostPorts(ctx context.Context, hps []lb.HostPort) error
}

// maxPortMappings bounds CreateEndpointRequest.port_mappings.
const maxPortMappings = 64

// validPortMappings checks a request's port mappings.
func validPortMappings(pms []*datapathv1alpha1.PortMapping) error {
	if len(pms) > maxPortMappings {
		return fmt.Errorf("%w: %d port mappings, at most %d", ErrInvalid, len(pms), maxPortMappings)
	}
	for i, pm := range pms {
		if _, err := hostIP(pm); err != nil {
			return fmt.Errorf("%w: port_mappings[%d]: %w", ErrInvalid, i, err)
		}
	}
	return nil
}

// hostIP checks a mapping and returns its node address (invalid: every
// node address).
func hostIP(pm *datapathv1alpha1.PortMapping) (netip.Addr, error) {
	if pm.GetHostPort() < 1 || pm.GetHostPort() > 65535 || pm.GetContainerPort() < 1 || pm.GetContainerPort() > 65535 {
		return netip.Addr{}, fmt.Errorf("ports %d:%d not in 1..65535", pm.GetHostPort(), pm.GetContainerPort())
	}
	switch pm.GetProtocol() {
	case commonv1alpha1.Protocol_PROTOCOL_TCP, commonv1alpha1.Protocol_PROTOCOL_UDP:
	default:
		return netip.Addr{}, fmt.Errorf("protocol %v, want TCP or UDP", pm.GetProtocol())
	}
	if pm.GetHostIp() == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(pm.GetHostIp())
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("host_ip %q is not an IP address", pm.GetHostIp())
	}
	if a = a.Unmap(); a.IsUnspecified() {
		return netip.Addr{}, nil
	}
	return a, nil
}

// hostPortsOf returns the entries of an endpoint's port mappings: each to
// the pod's address of the host address's family, or, without a host
// address, one per pod address on every node address of its family.
func hostPortsOf(ep *datapathv1alpha1.Endpoint) []lb.HostPort {
	var out []lb.HostPort
	for _, pm := range ep.GetPortMappings() {
		host, err := hostIP(pm)
		if err != nil {
			continue // validated on create
		}
		for _, p := range Addrs(ep) {
			pod := p.Addr()
			addr := host
			if !addr.IsValid() {
				addr = netip.IPv4Unspecified()
				if pod.Is6() {
					addr = netip.IPv6Unspecified()
				}
			} else if addr.Is4() != pod.Is4() {
				continue
			}
			out = append(out, lb.HostPort{Addr: addr, Port: uint16(pm.GetHostPort()), Proto: uint8(pm.GetProtocol()),
				Backend: netip.AddrPortFrom(pod, uint16(pm.GetContainerPort()))})
		}
	}
	return out
}

// putHostPorts writes an endpoint's host ports, none of them on error.
func (m *Manager) putHostPorts(ctx context.Context, ep *datapathv1alpha1.Endpoint) error {
	hps := hostPortsOf(ep)
	if len(hps) == 0 || m.cfg.HostPorts == nil {
		return nil
	}
	if err := m.cfg.HostPorts.PutHostPorts(ctx, hps); err != nil {
		_ = m.cfg.HostPorts.DeleteHostPorts(ctx, hps)
		return fmt.Errorf("host ports: %w", err)
	}
	return nil
}

// forgetHostPorts removes an endpoint's host ports.
func (m *Manager) forgetHostPorts(ctx context.Context, hostName string, ep *datapathv1alpha1.Endpoint) {
	hps := hostPortsOf(ep)
	if len(hps) == 0 || m.cfg.HostPorts == nil {
		return
	}
	if err := m.cfg.HostPorts.DeleteHostPorts(ctx, hps); err != nil {
		m.log.Warn("delete host ports", "endpoint", hostName, "err", err)
	}
}
