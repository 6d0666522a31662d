package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// DeleteEndpoint undoes CreateEndpoint. Unknown attachments are success.
// It never waits for IPAM: the pod's networking is removed at once, and the
// address release is queued on disk and done in the background (see
// ReleasesQueued), so a slow or hung IPAM cannot hold up a pod's teardown
// and a restart does not forget the release.
func (m *Manager) DeleteEndpoint(ctx context.Context, att *datapathv1alpha1.Attachment) (*datapathv1alpha1.Endpoint, error) {
	if err := validAttachment(att); err != nil {
		return nil, err
	}
	hostName := HostName(att)
	defer m.locks.lock(hostName)()
	return m.deleteLocked(ctx, att, hostName)
}

// deleteLocked is DeleteEndpoint under the attachment's lock.
func (m *Manager) deleteLocked(ctx context.Context, att *datapathv1alpha1.Attachment, hostName string) (*datapathv1alpha1.Endpoint, error) {
	rec, ep, err := m.store.load(hostName)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("endpoint record: %w", err)
	}
	ifindex := hostIfindex(ep, hostName)
	if l, err := m.node.LinkByName(hostName); err == nil {
		ifindex = l.Attrs().Index // also without a record
	}
	// The veth goes first, and its program with it.
	if err := m.plumber.Delete(hostName); err != nil {
		return nil, fmt.Errorf("remove veth %s: %w", hostName, err)
	}
	if m.bpf != nil {
		m.forgetHostPorts(ctx, hostName, ep)
		m.forgetAddrs(hostName, Addrs(ep))
		if ep == nil {
			m.forgetEntriesOf(hostName, ifindex)
		}
		m.forgetDevice(hostName, ifindex)
	}
	m.pods.release(att.GetContainerId(), hostName)
	var seq uint64
	if rec != nil {
		seq = rec.IPAMSequence
	}
	// Without a record (a crash between IPAM and the record), the handle
	// alone still finds and releases the allocation. The release is queued
	// before the record goes, so one of them always leads to it.
	if err := m.queueRelease(hostName, att, seq); err != nil {
		return nil, fmt.Errorf("queue the address release: %w", err)
	}
	if err := m.store.remove(hostName); err != nil {
		return nil, fmt.Errorf("remove endpoint record: %w", err)
	}
	m.wakeReleases()
	if ep != nil {
		m.log.Info("endpoint deleted", "endpoint", hostName, "container", att.GetContainerId())
	}
	return ep, nil
}

// forgetEntriesOf removes the endpoint map entries that send to the host
// veth ifindex: those of an endpoint whose record a crash lost (it came
// between the map writes and the record), which no address list names.
// Left, they would send traffic for the addresses IPAM gives out again to
// a dead interface.
func (m *Manager) forgetEntriesOf(hostName string, ifindex int) {
	if ifindex <= 0 {
		return
	}
	ips, err := m.bpf.EndpointAddrs()
	if err != nil {
		m.log.Warn("list endpoint map entries", "endpoint", hostName, "err", err)
		return
	}
	var stale []netip.Prefix
	for _, ip := range ips {
		if ep, err := m.bpf.Endpoint(ip); err == nil && ep.Ifindex == ifindex {
			stale = append(stale, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	m.forgetAddrs(hostName, stale)
}
