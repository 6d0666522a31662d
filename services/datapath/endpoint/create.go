package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/veth"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// CreateEndpoint wires a pod: addresses from IPAM, the veth pair, the eBPF
// map entry and program. A retry returns the endpoint already wired.
func (m *Manager) CreateEndpoint(ctx context.Context, req *datapathv1alpha1.CreateEndpointRequest) (_ *datapathv1alpha1.Endpoint, err error) {
	att := req.GetAttachment()
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	if req.GetNetnsPath() == "" {
		return nil, fmt.Errorf("%w: netns_path is required", ErrInvalid)
	}
	if want := req.GetMtu(); want != 0 && (want < nodedev.MinPodMTU || int(want) > m.cfg.MTU) {
		return nil, fmt.Errorf("%w: mtu %d must be between %d and the node's %d", ErrInvalid, want, nodedev.MinPodMTU, m.cfg.MTU)
	}
	if err := validPortMappings(req.GetPortMappings()); err != nil {
		return nil, err
	}
	if len(req.GetPortMappings()) > 0 && (m.cfg.HostPorts == nil || m.bpf == nil) {
		return nil, fmt.Errorf("%w: port mappings need the eBPF load balancer", ErrInvalid)
	}
	if err := m.ready(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotReady, err)
	}
	hostName := HostName(att)
	defer m.locks.lock(hostName)()
	if _, ep, err := m.store.load(hostName); err == nil {
		if ep.GetNetnsPath() != req.GetNetnsPath() {
			return nil, fmt.Errorf("%w: %s/%s is wired into %s, not %s", ErrExists, bounded.Quote(att.GetContainerId()), att.GetInterfaceName(), bounded.Quote(ep.GetNetnsPath()), bounded.Quote(req.GetNetnsPath()))
		}
		return ep, nil
	}
	// Checked before allocating: a wrong path is the caller's, and the
	// node's own namespace would get a second veth end and routes that
	// shadow the node's (the kernel refuses it only half-way).
	switch node, err := m.plumber.IsNode(req.GetNetnsPath()); {
	case errors.Is(err, nl.ErrNetNS):
		return nil, fmt.Errorf("%w: %w", ErrNetNS, err)
	case err != nil:
		return nil, fmt.Errorf("netns_path %s: %w", bounded.Quote(req.GetNetnsPath()), err)
	case node:
		return nil, fmt.Errorf("%w: %s is the node's own network namespace, not a pod's", ErrNetNS, bounded.Quote(req.GetNetnsPath()))
	}

	alloc, err := m.ipam.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{
		Handle:         &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()},
		Node:           m.cfg.NodeName,
		RequestedPools: req.GetRequestedPools(),
		RequestedIps:   req.GetRequestedIps(),
		StickyKey:      req.GetStickyKey(),
		Pod: &ipamv1alpha1.PodInfo{
			Namespace: req.GetPodNamespace(), Name: req.GetPodName(), Labels: req.GetLabels(),
			NamespaceLabels: req.GetNamespaceLabels(), NamespaceAnnotations: req.GetNamespaceAnnotations(),
		},
	})
	if err != nil {
		return nil, ipamError("allocate addresses", err)
	}
	seq := alloc.GetAllocation().GetSequence()
	m.cancelRelease(hostName)
	defer func() {
		if err != nil {
			m.releaseOrQueue(hostName, att, seq)
		}
	}()

	mtu := m.cfg.MTU
	if req.GetMtu() != 0 {
		mtu = int(req.GetMtu())
	}
	spec := veth.Spec{HostName: hostName, PodIfName: att.GetInterfaceName(), NetnsPath: req.GetNetnsPath(), MTU: mtu, GSOMaxSize: m.cfg.GSOMaxSize}
	ep := &datapathv1alpha1.Endpoint{
		Attachment: att, NetnsPath: req.GetNetnsPath(), PodNamespace: req.GetPodNamespace(), PodName: req.GetPodName(),
		PodUid: req.GetPodUid(), Labels: req.GetLabels(), Annotations: keptAnnotations(req.GetAnnotations()), Mtu: uint32(mtu), Network: req.GetNetwork(),
		Identity: IdentityInit, CreateTime: timestamppb.Now(), PortMappings: req.GetPortMappings(),
	}
	for _, ad := range alloc.GetAllocation().GetAddresses() {
		ip, perr := netip.ParseAddr(ad.GetIp())
		gw, gerr := netip.ParseAddr(ad.GetGateway())
		if perr != nil || gerr != nil {
			return nil, fmt.Errorf("IPAM returned address %q gateway %q", ad.GetIp(), ad.GetGateway())
		}
		spec.Addrs = append(spec.Addrs, netip.PrefixFrom(ip, int(ad.GetPrefixLength())))
		spec.Gateways = append(spec.Gateways, gw)
		ep.Ips = append(ep.Ips, &datapathv1alpha1.IPConfig{
			Address: netip.PrefixFrom(ip, int(ad.GetPrefixLength())).String(), Gateway: gw.String(), InterfaceIndex: 1,
			Family: ad.GetFamily(), Pool: ad.GetPool(),
		})
	}
	res, err := m.plumber.Create(spec)
	if err != nil {
		switch {
		case errors.Is(err, nl.ErrNetNS): // gone since the check
			return nil, fmt.Errorf("%w: wire %s: %w", ErrNetNS, hostName, err)
		case errors.Is(err, veth.ErrPodIfExists):
			return nil, fmt.Errorf("%w: wire %s: %w", ErrExists, hostName, err)
		}
		return nil, fmt.Errorf("wire %s: %w", hostName, err)
	}
	// The result lists the routes the pod got: a link route to each
	// gateway, and a default route only where no other interface of the
	// pod holds that family's (a second attachment).
	for _, gw := range spec.Gateways {
		def := "0.0.0.0/0"
		if gw.Is6() {
			def = "::/0"
		}
		ep.Routes = append(ep.Routes, &datapathv1alpha1.Route{Destination: netip.PrefixFrom(gw, gw.BitLen()).String()})
		if slices.Contains(res.DefaultVia, gw) {
			ep.Routes = append(ep.Routes, &datapathv1alpha1.Route{Destination: def, Gateway: gw.String()})
		}
	}
	defer func() {
		if err != nil {
			_ = m.plumber.Delete(hostName)
		}
	}()
	m.mu.Lock()
	m.nextID++
	ep.EndpointId = m.nextID
	m.mu.Unlock()
	podKey := m.pods.acquire(att.GetContainerId(), hostName, 0)
	defer func() {
		if err != nil {
			m.pods.release(att.GetContainerId(), hostName)
		}
	}()
	ep.Interfaces = []*datapathv1alpha1.Interface{
		{Name: hostName, Mac: res.HostMAC.String(), Mtu: uint32(mtu), Ifindex: uint32(res.HostIndex)},
		{Name: att.GetInterfaceName(), Mac: res.PodMAC.String(), Sandbox: req.GetNetnsPath(), Mtu: uint32(mtu), Ifindex: uint32(res.PodIndex)},
	}
	if m.bpf != nil {
		if err := m.attach(hostName, res, ep, spec.Addrs, podKey); err != nil {
			// A full BPF hash map refuses a new key with E2BIG.
			if errors.Is(err, unix.E2BIG) {
				return nil, fmt.Errorf("%w: eBPF for %s: %w", ErrMapFull, hostName, err)
			}
			return nil, fmt.Errorf("eBPF for %s: %w", hostName, err)
		}
	}
	if m.bpf != nil {
		if err := m.putHostPorts(ctx, ep); err != nil {
			m.forgetAddrs(hostName, spec.Addrs)
			m.forgetDevice(hostName, res.HostIndex)
			return nil, err
		}
	}
	raw, err := protojson.Marshal(ep)
	if err != nil {
		return nil, fmt.Errorf("encode endpoint: %w", err)
	}
	if err := m.store.save(hostName, &record{Endpoint: raw, IPAMSequence: seq, HostMAC: res.HostMAC.String(), PodMAC: res.PodMAC.String(), PodKey: podKey}); err != nil {
		if m.bpf != nil {
			m.forgetHostPorts(ctx, hostName, ep)
			m.forgetAddrs(hostName, spec.Addrs)
			m.forgetDevice(hostName, res.HostIndex)
		}
		return nil, fmt.Errorf("record endpoint: %w", err)
	}
	m.log.Info("endpoint created", "endpoint", hostName, "container", att.GetContainerId(), "ips", spec.Addrs, "pod", req.GetPodNamespace()+"/"+req.GetPodName())
	return ep, nil
}

// keptAnnotations returns the pod annotations an endpoint records: those of
// Axon's own domain (keys prefixed "axon.io/" or "<sub>.axon.io/", such as
// "ipam.axon.io/pool"), the only ones Axon reads. Others are dropped, so
// that a pod's other annotations (up to 256 KiB in Kubernetes) never
// weigh on the endpoint records, ListEndpoints or the agent's memory.
func keptAnnotations(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		prefix, _, ok := strings.Cut(k, "/")
		if !ok || (prefix != axonDomain && !strings.HasSuffix(prefix, "."+axonDomain)) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// axonDomain is the annotation domain of Axon.
const axonDomain = "axon.io"

// attach writes the pod's map entries and puts the program on its host
// veth. On failure the caller deletes the veth, which takes the program
// with it; attach only drops the entries.
func (m *Manager) attach(hostName string, res veth.Result, ep *datapathv1alpha1.Endpoint, addrs []netip.Prefix, podKey uint32) error {
	if err := m.writeEBPF(res, ep, addrs, podKey); err != nil {
		m.forgetAddrs(hostName, addrs)
		m.forgetDevice(hostName, res.HostIndex)
		return err
	}
	return nil
}

// writeEBPF writes an endpoint's device entry (with its pod's key) and
// address entries and attaches the pod program to its host veth.
func (m *Manager) writeEBPF(res veth.Result, ep *datapathv1alpha1.Endpoint, addrs []netip.Prefix, podKey uint32) error {
	if err := m.bpf.PutDevice(res.HostIndex, podKey); err != nil {
		return err
	}
	for _, p := range addrs {
		if err := m.bpf.PutEndpoint(p.Addr(), bpfmaps.Endpoint{Ifindex: res.HostIndex, ID: ep.GetEndpointId(), PodMAC: res.PodMAC, HostMAC: res.HostMAC}); err != nil {
			return err
		}
	}
	return m.bpf.AttachEndpoint(res.HostIndex)
}

// forgetDevice removes a host veth's device entry.
func (m *Manager) forgetDevice(hostName string, ifindex int) {
	if ifindex <= 0 {
		return
	}
	if err := m.bpf.DeleteDevice(ifindex); err != nil {
		m.log.Warn("delete device entry", "endpoint", hostName, "err", err)
	}
}

// hostIfindex is the recorded ifindex of an endpoint's host-side veth, or 0.
func hostIfindex(ep *datapathv1alpha1.Endpoint, hostName string) int {
	for _, in := range ep.GetInterfaces() {
		if in.GetName() == hostName {
			return int(in.GetIfindex())
		}
	}
	return 0
}

// forgetAddrs removes a pod's map entries. Its program needs no detaching:
// it goes with the pod's veth.
func (m *Manager) forgetAddrs(hostName string, addrs []netip.Prefix) {
	for _, p := range addrs {
		if err := m.bpf.DeleteEndpoint(p.Addr()); err != nil {
			m.log.Warn("delete map entry", "endpoint", hostName, "ip", p.Addr(), "err", err)
		}
	}
}
