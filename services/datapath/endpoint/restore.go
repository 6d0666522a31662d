package endpoint

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"regexp"

	"github.com/vishvananda/netlink"
	"google.golang.org/protobuf/types/known/durationpb"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/veth"
)

// hostNamePattern matches the host-side veth names the agent gives pods
// (veth.HostName).
var hostNamePattern = regexp.MustCompile(`^lxc[0-9a-f]{12}$`)

// restoreEndpoints brings the node in line with the endpoint records at
// start-up, for what changed while no agent ran or what a crash left half
// done: an endpoint whose host veth is gone (its pod's namespace was
// deleted) is removed like a DEL would; endpoint map entries and pod veths
// of no record are dropped, so a stale entry can never divert traffic for
// an address IPAM gives out again. It returns the endpoints kept.
func (m *Manager) restoreEndpoints(ctx context.Context, eps map[string]*datapathv1alpha1.Endpoint) map[string]*datapathv1alpha1.Endpoint {
	h := m.node
	// CNI DELs (and the replay of queued ones) are served while this runs:
	// each endpoint is looked at under its attachment's lock, from its
	// record as it is then; one a DEL removed meanwhile is left alone.
	//
	// Recorded pod keys first, so that a record without one (an earlier
	// version's) cannot be given a key another pod holds.
	for name, ep := range eps {
		unlock := m.locks.lock(name)
		if rec, _, err := m.store.load(name); err == nil && rec.PodKey != 0 {
			m.pods.acquire(ep.GetAttachment().GetContainerId(), name, rec.PodKey)
		}
		unlock()
	}
	for name, ep := range eps {
		unlock := m.locks.lock(name)
		rec, _, err := m.store.load(name)
		if err != nil {
			unlock()
			if errors.Is(err, os.ErrNotExist) {
				delete(eps, name) // deleted meanwhile
			}
			continue
		}
		link, err := h.LinkByName(name)
		if err == nil {
			m.rewire(name, link.Attrs().Index, ep, rec)
			unlock()
			continue
		}
		unlock()
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			continue // unknown: leave it to CHECK
		}
		m.log.Info("endpoint's interface is gone; removing the endpoint", "endpoint", name,
			"pod", ep.GetPodNamespace()+"/"+ep.GetPodName())
		if _, err := m.DeleteEndpoint(ctx, ep.GetAttachment()); err != nil {
			m.log.Warn("remove endpoint", "endpoint", name, "err", err)
			continue
		}
		delete(eps, name)
	}
	if m.bpf != nil {
		keep := map[netip.Addr]bool{}
		for _, ep := range eps {
			for _, p := range Addrs(ep) {
				keep[p.Addr()] = true
			}
		}
		ips, err := m.bpf.EndpointAddrs()
		if err != nil {
			m.log.Warn("list endpoint map entries", "err", err)
		}
		for _, ip := range ips {
			if keep[ip] {
				continue
			}
			if err := m.bpf.DeleteEndpoint(ip); err != nil {
				m.log.Warn("remove endpoint map entry of no endpoint", "ip", ip, "err", err)
				continue
			}
			m.log.Info("removed endpoint map entry of no endpoint", "ip", ip)
		}
	}
	links, err := h.LinkList()
	if err != nil {
		m.log.Warn("list links", "err", err)
		return eps
	}
	for _, l := range links {
		name := l.Attrs().Name
		// Only a veth carrying Axon's program is Axon's: Cilium names its
		// pods' veths the same way.
		if l.Type() != "veth" || !hostNamePattern.MatchString(name) || eps[name] != nil ||
			m.bpf == nil || !m.bpf.IsEndpointDevice(l.Attrs().Index) {
			continue
		}
		if err := h.LinkDel(l); err != nil {
			m.log.Warn("remove pod interface of no endpoint", "interface", name, "err", err)
			continue
		}
		m.forgetDevice(name, l.Attrs().Index)
		m.log.Info("removed pod interface of no endpoint", "interface", name)
	}
	return eps
}

// rewire writes a kept endpoint's map entries and program again, from its
// record: pods keep working when the pins were lost (a new pin directory, a
// remounted bpffs) while their veths survived.
func (m *Manager) rewire(name string, ifindex int, ep *datapathv1alpha1.Endpoint, rec *record) {
	if m.bpf == nil {
		return
	}
	hostMAC, _ := net.ParseMAC(rec.HostMAC)
	podMAC, _ := net.ParseMAC(rec.PodMAC)
	res := veth.Result{HostIndex: ifindex, HostMAC: hostMAC, PodMAC: podMAC}
	podKey := m.pods.acquire(ep.GetAttachment().GetContainerId(), name, rec.PodKey)
	if rec.PodKey != podKey {
		rec.PodKey = podKey
		if err := m.store.save(name, rec); err != nil {
			m.log.Warn("record the endpoint's pod key", "endpoint", name, "err", err)
		}
	}
	// No rollback: what was there may still work; CHECK reports the rest.
	if err := m.writeEBPF(res, ep, Addrs(ep), podKey); err != nil {
		m.log.Warn("restore the endpoint's eBPF state", "endpoint", name, "err", err)
	}
}

// Restore reconciles the node with the endpoint records at start-up (see
// restoreEndpoints) and returns the endpoints kept; new endpoints get IDs
// after theirs.
func (m *Manager) Restore(ctx context.Context) (map[string]*datapathv1alpha1.Endpoint, error) {
	eps, err := m.store.list()
	if err != nil {
		return nil, err
	}
	eps = m.restoreEndpoints(ctx, eps)
	for _, ep := range eps {
		if int(ep.GetMtu()) > m.cfg.MTU {
			// Its full-size packets no longer fit the underlay once
			// encapsulated; only a new pod gets the new MTU.
			m.log.Warn("endpoint MTU exceeds the node's pod MTU; recreate the pod", "endpoint", ep.GetEndpointId(),
				"pod", ep.GetPodNamespace()+"/"+ep.GetPodName(), "endpoint_mtu", ep.GetMtu(), "pod_mtu", m.cfg.MTU)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ep := range eps {
		m.nextID = max(m.nextID, ep.GetEndpointId())
	}
	return eps, nil
}

// ReleaseOrphans has IPAM release every allocation of this node that no
// endpoint owns: the addresses of an ADD that a crash cut short between
// IPAM's answer and the endpoint's record, or before the rollback of a
// failed ADD released them. keep names owners without a record whose
// allocations must stay all the same (the node's health endpoint, which
// takes its addresses back on the next round). Another node's allocations
// are never touched: IPAM collects only NodeName's.
//
// Run it only while no ADD can be in flight, for an ADD's allocation has
// no record until the endpoint is wired: the agent runs it at start-up,
// after Restore and before the node reports ready (CreateEndpoint allocates
// nothing until then). A DEL served meanwhile removes a record, and its
// endpoint's addresses are released either way.
func (m *Manager) ReleaseOrphans(ctx context.Context, keep ...*datapathv1alpha1.Attachment) error {
	eps, err := m.store.list()
	if err != nil {
		return err
	}
	live := make([]*ipamv1alpha1.OwnerHandle, 0, len(eps)+len(keep))
	for _, ep := range eps {
		keep = append(keep, ep.GetAttachment())
	}
	for _, att := range keep {
		live = append(live, &ipamv1alpha1.OwnerHandle{ContainerId: att.GetContainerId(), InterfaceName: att.GetInterfaceName()})
	}
	// No grace period: nothing is in flight (see above), and an allocation
	// made after IPAM read the node's is never released (its sequence
	// guards each release).
	gc, err := m.ipam.GarbageCollect(ctx, &ipamv1alpha1.GarbageCollectRequest{
		Node: m.cfg.NodeName, LiveHandles: live, MinAge: durationpb.New(0),
	})
	if err != nil {
		return ipamError("release the addresses of no endpoint", err)
	}
	for _, a := range gc.GetReleased() {
		var ips []string
		for _, ad := range a.GetAddresses() {
			ips = append(ips, ad.GetIp())
		}
		m.log.Info("released the addresses of no endpoint (an ADD cut short)", "container", a.GetHandle().GetContainerId(),
			"interface", a.GetHandle().GetInterfaceName(), "pod", a.GetPodNamespace()+"/"+a.GetPodName(), "ips", ips)
	}
	return nil
}
