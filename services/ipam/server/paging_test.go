package server

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/paging"
	"github.com/axon-cni/axon/services/ipam/allocator"
)

// TestListsEndAPageAtItsByteBudget is issue 17 item 7: a page of
// page_size items could exceed gRPC's message limit (an owner handle of
// 10 KB is stored; a thousand of them make 10 MB), failing the whole list.
// Every list ends a page at the allocator's byte budget instead, and its
// next_page_token resumes after the page's last item: paging through finds
// every item once. The budget here is small so that ordinary items cut it.
func TestListsEndAPageAtItsByteBudget(t *testing.T) {
	const budget = 150
	cfg := allocator.DefaultConfig()
	cfg.MaxPageBytes = budget
	c, _, _ := startServerWith(t, cfg)
	ctx := t.Context()
	if _, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{
		Name: "default", Default: true, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.0.0.0/16"}, BlockPrefixLength: 28},
	}}); err != nil {
		t.Fatal(err)
	}
	for n := range 3 {
		node := fmt.Sprintf("node-%d", n)
		if _, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: node, Addresses: []string{fmt.Sprintf("192.168.1.%d", n+1)}}}); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := c.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{
				Handle: &ipamv1alpha1.OwnerHandle{ContainerId: fmt.Sprintf("%s-pod-%d", node, i), InterfaceName: "eth0"}, Node: node,
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 4 {
		if _, err := c.ReserveIP(ctx, &ipamv1alpha1.ReserveIPRequest{Ip: fmt.Sprintf("10.0.200.%d", i+5), Key: fmt.Sprintf("default/web-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// page lists one page with the largest page size, returning its items
	// and next page token.
	type page func(token string) ([]proto.Message, string, error)
	for _, tc := range []struct {
		name string
		want int // items in the list
		page page
	}{
		{"ListNodes", 3, func(token string) ([]proto.Message, string, error) {
			r, err := c.ListNodes(ctx, &ipamv1alpha1.ListNodesRequest{PageSize: 1000, PageToken: token})
			return messages(r.GetNodes()), r.GetNextPageToken(), err
		}},
		{"ListBlocks", 3, func(token string) ([]proto.Message, string, error) {
			r, err := c.ListBlocks(ctx, &ipamv1alpha1.ListBlocksRequest{PageSize: 1000, PageToken: token})
			return messages(r.GetBlocks()), r.GetNextPageToken(), err
		}},
		{"ListAllocations", 6, func(token string) ([]proto.Message, string, error) {
			r, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{PageSize: 1000, PageToken: token})
			return messages(r.GetAllocations()), r.GetNextPageToken(), err
		}},
		{"ListAllocations of one node", 2, func(token string) ([]proto.Message, string, error) {
			r, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{Node: "node-1", PageSize: 1000, PageToken: token})
			return messages(r.GetAllocations()), r.GetNextPageToken(), err
		}},
		{"ListReservations", 4, func(token string) ([]proto.Message, string, error) {
			r, err := c.ListReservations(ctx, &ipamv1alpha1.ListReservationsRequest{PageSize: 1000, PageToken: token})
			return messages(r.GetReservations()), r.GetNextPageToken(), err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			pages, total := 0, 0
			err := paging.All(func(token string) (string, error) {
				items, next, err := tc.page(token)
				pages++
				size := 0
				for _, m := range items {
					size += proto.Size(m) + 6
					key := string(must(proto.MarshalOptions{Deterministic: true}.Marshal(m)))
					if seen[key] {
						t.Errorf("page %d repeats an item: %v", pages, m)
					}
					seen[key] = true
				}
				total += size
				if len(items) > 1 && size > budget {
					t.Errorf("page %d: %d items of %d bytes, over the budget of %d", pages, len(items), size, budget)
				}
				return next, err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != tc.want {
				t.Errorf("paged through %d items, want %d", len(seen), tc.want)
			}
			if total > budget && pages < 2 {
				t.Errorf("%d bytes of items on %d page, want the page cut at %d", total, pages, budget)
			}
		})
	}
}

func messages[M proto.Message](items []M) []proto.Message {
	out := make([]proto.Message, 0, len(items))
	for _, m := range items {
		out = append(out, m)
	}
	return out
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
