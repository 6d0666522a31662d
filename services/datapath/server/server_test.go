package server

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/paging"
)

func TestPageEndpoints(t *testing.T) {
	// Container IDs whose order differs from their host veth names' (the
	// agent's record order) and includes IDs that prefix one another.
	ids := []string{"f00d", "a", "a-b", "c3", "b", "0", "ab", "e", "a.b"}
	var eps []*datapathv1alpha1.Endpoint
	for i, id := range ids {
		ns := "default"
		if i%3 == 0 {
			ns = "kube-system"
		}
		eps = append(eps, &datapathv1alpha1.Endpoint{
			Attachment:   &datapathv1alpha1.Attachment{ContainerId: id, InterfaceName: "eth0"},
			PodNamespace: ns, PodName: fmt.Sprintf("pod-%d", i),
		})
	}
	for _, tc := range []struct {
		name string
		req  *datapathv1alpha1.ListEndpointsRequest
		want int
	}{
		{"all", &datapathv1alpha1.ListEndpointsRequest{}, len(ids)},
		{"namespace", &datapathv1alpha1.ListEndpointsRequest{PodNamespace: "kube-system"}, 3},
		{"pod", &datapathv1alpha1.ListEndpointsRequest{PodNamespace: "default", PodName: "pod-4"}, 1},
	} {
		for _, size := range []int{1, 2, 3, 100} {
			t.Run(fmt.Sprintf("%s/page %d", tc.name, size), func(t *testing.T) {
				var got []string
				token := ""
				for pages := 0; ; pages++ {
					if pages > len(ids) {
						t.Fatalf("more pages than endpoints: %v", got)
					}
					_, after, err := paging.Parse(endpointList(tc.req), int32(size), token)
					if err != nil {
						t.Fatal(err)
					}
					resp := pageEndpoints(eps, tc.req, after, size)
					for _, ep := range resp.GetEndpoints() {
						got = append(got, ep.GetAttachment().GetContainerId()+"/"+ep.GetAttachment().GetInterfaceName())
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				if len(got) != tc.want || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
					t.Errorf("paged through %v, want %d endpoints, each once, in key order", got, tc.want)
				}
			})
		}
	}
}

// listedEndpoints serves ListEndpoints from a fixed list; the server's other
// calls are not used here.
type listedEndpoints struct {
	Endpoints
	eps []*datapathv1alpha1.Endpoint
}

func (l listedEndpoints) ListEndpoints() ([]*datapathv1alpha1.Endpoint, error) { return l.eps, nil }

// TestListEndpointsForeignToken checks that a page token is accepted only by
// the listing, filters included, that returned it: a token of another list
// or of other filters used to skip entries silently.
func TestListEndpointsForeignToken(t *testing.T) {
	var eps []*datapathv1alpha1.Endpoint
	for _, id := range []string{"a", "b", "c"} {
		eps = append(eps, &datapathv1alpha1.Endpoint{
			Attachment: &datapathv1alpha1.Attachment{ContainerId: id, InterfaceName: "eth0"}, PodNamespace: "default", PodName: id,
		})
	}
	s := New(listedEndpoints{eps: eps}, nil, nil, nil, 0)
	ctx := t.Context()
	first, err := s.ListEndpoints(ctx, &datapathv1alpha1.ListEndpointsRequest{PodNamespace: "default", PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page = %v, %v; want a next page", first, err)
	}
	token := first.GetNextPageToken()
	for _, tc := range []struct {
		name string
		req  *datapathv1alpha1.ListEndpointsRequest
		want codes.Code
	}{
		{"own token", &datapathv1alpha1.ListEndpointsRequest{PodNamespace: "default", PageToken: token}, codes.OK},
		{"token of other filters", &datapathv1alpha1.ListEndpointsRequest{PageToken: token}, codes.InvalidArgument},
		{"token of another list", &datapathv1alpha1.ListEndpointsRequest{PageToken: paging.Token("ipam.ListPools", "a/eth0")}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.ListEndpoints(ctx, tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("ListEndpoints: code %v (%v), want %v", got, err, tc.want)
			}
			if err == nil && len(resp.GetEndpoints()) != len(eps)-1 {
				t.Errorf("page after the first: %d endpoints, want %d", len(resp.GetEndpoints()), len(eps)-1)
			}
		})
	}
}
