package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/veth"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// CheckEndpoint verifies every piece of an endpoint is still in place.
func (m *Manager) CheckEndpoint(ctx context.Context, req *datapathv1alpha1.CheckEndpointRequest) (*datapathv1alpha1.CheckEndpointResponse, error) {
	att := req.GetAttachment()
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	for i, a := range req.GetExpectedAddresses() {
		if _, err := netip.ParsePrefix(a); err != nil {
			return nil, fmt.Errorf("%w: expected_addresses[%d] is not an address with a prefix length", ErrInvalid, i)
		}
	}
	hostName := HostName(att)
	rec, ep, err := m.store.load(hostName)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, att.GetContainerId(), att.GetInterfaceName())
	}
	if err != nil {
		return nil, fmt.Errorf("endpoint record: %w", err)
	}
	resp := &datapathv1alpha1.CheckEndpointResponse{Endpoint: ep}
	add := func(c datapathv1alpha1.EndpointComponent, msg string) {
		resp.Problems = append(resp.Problems, &datapathv1alpha1.EndpointProblem{Component: c, Message: msg})
	}
	if req.GetNetnsPath() != "" && req.GetNetnsPath() != ep.GetNetnsPath() {
		add(datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_NETNS, fmt.Sprintf("endpoint is in %s, runtime says %s", ep.GetNetnsPath(), bounded.Quote(req.GetNetnsPath())))
	}
	addrs := Addrs(ep)
	var gws []netip.Addr
	for _, ipc := range ep.GetIps() {
		if g, err := netip.ParseAddr(ipc.GetGateway()); err == nil {
			gws = append(gws, g)
		}
	}
	hostMAC, _ := net.ParseMAC(rec.HostMAC)
	podMAC, _ := net.ParseMAC(rec.PodMAC)
	spec := veth.Spec{HostName: hostName, PodIfName: att.GetInterfaceName(), NetnsPath: ep.GetNetnsPath(), MTU: int(ep.GetMtu()), Addrs: addrs, Gateways: gws}
	for _, p := range m.plumber.Check(spec, veth.Result{HostMAC: hostMAC, PodMAC: podMAC}) {
		add(componentOf[p.Part], p.Message)
	}
	for _, want := range req.GetExpectedAddresses() {
		if !slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.String() == want }) {
			add(datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ADDRESS, fmt.Sprintf("runtime expects %s, endpoint has %v", want, addrs))
		}
	}
	if m.bpf != nil {
		ifindex := 0
		if l, err := m.node.LinkByName(hostName); err == nil {
			ifindex = l.Attrs().Index
		}
		for _, msg := range m.checkMaps(hostName, addrs, ifindex, rec.PodKey, podMAC, hostMAC) {
			add(datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_BPF_MAP, msg)
		}
	}
	if _, err := m.ipam.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{
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

// checkMaps describes what is missing or wrong of an endpoint's eBPF state:
// the program on its host veth hostName, the veth's device entry (its pod's
// key, podKey, when recorded and ifindex is known: without it the program
// drops every packet of the pod as spoofed), and each address's map entry
// (its host ifindex, unless ifindex is 0, and MACs).
func (m *Manager) checkMaps(hostName string, addrs []netip.Prefix, ifindex int, podKey uint32, podMAC, hostMAC net.HardwareAddr) []string {
	var problems []string
	if len(addrs) > 0 {
		problems = m.bpf.EndpointProgramProblems(hostName)
	}
	if ifindex != 0 && podKey != 0 {
		switch key, err := m.bpf.Device(ifindex); {
		case err != nil:
			problems = append(problems, fmt.Sprintf("no device map entry for %s (ifindex %d): %v", hostName, ifindex, err))
		case key != podKey:
			problems = append(problems, fmt.Sprintf("device map entry for %s names pod key %d, the endpoint's is %d", hostName, key, podKey))
		}
	}
	for _, p := range addrs {
		ip := p.Addr()
		ep, err := m.bpf.Endpoint(ip)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("no endpoint map entry for %s: %v", ip, err))
		case ifindex != 0 && ep.Ifindex != ifindex:
			problems = append(problems, fmt.Sprintf("endpoint map entry for %s sends to ifindex %d, but %s is %d", ip, ep.Ifindex, hostName, ifindex))
		case ep.PodMAC.String() != podMAC.String() || ep.HostMAC.String() != hostMAC.String():
			problems = append(problems, fmt.Sprintf("endpoint map entry for %s has MACs pod %s host %s, want %s and %s", ip, ep.PodMAC, ep.HostMAC, podMAC, hostMAC))
		}
	}
	return problems
}
