package endpoint

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/veth"
	"github.com/axon-cni/axon/services/ipam/client/errinfo"
)

func hasRouteTo(routes []netlink.Route, dst string, link int) bool {
	return slices.ContainsFunc(routes, func(r netlink.Route) bool {
		return r.LinkIndex == link && r.Dst != nil && r.Dst.String() == dst
	})
}

func hasDefaultVia(routes []netlink.Route, gw netip.Addr, link int) bool {
	return slices.ContainsFunc(routes, func(r netlink.Route) bool {
		return r.LinkIndex == link && veth.IsDefaultRoute(r) && r.Gw.Equal(gw.AsSlice())
	})
}

// Create wires both ends of the veth, the map entries and program, the
// record and the IPAM allocation, for each family of the node.
func TestCreateWiresEverything(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dualStack bool
		gateways  []netip.Addr
	}{
		{"IPv4", false, []netip.Addr{gateway4}},
		{"DualStack", true, []netip.Addr{gateway4, gateway6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestManager(t, testOpts{dualStack: tc.dualStack})
			ns := e.podNS("pod1")
			att := attachment("c1", "eth0")
			ep := e.create("c1", "eth0", ns)

			addrs := Addrs(ep)
			if len(addrs) != len(tc.gateways) {
				t.Fatalf("endpoint addresses %v, want one per family of %v", addrs, tc.gateways)
			}
			allocs := e.ipam.Allocations()
			if len(allocs) != 1 || len(allocs[0].GetAddresses()) != len(addrs) {
				t.Fatalf("IPAM allocations %v, want one with %d addresses", allocs, len(addrs))
			}
			hostName := HostName(att)
			host, ok := e.nl.Link(nlfake.NodeNS, hostName)
			if !ok {
				t.Fatalf("no host veth %s", hostName)
			}
			pod, ok := e.nl.Link(ns, "eth0")
			if !ok {
				t.Fatal("no eth0 in the pod")
			}
			if host.Attrs().Flags&net.FlagUp == 0 || pod.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("veth ends not up: host %v, pod %v", host.Attrs().Flags, pod.Attrs().Flags)
			}
			if host.Attrs().MTU != nodeMTU || pod.Attrs().MTU != nodeMTU || ep.GetMtu() != nodeMTU {
				t.Errorf("MTU host %d pod %d endpoint %d, want the node's %d", host.Attrs().MTU, pod.Attrs().MTU, ep.GetMtu(), nodeMTU)
			}
			podAddrs := map[string]bool{}
			for _, a := range e.nl.Addrs(ns, "eth0") {
				podAddrs[a.IPNet.String()] = true
			}
			nodeRoutes := e.nl.Routes(nlfake.NodeNS)
			podRoutes := e.nl.Routes(ns)
			for i, p := range addrs {
				if !podAddrs[p.String()] {
					t.Errorf("pod lacks %s; has %v", p, podAddrs)
				}
				if !hasRouteTo(nodeRoutes, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()).String(), host.Attrs().Index) {
					t.Errorf("no host route to %s via %s: %v", p.Addr(), hostName, nodeRoutes)
				}
				gw := tc.gateways[i]
				if !hasRouteTo(podRoutes, netip.PrefixFrom(gw, gw.BitLen()).String(), pod.Attrs().Index) {
					t.Errorf("no link route to the gateway %s in the pod: %v", gw, podRoutes)
				}
				if !hasDefaultVia(podRoutes, gw, pod.Attrs().Index) {
					t.Errorf("no default route via %s in the pod: %v", gw, podRoutes)
				}
				if !slices.ContainsFunc(e.nl.Neighs(ns), func(n netlink.Neigh) bool {
					return n.IP.Equal(gw.AsSlice()) && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == host.Attrs().HardwareAddr.String()
				}) {
					t.Errorf("no permanent neighbour %s → %s in the pod: %v", gw, host.Attrs().HardwareAddr, e.nl.Neighs(ns))
				}
				entry, err := e.bpf.Endpoint(p.Addr())
				if err != nil {
					t.Errorf("no endpoint map entry for %s: %v", p.Addr(), err)
					continue
				}
				if entry.Ifindex != host.Attrs().Index || entry.ID != ep.GetEndpointId() ||
					entry.PodMAC.String() != pod.Attrs().HardwareAddr.String() || entry.HostMAC.String() != host.Attrs().HardwareAddr.String() {
					t.Errorf("map entry for %s = %+v; want ifindex %d, id %d, MACs pod %s host %s", p.Addr(), entry,
						host.Attrs().Index, ep.GetEndpointId(), pod.Attrs().HardwareAddr, host.Attrs().HardwareAddr)
				}
			}
			rec := e.loadRecord(att)
			if key, ok := e.bpf.Devices()[host.Attrs().Index]; !ok || key == 0 || key != rec.PodKey {
				t.Errorf("device entry of %s = %d (present %v), want the recorded pod key %d", hostName, key, ok, rec.PodKey)
			}
			if !e.bpf.IsEndpointDevice(host.Attrs().Index) {
				t.Errorf("pod program not attached to %s", hostName)
			}
			if rec.IPAMSequence != allocs[0].GetSequence() || rec.HostMAC != host.Attrs().HardwareAddr.String() || rec.PodMAC != pod.Attrs().HardwareAddr.String() {
				t.Errorf("record %+v does not match allocation sequence %d and the veth's MACs", rec, allocs[0].GetSequence())
			}
			got, err := e.m.GetEndpoint(att)
			if err != nil || !proto.Equal(got, ep) {
				t.Errorf("GetEndpoint = %v, %v; want the created endpoint", got, err)
			}
		})
	}
}

// A retry of the same ADD returns the endpoint already wired and allocates
// nothing more; the same attachment into another namespace is refused.
func TestCreateRetry(t *testing.T) {
	e := newTestManager(t, testOpts{})
	ns := e.podNS("pod1")
	first := e.create("c1", "eth0", ns)
	again := e.create("c1", "eth0", ns)
	if !proto.Equal(first, again) {
		t.Errorf("retry returned %v, want %v", again, first)
	}
	if n := e.ipam.Calls("AllocateIP"); n != 1 {
		t.Errorf("AllocateIP called %d times, want 1", n)
	}
	if l := e.linkNames(nlfake.NodeNS); len(l) != 1 {
		t.Errorf("node links %v, want one veth", l)
	}

	other := e.podNS("pod2")
	_, err := e.m.CreateEndpoint(t.Context(), createReq("c1", "eth0", other))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("create into another netns: %v, want ErrExists", err)
	}
	if l := e.linkNames(other); len(l) != 0 {
		t.Errorf("links made in the other namespace: %v", l)
	}
	if len(e.ipam.Allocations()) != 1 || len(e.records()) != 1 {
		t.Errorf("allocations %v, records %v; want the first endpoint's only", e.ipam.Allocations(), e.records())
	}
}

// Malformed requests are refused as invalid before anything is allocated.
func TestCreateInvalid(t *testing.T) {
	e := newTestManager(t, testOpts{})
	ns := e.podNS("pod1")
	for _, tc := range []struct {
		name string
		req  *datapathv1alpha1.CreateEndpointRequest
	}{
		{"NoContainerID", createReq("", "eth0", ns)},
		{"NoInterface", createReq("c1", "", ns)},
		{"InterfaceTooLong", createReq("c1", "eth0123456789abc", ns)},
		{"InterfaceWithSlash", createReq("c1", "eth/0", ns)},
		{"InterfaceWithSpace", createReq("c1", "eth 0", ns)},
		{"InterfaceWithTab", createReq("c1", "eth\t0", ns)},
		{"InterfaceWithColon", createReq("c1", "eth0:1", ns)},
		{"InterfaceDot", createReq("c1", ".", ns)},
		{"InterfaceDotDot", createReq("c1", "..", ns)},
		{"NoNetns", createReq("c1", "eth0", "")},
		{"MTUTooSmall", func() *datapathv1alpha1.CreateEndpointRequest {
			r := createReq("c1", "eth0", ns)
			r.Mtu = nodedev.MinPodMTU - 1
			return r
		}()},
		{"MTUAboveNode", func() *datapathv1alpha1.CreateEndpointRequest {
			r := createReq("c1", "eth0", ns)
			r.Mtu = nodeMTU + 1
			return r
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.ipam.Calls("AllocateIP")
			_, err := e.m.CreateEndpoint(t.Context(), tc.req)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("CreateEndpoint: %v, want ErrInvalid", err)
			}
			if n := e.ipam.Calls("AllocateIP") - before; n != 0 {
				t.Errorf("AllocateIP called %d times, want none", n)
			}
			e.assertEmptyNode()
		})
	}
}

// A netns_path that is no network namespace, or the node's own, is
// refused before anything is allocated; nothing is wired anywhere, the
// node's namespace included.
func TestCreateUnusableNetns(t *testing.T) {
	e := newTestManager(t, testOpts{})
	file := filepath.Join(e.nsDir, "plain-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, netns string }{
		{"Missing", filepath.Join(e.nsDir, "missing")},
		{"File", file},
		{"Directory", e.nsDir},
		{"DevNull", "/dev/null"},
		{"NodeNamespace", nlfake.NodePath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.CreateEndpoint(t.Context(), createReq("c1", "eth0", tc.netns))
			if !errors.Is(err, ErrNetNS) {
				t.Fatalf("CreateEndpoint: %v, want ErrNetNS", err)
			}
			if n := e.ipam.Calls("AllocateIP"); n != 0 {
				t.Errorf("AllocateIP called %d times, want none", n)
			}
			if n := e.nl.Calls(nlfake.NodeNS, "LinkAdd"); n != 0 {
				t.Errorf("LinkAdd called %d times in the node namespace, want none", n)
			}
			e.assertEmptyNode()
		})
	}
}

// A pod MTU below the node's is honoured on both ends.
func TestCreateSmallerMTU(t *testing.T) {
	e := newTestManager(t, testOpts{})
	ns := e.podNS("pod1")
	req := createReq("c1", "eth0", ns)
	req.Mtu = 1280
	ep, err := e.m.CreateEndpoint(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := e.nl.Link(nlfake.NodeNS, HostName(req.GetAttachment()))
	pod, _ := e.nl.Link(ns, "eth0")
	if ep.GetMtu() != 1280 || host.Attrs().MTU != 1280 || pod.Attrs().MTU != 1280 {
		t.Errorf("MTU endpoint %d host %d pod %d, want 1280", ep.GetMtu(), host.Attrs().MTU, pod.Attrs().MTU)
	}
}

// A node not set up yet refuses endpoints before touching IPAM.
func TestCreateNotReady(t *testing.T) {
	e := newTestManager(t, testOpts{ready: func() error { return errors.New("no node devices yet") }})
	ns := e.podNS("pod1")
	_, err := e.m.CreateEndpoint(t.Context(), createReq("c1", "eth0", ns))
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("CreateEndpoint: %v, want ErrNotReady", err)
	}
	if n := e.ipam.Calls("AllocateIP"); n != 0 {
		t.Errorf("AllocateIP called %d times on a node not ready", n)
	}
	e.assertEmptyNode()
}

// The second attachment of a pod (another network) shares the pod's key
// and takes no default route; another pod gets a key of its own.
func TestCreatePodKeys(t *testing.T) {
	e := newTestManager(t, testOpts{})
	ns1, ns2 := e.podNS("pod1"), e.podNS("pod2")
	ep0 := e.create("c1", "eth0", ns1)
	ep1 := e.create("c1", "net1", ns1)
	e.create("c2", "eth0", ns2)

	devs := e.bpf.Devices()
	k0 := devs[e.hostIndex(attachment("c1", "eth0"))]
	k1 := devs[e.hostIndex(attachment("c1", "net1"))]
	k2 := devs[e.hostIndex(attachment("c2", "eth0"))]
	if k0 == 0 || k0 != k1 {
		t.Errorf("pod c1's attachments have keys %d and %d, want one shared non-zero key", k0, k1)
	}
	if k2 == 0 || k2 == k0 {
		t.Errorf("pod c2 has key %d, pod c1 %d; want different non-zero keys", k2, k0)
	}
	if rk := e.loadRecord(attachment("c1", "net1")).PodKey; rk != k1 {
		t.Errorf("net1's record has pod key %d, the device map %d", rk, k1)
	}

	hasDefault := func(ep *datapathv1alpha1.Endpoint) bool {
		return slices.ContainsFunc(ep.GetRoutes(), func(r *datapathv1alpha1.Route) bool { return r.GetDestination() == "0.0.0.0/0" })
	}
	if !hasDefault(ep0) || hasDefault(ep1) {
		t.Errorf("default route in eth0's endpoint %v, net1's %v; want eth0's only", ep0.GetRoutes(), ep1.GetRoutes())
	}
	net1, _ := e.nl.Link(ns1, "net1")
	if hasDefaultVia(e.nl.Routes(ns1), gateway4, net1.Attrs().Index) {
		t.Errorf("net1 took a default route in the pod: %v", e.nl.Routes(ns1))
	}
	if ep0.GetEndpointId() == ep1.GetEndpointId() {
		t.Errorf("attachments share endpoint ID %d", ep0.GetEndpointId())
	}
}

// IPAM's refusal keeps its code (the CNI shim maps it) and leaves nothing.
func TestCreateIPAMFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		code   codes.Code
		reason string // IPAM's ErrorInfo reason, which must be kept
	}{
		{"Unavailable", errUnavailable, codes.Unavailable, ""},
		{"Exhausted", status.Error(codes.ResourceExhausted, "too large"), codes.ResourceExhausted, ""},
		{
			"pool exhausted",
			errinfo.With(status.New(codes.ResourceExhausted, "pool full"), errinfo.ReasonPoolExhausted).Err(),
			codes.ResourceExhausted, errinfo.ReasonPoolExhausted,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestManager(t, testOpts{})
			ns := e.podNS("pod1")
			e.ipam.FailNext("AllocateIP", 1, tc.err)
			_, err := e.m.CreateEndpoint(t.Context(), createReq("c1", "eth0", ns))
			if status.Code(err) != tc.code || errinfo.Reason(err) != tc.reason {
				t.Fatalf("CreateEndpoint: %v (reason %q), want code %v reason %q", err, errinfo.Reason(err), tc.code, tc.reason)
			}
			e.assertEmptyNode()
			if l := e.linkNames(ns); len(l) != 0 {
				t.Errorf("pod links: %v", l)
			}
		})
	}
}

// An interface name the pod already uses is refused as existing, and the allocation
// made for it released; the pod's own interface stays.
func TestCreateInterfaceTaken(t *testing.T) {
	e := newTestManager(t, testOpts{})
	ns := e.podNS("pod1")
	e.create("c1", "eth0", ns)
	// Another container ID into the same namespace with the same name
	// (a runtime's bug): the name is taken in the pod.
	if _, err := e.m.CreateEndpoint(t.Context(), createReq("c2", "eth0", ns)); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateEndpoint with eth0 taken: %v, want ErrExists", err)
	}
	e.assertNoEndpoint(attachment("c2", "eth0"), "")
	if l := e.linkNames(ns); len(l) != 1 {
		t.Errorf("pod links %v, want c1's eth0", l)
	}
	if l := e.linkNames(nlfake.NodeNS); len(l) != 1 || l[0] != HostName(attachment("c1", "eth0")) {
		t.Errorf("node links %v, want c1's veth", l)
	}
}

// Without the eBPF datapath an endpoint is the veth, record and
// allocation alone.
func TestCreateWithoutBPF(t *testing.T) {
	e := newTestManager(t, testOpts{noBPF: true})
	ns := e.podNS("pod1")
	ep := e.create("c1", "eth0", ns)
	resp, err := e.m.CheckEndpoint(t.Context(), &datapathv1alpha1.CheckEndpointRequest{Attachment: ep.GetAttachment()})
	if err != nil || !resp.GetHealthy() {
		t.Fatalf("CheckEndpoint = %v, %v; want healthy", resp, err)
	}
	if _, err := e.m.DeleteEndpoint(t.Context(), ep.GetAttachment()); err != nil {
		t.Fatal(err)
	}
	e.assertEmptyNode()
}
