package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/internal/periodic"
)

// nodeAddrs returns the node's own addresses, which a node port's wildcard
// frontend stands for: --node-ip's first, in their order (the first of each
// family is its SNAT source), then every other unicast address of the
// node's links (not loopback or link-local), sorted.
func (a *Agent) nodeAddrs() ([]netip.Addr, error) {
	addrs, err := a.node.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list the node's addresses: %w", err)
	}
	var out, others []netip.Addr
	for _, ip := range a.cfg.NodeIPs {
		if ip = ip.Unmap(); !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if ip = ip.Unmap(); ok && ip.IsGlobalUnicast() && !slices.Contains(out, ip) && !slices.Contains(others, ip) {
			others = append(others, ip)
		}
	}
	slices.SortFunc(others, netip.Addr.Compare)
	return append(out, others...), nil
}

// RunNodeAddrs keeps the programs' node addresses in line with the node's
// (an address added or removed), checking every interval until ctx ends.
// Run it once Start succeeded; a no-op without the eBPF datapath.
func (a *Agent) RunNodeAddrs(ctx context.Context, interval time.Duration) {
	if a.deps.Datapath == nil {
		return
	}
	periodic.Every(ctx, interval, func() {
		if err := a.refreshNodeAddrs(); err != nil {
			a.log.WarnContext(ctx, "node addresses", "err", err)
		}
	})
}

// refreshNodeAddrs rewrites the datapath configuration when the node's
// addresses changed.
func (a *Agent) refreshNodeAddrs() error {
	addrs, err := a.nodeAddrs()
	if err != nil {
		return err
	}
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	if slices.Equal(addrs, a.dpConfig.NodeAddrs) {
		return nil
	}
	c := a.dpConfig
	c.NodeAddrs = addrs
	if err := a.deps.Datapath.Configure(c); err != nil {
		return err
	}
	a.dpConfig = c
	a.log.Info("node addresses changed", "addrs", addrs)
	return nil
}

// configure writes the datapath configuration c with the node's addresses
// and keeps it for refreshNodeAddrs.
func (a *Agent) configure(bpf bpfmaps.Datapath, c bpfmaps.Config) error {
	addrs, err := a.nodeAddrs()
	if err != nil {
		return err
	}
	c.NodeAddrs = addrs
	a.dpMu.Lock()
	defer a.dpMu.Unlock()
	if err := bpf.Configure(c); err != nil {
		return err
	}
	a.dpConfig = c
	return nil
}
