package endpoint

import (
	"context"
	"time"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

// GarbageCollect removes the endpoints of network whose attachments are not
// in valid and that are older than minAge, then has IPAM release any
// allocation of this node that no kept endpoint owns. Endpoints of other
// networks, or recorded without one, are kept; an empty network means every
// endpoint.
func (m *Manager) GarbageCollect(ctx context.Context, network string, valid []*datapathv1alpha1.Attachment, minAge time.Duration, dryRun bool) ([]*datapathv1alpha1.Endpoint, uint32, error) {
	keep := map[string]bool{}
	for _, att := range valid {
		keep[HostName(att)] = true
	}
	eps, err := m.store.list()
	if err != nil {
		return nil, 0, err
	}
	var removed []*datapathv1alpha1.Endpoint
	var live []*ipamv1alpha1.OwnerHandle
	cutoff := time.Now().Add(-minAge)
	for name, ep := range eps {
		// A scoped GC leaves endpoints of other networks alone, and those
		// recorded without a network (by an older shim): which network they
		// belong to is unknown, and their DELs still come.
		other := network != "" && ep.GetNetwork() != network
		if other || keep[name] || m.cfg.Reserved(ep.GetAttachment()) || ep.GetCreateTime().AsTime().After(cutoff) {
			live = append(live, &ipamv1alpha1.OwnerHandle{ContainerId: ep.GetAttachment().GetContainerId(), InterfaceName: ep.GetAttachment().GetInterfaceName()})
			continue
		}
		removed = append(removed, ep)
		if dryRun {
			continue
		}
		if _, err := m.DeleteEndpoint(ctx, ep.GetAttachment()); err != nil {
			return removed, 0, err
		}
	}
	for _, att := range valid {
		live = append(live, &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()})
	}
	gc, err := m.ipam.GarbageCollect(ctx, &ipamv1alpha1.GarbageCollectRequest{Node: m.cfg.NodeName, LiveHandles: live, DryRun: dryRun})
	if err != nil {
		return removed, 0, ipamError("garbage-collect addresses", err)
	}
	return removed, uint32(len(gc.GetReleased())), nil
}
