package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/veth"
)

func validAttachment(att *datapathv1alpha1.Attachment) error {
	if att.GetContainerId() == "" || att.GetInterfaceName() == "" {
		return status.Error(codes.InvalidArgument, "attachment needs container_id and interface_name")
	}
	if len(att.GetInterfaceName()) > 15 || strings.ContainsAny(att.GetInterfaceName(), "/ \x00") {
		return status.Errorf(codes.InvalidArgument, "interface_name %q is not a valid Linux interface name", att.GetInterfaceName())
	}
	return nil
}

func hostNameOf(att *datapathv1alpha1.Attachment) string {
	return veth.HostName(att.GetContainerId(), att.GetInterfaceName())
}

// CreateEndpoint wires a pod: addresses from IPAM, the veth pair, the eBPF
// map entry and program. A retry returns the endpoint already wired.
func (a *Agent) CreateEndpoint(ctx context.Context, req *datapathv1alpha1.CreateEndpointRequest) (_ *datapathv1alpha1.Endpoint, err error) {
	att := req.GetAttachment()
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	if req.GetNetnsPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "netns_path is required")
	}
	if m := req.GetMtu(); m != 0 && (m < 576 || int(m) > a.cfg.MTU) {
		return nil, status.Errorf(codes.InvalidArgument, "mtu %d must be between 576 and the node's %d", m, a.cfg.MTU)
	}
	if err := a.Ready(); err != nil {
		return nil, errUnavailable("node not ready: %v", err)
	}
	hostName := hostNameOf(att)
	defer a.locks.lock(hostName)()
	if _, ep, err := a.store.load(hostName); err == nil {
		if ep.GetNetnsPath() != req.GetNetnsPath() {
			return nil, status.Errorf(codes.AlreadyExists, "attachment %s/%s is wired into %s, not %s", att.GetContainerId(), att.GetInterfaceName(), ep.GetNetnsPath(), req.GetNetnsPath())
		}
		return ep, nil
	}
	if _, err := os.Stat(req.GetNetnsPath()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "netns_path %s: %v", req.GetNetnsPath(), err)
	}

	alloc, err := a.ipam.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{
		Handle:         &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()},
		Node:           a.cfg.NodeName,
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
	defer func() {
		if err != nil {
			a.releaseOrQueue(hostName, att, seq)
		}
	}()

	mtu := a.cfg.MTU
	if req.GetMtu() != 0 {
		mtu = int(req.GetMtu())
	}
	spec := veth.Spec{HostName: hostName, PodIfName: att.GetInterfaceName(), NetnsPath: req.GetNetnsPath(), MTU: mtu, GSOMaxSize: a.gsoMax}
	ep := &datapathv1alpha1.Endpoint{
		Attachment: att, NetnsPath: req.GetNetnsPath(), PodNamespace: req.GetPodNamespace(), PodName: req.GetPodName(),
		PodUid: req.GetPodUid(), Labels: req.GetLabels(), Annotations: req.GetAnnotations(), Mtu: uint32(mtu), Network: req.GetNetwork(),
		Identity: 5, CreateTime: timestamppb.Now(),
	}
	for _, ad := range alloc.GetAllocation().GetAddresses() {
		ip, perr := netip.ParseAddr(ad.GetIp())
		gw, gerr := netip.ParseAddr(ad.GetGateway())
		if perr != nil || gerr != nil {
			return nil, status.Errorf(codes.Internal, "IPAM returned address %q gateway %q", ad.GetIp(), ad.GetGateway())
		}
		spec.Addrs = append(spec.Addrs, netip.PrefixFrom(ip, int(ad.GetPrefixLength())))
		spec.Gateways = append(spec.Gateways, gw)
		ep.Ips = append(ep.Ips, &datapathv1alpha1.IPConfig{
			Address: netip.PrefixFrom(ip, int(ad.GetPrefixLength())).String(), Gateway: gw.String(), InterfaceIndex: 1,
			Family: ad.GetFamily(), Pool: ad.GetPool(),
		})
	}
	res, err := a.plumber.Create(spec)
	if err != nil {
		if errors.Is(err, veth.ErrNetNS) {
			return nil, status.Errorf(codes.InvalidArgument, "wire %s: %v", hostName, err)
		}
		return nil, status.Errorf(codes.Internal, "wire %s: %v", hostName, err)
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
			_ = a.plumber.Delete(hostName)
		}
	}()
	a.mu.Lock()
	a.nextID++
	ep.EndpointId = a.nextID
	a.mu.Unlock()
	podKey := a.pods.acquire(att.GetContainerId(), hostName, 0)
	defer func() {
		if err != nil {
			a.pods.release(att.GetContainerId(), hostName)
		}
	}()
	ep.Interfaces = []*datapathv1alpha1.Interface{
		{Name: hostName, Mac: res.HostMAC.String(), Mtu: uint32(mtu), Ifindex: uint32(res.HostIndex)},
		{Name: att.GetInterfaceName(), Mac: res.PodMAC.String(), Sandbox: req.GetNetnsPath(), Mtu: uint32(mtu), Ifindex: uint32(res.PodIndex)},
	}
	if a.bpf != nil {
		if err := a.attach(hostName, res, ep, spec.Addrs, podKey); err != nil {
			return nil, status.Errorf(codes.Internal, "eBPF for %s: %v", hostName, err)
		}
	}
	raw, err := protojson.Marshal(ep)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode endpoint: %v", err)
	}
	if err := a.store.save(hostName, &record{Endpoint: raw, IPAMSequence: seq, HostMAC: res.HostMAC.String(), PodMAC: res.PodMAC.String(), PodKey: podKey}); err != nil {
		if a.bpf != nil {
			a.forgetAddrs(hostName, spec.Addrs)
			a.forgetDevice(hostName, res.HostIndex)
		}
		return nil, status.Errorf(codes.Internal, "record endpoint: %v", err)
	}
	a.log.Info("endpoint created", "endpoint", hostName, "container", att.GetContainerId(), "ips", spec.Addrs, "pod", req.GetPodNamespace()+"/"+req.GetPodName())
	return ep, nil
}

// attach writes the pod's map entries and puts the program on its host
// veth. On failure the caller deletes the veth, which takes the program
// with it; attach only drops the entries.
func (a *Agent) attach(hostName string, res veth.Result, ep *datapathv1alpha1.Endpoint, addrs []netip.Prefix, podKey uint32) error {
	if err := a.writeEBPF(res, ep, addrs, podKey); err != nil {
		a.forgetAddrs(hostName, addrs)
		a.forgetDevice(hostName, res.HostIndex)
		return err
	}
	return nil
}

// writeEBPF writes an endpoint's device entry (with its pod's key) and
// address entries and attaches the pod program to its host veth.
func (a *Agent) writeEBPF(res veth.Result, ep *datapathv1alpha1.Endpoint, addrs []netip.Prefix, podKey uint32) error {
	if err := a.bpf.PutDevice(res.HostIndex, podKey); err != nil {
		return err
	}
	for _, p := range addrs {
		if err := a.bpf.PutEndpoint(p.Addr(), res.HostIndex, ep.GetEndpointId(), res.PodMAC, res.HostMAC); err != nil {
			return err
		}
	}
	return a.bpf.AttachEndpoint(res.HostIndex)
}

// forgetDevice removes a host veth's device entry.
func (a *Agent) forgetDevice(hostName string, ifindex int) {
	if ifindex <= 0 {
		return
	}
	if err := a.bpf.DeleteDevice(ifindex); err != nil {
		a.log.Warn("delete device entry", "endpoint", hostName, "err", err)
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
func (a *Agent) forgetAddrs(hostName string, addrs []netip.Prefix) {
	for _, p := range addrs {
		if err := a.bpf.DeleteEndpoint(p.Addr()); err != nil {
			a.log.Warn("delete map entry", "endpoint", hostName, "ip", p.Addr(), "err", err)
		}
	}
}

func endpointAddrs(ep *datapathv1alpha1.Endpoint) []netip.Prefix {
	var out []netip.Prefix
	for _, ipc := range ep.GetIps() {
		if p, err := netip.ParsePrefix(ipc.GetAddress()); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// DeleteEndpoint undoes CreateEndpoint. Unknown attachments are success;
// if IPAM cannot be reached, the release is queued and retried.
func (a *Agent) DeleteEndpoint(ctx context.Context, att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error) {
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	hostName := hostNameOf(att)
	defer a.locks.lock(hostName)()
	rec, ep, err := a.store.load(hostName)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "endpoint record: %v", err)
	}
	ifindex := hostIfindex(ep, hostName)
	if l, err := a.plumber.Node.LinkByName(hostName); err == nil {
		ifindex = l.Attrs().Index // also without a record
	}
	// The veth goes first, and its program with it.
	if err := a.plumber.Delete(hostName); err != nil {
		return nil, status.Errorf(codes.Internal, "remove veth %s: %v", hostName, err)
	}
	if a.bpf != nil {
		a.forgetAddrs(hostName, endpointAddrs(ep))
		a.forgetDevice(hostName, ifindex)
	}
	a.pods.release(att.GetContainerId(), hostName)
	var seq uint64
	if rec != nil {
		seq = rec.IPAMSequence
	}
	// Without a record (a crash between IPAM and the record), the handle
	// alone still finds and releases the allocation.
	if _, err := a.ipam.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{
		Handle:           &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()},
		ExpectedSequence: seq,
	}); err != nil {
		a.log.Warn("IPAM release failed; queued for retry", "endpoint", hostName, "err", err)
		if qerr := a.queueRelease(hostName, att, seq); qerr != nil {
			return nil, status.Errorf(codes.Internal, "queue release: %v", qerr)
		}
	}
	if err := a.store.remove(hostName); err != nil {
		return nil, status.Errorf(codes.Internal, "remove endpoint record: %v", err)
	}
	if ep != nil {
		a.log.Info("endpoint deleted", "endpoint", hostName, "container", att.GetContainerId())
	}
	return ep, nil
}

// pendingRelease is an IPAM release that failed and is retried.
type pendingRelease struct {
	ContainerID string `json:"containerID"`
	Interface   string `json:"interface"`
	Sequence    uint64 `json:"sequence"`
}

func (a *Agent) releaseDir() string { return filepath.Join(a.cfg.StateDir, "releases") }

func (a *Agent) queueRelease(hostName string, att *datapathv1alpha1.Attachment, seq uint64) error {
	if err := os.MkdirAll(a.releaseDir(), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(pendingRelease{att.GetContainerId(), att.GetInterfaceName(), seq})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(a.releaseDir(), hostName+".json"), b, 0o600)
}

// releaseOrQueue releases an allocation made for a create that failed.
func (a *Agent) releaseOrQueue(hostName string, att *datapathv1alpha1.Attachment, seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.ipam.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{
		Handle:           &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()},
		ExpectedSequence: seq,
	}); err != nil {
		if qerr := a.queueRelease(hostName, att, seq); qerr != nil {
			a.log.Error("address release lost", "endpoint", hostName, "err", err, "queue_err", qerr)
		}
	}
}

func (a *Agent) retryReleases(ctx context.Context) {
	entries, err := os.ReadDir(a.releaseDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(a.releaseDir(), e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var p pendingRelease
		if err := json.Unmarshal(b, &p); err != nil {
			a.log.Error("dropping unreadable pending release", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		_, err = a.ipam.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{
			Handle:           &ipamv1alpha1.OwnerHandle{ContainerId: p.ContainerID, InterfaceName: p.Interface},
			ExpectedSequence: p.Sequence,
		})
		if err == nil {
			_ = os.Remove(path)
		}
	}
}

// GetEndpoint returns a recorded endpoint.
func (a *Agent) GetEndpoint(att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error) {
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	_, ep, err := a.store.load(hostNameOf(att))
	if errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "no endpoint for %s/%s", att.GetContainerId(), att.GetInterfaceName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "endpoint record: %v", err)
	}
	return ep, nil
}

// ListEndpoints returns the recorded endpoints in host-name order.
func (a *Agent) ListEndpoints() ([]*datapathv1alpha1.Endpoint, error) {
	eps, err := a.store.list()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	names := make([]string, 0, len(eps))
	for n := range eps {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*datapathv1alpha1.Endpoint, 0, len(names))
	for _, n := range names {
		out = append(out, eps[n])
	}
	return out, nil
}

// CheckEndpoint verifies every piece of an endpoint is still in place.
func (a *Agent) CheckEndpoint(ctx context.Context, req *datapathv1alpha1.CheckEndpointRequest) (*datapathv1alpha1.CheckEndpointResponse, error) {
	att := req.GetAttachment()
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	hostName := hostNameOf(att)
	rec, ep, err := a.store.load(hostName)
	if errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "no endpoint for %s/%s", att.GetContainerId(), att.GetInterfaceName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "endpoint record: %v", err)
	}
	resp := &datapathv1alpha1.CheckEndpointResponse{Endpoint: ep}
	add := func(c datapathv1alpha1.EndpointComponent, msg string) {
		resp.Problems = append(resp.Problems, &datapathv1alpha1.EndpointProblem{Component: c, Message: msg})
	}
	if req.GetNetnsPath() != "" && req.GetNetnsPath() != ep.GetNetnsPath() {
		add(datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_NETNS, fmt.Sprintf("endpoint is in %s, runtime says %s", ep.GetNetnsPath(), req.GetNetnsPath()))
	}
	addrs := endpointAddrs(ep)
	var gws []netip.Addr
	for _, ipc := range ep.GetIps() {
		if g, err := netip.ParseAddr(ipc.GetGateway()); err == nil {
			gws = append(gws, g)
		}
	}
	hostMAC, _ := net.ParseMAC(rec.HostMAC)
	podMAC, _ := net.ParseMAC(rec.PodMAC)
	spec := veth.Spec{HostName: hostName, PodIfName: att.GetInterfaceName(), NetnsPath: ep.GetNetnsPath(), MTU: int(ep.GetMtu()), Addrs: addrs, Gateways: gws}
	for _, p := range a.plumber.Check(spec, veth.Result{HostMAC: hostMAC, PodMAC: podMAC}) {
		add(componentOf[p.Part], p.Message)
	}
	for _, want := range req.GetExpectedAddresses() {
		if !slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.String() == want }) {
			add(datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ADDRESS, fmt.Sprintf("runtime expects %s, endpoint has %v", want, addrs))
		}
	}
	if a.bpf != nil {
		ifindex := 0
		if l, err := a.plumber.Node.LinkByName(hostName); err == nil {
			ifindex = l.Attrs().Index
		}
		for _, p := range addrs {
			for _, msg := range a.bpf.CheckEndpoint(hostName, p.Addr(), ifindex, podMAC, hostMAC) {
				add(datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_BPF_MAP, msg)
			}
		}
	}
	if _, err := a.ipam.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{
		Handle: &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()},
	}}); err != nil {
		if c := status.Code(err); c != codes.NotFound && c != codes.FailedPrecondition {
			// Not an answer about the endpoint: the runtime should ask again.
			return nil, ipamError("check the endpoint's allocation", err)
		}
		add(datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_IPAM, fmt.Sprintf("IPAM has no allocation for the endpoint: %v", status.Convert(err).Message()))
	}
	resp.Healthy = len(resp.Problems) == 0
	return resp, nil
}

// componentOf maps the plumbing's parts to the API's components.
var componentOf = map[veth.Part]datapathv1alpha1.EndpointComponent{
	veth.PartNetns:         datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_NETNS,
	veth.PartHostInterface: datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_HOST_INTERFACE,
	veth.PartPodInterface:  datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_INTERFACE,
	veth.PartPodAddress:    datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ADDRESS,
	veth.PartPodRoute:      datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ROUTE,
	veth.PartPodNeighbor:   datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_NEIGHBOR,
	veth.PartHostRoute:     datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ROUTE,
}

// GarbageCollect removes the endpoints of network whose attachments are not
// in valid and that are older than minAge, then has IPAM release any
// allocation of this node that no kept endpoint owns. Endpoints of other
// networks, or recorded without one, are kept; an empty network means every
// endpoint.
func (a *Agent) GarbageCollect(ctx context.Context, network string, valid []*datapathv1alpha1.Attachment, minAge time.Duration, dryRun bool) ([]*datapathv1alpha1.Endpoint, uint32, error) {
	keep := map[string]bool{}
	for _, att := range valid {
		keep[hostNameOf(att)] = true
	}
	eps, err := a.store.list()
	if err != nil {
		return nil, 0, status.Errorf(codes.Internal, "%v", err)
	}
	var removed []*datapathv1alpha1.Endpoint
	var live []*ipamv1alpha1.OwnerHandle
	cutoff := time.Now().Add(-minAge)
	for name, ep := range eps {
		// A scoped GC leaves endpoints of other networks alone, and those
		// recorded without a network (by an older shim): which network they
		// belong to is unknown, and their DELs still come.
		other := network != "" && ep.GetNetwork() != network
		if other || keep[name] || a.isHealthEndpoint(ep.GetAttachment()) || ep.GetCreateTime().AsTime().After(cutoff) {
			live = append(live, &ipamv1alpha1.OwnerHandle{ContainerId: ep.GetAttachment().GetContainerId(), InterfaceName: ep.GetAttachment().GetInterfaceName()})
			continue
		}
		removed = append(removed, ep)
		if dryRun {
			continue
		}
		if _, err := a.DeleteEndpoint(ctx, ep.GetAttachment()); err != nil {
			return removed, 0, err
		}
	}
	for _, att := range valid {
		live = append(live, &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()})
	}
	gc, err := a.ipam.GarbageCollect(ctx, &ipamv1alpha1.GarbageCollectRequest{Node: a.cfg.NodeName, LiveHandles: live, DryRun: dryRun})
	if err != nil {
		return removed, 0, ipamError("garbage-collect addresses", err)
	}
	return removed, uint32(len(gc.GetReleased())), nil
}

// NodeConfig describes this node's datapath.
func (a *Agent) NodeConfig() *datapathv1alpha1.NodeConfig {
	c := &datapathv1alpha1.NodeConfig{NodeName: a.cfg.NodeName, Mtu: uint32(a.cfg.MTU), Masquerade: a.cfg.Masquerade}
	if _, ep, err := a.store.load(hostNameOf(healthAttachment(a.cfg.NodeName))); err == nil {
		for _, p := range endpointAddrs(ep) {
			c.HealthIps = append(c.HealthIps, p.Addr().String())
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.RoutingMode == ModeTunnel {
		c.RoutingMode = datapathv1alpha1.RoutingMode_ROUTING_MODE_TUNNEL
		c.TunnelProtocol = datapathv1alpha1.TunnelProtocol_TUNNEL_PROTOCOL_VXLAN
		c.TunnelPort = VXLANPort
		if a.cfg.TunnelProtocol == TunnelGeneve {
			c.TunnelProtocol = datapathv1alpha1.TunnelProtocol_TUNNEL_PROTOCOL_GENEVE
			c.TunnelPort = GenevePort
		}
	} else {
		c.RoutingMode = datapathv1alpha1.RoutingMode_ROUTING_MODE_NATIVE
	}
	for _, ip := range a.cfg.NodeIPs {
		c.NodeIps = append(c.NodeIps, ip.String())
	}
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
