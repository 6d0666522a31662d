package agent

import (
	"net"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// Readiness is what CNI STATUS reports: not ready until the node is set
// up, degraded while one of the node's devices is missing. It depends on
// nothing outside the node: a runtime takes any STATUS error for a node
// whose network is not ready, so an IPAM or etcd outage reported here would
// take every node NotReady at once (and could keep IPAM's own pods from
// starting). ADD reports IPAM's unavailability itself (11, try again).
func (a *Agent) Readiness() (datapathv1alpha1.ReadinessState, []string) {
	st := a.NodeStatus()
	return st.GetReadiness(), st.GetReasons()
}

// NodeStatus reports readiness, devices, counts and peer health.
func (a *Agent) NodeStatus() *datapathv1alpha1.NodeStatus {
	bpf := a.deps.Datapath != nil
	st := &datapathv1alpha1.NodeStatus{Readiness: datapathv1alpha1.ReadinessState_READINESS_STATE_READY, BpfLoaded: bpf}
	if err := a.Ready(); err != nil {
		st.Readiness = datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY
		st.Reasons = append(st.Reasons, err.Error())
	}
	tunnel := nodedev.TunnelDevice(a.cfg.TunnelProtocol)
	devices := []string{nodedev.HostDevice, nodedev.NetDevice}
	if a.cfg.RoutingMode == nodedev.ModeTunnel {
		devices = append(devices, tunnel)
	}
	for _, name := range devices {
		ds := &datapathv1alpha1.DeviceStatus{Name: name}
		if l, err := a.node.LinkByName(name); err == nil {
			ds.Present, ds.Ifindex, ds.Mtu = true, uint32(l.Attrs().Index), uint32(l.Attrs().MTU)
			ds.Up = l.Attrs().Flags&net.FlagUp != 0
			ds.ProgramAttached = name == tunnel && bpf
		} else {
			ds.Message = err.Error()
			if st.Readiness == datapathv1alpha1.ReadinessState_READINESS_STATE_READY {
				st.Readiness = datapathv1alpha1.ReadinessState_READINESS_STATE_DEGRADED
				st.Reasons = append(st.Reasons, "device "+name+" missing")
			}
		}
		st.Devices = append(st.Devices, ds)
	}
	if eps, err := a.endpoints.ListEndpoints(); err == nil {
		st.EndpointCount = uint32(len(eps))
	}
	st.ServiceCount = uint32(a.services.Count())
	st.Peers = a.prober.Peers()
	st.RemoteNodeCount = uint32(len(st.Peers))
	return st
}

// NodeConfig describes this node's datapath.
func (a *Agent) NodeConfig() *datapathv1alpha1.NodeConfig {
	c := &datapathv1alpha1.NodeConfig{NodeName: a.cfg.NodeName, Mtu: uint32(a.cfg.MTU), Masquerade: a.cfg.Masquerade}
	if ep, err := a.endpoints.GetEndpoint(health.Attachment(a.cfg.NodeName)); err == nil {
		for _, p := range endpoint.Addrs(ep) {
			c.HealthIps = append(c.HealthIps, p.Addr().String())
		}
	}
	if a.cfg.RoutingMode == nodedev.ModeTunnel {
		c.RoutingMode = datapathv1alpha1.RoutingMode_ROUTING_MODE_TUNNEL
		c.TunnelProtocol = datapathv1alpha1.TunnelProtocol_TUNNEL_PROTOCOL_VXLAN
		c.TunnelPort = nodedev.VXLANPort
		if a.cfg.TunnelProtocol == nodedev.TunnelGeneve {
			c.TunnelProtocol = datapathv1alpha1.TunnelProtocol_TUNNEL_PROTOCOL_GENEVE
			c.TunnelPort = nodedev.GenevePort
		}
	} else {
		c.RoutingMode = datapathv1alpha1.RoutingMode_ROUTING_MODE_NATIVE
	}
	for _, ip := range a.cfg.NodeIPs {
		c.NodeIps = append(c.NodeIps, ip.String())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.routers {
		c.RouterIps = append(c.RouterIps, r.String())
		if r.Is4() {
			c.IpFamilies = append(c.IpFamilies, commonv1alpha1.IPFamily_IP_FAMILY_IPV4)
		} else {
			c.IpFamilies = append(c.IpFamilies, commonv1alpha1.IPFamily_IP_FAMILY_IPV6)
		}
	}
	c.BpfPinPath = a.cfg.PinDir
	return c
}
