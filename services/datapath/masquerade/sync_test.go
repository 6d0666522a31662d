package masquerade_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/masquerade"
)

// pools is a paged IPAM pool and block listing: one pool and one block per
// page, as a page_size of 1 would give.
type pools struct {
	mu     sync.Mutex
	pools  []*ipamv1alpha1.Pool
	blocks map[string][]string // pool → claimed block CIDRs
	fail   error
	calls  map[string]int
	asked  []string // pools whose blocks were listed
}

func page[T any](items []T, token string) (T, string, error) {
	var zero T
	i := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n >= len(items) {
			return zero, "", status.Errorf(codes.InvalidArgument, "bad page token %q", token)
		}
		i = n
	}
	if i >= len(items) {
		return zero, "", nil
	}
	next := ""
	if i+1 < len(items) {
		next = strconv.Itoa(i + 1)
	}
	return items[i], next, nil
}

func (p *pools) ListPools(_ context.Context, in *ipamv1alpha1.ListPoolsRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ListPoolsResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls["ListPools"]++
	if p.fail != nil {
		return nil, p.fail
	}
	resp := &ipamv1alpha1.ListPoolsResponse{}
	if len(p.pools) == 0 {
		return resp, nil
	}
	pool, next, err := page(p.pools, in.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp.Pools, resp.NextPageToken = []*ipamv1alpha1.Pool{pool}, next
	return resp, nil
}

func (p *pools) ListBlocks(_ context.Context, in *ipamv1alpha1.ListBlocksRequest, _ ...grpc.CallOption) (*ipamv1alpha1.ListBlocksResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls["ListBlocks"]++
	if in.GetPageToken() == "" {
		p.asked = append(p.asked, in.GetPool())
	}
	resp := &ipamv1alpha1.ListBlocksResponse{}
	blocks := p.blocks[in.GetPool()]
	if len(blocks) == 0 {
		return resp, nil
	}
	b, next, err := page(blocks, in.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp.Blocks, resp.NextPageToken = []*ipamv1alpha1.Block{{Cidr: b, Pool: in.GetPool()}}, next
	return resp, nil
}

func (p *pools) set(ps ...*ipamv1alpha1.Pool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pools = ps
}

// rules is a fake masquerade.Rules whose installed rules can vanish.
type rules struct {
	mu        sync.Mutex
	installed []netip.Prefix
	applies   int
	overlay   string
	fail      error
}

func (r *rules) Apply(cidrs []netip.Prefix, overlay string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applies++
	if r.fail != nil {
		return r.fail
	}
	r.installed, r.overlay = slices.Clone(cidrs), overlay
	return nil
}

func (r *rules) Installed(cidrs []netip.Prefix) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.installed != nil && slices.Equal(r.installed, cidrs)
}

func (r *rules) vanish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.installed = nil
}

func cluster(name string, v4, v6 []string) *ipamv1alpha1.Pool {
	p := &ipamv1alpha1.Pool{Name: name, Mode: ipamv1alpha1.PoolMode_POOL_MODE_CLUSTER_SCOPE}
	if v4 != nil {
		p.Ipv4 = &ipamv1alpha1.PoolFamily{Cidrs: v4}
	}
	if v6 != nil {
		p.Ipv6 = &ipamv1alpha1.PoolFamily{Cidrs: v6}
	}
	return p
}

func hostScope(name string, v4, v6 []string) *ipamv1alpha1.Pool {
	p := cluster(name, v4, v6)
	p.Mode = ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE
	return p
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestSyncPodCIDRs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pools     []*ipamv1alpha1.Pool
		blocks    map[string][]string
		want      []netip.Prefix
		wantAsked []string
	}{
		{
			name:  "cluster pools over pages, sorted and deduplicated",
			pools: []*ipamv1alpha1.Pool{cluster("b", []string{"10.1.0.0/16"}, []string{"fd00:1::/48"}), cluster("a", []string{"10.0.0.0/16", "10.1.0.0/16"}, nil)},
			want:  prefixes("10.0.0.0/16", "10.1.0.0/16", "fd00:1::/48"),
		},
		{
			name:      "host-scope pool without CIDRs: its claimed blocks, over pages",
			pools:     []*ipamv1alpha1.Pool{cluster("default", []string{"10.0.0.0/16"}, nil), hostScope("nodes", []string{}, nil)},
			blocks:    map[string][]string{"nodes": {"192.168.2.0/24", "192.168.1.0/24", "192.168.1.0/24"}},
			want:      prefixes("10.0.0.0/16", "192.168.1.0/24", "192.168.2.0/24"),
			wantAsked: []string{"nodes"},
		},
		{
			name:      "host-scope pool open in one family only",
			pools:     []*ipamv1alpha1.Pool{hostScope("nodes", []string{"172.16.0.0/12"}, []string{})},
			blocks:    map[string][]string{"nodes": {"172.16.1.0/24", "fd00:9:1::/64"}},
			want:      prefixes("172.16.0.0/12", "172.16.1.0/24", "fd00:9:1::/64"),
			wantAsked: []string{"nodes"},
		},
		{
			name:  "host-scope pool with CIDRs: no block listing",
			pools: []*ipamv1alpha1.Pool{hostScope("nodes", []string{"172.16.0.0/12"}, nil)},
			want:  prefixes("172.16.0.0/12"),
		},
		{
			name:  "non-canonical CIDRs are masked, bad ones skipped",
			pools: []*ipamv1alpha1.Pool{cluster("a", []string{"10.0.0.1/16", "nonsense"}, nil)},
			want:  prefixes("10.0.0.0/16"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pools{pools: tc.pools, blocks: tc.blocks, calls: map[string]int{}}
			r := &rules{}
			s := masquerade.NewSyncer(p, r, "axon_vxlan", slog.New(slog.DiscardHandler))
			if err := s.Sync(t.Context()); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.installed, tc.want) || r.overlay != "axon_vxlan" {
				t.Errorf("applied %v via %q, want %v via axon_vxlan", r.installed, r.overlay, tc.want)
			}
			if !slices.Equal(p.asked, tc.wantAsked) {
				t.Errorf("blocks listed for pools %v, want %v", p.asked, tc.wantAsked)
			}
			if got := p.calls["ListPools"]; got != max(len(tc.pools), 1) {
				t.Errorf("ListPools calls %d, want one per page (%d)", got, len(tc.pools))
			}
		})
	}
}

func TestSyncAppliesOnlyWhenNeeded(t *testing.T) {
	p := &pools{pools: []*ipamv1alpha1.Pool{cluster("default", []string{"10.0.0.0/16"}, nil)}, calls: map[string]int{}}
	r := &rules{}
	s := masquerade.NewSyncer(p, r, "axon_vxlan", slog.New(slog.DiscardHandler))
	steps := []struct {
		name        string
		change      func()
		wantApplies int
		want        []netip.Prefix
	}{
		{"first sync", func() {}, 1, prefixes("10.0.0.0/16")},
		{"unchanged and installed", func() {}, 1, prefixes("10.0.0.0/16")},
		{"rules vanished", r.vanish, 2, prefixes("10.0.0.0/16")},
		{"a pool added", func() {
			p.set(cluster("default", []string{"10.0.0.0/16"}, nil), cluster("blue", []string{"10.9.0.0/16"}, nil))
		}, 3, prefixes("10.0.0.0/16", "10.9.0.0/16")},
		{"unchanged again", func() {}, 3, prefixes("10.0.0.0/16", "10.9.0.0/16")},
	}
	for _, st := range steps {
		st.change()
		if err := s.Sync(t.Context()); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if r.applies != st.wantApplies || !slices.Equal(r.installed, st.want) {
			t.Errorf("%s: %d applies, installed %v; want %d and %v", st.name, r.applies, r.installed, st.wantApplies, st.want)
		}
	}
}

func TestSyncFailures(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "ipam down")
	applyErr := errors.New("nft: permission denied")
	p := &pools{pools: []*ipamv1alpha1.Pool{cluster("default", []string{"10.0.0.0/16"}, nil)}, calls: map[string]int{}}
	r := &rules{}
	s := masquerade.NewSyncer(p, r, "axon_vxlan", slog.New(slog.DiscardHandler))

	p.fail = unavailable
	if err := s.Sync(t.Context()); !errors.Is(err, unavailable) {
		t.Fatalf("Sync with IPAM down: %v, want its Unavailable error", err)
	}
	if r.applies != 0 {
		t.Errorf("rules applied %d times without the pools", r.applies)
	}
	p.fail = nil
	r.fail = applyErr
	if err := s.Sync(t.Context()); !errors.Is(err, applyErr) {
		t.Fatalf("Sync with nft failing: %v, want %v", err, applyErr)
	}
	// A failed apply is not taken for installed: the next sync applies.
	r.fail = nil
	if err := s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r.applies != 2 || !slices.Equal(r.installed, prefixes("10.0.0.0/16")) {
		t.Errorf("%d applies, installed %v; want 2 and [10.0.0.0/16]", r.applies, r.installed)
	}
}
