package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"regexp"

	"github.com/vishvananda/netlink"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
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
func (a *Agent) restoreEndpoints(ctx context.Context, eps map[string]*datapathv1alpha1.Endpoint) map[string]*datapathv1alpha1.Endpoint {
	h := a.plumber.Node
	// CNI DELs (and the replay of queued ones) are served while this runs:
	// each endpoint is looked at under its attachment's lock, from its
	// record as it is then; one a DEL removed meanwhile is left alone.
	//
	// Recorded pod keys first, so that a record without one (an earlier
	// version's) cannot be given a key another pod holds.
	for name, ep := range eps {
		unlock := a.locks.lock(name)
		if rec, _, err := a.store.load(name); err == nil && rec.PodKey != 0 {
			a.pods.acquire(ep.GetAttachment().GetContainerId(), name, rec.PodKey)
		}
		unlock()
	}
	for name, ep := range eps {
		unlock := a.locks.lock(name)
		rec, _, err := a.store.load(name)
		if err != nil {
			unlock()
			if errors.Is(err, os.ErrNotExist) {
				delete(eps, name) // deleted meanwhile
			}
			continue
		}
		link, err := h.LinkByName(name)
		if err == nil {
			a.rewire(name, link.Attrs().Index, ep, rec)
			unlock()
			continue
		}
		unlock()
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			continue // unknown: leave it to CHECK
		}
		a.log.Info("endpoint's interface is gone; removing the endpoint", "endpoint", name,
			"pod", ep.GetPodNamespace()+"/"+ep.GetPodName())
		if _, err := a.DeleteEndpoint(ctx, ep.GetAttachment()); err != nil {
			a.log.Warn("remove endpoint", "endpoint", name, "err", err)
			continue
		}
		delete(eps, name)
	}
	if a.bpf != nil {
		keep := map[netip.Addr]bool{}
		for _, ep := range eps {
			for _, p := range endpointAddrs(ep) {
				keep[p.Addr()] = true
			}
		}
		ips, err := a.bpf.EndpointAddrs()
		if err != nil {
			a.log.Warn("list endpoint map entries", "err", err)
		}
		for _, ip := range ips {
			if keep[ip] {
				continue
			}
			if err := a.bpf.DeleteEndpoint(ip); err != nil {
				a.log.Warn("remove endpoint map entry of no endpoint", "ip", ip, "err", err)
				continue
			}
			a.log.Info("removed endpoint map entry of no endpoint", "ip", ip)
		}
	}
	links, err := h.LinkList()
	if err != nil {
		a.log.Warn("list links", "err", err)
		return eps
	}
	for _, l := range links {
		name := l.Attrs().Name
		// Only a veth carrying Axon's program is Axon's: Cilium names its
		// pods' veths the same way.
		if l.Type() != "veth" || !hostNamePattern.MatchString(name) || eps[name] != nil ||
			a.bpf == nil || !a.bpf.IsEndpointDevice(l.Attrs().Index) {
			continue
		}
		if err := h.LinkDel(l); err != nil {
			a.log.Warn("remove pod interface of no endpoint", "interface", name, "err", err)
			continue
		}
		a.forgetDevice(name, l.Attrs().Index)
		a.log.Info("removed pod interface of no endpoint", "interface", name)
	}
	return eps
}

// rewire writes a kept endpoint's map entries and program again, from its
// record: pods keep working when the pins were lost (a new pin directory, a
// remounted bpffs) while their veths survived.
func (a *Agent) rewire(name string, ifindex int, ep *datapathv1alpha1.Endpoint, rec *record) {
	if a.bpf == nil {
		return
	}
	hostMAC, _ := net.ParseMAC(rec.HostMAC)
	podMAC, _ := net.ParseMAC(rec.PodMAC)
	res := veth.Result{HostIndex: ifindex, HostMAC: hostMAC, PodMAC: podMAC}
	podKey := a.pods.acquire(ep.GetAttachment().GetContainerId(), name, rec.PodKey)
	if rec.PodKey != podKey {
		rec.PodKey = podKey
		if err := a.store.save(name, rec); err != nil {
			a.log.Warn("record the endpoint's pod key", "endpoint", name, "err", err)
		}
	}
	// No rollback: what was there may still work; CHECK reports the rest.
	if err := a.writeEBPF(res, ep, endpointAddrs(ep), podKey); err != nil {
		a.log.Warn("restore the endpoint's eBPF state", "endpoint", name, "err", err)
	}
}

// restoreRemotes seeds what the agent has applied of other nodes' blocks
// from the pinned maps, so that the first full sync of IPAM's block watch
// removes blocks that went away while no agent ran (their routes too).
func (a *Agent) restoreRemotes() {
	if a.bpf == nil {
		return
	}
	blocks, err := a.bpf.RemoteBlocks()
	if err != nil {
		a.log.Warn("list remote map entries", "err", err)
		return
	}
	a.remote.mu.Lock()
	defer a.remote.mu.Unlock()
	for p, ip := range blocks {
		if _, ok := a.remote.applied[p]; !ok {
			a.remote.applied[p] = remoteBlock{nodeIP: ip, nodeIP4: ip}
		}
	}
}
