package endpoint

import (
	"errors"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/veth"
)

const (
	compNetns    = datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_NETNS
	compHost     = datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_HOST_INTERFACE
	compPodAddr  = datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ADDRESS
	compPodRoute = datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_ROUTE
	compNeigh    = datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_POD_NEIGHBOR
	compBPF      = datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_BPF_MAP
	compIPAM     = datapathv1alpha1.EndpointComponent_ENDPOINT_COMPONENT_IPAM
)

// checked is a dual-stack endpoint for CHECK to look at.
type checked struct {
	*testEnv
	ns      string
	att     *datapathv1alpha1.Attachment
	ep      *datapathv1alpha1.Endpoint
	hostIdx int
	podIdx  int
}

// deleteRoute removes the route of link in namespace ns (nlfake.NodeNS or
// a pod's path) that match selects, behind the agent's back.
func (c *checked) deleteRoute(ns string, link int, match func(netlink.Route) bool) {
	c.t.Helper()
	i := slices.IndexFunc(c.nl.Routes(ns), func(r netlink.Route) bool { return r.LinkIndex == link && match(r) })
	if i < 0 {
		c.t.Fatalf("no such route in %s: %v", ns, c.nl.Routes(ns))
	}
	r := c.nl.Routes(ns)[i]
	var h nl.Handle
	if ns == nlfake.NodeNS {
		n, err := c.nl.Node()
		if err != nil {
			c.t.Fatal(err)
		}
		defer n.Close()
		h = n
	} else {
		p, err := c.nl.Open(ns)
		if err != nil {
			c.t.Fatal(err)
		}
		defer p.Close()
		h = p.Handle
	}
	if err := h.RouteDel(&r); err != nil {
		c.t.Fatalf("delete route %v: %v", r, err)
	}
}

func dstIs(p string) func(netlink.Route) bool {
	return func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == p }
}

// CHECK reports each broken piece of an endpoint under its component,
// and nothing for a healthy one.
func TestCheckReportsBrokenPieces(t *testing.T) {
	for _, tc := range []struct {
		name   string
		netns  func(c *checked) string // the runtime's netns path; "" for the endpoint's
		expect []string                // addresses the runtime expects
		breaks func(c *checked)
		want   []datapathv1alpha1.EndpointComponent // exactly these, in any order
		has    datapathv1alpha1.EndpointComponent   // at least this one, when want is nil
	}{
		{name: "Healthy", breaks: func(*checked) {}},
		{name: "VethDeleted", has: compHost, breaks: func(c *checked) {
			if err := c.nl.DeleteLink(nlfake.NodeNS, HostName(c.att)); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "PodAddressRemoved", want: []datapathv1alpha1.EndpointComponent{compPodAddr}, breaks: func(c *checked) {
			if err := c.nl.DeleteAddr(c.ns, "eth0", Addrs(c.ep)[1]); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "PodDefaultRouteRemoved", want: []datapathv1alpha1.EndpointComponent{compPodRoute}, breaks: func(c *checked) {
			c.deleteRoute(c.ns, c.podIdx, func(r netlink.Route) bool { return veth.IsDefaultRoute(r) && r.Gw.Equal(gateway4.AsSlice()) })
		}},
		{name: "PodGatewayRouteRemoved", want: []datapathv1alpha1.EndpointComponent{compPodRoute}, breaks: func(c *checked) {
			c.deleteRoute(c.ns, c.podIdx, dstIs("fd00:244:1::1/128"))
		}},
		{name: "HostRouteRemoved", want: []datapathv1alpha1.EndpointComponent{compPodRoute}, breaks: func(c *checked) {
			c.deleteRoute(nlfake.NodeNS, c.hostIdx, dstIs(Addrs(c.ep)[0].String()))
		}},
		{name: "NeighbourRemoved", want: []datapathv1alpha1.EndpointComponent{compNeigh}, breaks: func(c *checked) {
			if err := c.nl.DeleteNeigh(c.ns, "eth0", gateway4); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "MapEntryRemoved", want: []datapathv1alpha1.EndpointComponent{compBPF}, breaks: func(c *checked) {
			if err := c.bpf.DeleteEndpoint(Addrs(c.ep)[0].Addr()); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "MapEntryWrongIfindex", want: []datapathv1alpha1.EndpointComponent{compBPF}, breaks: func(c *checked) {
			ip := Addrs(c.ep)[1].Addr()
			entry, err := c.bpf.Endpoint(ip)
			if err != nil {
				c.t.Fatal(err)
			}
			entry.Ifindex = 1 // loopback: traffic for the pod goes nowhere
			if err := c.bpf.PutEndpoint(ip, entry); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "MapEntryWrongMAC", want: []datapathv1alpha1.EndpointComponent{compBPF}, breaks: func(c *checked) {
			ip := Addrs(c.ep)[0].Addr()
			entry, err := c.bpf.Endpoint(ip)
			if err != nil {
				c.t.Fatal(err)
			}
			if err := c.bpf.PutEndpoint(ip, bpfmaps.Endpoint{Ifindex: entry.Ifindex, ID: entry.ID, PodMAC: entry.HostMAC, HostMAC: entry.HostMAC}); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "DeviceEntryRemoved", want: []datapathv1alpha1.EndpointComponent{compBPF}, breaks: func(c *checked) {
			if err := c.bpf.DeleteDevice(c.hostIdx); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "DeviceEntryOtherPod", want: []datapathv1alpha1.EndpointComponent{compBPF}, breaks: func(c *checked) {
			key, err := c.bpf.Device(c.hostIdx)
			if err != nil {
				c.t.Fatal(err)
			}
			// Another pod's key lets this pod send that pod's addresses.
			if err := c.bpf.PutDevice(c.hostIdx, key+1); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "ProgramDetached", want: []datapathv1alpha1.EndpointComponent{compBPF}, breaks: func(c *checked) {
			c.bpf.DetachEndpoint(c.hostIdx)
		}},
		{name: "IPAMAllocationMissing", want: []datapathv1alpha1.EndpointComponent{compIPAM}, breaks: func(c *checked) {
			if _, err := c.ipam.ReleaseIP(c.t.Context(), &ipamv1alpha1.ReleaseIPRequest{Handle: &ipamv1alpha1.OwnerHandle{ContainerId: "c1", InterfaceName: "eth0"}}); err != nil {
				c.t.Fatal(err)
			}
		}},
		{name: "NetnsMismatch", want: []datapathv1alpha1.EndpointComponent{compNetns}, breaks: func(*checked) {},
			netns: func(c *checked) string { return c.podNS("elsewhere") }},
		{name: "UnexpectedAddress", want: []datapathv1alpha1.EndpointComponent{compPodAddr}, breaks: func(*checked) {},
			expect: []string{"10.244.1.99/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestManager(t, testOpts{dualStack: true})
			ns := e.podNS("pod1")
			ep := e.create("c1", "eth0", ns)
			pod, _ := e.nl.Link(ns, "eth0")
			c := &checked{testEnv: e, ns: ns, att: ep.GetAttachment(), ep: ep, hostIdx: e.hostIndex(ep.GetAttachment()), podIdx: pod.Attrs().Index}
			tc.breaks(c)
			req := &datapathv1alpha1.CheckEndpointRequest{Attachment: c.att, ExpectedAddresses: tc.expect}
			if tc.netns != nil {
				req.NetnsPath = tc.netns(c)
			}
			resp, err := e.m.CheckEndpoint(t.Context(), req)
			if err != nil {
				t.Fatalf("CheckEndpoint: %v", err)
			}
			var got []datapathv1alpha1.EndpointComponent
			for _, p := range resp.GetProblems() {
				got = append(got, p.GetComponent())
				if p.GetMessage() == "" {
					t.Errorf("problem of %v without a message", p.GetComponent())
				}
			}
			healthy := tc.want == nil && tc.has == 0
			if resp.GetHealthy() != healthy {
				t.Errorf("healthy = %v, want %v; problems %v", resp.GetHealthy(), healthy, resp.GetProblems())
			}
			switch {
			case tc.want != nil:
				slices.Sort(got)
				want := slices.Sorted(slices.Values(tc.want))
				if !slices.Equal(got, want) {
					t.Errorf("problems %v, want components %v", resp.GetProblems(), want)
				}
			case tc.has != 0:
				if !slices.Contains(got, tc.has) {
					t.Errorf("problems %v, want one of %v", resp.GetProblems(), tc.has)
				}
			default:
				if len(got) != 0 {
					t.Errorf("healthy endpoint has problems %v", resp.GetProblems())
				}
			}
		})
	}
}

// IPAM not answering is an error for the runtime to retry, not a problem
// of the endpoint; an unknown attachment is not found; a malformed
// expected address is the caller's error, not a problem of the endpoint.
func TestCheckErrors(t *testing.T) {
	e := newTestManager(t, testOpts{})
	ep := e.create("c1", "eth0", e.podNS("pod1"))

	e.ipam.FailNext("GetAllocation", 1, errUnavailable)
	resp, err := e.m.CheckEndpoint(t.Context(), &datapathv1alpha1.CheckEndpointRequest{Attachment: ep.GetAttachment()})
	if status.Code(err) != codes.Unavailable || resp != nil {
		t.Errorf("CheckEndpoint with IPAM down = %v, %v; want no response and Unavailable", resp, err)
	}
	_, err = e.m.CheckEndpoint(t.Context(), &datapathv1alpha1.CheckEndpointRequest{Attachment: attachment("c2", "eth0")})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("CheckEndpoint of an unknown attachment: %v, want ErrNotFound", err)
	}
	_, err = e.m.CheckEndpoint(t.Context(), &datapathv1alpha1.CheckEndpointRequest{Attachment: attachment("c1", "")})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("CheckEndpoint without an interface: %v, want ErrInvalid", err)
	}
	for _, bad := range []string{"10.244.1.2", "not-an-address/32", ""} {
		_, err = e.m.CheckEndpoint(t.Context(), &datapathv1alpha1.CheckEndpointRequest{Attachment: ep.GetAttachment(), ExpectedAddresses: []string{bad}})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckEndpoint expecting %q: %v, want ErrInvalid", bad, err)
		}
	}
}
