package server_test

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
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
