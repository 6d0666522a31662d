package server_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/agent"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
	"github.com/axon-cni/axon/services/datapath/nl/nlfake"
	"github.com/axon-cni/axon/services/datapath/nodedev"
	"github.com/axon-cni/axon/services/datapath/server"
)

// node is a real agent on fakes behind the gRPC service, over an
// in-memory connection.
type node struct {
	agent  *agent.Agent
	ipam   *fakeipam.IPAM
	nl     *nlfake.Fake
	bpf    *bpffake.Fake
	client datapathv1alpha1.DatapathServiceClient
}

func newNode(t *testing.T, block string) *node {
	t.Helper()
	n := &node{nl: nlfake.New(), ipam: fakeipam.New(fakeipam.Config{Node: "node-a", Blocks: []netip.Prefix{netip.MustParsePrefix(block)}})}
	bpf := bpffake.New()
	bpf.SetInterfaces(func() map[string]int { return n.nl.Indexes(nlfake.NodeNS) })
	n.bpf = bpf
	h, err := n.nl.Node()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0p"}); err != nil {
		t.Fatal(err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 10), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	n.agent, err = agent.New(agent.Config{
		NodeName: "node-a", NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, RoutingMode: nodedev.ModeTunnel, StateDir: t.TempDir(),
	}, agent.Deps{Namespaces: n.nl, Datapath: bpf, LB: bpf, IPAM: n.ipam, Sysctl: func(string, string) error { return nil }}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.agent.Close)

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	datapathv1alpha1.RegisterDatapathServiceServer(srv, server.New(n.agent.Endpoints(), n.agent.Remotes(), n.agent.Services(), n.agent, 0))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	n.client = datapathv1alpha1.NewDatapathServiceClient(conn)
	return n
}

// pod makes a pod namespace and returns its path.
func (n *node) pod(t *testing.T, id string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), id)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n.nl.AddNamespace(path)
	return path
}

func att(id string) *datapathv1alpha1.Attachment {
	return &datapathv1alpha1.Attachment{ContainerId: id, InterfaceName: "eth0"}
}

// TestStatusCodes calls every RPC on a real agent and checks the code each
// failure reaches the client with.
func TestStatusCodes(t *testing.T) {
	n := newNode(t, "10.0.1.0/30") // one address for pods: 10.0.1.2
	c := n.client
	ctx := t.Context()
	code := func(err error) codes.Code { return status.Code(err) }

	// Before the node is set up.
	podA := n.pod(t, "a")
	if _, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{Attachment: att("a"), NetnsPath: podA}); code(err) != codes.Unavailable {
		t.Errorf("CreateEndpoint before Start: %v, want Unavailable", err)
	}
	if _, err := c.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: &datapathv1alpha1.RemoteNode{Name: "node-b"}}); code(err) != codes.Unavailable {
		t.Errorf("UpsertRemoteNode before Start: %v, want Unavailable", err)
	}
	if r, err := c.CheckReady(ctx, &datapathv1alpha1.CheckReadyRequest{}); err != nil || r.GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_NOT_READY {
		t.Errorf("CheckReady before Start: %v, %v; want NOT_READY", r, err)
	}
	if err := n.agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := c.CheckReady(ctx, &datapathv1alpha1.CheckReadyRequest{}); err != nil || r.GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_READY {
		t.Errorf("CheckReady after Start: %v, %v; want READY", r, err)
	}
	created, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{Attachment: att("a"), NetnsPath: podA, PodNamespace: "default", PodName: "a"})
	if err != nil {
		t.Fatalf("CreateEndpoint: %v", err)
	}
	if got := created.GetEndpoint().GetIps(); len(got) != 1 {
		t.Fatalf("created endpoint IPs %v, want one", got)
	}

	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"CreateEndpoint without attachment", func() error {
			_, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{NetnsPath: podA})
			return err
		}, codes.InvalidArgument},
		{"CreateEndpoint with a missing netns", func() error {
			_, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{Attachment: att("x"), NetnsPath: "/nonexistent/netns"})
			return err
		}, codes.FailedPrecondition},
		{"CreateEndpoint of an attachment wired elsewhere", func() error {
			_, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{Attachment: att("a"), NetnsPath: n.pod(t, "other")})
			return err
		}, codes.AlreadyExists},
		{"CreateEndpoint repeated: the same endpoint", func() error {
			r, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{Attachment: att("a"), NetnsPath: podA})
			if err == nil && r.GetEndpoint().GetIps()[0].GetAddress() != created.GetEndpoint().GetIps()[0].GetAddress() {
				return status.Error(codes.Unknown, "a repeated ADD changed the address")
			}
			return err
		}, codes.OK},
		{"CreateEndpoint with the pool exhausted keeps IPAM's code", func() error {
			_, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{Attachment: att("b"), NetnsPath: n.pod(t, "b")})
			return err
		}, codes.ResourceExhausted},
		{"CreateEndpoint with IPAM down", func() error {
			n.ipam.FailNext("AllocateIP", 1, status.Error(codes.Unavailable, "ipam down"))
			_, err := c.CreateEndpoint(ctx, &datapathv1alpha1.CreateEndpointRequest{Attachment: att("c"), NetnsPath: n.pod(t, "c")})
			return err
		}, codes.Unavailable},
		{"GetEndpoint of an unknown attachment", func() error {
			_, err := c.GetEndpoint(ctx, &datapathv1alpha1.GetEndpointRequest{Attachment: att("nope")})
			return err
		}, codes.NotFound},
		{"GetEndpoint", func() error {
			_, err := c.GetEndpoint(ctx, &datapathv1alpha1.GetEndpointRequest{Attachment: att("a")})
			return err
		}, codes.OK},
		{"CheckEndpoint of an unknown attachment", func() error {
			_, err := c.CheckEndpoint(ctx, &datapathv1alpha1.CheckEndpointRequest{Attachment: att("nope")})
			return err
		}, codes.NotFound},
		{"CheckEndpoint without attachment", func() error {
			_, err := c.CheckEndpoint(ctx, &datapathv1alpha1.CheckEndpointRequest{})
			return err
		}, codes.InvalidArgument},
		{"CheckEndpoint finds no problem", func() error {
			r, err := c.CheckEndpoint(ctx, &datapathv1alpha1.CheckEndpointRequest{Attachment: att("a"), NetnsPath: podA})
			if err == nil && len(r.GetProblems()) > 0 {
				return status.Errorf(codes.Unknown, "problems: %v", r.GetProblems())
			}
			return err
		}, codes.OK},
		{"ListEndpoints with a bad page token", func() error {
			_, err := c.ListEndpoints(ctx, &datapathv1alpha1.ListEndpointsRequest{PageToken: "!!"})
			return err
		}, codes.InvalidArgument},
		{"ListEndpoints with a negative page size", func() error {
			_, err := c.ListEndpoints(ctx, &datapathv1alpha1.ListEndpointsRequest{PageSize: -1})
			return err
		}, codes.InvalidArgument},
		{"GarbageCollectEndpoints with a negative min_age", func() error {
			_, err := c.GarbageCollectEndpoints(ctx, &datapathv1alpha1.GarbageCollectEndpointsRequest{MinAge: durationpb.New(-1)})
			return err
		}, codes.InvalidArgument},
		{"GarbageCollectEndpoints with an incomplete valid attachment", func() error {
			_, err := c.GarbageCollectEndpoints(ctx, &datapathv1alpha1.GarbageCollectEndpointsRequest{ValidAttachments: []*datapathv1alpha1.Attachment{{ContainerId: "a"}}})
			return err
		}, codes.InvalidArgument},
		{"GarbageCollectEndpoints dry run keeping a", func() error {
			r, err := c.GarbageCollectEndpoints(ctx, &datapathv1alpha1.GarbageCollectEndpointsRequest{ValidAttachments: []*datapathv1alpha1.Attachment{att("a")}, DryRun: true})
			if err == nil && len(r.GetRemoved()) > 0 {
				return status.Errorf(codes.Unknown, "removed %v", r.GetRemoved())
			}
			return err
		}, codes.OK},
		{"UpsertRemoteNode invalid", func() error {
			_, err := c.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: &datapathv1alpha1.RemoteNode{Name: "node-b", PodCidrs: []string{"10.0.2.0/24"}}})
			return err
		}, codes.InvalidArgument},
		{"UpsertRemoteNode of this node", func() error {
			_, err := c.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: &datapathv1alpha1.RemoteNode{Name: "node-a"}})
			return err
		}, codes.InvalidArgument},
		{"UpsertRemoteNode", func() error {
			_, err := c.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: &datapathv1alpha1.RemoteNode{Name: "node-b", NodeIps: []string{"192.0.2.20"}, PodCidrs: []string{"10.0.2.0/24"}}})
			return err
		}, codes.OK},
		{"UpsertRemoteNode at a stale revision", func() error {
			_, err := c.UpsertRemoteNode(ctx, &datapathv1alpha1.UpsertRemoteNodeRequest{Node: &datapathv1alpha1.RemoteNode{Name: "node-b", NodeIps: []string{"192.0.2.21"}}, ExpectedRevision: "5"})
			return err
		}, codes.Aborted},
		{"DeleteRemoteNode at a stale revision", func() error {
			_, err := c.DeleteRemoteNode(ctx, &datapathv1alpha1.DeleteRemoteNodeRequest{Name: "node-b", ExpectedRevision: "5"})
			return err
		}, codes.Aborted},
		{"ListRemoteNodes", func() error {
			r, err := c.ListRemoteNodes(ctx, &datapathv1alpha1.ListRemoteNodesRequest{})
			if err == nil && (len(r.GetNodes()) != 1 || r.GetNodes()[0].GetName() != "node-b") {
				return status.Errorf(codes.Unknown, "nodes %v, want node-b", r.GetNodes())
			}
			return err
		}, codes.OK},
		{"DeleteRemoteNode", func() error {
			_, err := c.DeleteRemoteNode(ctx, &datapathv1alpha1.DeleteRemoteNodeRequest{Name: "node-b", ExpectedRevision: "1"})
			return err
		}, codes.OK},
		{"DeleteEndpoint of an unknown attachment is success", func() error {
			_, err := c.DeleteEndpoint(ctx, &datapathv1alpha1.DeleteEndpointRequest{Attachment: att("nope")})
			return err
		}, codes.OK},
		{"DeleteEndpoint without attachment", func() error {
			_, err := c.DeleteEndpoint(ctx, &datapathv1alpha1.DeleteEndpointRequest{})
			return err
		}, codes.InvalidArgument},
		{"GetNodeConfig", func() error {
			r, err := c.GetNodeConfig(ctx, &datapathv1alpha1.GetNodeConfigRequest{})
			if err == nil && (r.GetConfig().GetRoutingMode() != datapathv1alpha1.RoutingMode_ROUTING_MODE_TUNNEL || len(r.GetConfig().GetRouterIps()) != 1) {
				return status.Errorf(codes.Unknown, "config %v", r.GetConfig())
			}
			return err
		}, codes.OK},
		{"GetNodeStatus", func() error {
			r, err := c.GetNodeStatus(ctx, &datapathv1alpha1.GetNodeStatusRequest{})
			if err == nil && (r.GetStatus().GetEndpointCount() != 1 || r.GetStatus().GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_READY) {
				return status.Errorf(codes.Unknown, "status %v", r.GetStatus())
			}
			return err
		}, codes.OK},
	} {
		if err := tc.call(); code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// The failures left nothing behind: one endpoint, one allocation.
	if allocs := n.ipam.Allocations(); len(allocs) != 1 || allocs[0].GetHandle().GetContainerId() != "a" {
		t.Errorf("IPAM allocations %v, want only a's", allocs)
	}
}
