// Package masquerade keeps the node's masquerading rules in line with IPAM's
// pools: pod traffic leaving the pod CIDRs gets the node's address. The
// sync logic works through [Rules]; [NFTables] is the real one.
package masquerade

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/internal/periodic"
	"github.com/axon-cni/axon/services/internal/paging"
)

// Rules installs and checks the masquerading rules of the node.
type Rules interface {
	// Apply makes the rules masquerade traffic from podCIDRs to anywhere
	// outside them, unless it leaves through the overlay device.
	Apply(podCIDRs []netip.Prefix, overlay string) error
	// Installed reports whether the rules for podCIDRs are still in place.
	Installed(podCIDRs []netip.Prefix) bool
}

// Pools lists IPAM's pools and blocks: where pod addresses come from.
type Pools interface {
	ListPools(ctx context.Context, in *ipamv1alpha1.ListPoolsRequest, opts ...grpc.CallOption) (*ipamv1alpha1.ListPoolsResponse, error)
	ListBlocks(ctx context.Context, in *ipamv1alpha1.ListBlocksRequest, opts ...grpc.CallOption) (*ipamv1alpha1.ListBlocksResponse, error)
}

// Syncer keeps the rules covering the current pod CIDRs.
type Syncer struct {
	pools   Pools
	rules   Rules
	overlay string
	log     *slog.Logger

	mu      sync.Mutex // serializes updates
	cidrs   []netip.Prefix
	applied bool
}

// NewSyncer returns a Syncer that exempts traffic leaving through the
// overlay device named overlay.
func NewSyncer(pools Pools, rules Rules, overlay string, log *slog.Logger) *Syncer {
	return &Syncer{pools: pools, rules: rules, overlay: overlay, log: log}
}

// podCIDRs returns where pod addresses come from: the CIDRs of every pool,
// and the claimed blocks (nodes' pod CIDRs) of host-scope pools that accept
// any pod CIDR, sorted.
func (s *Syncer) podCIDRs(ctx context.Context) ([]netip.Prefix, error) {
	var out []netip.Prefix
	add := func(ss []string) {
		for _, s := range ss {
			if pfx, err := netip.ParsePrefix(s); err == nil {
				out = append(out, pfx.Masked())
			}
		}
	}
	var open []string // host-scope pools with a family of no CIDRs
	err := paging.All(func(token string) (string, error) {
		resp, err := s.pools.ListPools(ctx, &ipamv1alpha1.ListPoolsRequest{PageToken: token})
		if err != nil {
			return "", fmt.Errorf("list pools: %w", err)
		}
		for _, p := range resp.GetPools() {
			add(p.GetIpv4().GetCidrs())
			add(p.GetIpv6().GetCidrs())
			if p.GetMode() == ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE &&
				((p.GetIpv4() != nil && len(p.GetIpv4().GetCidrs()) == 0) || (p.GetIpv6() != nil && len(p.GetIpv6().GetCidrs()) == 0)) {
				open = append(open, p.GetName())
			}
		}
		return resp.GetNextPageToken(), nil
	})
	if err != nil {
		return nil, err
	}
	for _, name := range open {
		err := paging.All(func(token string) (string, error) {
			resp, err := s.pools.ListBlocks(ctx, &ipamv1alpha1.ListBlocksRequest{Pool: name, PageToken: token})
			if err != nil {
				return "", fmt.Errorf("list blocks of pool %q: %w", name, err)
			}
			for _, b := range resp.GetBlocks() {
				add([]string{b.GetCidr()})
			}
			return resp.GetNextPageToken(), nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	return slices.Compact(out), nil
}

// Sync makes the rules cover the current pod CIDRs, rewriting them only
// when those changed or the rules went missing.
func (s *Syncer) Sync(ctx context.Context) error {
	cidrs, err := s.podCIDRs(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applied && slices.Equal(cidrs, s.cidrs) && s.rules.Installed(cidrs) {
		return nil
	}
	if err := s.rules.Apply(cidrs, s.overlay); err != nil {
		return err
	}
	s.cidrs, s.applied = cidrs, true
	s.log.Info("masquerading pod traffic leaving the pod CIDRs", "pod_cidrs", len(cidrs))
	return nil
}

// Run follows pool changes every interval until ctx ends: pods of a pool
// created later are masqueraded too.
func (s *Syncer) Run(ctx context.Context, interval time.Duration) {
	periodic.Every(ctx, interval, func() {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("update masquerade rules", "err", err)
		}
	})
}
