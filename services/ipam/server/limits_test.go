package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// annotations returns namespace annotations whose keys and values take
// exactly total bytes (total at least 10).
func annotations(total int) map[string]string {
	m := map[string]string{"ipam.axon.io/pool": "lim"}
	total -= len("ipam.axon.io/pool") + len("lim")
	m["example.com/big"] = strings.Repeat("v", total-len("example.com/big"))
	return m
}

// wantBoundedInvalid fails unless err is InvalidArgument with a message
// short enough never to echo the input whole.
func wantBoundedInvalid(t *testing.T, err error) {
	t.Helper()
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Fatalf("code = %v (%.300v), want InvalidArgument", got, err)
	}
	if msg := status.Convert(err).Message(); len(msg) > 200 {
		t.Errorf("message is %d bytes long: %.300s", len(msg), msg)
	}
}

func TestRequestLimits(t *testing.T) {
	c, _, _ := startServer(t)
	ctx := t.Context()
	if _, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{
		Name: "lim", Default: true, Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.9.0.0/16"}},
	}}); err != nil {
		t.Fatal(err)
	}
	node := strings.Repeat("n", bounded.DNSSubdomain)
	if _, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: node}}); err != nil {
		t.Fatal(err)
	}
	label := strings.Repeat("p", 253) + "/" + strings.Repeat("k", 63)
	// full is an AllocateIPRequest with every string and map at its limit;
	// each case pushes one of them one over.
	full := func(id string) *ipamv1alpha1.AllocateIPRequest {
		return &ipamv1alpha1.AllocateIPRequest{
			Handle: &ipamv1alpha1.OwnerHandle{
				ContainerId:   id + strings.Repeat("c", bounded.ContainerID-len(id)),
				InterfaceName: strings.Repeat("i", bounded.InterfaceName),
			},
			Node:           node,
			RequestedPools: []string{"lim"},
			StickyKey:      id + strings.Repeat("s", bounded.Key-len(id)),
			Pod: &ipamv1alpha1.PodInfo{
				Namespace:            strings.Repeat("a", bounded.DNSLabel),
				Name:                 strings.Repeat("b", bounded.DNSSubdomain),
				Labels:               map[string]string{label: strings.Repeat("v", bounded.LabelValue)},
				NamespaceLabels:      map[string]string{label: strings.Repeat("v", bounded.LabelValue)},
				NamespaceAnnotations: annotations(bounded.MapBytes),
			},
		}
	}
	if _, err := c.AllocateIP(ctx, full("at-limit")); err != nil {
		t.Fatalf("AllocateIP with every field at its limit: %v", err)
	}
	for _, tc := range []struct {
		name string
		over func(r *ipamv1alpha1.AllocateIPRequest)
	}{
		{"container_id", func(r *ipamv1alpha1.AllocateIPRequest) { r.Handle.ContainerId += "c" }},
		{"container_id of 10 KB", func(r *ipamv1alpha1.AllocateIPRequest) { r.Handle.ContainerId = strings.Repeat("c", 10_000) }},
		{"container_id of 1.4 MB", func(r *ipamv1alpha1.AllocateIPRequest) { r.Handle.ContainerId = strings.Repeat("c", 1_400_000) }},
		{"interface_name", func(r *ipamv1alpha1.AllocateIPRequest) { r.Handle.InterfaceName += "i" }},
		{"node", func(r *ipamv1alpha1.AllocateIPRequest) { r.Node += "n" }},
		{"requested_pools entry", func(r *ipamv1alpha1.AllocateIPRequest) { r.RequestedPools = []string{strings.Repeat("p", 64)} }},
		{"requested_pools count", func(r *ipamv1alpha1.AllocateIPRequest) { r.RequestedPools = make([]string, 9) }},
		{"requested_ips entry", func(r *ipamv1alpha1.AllocateIPRequest) { r.RequestedIps = []string{strings.Repeat("1", 65)} }},
		{"requested_ips count", func(r *ipamv1alpha1.AllocateIPRequest) { r.RequestedIps = []string{"10.9.0.5", "10.9.0.6", "10.9.0.7"} }},
		{"sticky_key", func(r *ipamv1alpha1.AllocateIPRequest) { r.StickyKey += "s" }},
		{"pod namespace", func(r *ipamv1alpha1.AllocateIPRequest) { r.Pod.Namespace += "a" }},
		{"pod name", func(r *ipamv1alpha1.AllocateIPRequest) { r.Pod.Name += "b" }},
		{"pod label value", func(r *ipamv1alpha1.AllocateIPRequest) { r.Pod.Labels[label] += "v" }},
		{"namespace label key", func(r *ipamv1alpha1.AllocateIPRequest) { r.Pod.NamespaceLabels["x"+label] = "" }},
		{"namespace annotations", func(r *ipamv1alpha1.AllocateIPRequest) {
			r.Pod.NamespaceAnnotations = annotations(bounded.MapBytes + 1)
		}},
	} {
		t.Run("AllocateIP/"+tc.name, func(t *testing.T) {
			req := full("over")
			tc.over(req)
			_, err := c.AllocateIP(t.Context(), req)
			wantBoundedInvalid(t, err)
			resp, err := c.AllocateIPs(t.Context(), &ipamv1alpha1.AllocateIPsRequest{Requests: []*ipamv1alpha1.AllocateIPRequest{req}})
			if err != nil {
				t.Fatal(err)
			}
			if e := resp.GetResults()[0].GetError(); codes.Code(e.GetCode()) != codes.InvalidArgument || len(e.GetMessage()) > 200 {
				t.Errorf("AllocateIPs result = %.300v, want a short InvalidArgument", e)
			}
		})
	}

	long := func(n int) string { return strings.Repeat("x", n) }
	handle := func(id, ifname string) *ipamv1alpha1.OwnerHandle {
		return &ipamv1alpha1.OwnerHandle{ContainerId: id, InterfaceName: ifname}
	}
	sel := func(key string, values ...string) *commonv1alpha1.LabelSelector {
		return &commonv1alpha1.LabelSelector{MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{
			Key: key, Operator: commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_IN, Values: values,
		}}}
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"ReleaseIP handle of 1.4 MB", func() error {
			_, err := c.ReleaseIP(ctx, &ipamv1alpha1.ReleaseIPRequest{Handle: handle(long(1_400_000), "eth0")})
			return err
		}},
		{"GetAllocation interface_name", func() error {
			_, err := c.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{Handle: handle("c", long(16))}})
			return err
		}},
		{"GetAllocation ip", func() error {
			_, err := c.GetAllocation(ctx, &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Ip{Ip: long(65)}})
			return err
		}},
		{"GarbageCollect live handle", func() error {
			_, err := c.GarbageCollect(ctx, &ipamv1alpha1.GarbageCollectRequest{Node: node, LiveHandles: []*ipamv1alpha1.OwnerHandle{handle(long(bounded.ContainerID+1), "eth0")}})
			return err
		}},
		{"GarbageCollect node", func() error {
			_, err := c.GarbageCollect(ctx, &ipamv1alpha1.GarbageCollectRequest{Node: long(254)})
			return err
		}},
		{"CreatePool name", func() error {
			_, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{Name: long(1_400_000), Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.10.0.0/16"}}}})
			return err
		}},
		{"CreatePool CIDR", func() error {
			_, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{Name: "p", Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{long(1_400_000)}}}})
			return err
		}},
		{"CreatePool selector value", func() error {
			_, err := c.CreatePool(ctx, &ipamv1alpha1.CreatePoolRequest{Pool: &ipamv1alpha1.Pool{Name: "p", Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.10.0.0/16"}}, PodSelector: sel("app", long(64))}})
			return err
		}},
		{"UpdatePool selector values", func() error {
			_, err := c.UpdatePool(ctx, &ipamv1alpha1.UpdatePoolRequest{Pool: &ipamv1alpha1.Pool{Name: "p", Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.10.0.0/16"}}, PodSelector: sel("app", make([]string, 257)...)}})
			return err
		}},
		{"GetPool name", func() error { _, err := c.GetPool(ctx, &ipamv1alpha1.GetPoolRequest{Name: long(64)}); return err }},
		{"CreateNode name of 1.4 MB", func() error {
			_, err := c.CreateNode(ctx, &ipamv1alpha1.CreateNodeRequest{Node: &ipamv1alpha1.Node{Name: long(1_400_000)}})
			return err
		}},
		{"UpdateNode addresses", func() error {
			_, err := c.UpdateNode(ctx, &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: "n", Addresses: make([]string, 17)}})
			return err
		}},
		{"GetNode name", func() error { _, err := c.GetNode(ctx, &ipamv1alpha1.GetNodeRequest{Name: long(254)}); return err }},
		{"DeleteNode revision", func() error {
			_, err := c.DeleteNode(ctx, &ipamv1alpha1.DeleteNodeRequest{Name: "n", ExpectedRevision: long(21)})
			return err
		}},
		{"ClaimBlock claim_id", func() error {
			_, err := c.ClaimBlock(ctx, &ipamv1alpha1.ClaimBlockRequest{Node: node, ClaimId: long(bounded.Key + 1)})
			return err
		}},
		{"ListAllocations pod_namespace", func() error {
			_, err := c.ListAllocations(ctx, &ipamv1alpha1.ListAllocationsRequest{PodNamespace: long(64)})
			return err
		}},
		{"ReserveIP key", func() error {
			_, err := c.ReserveIP(ctx, &ipamv1alpha1.ReserveIPRequest{Ip: "10.9.0.9", Key: long(1_400_000)})
			return err
		}},
		{"ListReservations key", func() error {
			_, err := c.ListReservations(ctx, &ipamv1alpha1.ListReservationsRequest{Key: long(bounded.Key + 1)})
			return err
		}},
		{"WatchBlocks node", func() error {
			w, err := c.WatchBlocks(ctx, &ipamv1alpha1.WatchBlocksRequest{Node: long(254)})
			if err != nil {
				return err
			}
			_, err = w.Recv()
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantBoundedInvalid(t, tc.call()) })
	}
	// At the limits, the same calls are served.
	if _, err := c.ReserveIP(ctx, &ipamv1alpha1.ReserveIPRequest{Ip: "10.9.0.9", Key: long(bounded.Key)}); err != nil {
		t.Errorf("ReserveIP with a key at its limit: %v", err)
	}
	if _, err := c.ClaimBlock(ctx, &ipamv1alpha1.ClaimBlockRequest{Node: node, ClaimId: long(bounded.Key)}); err != nil {
		t.Errorf("ClaimBlock with a claim_id at its limit: %v", err)
	}
}
