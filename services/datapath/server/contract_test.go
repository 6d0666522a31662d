package server_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/lb"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/server"
)

// TestEndpointContractCodes holds CreateEndpoint, DeleteEndpoint and
// CheckEndpoint to each error their contract comments (datapath.proto)
// document, each case on a fresh node on the fakes that already has pod
// a's endpoint (10.0.1.2). A refused call leaves nothing of itself: the
// allocations are still the endpoints'.
func TestEndpointContractCodes(t *testing.T) {
	type env struct {
		n    *node
		podA string // pod a's namespace
	}
	create := func(e env, req *datapathv1alpha1.CreateEndpointRequest) error {
		_, err := e.n.client.CreateEndpoint(t.Context(), req)
		return err
	}
	createIn := func(id, ifName, netns string) *datapathv1alpha1.CreateEndpointRequest {
		return &datapathv1alpha1.CreateEndpointRequest{
			Attachment: &datapathv1alpha1.Attachment{ContainerId: id, InterfaceName: ifName}, NetnsPath: netns, PodNamespace: "default", PodName: id,
		}
	}
	check := func(e env, req *datapathv1alpha1.CheckEndpointRequest) error {
		_, err := e.n.client.CheckEndpoint(t.Context(), req)
		return err
	}
	del := func(e env, a *datapathv1alpha1.Attachment) error {
		_, err := e.n.client.DeleteEndpoint(t.Context(), &datapathv1alpha1.DeleteEndpointRequest{Attachment: a})
		return err
	}
	for _, tc := range []struct {
		name  string
		block string // the node's pod block; /29 unless set
		// notStarted leaves the node not set up (and without pod a).
		notStarted bool
		// queued: one release waits for IPAM, so its allocation stays.
		queued bool
		call   func(t *testing.T, e env) error
		want   codes.Code
	}{
		// CreateEndpoint: INVALID_ARGUMENT.
		{name: "Create/NoContainerID", call: func(t *testing.T, e env) error { return create(e, createIn("", "eth0", e.n.pod(t, "b"))) }, want: codes.InvalidArgument},
		{name: "Create/NoInterfaceName", call: func(t *testing.T, e env) error { return create(e, createIn("b", "", e.n.pod(t, "b"))) }, want: codes.InvalidArgument},
		{name: "Create/NoNetnsPath", call: func(t *testing.T, e env) error { return create(e, createIn("b", "eth0", "")) }, want: codes.InvalidArgument},
		{name: "Create/InterfaceNameTooLong", call: func(t *testing.T, e env) error {
			return create(e, createIn("b", "eth0123456789abc", e.n.pod(t, "b")))
		}, want: codes.InvalidArgument},
		{name: "Create/InterfaceNameDotDot", call: func(t *testing.T, e env) error { return create(e, createIn("b", "..", e.n.pod(t, "b"))) }, want: codes.InvalidArgument},
		{name: "Create/MalformedRequestedIP", call: func(t *testing.T, e env) error {
			req := createIn("b", "eth0", e.n.pod(t, "b"))
			req.RequestedIps = []string{"10.0.1.x"}
			return create(e, req)
		}, want: codes.InvalidArgument},
		{name: "Create/MTUOutOfRange", call: func(t *testing.T, e env) error {
			req := createIn("b", "eth0", e.n.pod(t, "b"))
			req.Mtu = 100
			return create(e, req)
		}, want: codes.InvalidArgument},
		// FAILED_PRECONDITION: no network namespace, or the node's own.
		{name: "Create/NetnsMissing", call: func(t *testing.T, e env) error {
			return create(e, createIn("b", "eth0", filepath.Join(t.TempDir(), "missing")))
		}, want: codes.FailedPrecondition},
		{name: "Create/NetnsRegularFile", call: func(t *testing.T, e env) error {
			path := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return create(e, createIn("b", "eth0", path))
		}, want: codes.FailedPrecondition},
		{name: "Create/NetnsDirectory", call: func(t *testing.T, e env) error { return create(e, createIn("b", "eth0", t.TempDir())) }, want: codes.FailedPrecondition},
		{name: "Create/NetnsDevNull", call: func(t *testing.T, e env) error { return create(e, createIn("b", "eth0", "/dev/null")) }, want: codes.FailedPrecondition},
		{name: "Create/NetnsOfTheNode", call: func(t *testing.T, e env) error { return create(e, createIn("b", "eth0", nlfake.NodePath)) }, want: codes.FailedPrecondition},
		// ALREADY_EXISTS.
		{name: "Create/AttachmentInAnotherNetns", call: func(t *testing.T, e env) error {
			return create(e, createIn("a", "eth0", e.n.pod(t, "b")))
		}, want: codes.AlreadyExists},
		{name: "Create/InterfaceNameTakenInThePod", call: func(t *testing.T, e env) error { return create(e, createIn("b", "eth0", e.podA)) }, want: codes.AlreadyExists},
		{name: "Create/RequestedIPOfAnotherOwner", call: func(t *testing.T, e env) error {
			req := createIn("b", "eth0", e.n.pod(t, "b"))
			req.RequestedIps = []string{"10.0.1.2"}
			return create(e, req)
		}, want: codes.AlreadyExists},
		// NOT_FOUND: the fake IPAM has one pool, so IPAM's answer for an
		// unknown requested pool is injected; the datapath keeps its code.
		{name: "Create/UnknownRequestedPool", call: func(t *testing.T, e env) error {
			e.n.ipam.FailNext("AllocateIP", 1, status.Error(codes.NotFound, `pool "nope" not found`))
			req := createIn("b", "eth0", e.n.pod(t, "b"))
			req.RequestedPools = []string{"nope"}
			return create(e, req)
		}, want: codes.NotFound},
		// RESOURCE_EXHAUSTED.
		{name: "Create/PoolExhausted", block: "10.0.1.0/30", call: func(t *testing.T, e env) error {
			return create(e, createIn("b", "eth0", e.n.pod(t, "b")))
		}, want: codes.ResourceExhausted},
		{name: "Create/EndpointMapFull", call: func(t *testing.T, e env) error {
			e.n.bpf.SetCapacity(len(e.n.bpf.Endpoints()))
			return create(e, createIn("b", "eth0", e.n.pod(t, "b")))
		}, want: codes.ResourceExhausted},
		// UNAVAILABLE.
		{name: "Create/NotReady", notStarted: true, call: func(t *testing.T, e env) error {
			return create(e, createIn("b", "eth0", e.n.pod(t, "b")))
		}, want: codes.Unavailable},
		{name: "Create/IPAMUnreachable", call: func(t *testing.T, e env) error {
			e.n.ipam.FailNext("AllocateIP", 1, status.Error(codes.Unavailable, "ipam down"))
			return create(e, createIn("b", "eth0", e.n.pod(t, "b")))
		}, want: codes.Unavailable},
		{name: "Create/OK", call: func(t *testing.T, e env) error { return create(e, createIn("b", "eth0", e.n.pod(t, "b"))) }, want: codes.OK},

		// DeleteEndpoint.
		{name: "Delete/NoContainerID", call: func(t *testing.T, e env) error {
			return del(e, &datapathv1alpha1.Attachment{InterfaceName: "eth0"})
		}, want: codes.InvalidArgument},
		{name: "Delete/NoInterfaceName", call: func(t *testing.T, e env) error {
			return del(e, &datapathv1alpha1.Attachment{ContainerId: "a"})
		}, want: codes.InvalidArgument},
		{name: "Delete/Unknown", call: func(t *testing.T, e env) error { return del(e, att("nope")) }, want: codes.OK},
		{name: "Delete/OK", call: func(t *testing.T, e env) error { return del(e, att("a")) }, want: codes.OK},
		{name: "Delete/IPAMUnreachable", queued: true, call: func(t *testing.T, e env) error {
			e.n.ipam.FailNext("ReleaseIP", 1, status.Error(codes.Unavailable, "ipam down"))
			return del(e, att("a"))
		}, want: codes.OK},

		// CheckEndpoint.
		{name: "Check/NoContainerID", call: func(t *testing.T, e env) error {
			return check(e, &datapathv1alpha1.CheckEndpointRequest{Attachment: &datapathv1alpha1.Attachment{InterfaceName: "eth0"}})
		}, want: codes.InvalidArgument},
		{name: "Check/NoInterfaceName", call: func(t *testing.T, e env) error {
			return check(e, &datapathv1alpha1.CheckEndpointRequest{Attachment: &datapathv1alpha1.Attachment{ContainerId: "a"}})
		}, want: codes.InvalidArgument},
		{name: "Check/MalformedExpectedAddress", call: func(t *testing.T, e env) error {
			return check(e, &datapathv1alpha1.CheckEndpointRequest{Attachment: att("a"), ExpectedAddresses: []string{"10.0.1.2"}})
		}, want: codes.InvalidArgument},
		{name: "Check/Unknown", call: func(t *testing.T, e env) error {
			return check(e, &datapathv1alpha1.CheckEndpointRequest{Attachment: att("nope")})
		}, want: codes.NotFound},
		{name: "Check/OK", call: func(t *testing.T, e env) error {
			return check(e, &datapathv1alpha1.CheckEndpointRequest{Attachment: att("a"), NetnsPath: e.podA, ExpectedAddresses: []string{"10.0.1.2/32"}})
		}, want: codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block := tc.block
			if block == "" {
				block = "10.0.1.0/29"
			}
			e := env{n: newNode(t, block)}
			if !tc.notStarted {
				if err := e.n.agent.Start(t.Context()); err != nil {
					t.Fatal(err)
				}
				e.podA = e.n.pod(t, "a")
				if err := create(e, createIn("a", "eth0", e.podA)); err != nil {
					t.Fatalf("create pod a: %v", err)
				}
			}
			if got := status.Code(tc.call(t, e)); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
			eps, err := e.n.agent.Endpoints().ListEndpoints()
			if err != nil {
				t.Fatal(err)
			}
			want := len(eps)
			if tc.queued {
				want++
			}
			// A DEL leaves its release to the release worker: one pass of it.
			e.n.agent.Endpoints().RetryReleases(t.Context())
			if allocs := e.n.ipam.Allocations(); len(allocs) != want {
				t.Errorf("%d IPAM allocations, want %d: %v", len(allocs), want, allocs)
			}
		})
	}
}

// TestServiceContractCodes holds UpsertService, UpsertServices,
// DeleteService and ListServices to each error their contract comments
// (datapath.proto) document, each case on a fresh node on the fakes whose
// service map holds frontend a (10.96.0.10:80/TCP). A refused call
// changes no entry.
func TestServiceContractCodes(t *testing.T) {
	tcp, udp := commonv1alpha1.Protocol_PROTOCOL_TCP, commonv1alpha1.Protocol_PROTOCOL_UDP
	svc := func(addr string, port uint32, backends ...string) *datapathv1alpha1.Service {
		s := &datapathv1alpha1.Service{
			Frontend: &datapathv1alpha1.Frontend{Address: addr, Port: port, Protocol: tcp},
			Type:     datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP,
		}
		for _, b := range backends {
			s.Backends = append(s.Backends, &datapathv1alpha1.Backend{Address: b, Port: 8080})
		}
		return s
	}
	a := svc("10.96.0.10", 80, "10.0.1.5")
	upsert := func(n *node, s *datapathv1alpha1.Service, rev string) error {
		_, err := n.client.UpsertService(t.Context(), &datapathv1alpha1.UpsertServiceRequest{Service: s, ExpectedRevision: rev})
		return err
	}
	batch := func(n *node, req *datapathv1alpha1.UpsertServicesRequest) error {
		_, err := n.client.UpsertServices(t.Context(), req)
		return err
	}
	del := func(n *node, fe *datapathv1alpha1.Frontend, rev string) error {
		_, err := n.client.DeleteService(t.Context(), &datapathv1alpha1.DeleteServiceRequest{Frontend: fe, ExpectedRevision: rev})
		return err
	}
	list := func(n *node, req *datapathv1alpha1.ListServicesRequest) error {
		_, err := n.client.ListServices(t.Context(), req)
		return err
	}
	edit := func(f func(s *datapathv1alpha1.Service)) *datapathv1alpha1.Service {
		s := svc("10.96.0.20", 80, "10.0.1.6")
		f(s)
		return s
	}
	for _, tc := range []struct {
		name       string
		notStarted bool
		call       func(t *testing.T, n *node) error
		want       codes.Code
		changes    bool // the call may change the entries
	}{
		// UpsertService: INVALID_ARGUMENT.
		{name: "Upsert/MalformedAddress", call: func(_ *testing.T, n *node) error {
			return upsert(n, edit(func(s *datapathv1alpha1.Service) { s.Frontend.Address = "10.96.0" }), "")
		}, want: codes.InvalidArgument},
		{name: "Upsert/Port0", call: func(_ *testing.T, n *node) error {
			return upsert(n, edit(func(s *datapathv1alpha1.Service) { s.Frontend.Port = 0 }), "")
		}, want: codes.InvalidArgument},
		{name: "Upsert/PortAbove65535", call: func(_ *testing.T, n *node) error {
			return upsert(n, edit(func(s *datapathv1alpha1.Service) { s.Backends[0].Port = 65536 }), "")
		}, want: codes.InvalidArgument},
		{name: "Upsert/ProtocolICMP", call: func(_ *testing.T, n *node) error {
			return upsert(n, edit(func(s *datapathv1alpha1.Service) { s.Frontend.Protocol = commonv1alpha1.Protocol_PROTOCOL_ICMP }), "")
		}, want: codes.InvalidArgument},
		{name: "Upsert/BackendOfAnotherFamily", call: func(_ *testing.T, n *node) error {
			return upsert(n, edit(func(s *datapathv1alpha1.Service) { s.Backends[0].Address = "2001:db8::1" }), "")
		}, want: codes.InvalidArgument},
		{name: "Upsert/UnspecifiedType", call: func(_ *testing.T, n *node) error {
			return upsert(n, edit(func(s *datapathv1alpha1.Service) { s.Type = 0 }), "")
		}, want: codes.InvalidArgument},
		{name: "Upsert/TooManyBackends", call: func(_ *testing.T, n *node) error {
			return upsert(n, edit(func(s *datapathv1alpha1.Service) {
				for i := range lb.MaxBackends {
					s.Backends = append(s.Backends, &datapathv1alpha1.Backend{Address: "10.0.2.1", Port: uint32(i + 1)})
				}
			}), "")
		}, want: codes.InvalidArgument},
		// RESOURCE_EXHAUSTED, ABORTED, OK.
		{name: "Upsert/MapFull", call: func(_ *testing.T, n *node) error {
			n.bpf.SetServiceCapacity(1)
			return upsert(n, svc("10.96.0.20", 80), "")
		}, want: codes.ResourceExhausted},
		{name: "Upsert/StaleRevision", call: func(_ *testing.T, n *node) error {
			return upsert(n, svc("10.96.0.10", 80, "10.0.1.7"), "0000000000000000")
		}, want: codes.Aborted},
		{name: "Upsert/RetryWithRevision", call: func(_ *testing.T, n *node) error { return upsert(n, a, "0000000000000000") }, want: codes.OK},
		{name: "Upsert/OK", call: func(_ *testing.T, n *node) error { return upsert(n, svc("10.96.0.20", 80), "") }, want: codes.OK, changes: true},
		{name: "Upsert/NotReady", notStarted: true, call: func(_ *testing.T, n *node) error { return upsert(n, a, "") }, want: codes.Unavailable},

		// UpsertServices.
		{name: "Batch/OneBadEntry", call: func(_ *testing.T, n *node) error {
			return batch(n, &datapathv1alpha1.UpsertServicesRequest{Services: []*datapathv1alpha1.Service{svc("10.96.0.20", 80), svc("10.96.0.21", 0)}})
		}, want: codes.InvalidArgument},
		{name: "Batch/FrontendTwice", call: func(_ *testing.T, n *node) error {
			return batch(n, &datapathv1alpha1.UpsertServicesRequest{Services: []*datapathv1alpha1.Service{svc("10.96.0.20", 80), svc("10.96.0.20", 80)}})
		}, want: codes.InvalidArgument},
		{name: "Batch/UpsertedAndDeleted", call: func(_ *testing.T, n *node) error {
			return batch(n, &datapathv1alpha1.UpsertServicesRequest{Services: []*datapathv1alpha1.Service{svc("10.96.0.20", 80)}, Deletes: []*datapathv1alpha1.Frontend{svc("10.96.0.20", 80).GetFrontend()}})
		}, want: codes.InvalidArgument},
		{name: "Batch/DeletesWithReplaceAll", call: func(_ *testing.T, n *node) error {
			return batch(n, &datapathv1alpha1.UpsertServicesRequest{ReplaceAll: true, Deletes: []*datapathv1alpha1.Frontend{a.GetFrontend()}})
		}, want: codes.InvalidArgument},
		{name: "Batch/MapFull", call: func(_ *testing.T, n *node) error {
			n.bpf.SetServiceCapacity(2)
			return batch(n, &datapathv1alpha1.UpsertServicesRequest{Services: []*datapathv1alpha1.Service{svc("10.96.0.20", 80), svc("10.96.0.21", 80)}})
		}, want: codes.ResourceExhausted},
		{name: "Batch/OK", call: func(_ *testing.T, n *node) error {
			return batch(n, &datapathv1alpha1.UpsertServicesRequest{Services: []*datapathv1alpha1.Service{svc("10.96.0.20", 80)}, ReplaceAll: true})
		}, want: codes.OK, changes: true},

		// DeleteService.
		{name: "Delete/MalformedFrontend", call: func(_ *testing.T, n *node) error {
			return del(n, &datapathv1alpha1.Frontend{Address: "10.96.0.10", Port: 80, Protocol: 0}, "")
		}, want: codes.InvalidArgument},
		{name: "Delete/NoFrontend", call: func(_ *testing.T, n *node) error { return del(n, nil, "") }, want: codes.InvalidArgument},
		{name: "Delete/StaleRevision", call: func(_ *testing.T, n *node) error { return del(n, a.GetFrontend(), "0000000000000000") }, want: codes.Aborted},
		{name: "Delete/Unknown", call: func(_ *testing.T, n *node) error {
			return del(n, &datapathv1alpha1.Frontend{Address: "10.96.0.10", Port: 80, Protocol: udp}, "")
		}, want: codes.OK},
		{name: "Delete/UnknownWithRevision", call: func(_ *testing.T, n *node) error {
			return del(n, &datapathv1alpha1.Frontend{Address: "10.96.0.10", Port: 80, Protocol: udp}, "0000000000000000")
		}, want: codes.OK},
		{name: "Delete/OK", call: func(_ *testing.T, n *node) error { return del(n, a.GetFrontend(), "") }, want: codes.OK, changes: true},

		// ListServices.
		{name: "List/BadToken", call: func(_ *testing.T, n *node) error {
			return list(n, &datapathv1alpha1.ListServicesRequest{PageToken: "garbage"})
		}, want: codes.InvalidArgument},
		{name: "List/TokenOfOtherFilters", call: func(_ *testing.T, n *node) error {
			if err := upsert(n, svc("10.96.0.20", 80), ""); err != nil {
				return err
			}
			first, err := n.client.ListServices(t.Context(), &datapathv1alpha1.ListServicesRequest{PageSize: 1})
			if err != nil || first.GetNextPageToken() == "" {
				t.Fatalf("first page = %v, %v; want a next page", first, err)
			}
			return list(n, &datapathv1alpha1.ListServicesRequest{PageToken: first.GetNextPageToken(), ServiceNamespace: "default"})
		}, want: codes.InvalidArgument, changes: true},
		{name: "List/NameWithoutNamespace", call: func(_ *testing.T, n *node) error {
			return list(n, &datapathv1alpha1.ListServicesRequest{ServiceName: "web"})
		}, want: codes.InvalidArgument},
		{name: "List/NegativePageSize", call: func(_ *testing.T, n *node) error {
			return list(n, &datapathv1alpha1.ListServicesRequest{PageSize: -1})
		}, want: codes.InvalidArgument},
		{name: "List/OK", call: func(_ *testing.T, n *node) error { return list(n, &datapathv1alpha1.ListServicesRequest{}) }, want: codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, "10.0.1.0/29")
			if !tc.notStarted {
				if err := n.agent.Start(t.Context()); err != nil {
					t.Fatal(err)
				}
				if err := upsert(n, a, ""); err != nil {
					t.Fatalf("upsert a: %v", err)
				}
			}
			before := n.bpf.LBEntries()
			if got := status.Code(tc.call(t, n)); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
			if after := n.bpf.LBEntries(); !tc.changes && len(after) != len(before) {
				t.Errorf("%d entries after a refused call, want %d", len(after), len(before))
			}
		})
	}
	// FAILED_PRECONDITION: a node without the load balancer's maps.
	s := server.New(nil, nil, lb.New(lb.Config{NodeName: "node-a"}, nil, slog.New(slog.DiscardHandler)), nil, 0)
	if _, err := s.UpsertService(t.Context(), &datapathv1alpha1.UpsertServiceRequest{Service: a}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("UpsertService without maps: %v, want FailedPrecondition", err)
	}
	if _, err := s.ListServices(t.Context(), &datapathv1alpha1.ListServicesRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ListServices without maps: %v, want FailedPrecondition", err)
	}
}

// TestListServicesPages pages through ListServices over gRPC: every
// frontend once, in order, the token valid only for its filters.
func TestListServicesPages(t *testing.T) {
	n := newNode(t, "10.0.1.0/29")
	if err := n.agent.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var svcs []*datapathv1alpha1.Service
	for _, addr := range []string{"10.96.0.12", "2001:db8::1", "10.96.0.2", "10.96.0.10"} {
		svcs = append(svcs, &datapathv1alpha1.Service{
			Frontend: &datapathv1alpha1.Frontend{Address: addr, Port: 80, Protocol: commonv1alpha1.Protocol_PROTOCOL_TCP},
			Type:     datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP, ServiceNamespace: "default", ServiceName: "web",
		})
	}
	resp, err := n.client.UpsertServices(t.Context(), &datapathv1alpha1.UpsertServicesRequest{Services: svcs})
	if err != nil || resp.GetChanged() != int32(len(svcs)) {
		t.Fatalf("UpsertServices = %v, %v", resp, err)
	}
	var got []string
	req := &datapathv1alpha1.ListServicesRequest{PageSize: 1, ServiceNamespace: "default"}
	for pages := 0; ; pages++ {
		page, err := n.client.ListServices(t.Context(), req)
		if err != nil || pages > len(svcs) {
			t.Fatalf("ListServices = %v (page %d)", err, pages)
		}
		for _, s := range page.GetServices() {
			got = append(got, s.GetFrontend().GetAddress())
		}
		if page.GetNextPageToken() == "" {
			break
		}
		req.PageToken = page.GetNextPageToken()
	}
	if want := []string{"10.96.0.2", "10.96.0.10", "10.96.0.12", "2001:db8::1"}; !slices.Equal(got, want) {
		t.Errorf("paged through %v, want %v", got, want)
	}
}
