package server

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/paging"
)

// serve serves s over an in-memory gRPC connection with gRPC's default
// message limits, as the datapath's clients have them.
func serve(t *testing.T, s *Server) datapathv1alpha1.DatapathServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	datapathv1alpha1.RegisterDatapathServiceServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return datapathv1alpha1.NewDatapathServiceClient(conn)
}

// TestListEndpointsPagesFitTheMessageLimit is issue 17 item 7: endpoints
// with annotations of a megabyte each made one page of them exceed gRPC's
// 4 MiB message limit, and ListEndpoints failed for every caller. A page
// ends at paging.MaxPageBytes instead, whatever page_size asks.
func TestListEndpointsPagesFitTheMessageLimit(t *testing.T) {
	var eps []*datapathv1alpha1.Endpoint
	for i := range 6 {
		id := fmt.Sprintf("big-%d", i)
		eps = append(eps, &datapathv1alpha1.Endpoint{
			Attachment: &datapathv1alpha1.Attachment{ContainerId: id, InterfaceName: "eth0"}, PodNamespace: "default", PodName: id,
			Annotations: map[string]string{"example.com/blob": strings.Repeat("a", 1<<20)},
		})
	}
	c := serve(t, New(listedEndpoints{eps: eps}, nil, nil, nil, 0))
	var got []string
	err := paging.All(func(token string) (string, error) {
		resp, err := c.ListEndpoints(t.Context(), &datapathv1alpha1.ListEndpointsRequest{PageSize: 1000, PageToken: token})
		for _, ep := range resp.GetEndpoints() {
			got = append(got, ep.GetAttachment().GetContainerId())
		}
		return resp.GetNextPageToken(), err
	})
	if err != nil {
		t.Fatalf("ListEndpoints: %v", err)
	}
	if want := []string{"big-0", "big-1", "big-2", "big-3", "big-4", "big-5"}; !slices.Equal(got, want) {
		t.Errorf("paged through %v, want %v", got, want)
	}
}

// listedRemotes serves ListRemoteNodes from a fixed list.
type listedRemotes struct {
	RemoteNodes
	nodes []*datapathv1alpha1.RemoteNode
}

func (l listedRemotes) ListRemoteNodes() []*datapathv1alpha1.RemoteNode { return l.nodes }

// TestListRemoteNodesPages is issue 17 item 7: ListRemoteNodes ignored
// page_size and page_token and returned every node at once. It pages now,
// by name, with tokens that only it accepts, and ends a page at
// paging.MaxPageBytes.
func TestListRemoteNodesPages(t *testing.T) {
	// Nodes with most of a megabyte of pod CIDRs each.
	cidrs := make([]string, 1<<16)
	for i := range cidrs {
		cidrs[i] = fmt.Sprintf("10.%d.%d.0/24", i>>8, i&0xff)
	}
	var small, big []*datapathv1alpha1.RemoteNode
	for _, name := range []string{"node-c", "node-a", "node-b2", "node-b", "node-d"} {
		small = append(small, &datapathv1alpha1.RemoteNode{Name: name, NodeIps: []string{"192.0.2.1"}})
		big = append(big, &datapathv1alpha1.RemoteNode{Name: name, PodCidrs: cidrs})
	}
	want := []string{"node-a", "node-b", "node-b2", "node-c", "node-d"}
	for _, tc := range []struct {
		name  string
		nodes []*datapathv1alpha1.RemoteNode
		size  int32
		pages int // pages the listing takes
	}{
		{name: "page of 1", nodes: small, size: 1, pages: 5},
		{name: "page of 2", nodes: small, size: 2, pages: 3},
		{name: "default page", nodes: small, pages: 1},
		{name: "page of 1000, cut by size", nodes: big, size: 1000, pages: perPage(len(big), proto.Size(big[0]))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := serve(t, New(nil, listedRemotes{nodes: tc.nodes}, nil, nil, 0))
			var got []string
			pages := 0
			err := paging.All(func(token string) (string, error) {
				resp, err := c.ListRemoteNodes(t.Context(), &datapathv1alpha1.ListRemoteNodesRequest{PageSize: tc.size, PageToken: token})
				pages++
				for _, n := range resp.GetNodes() {
					got = append(got, n.GetName())
				}
				return resp.GetNextPageToken(), err
			})
			if err != nil {
				t.Fatalf("ListRemoteNodes: %v", err)
			}
			if !slices.Equal(got, want) || pages != tc.pages {
				t.Errorf("paged through %v in %d pages, want %v in %d", got, pages, want, tc.pages)
			}
		})
	}
	t.Run("foreign token", func(t *testing.T) {
		c := serve(t, New(nil, listedRemotes{nodes: small}, nil, nil, 0))
		for _, token := range []string{"garbage", paging.Token("datapath.ListEndpoints pod_namespace=\"\" pod_name=\"\"", "node-a")} {
			_, err := c.ListRemoteNodes(t.Context(), &datapathv1alpha1.ListRemoteNodesRequest{PageToken: token})
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("ListRemoteNodes with token %q: %v, want InvalidArgument", token, err)
			}
		}
	})
}

// perPage returns how many pages n items of size bytes take when a page
// holds paging.MaxPageBytes of them.
func perPage(n, size int) int {
	fit := max(paging.MaxPageBytes/(size+6), 1)
	return (n + fit - 1) / fit
}
