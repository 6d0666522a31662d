package agent

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/endpoint"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/internal/periodic"
	"github.com/axon-cni/axon/services/datapath/nodedev"
)

// IPAM probing: how often, and how long an answer may take.
const (
	ipamProbeInterval = 2 * time.Second
	ipamProbeTimeout  = time.Second
)

// Readiness is what CNI STATUS reports: not ready until the node is set
// up or while IPAM does not answer (every ADD would fail: a runtime should
// not schedule pods here), degraded while one of the node's devices is
// missing. "Does not answer" is IPAM unreachable, hung past
// ipamProbeTimeout, or UNAVAILABLE (its store down); IPAM's control plane
// runs in the host network, which a not-ready node still starts.
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
	a.mu.Lock()
	ipamDown := a.ipamDown
	a.mu.Unlock()
	if ipamDown != nil {
		st.Readiness = datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY
		st.Reasons = append(st.Reasons, ipamDown.Error())
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

// ProbeIPAM asks IPAM for this node's record and records whether it
// answered in time, for Readiness; it returns why not. Any answer but
// UNAVAILABLE counts (NOT_FOUND too: IPAM works, the node record is
// Start's concern).
func (a *Agent) ProbeIPAM(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, ipamProbeTimeout)
	defer cancel()
	_, err := a.deps.IPAM.GetNode(pctx, &ipamv1alpha1.GetNodeRequest{Name: a.cfg.NodeName})
	if ctx.Err() != nil {
		return ctx.Err() // stopping: no news about IPAM
	}
	var down error
	if code := status.Code(err); code == codes.Unavailable || code == codes.DeadlineExceeded {
		down = fmt.Errorf("IPAM does not answer: %w", err)
	}
	a.mu.Lock()
	was := a.ipamDown
	a.ipamDown = down
	a.mu.Unlock()
	switch {
	case down != nil && was == nil:
		a.log.Warn("IPAM does not answer; the node reports not ready", "err", err)
	case down == nil && was != nil:
		a.log.Info("IPAM answers again")
	}
	return down
}

// RunIPAMProbe probes IPAM (see ProbeIPAM) at once and then every
// ipamProbeInterval, until ctx ends.
func (a *Agent) RunIPAMProbe(ctx context.Context) {
	probe := func() { _ = a.ProbeIPAM(ctx) } // Readiness reports the outcome
	probe()
	periodic.Every(ctx, ipamProbeInterval, probe)
}
