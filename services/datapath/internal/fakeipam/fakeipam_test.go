package fakeipam_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/fakeipam"
)

const node = "node-a"

func newIPAM(t *testing.T, blocks ...string) *fakeipam.IPAM {
	t.Helper()
	cfg := fakeipam.Config{Node: node, PoolCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/48")}}
	for _, b := range blocks {
		cfg.Blocks = append(cfg.Blocks, netip.MustParsePrefix(b))
	}
	f := fakeipam.New(cfg)
	if _, err := f.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: node, Addresses: []string{"192.0.2.10"}}, AllowMissing: true}); err != nil {
		t.Fatal(err)
	}
	return f
}

func handle(c string) *ipamv1alpha1.OwnerHandle {
	return &ipamv1alpha1.OwnerHandle{ContainerId: c, InterfaceName: "eth0"}
}

func allocate(ctx context.Context, f *fakeipam.IPAM, c string) (*ipamv1alpha1.Allocation, error) {
	resp, err := f.AllocateIP(ctx, &ipamv1alpha1.AllocateIPRequest{Handle: handle(c), Node: node})
	return resp.GetAllocation(), err
}

func TestClaimBlock(t *testing.T) {
	f := fakeipam.New(fakeipam.Config{Node: node, Blocks: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")}})
	if _, err := f.ClaimBlock(t.Context(), &ipamv1alpha1.ClaimBlockRequest{Node: node}); status.Code(err) != codes.NotFound {
		t.Fatalf("claim before registering: %v, want NotFound", err)
	}
	if _, err := f.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: node}}); status.Code(err) != codes.NotFound {
		t.Fatalf("update without allow_missing: %v, want NotFound", err)
	}
	if _, err := f.UpdateNode(t.Context(), &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: node}, AllowMissing: true}); err != nil {
		t.Fatal(err)
	}
	resp, err := f.ClaimBlock(t.Context(), &ipamv1alpha1.ClaimBlockRequest{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetBlocks()) != 1 || resp.GetBlocks()[0].GetRouterIp() != "10.244.1.1" {
		t.Errorf("blocks %v, want 10.244.1.0/26 with router 10.244.1.1", resp.GetBlocks())
	}
	if _, ok := f.RegisteredNode(node); !ok {
		t.Error("node not registered")
	}
}

func TestAllocateRelease(t *testing.T) {
	f := newIPAM(t, "10.244.1.0/30", "fd00:244:1::/126")
	a, err := allocate(t.Context(), f, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := a.GetAddresses(); len(got) != 2 || got[0].GetIp() != "10.244.1.2" || got[0].GetGateway() != "10.244.1.1" ||
		got[0].GetPrefixLength() != 32 || got[1].GetIp() != "fd00:244:1::2" || got[1].GetPrefixLength() != 128 {
		t.Fatalf("addresses %v", got)
	}
	again, err := allocate(t.Context(), f, "c1")
	if err != nil || again.GetSequence() != a.GetSequence() || again.GetAddresses()[0].GetIp() != "10.244.1.2" {
		t.Fatalf("retry: %v %v, want the same allocation", again, err)
	}
	// 10.244.1.0/30 has one address besides the router's and broadcast.
	if _, err := allocate(t.Context(), f, "c2"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second pod in a full block: %v, want ResourceExhausted", err)
	}
	if len(f.Holders()) != 2 {
		t.Errorf("holders after a failed allocation: %v, want only c1's two addresses", f.Holders())
	}
	// A late release with an old sequence frees nothing.
	rel, err := f.ReleaseIP(t.Context(), &ipamv1alpha1.ReleaseIPRequest{Handle: handle("c1"), ExpectedSequence: a.GetSequence() + 1})
	if err != nil || rel.GetAllocation() != nil {
		t.Fatalf("release with another sequence: %v %v, want nothing released", rel, err)
	}
	rel, err = f.ReleaseIP(t.Context(), &ipamv1alpha1.ReleaseIPRequest{Handle: handle("c1"), ExpectedSequence: a.GetSequence()})
	if err != nil || rel.GetAllocation().GetSequence() != a.GetSequence() {
		t.Fatalf("release: %v %v", rel, err)
	}
	if _, err := f.ReleaseIP(t.Context(), &ipamv1alpha1.ReleaseIPRequest{Handle: handle("c1")}); err != nil {
		t.Errorf("releasing twice: %v", err)
	}
	b, err := allocate(t.Context(), f, "c2")
	if err != nil || b.GetSequence() <= a.GetSequence() {
		t.Fatalf("after release: %v %v, want a new, later allocation", b, err)
	}
	if _, err := f.GetAllocation(t.Context(), &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Handle{Handle: handle("c1")}}); status.Code(err) != codes.NotFound {
		t.Errorf("GetAllocation of a released handle: %v, want NotFound", err)
	}
	got, err := f.GetAllocation(t.Context(), &ipamv1alpha1.GetAllocationRequest{Key: &ipamv1alpha1.GetAllocationRequest_Ip{Ip: "10.244.1.2"}})
	if err != nil || got.GetAllocation().GetHandle().GetContainerId() != "c2" {
		t.Errorf("GetAllocation by IP: %v %v", got, err)
	}
}

func TestAllocateErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *ipamv1alpha1.AllocateIPRequest
		want codes.Code
	}{
		{"no handle", &ipamv1alpha1.AllocateIPRequest{Node: node}, codes.InvalidArgument},
		{"no node", &ipamv1alpha1.AllocateIPRequest{Handle: handle("c")}, codes.InvalidArgument},
		{"unregistered node", &ipamv1alpha1.AllocateIPRequest{Handle: handle("c"), Node: "other"}, codes.NotFound},
		{"requested IP taken", &ipamv1alpha1.AllocateIPRequest{Handle: handle("c"), Node: node, RequestedIps: []string{"10.244.1.2"}}, codes.AlreadyExists},
		{"requested IP outside", &ipamv1alpha1.AllocateIPRequest{Handle: handle("c"), Node: node, RequestedIps: []string{"10.9.0.1"}}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newIPAM(t, "10.244.1.0/26")
			if _, err := allocate(t.Context(), f, "first"); err != nil {
				t.Fatal(err)
			}
			if _, err := f.AllocateIP(t.Context(), tc.req); status.Code(err) != tc.want {
				t.Errorf("AllocateIP: %v, want %v", err, tc.want)
			}
		})
	}
	f := newIPAM(t, "10.244.1.0/26", "fd00:244:1::/120")
	resp, err := f.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{Handle: handle("c"), Node: node, RequestedIps: []string{"10.244.1.9"}})
	if err != nil || resp.GetAllocation().GetAddresses()[0].GetIp() != "10.244.1.9" {
		t.Errorf("requested IP: %v %v", resp, err)
	}
	v6, v4 := commonv1alpha1.IPFamily_IP_FAMILY_IPV6, commonv1alpha1.IPFamily_IP_FAMILY_IPV4
	resp, err = f.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{Handle: handle("d"), Node: node, Families: []commonv1alpha1.IPFamily{v6, v4}})
	if got := resp.GetAllocation().GetAddresses(); err != nil || len(got) != 2 || got[0].GetFamily() != v6 || got[1].GetFamily() != v4 {
		t.Errorf("families IPv6, IPv4: %v %v, want addresses in that order", got, err)
	}
	only4 := newIPAM(t, "10.244.1.0/26")
	if _, err := only4.AllocateIP(t.Context(), &ipamv1alpha1.AllocateIPRequest{Handle: handle("e"), Node: node, Families: []commonv1alpha1.IPFamily{v6}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a family without a block: %v, want FailedPrecondition", err)
	}
}

func TestGarbageCollect(t *testing.T) {
	f := newIPAM(t, "10.244.1.0/26")
	for _, c := range []string{"a", "b", "c"} {
		if _, err := allocate(t.Context(), f, c); err != nil {
			t.Fatal(err)
		}
	}
	req := &ipamv1alpha1.GarbageCollectRequest{Node: node, LiveHandles: []*ipamv1alpha1.OwnerHandle{handle("b")}, DryRun: true}
	resp, err := f.GarbageCollect(t.Context(), req)
	if err != nil || len(resp.GetReleased()) != 2 || len(f.Allocations()) != 3 {
		t.Fatalf("dry run: %v %v, %d allocations left", resp, err, len(f.Allocations()))
	}
	req.DryRun = false
	req.MinAge = durationpb.New(time.Hour)
	if resp, err := f.GarbageCollect(t.Context(), req); err != nil || len(resp.GetReleased()) != 0 {
		t.Fatalf("with min_age: %v %v, want nothing released", resp, err)
	}
	req.MinAge = nil
	if resp, err := f.GarbageCollect(t.Context(), req); err != nil || len(resp.GetReleased()) != 2 {
		t.Fatalf("GC: %v %v", resp, err)
	}
	if all := f.Allocations(); len(all) != 1 || all[0].GetHandle().GetContainerId() != "b" {
		t.Errorf("left %v, want only b", all)
	}
}

func TestFailNext(t *testing.T) {
	f := newIPAM(t, "10.244.1.0/26")
	unavailable := status.Error(codes.Unavailable, "etcd down")
	f.FailNext("ReleaseIP", 2, unavailable)
	for i := range 3 {
		_, err := f.ReleaseIP(t.Context(), &ipamv1alpha1.ReleaseIPRequest{Handle: handle("x")})
		if want := i < 2; (status.Code(err) == codes.Unavailable) != want {
			t.Errorf("call %d: %v, want Unavailable %v", i+1, err, want)
		}
	}
	if f.Calls("ReleaseIP") != 3 {
		t.Errorf("calls %d, want 3", f.Calls("ReleaseIP"))
	}
	errBoom := errors.New("boom")
	f.SetFail(func(m string) error {
		if m == "AllocateIP" {
			return errBoom
		}
		return nil
	})
	if _, err := allocate(t.Context(), f, "c"); !errors.Is(err, errBoom) {
		t.Errorf("AllocateIP: %v, want the injected error", err)
	}
	if len(f.Allocations()) != 0 {
		t.Error("a failed call allocated")
	}
}

func TestListPoolsAndBlocks(t *testing.T) {
	f := newIPAM(t, "10.244.1.0/26", "fd00:244:1::/120")
	f.SetRemoteBlock(&ipamv1alpha1.Block{Cidr: "10.244.2.0/26", Pool: "default", Family: commonv1alpha1.IPFamily_IP_FAMILY_IPV4, Node: "node-b"}, "192.0.2.11")
	pools, err := f.ListPools(t.Context(), &ipamv1alpha1.ListPoolsRequest{})
	if err != nil || len(pools.GetPools()) != 1 || pools.GetPools()[0].GetIpv4().GetCidrs()[0] != "10.244.0.0/16" || pools.GetPools()[0].GetIpv6().GetCidrs()[0] != "fd00:244::/48" {
		t.Fatalf("ListPools: %v %v", pools, err)
	}
	for _, tc := range []struct {
		req  *ipamv1alpha1.ListBlocksRequest
		want int
	}{
		{&ipamv1alpha1.ListBlocksRequest{}, 3},
		{&ipamv1alpha1.ListBlocksRequest{Node: node}, 2},
		{&ipamv1alpha1.ListBlocksRequest{Family: commonv1alpha1.IPFamily_IP_FAMILY_IPV4}, 2},
		{&ipamv1alpha1.ListBlocksRequest{Pool: "other"}, 0},
	} {
		resp, err := f.ListBlocks(t.Context(), tc.req)
		if err != nil || len(resp.GetBlocks()) != tc.want {
			t.Errorf("ListBlocks(%v): %v %v, want %d blocks", tc.req, resp, err, tc.want)
		}
	}
}

func recv(t *testing.T, s interface {
	Recv() (*ipamv1alpha1.WatchBlocksResponse, error)
}) *ipamv1alpha1.WatchBlocksResponse {
	t.Helper()
	ev, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return ev
}

func TestWatchBlocks(t *testing.T) {
	f := newIPAM(t, "10.244.1.0/26")
	f.SetRemoteBlock(&ipamv1alpha1.Block{Cidr: "10.244.2.0/26", Node: "node-b"}, "192.0.2.11")
	ctx, cancel := context.WithCancel(t.Context())
	s, err := f.WatchBlocks(ctx, &ipamv1alpha1.WatchBlocksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The initial list: the node's block, the remote one, then SYNCED.
	for _, want := range []struct {
		t    commonv1alpha1.EventType
		cidr string
	}{
		{commonv1alpha1.EventType_EVENT_TYPE_ADDED, "10.244.1.0/26"},
		{commonv1alpha1.EventType_EVENT_TYPE_ADDED, "10.244.2.0/26"},
		{commonv1alpha1.EventType_EVENT_TYPE_SYNCED, ""},
	} {
		ev := recv(t, s)
		if ev.GetType() != want.t || ev.GetBlock().GetCidr() != want.cidr {
			t.Fatalf("event %v, want %v %s", ev, want.t, want.cidr)
		}
	}
	f.SetRemoteBlock(&ipamv1alpha1.Block{Cidr: "10.244.2.0/26", Node: "node-b"}, "192.0.2.12")
	if ev := recv(t, s); ev.GetType() != commonv1alpha1.EventType_EVENT_TYPE_MODIFIED || ev.GetNodeAddresses()[0] != "192.0.2.12" {
		t.Errorf("event %v, want MODIFIED with the new address", ev)
	}
	f.DeleteRemoteBlock("10.244.2.0/26")
	if ev := recv(t, s); ev.GetType() != commonv1alpha1.EventType_EVENT_TYPE_DELETED {
		t.Errorf("event %v, want DELETED", ev)
	}
	if n := f.Push(&ipamv1alpha1.WatchBlocksResponse{Type: commonv1alpha1.EventType_EVENT_TYPE_SYNCED}); n != 1 {
		t.Errorf("Push reached %d streams, want 1", n)
	}
	recv(t, s)
	cancel()
	if _, err := s.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel: %v, want Canceled", err)
	}

	s2, err := f.WatchBlocks(t.Context(), &ipamv1alpha1.WatchBlocksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv(t, s2) // the node's block
	recv(t, s2) // SYNCED
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := s2.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("Recv of an ended stream: %v, want Unavailable", err)
		}
	})
	f.EndWatches(status.Error(codes.Unavailable, "restarting"))
	wg.Wait()
	if f.Watchers() != 0 {
		t.Errorf("%d watchers after EndWatches", f.Watchers())
	}
}

func TestConcurrentAllocate(t *testing.T) {
	f := newIPAM(t, "10.244.1.0/26")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := allocate(t.Context(), f, string(rune('a'+i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := len(f.Holders()); n != 20 {
		t.Errorf("%d addresses held, want 20", n)
	}
}

func TestUpdateNodeRevisionsAndPodCIDRs(t *testing.T) {
	f := newIPAM(t, "10.244.1.0/26")
	ctx := t.Context()
	get := func() *ipamv1alpha1.Node {
		t.Helper()
		resp, err := f.GetNode(ctx, &ipamv1alpha1.GetNodeRequest{Name: node})
		if err != nil {
			t.Fatalf("GetNode: %v", err)
		}
		return resp.GetNode()
	}
	if _, err := f.GetNode(ctx, &ipamv1alpha1.GetNodeRequest{Name: "other"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetNode of an unknown node: %v, want NotFound", err)
	}
	n := get()
	withCIDR := &ipamv1alpha1.Node{Name: node, Addresses: n.GetAddresses(), PodCidrs: []string{"10.244.1.0/26"}}
	for _, tc := range []struct {
		name    string
		req     func(rev string) *ipamv1alpha1.UpdateNodeRequest
		want    codes.Code
		changed bool
	}{
		{name: "stale revision", want: codes.Aborted, req: func(string) *ipamv1alpha1.UpdateNodeRequest {
			return &ipamv1alpha1.UpdateNodeRequest{Node: withCIDR, ExpectedRevision: "999"}
		}},
		{name: "add a pod CIDR", changed: true, req: func(rev string) *ipamv1alpha1.UpdateNodeRequest {
			return &ipamv1alpha1.UpdateNodeRequest{Node: withCIDR, ExpectedRevision: rev}
		}},
		{name: "same spec", req: func(rev string) *ipamv1alpha1.UpdateNodeRequest {
			return &ipamv1alpha1.UpdateNodeRequest{Node: withCIDR, ExpectedRevision: rev}
		}},
		{name: "drop the pod CIDR that is a block", want: codes.FailedPrecondition, req: func(string) *ipamv1alpha1.UpdateNodeRequest {
			return &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: node, Addresses: []string{"192.0.2.11"}}}
		}},
		{name: "absent with expected_revision", want: codes.Aborted, req: func(string) *ipamv1alpha1.UpdateNodeRequest {
			return &ipamv1alpha1.UpdateNodeRequest{Node: &ipamv1alpha1.Node{Name: "other"}, ExpectedRevision: "1", AllowMissing: true}
		}},
	} {
		before := get()
		_, err := f.UpdateNode(ctx, tc.req(before.GetRevision()))
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if after := get(); (after.GetRevision() != before.GetRevision()) != tc.changed {
			t.Errorf("%s: revision %s → %s, changed want %v", tc.name, before.GetRevision(), after.GetRevision(), tc.changed)
		}
	}
	if got := get().GetPodCidrs(); len(got) != 1 || got[0] != "10.244.1.0/26" {
		t.Errorf("pod CIDRs = %v, want [10.244.1.0/26]", got)
	}
}
