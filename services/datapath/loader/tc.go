package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Pods' host-side veths get their programs as cls_bpf filters on a clsact
// qdisc, not a tcx link. A device's first tcx attachment waits for an RCU
// grace period with the rtnl lock held (tcx_entry_sync in kernel/bpf/tcx.c):
// about 10 ms per pod on this kind of VM, and every other netlink user of
// the node waits with it. Adding a qdisc and a filter takes well under a
// millisecond. The filter lives as long as the device and keeps the program
// loaded, so pods keep their traffic while the agent is down, as a pinned
// link would; the node's own devices keep their pinned tcx links.
//
// Each pod veth carries two filters: axon_from_pod on ingress (what the pod
// sends) and axon_to_pod on egress (what the kernel routes into the pod,
// where replies of service backends that are no pods are translated back).
const (
	// endpointFilter and endpointEgressFilter name the filters, so a
	// restarted agent finds its own.
	endpointFilter       = "axon_from_pod"
	endpointEgressFilter = "axon_to_pod"
	filterHandle         = 1
	filterPrio           = 1
)

// podFilter is one of the two filters of a pod's veth.
type podFilter struct {
	name   string
	parent uint32 // netlink.HANDLE_MIN_INGRESS or HANDLE_MIN_EGRESS
	dir    string
	prog   func(*Loader) *ebpf.Program
}

// podFilters are a pod veth's filters, egress first: a device with the
// ingress filter, by which a restarted agent recognizes a pod's veth, has
// had the egress one attached before it.
var podFilters = [...]podFilter{
	{endpointEgressFilter, netlink.HANDLE_MIN_EGRESS, "egress", func(l *Loader) *ebpf.Program { return l.objs.ToPod() }},
	{endpointFilter, netlink.HANDLE_MIN_INGRESS, "ingress", func(l *Loader) *ebpf.Program { return l.objs.FromPod() }},
}

func clsact(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
}

func (pf podFilter) filter(ifindex int, prog *ebpf.Program) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex, Parent: pf.parent,
			Handle: filterHandle, Priority: filterPrio, Protocol: unix.ETH_P_ALL,
		},
		Fd: prog.FD(), Name: pf.name, DirectAction: true,
	}
}

// attachFilters puts the pod programs on ifindex's egress and ingress,
// replacing the filters of an earlier attach (or an earlier run's programs)
// in place: the kernel swaps a program atomically, no packet misses it.
func (l *Loader) attachFilters(ifindex int) error {
	if err := l.nl.QdiscReplace(clsact(ifindex)); err != nil {
		return fmt.Errorf("clsact qdisc on ifindex %d: %w", ifindex, err)
	}
	for _, pf := range podFilters {
		if err := l.nl.FilterReplace(pf.filter(ifindex, pf.prog(l))); err != nil {
			return fmt.Errorf("%s filter on ifindex %d: %w", pf.dir, ifindex, err)
		}
	}
	return nil
}

// filterOf returns pf's filter as an agent put it on link, or nil.
func (l *Loader) filterOf(link netlink.Link, pf podFilter) (*netlink.BpfFilter, error) {
	filters, err := l.nl.FilterList(link, pf.parent)
	if err != nil {
		return nil, err
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == pf.name && bf.Handle == filterHandle {
			return bf, nil
		}
	}
	return nil, nil
}

// ingressFilter is the filter of axon_from_pod, by which an agent
// recognizes a pod's veth.
func ingressFilter() podFilter { return podFilters[len(podFilters)-1] }

// adoptEndpoints moves every pod device's filters of an earlier run to the
// freshly loaded programs; a pod wired by a build without axon_to_pod gets
// its egress filter here.
func (l *Loader) adoptEndpoints() error {
	links, err := l.nl.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, ln := range links {
		if _, ok := ln.(*netlink.Veth); !ok {
			continue
		}
		f, err := l.filterOf(ln, ingressFilter())
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
				continue // removed meanwhile
			}
			return fmt.Errorf("filters of %s: %w", ln.Attrs().Name, err)
		}
		if f == nil {
			continue
		}
		if err := l.attachFilters(ln.Attrs().Index); err != nil {
			if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
				continue // removed meanwhile
			}
			return fmt.Errorf("move %s to the new program: %w", ln.Attrs().Name, err)
		}
	}
	return nil
}

// AttachEndpoint attaches the pod programs to a pod's host veth (ingress
// and egress). Nothing detaches them: deleting the veth removes its qdisc
// and filters.
func (l *Loader) AttachEndpoint(ifindex int) error {
	if ifindex <= 0 {
		return fmt.Errorf("attach to ifindex %d: not an interface", ifindex)
	}
	return l.attachFilters(ifindex)
}

// IsEndpointDevice reports whether ifindex carries one of the agent's pod
// filters (of this run or an earlier one).
func (l *Loader) IsEndpointDevice(ifindex int) bool {
	link, err := l.nl.LinkByIndex(ifindex)
	if err != nil {
		return false
	}
	for _, pf := range podFilters {
		if f, err := l.filterOf(link, pf); err == nil && f != nil {
			return true
		}
	}
	return false
}

// EndpointProgramProblems describes what is wrong with the pod programs on
// hostName (its ingress and egress filters); nil when both are in place.
func (l *Loader) EndpointProgramProblems(hostName string) []string {
	link, err := l.nl.LinkByName(hostName)
	if err != nil {
		return []string{fmt.Sprintf("no device %s: %v", hostName, err)}
	}
	var problems []string
	for _, pf := range podFilters {
		if p := l.filterProblem(link, hostName, pf); p != "" {
			problems = append(problems, p)
		}
	}
	return problems
}

// filterProblem describes what is wrong with pf's filter on link; "" when
// it runs this loader's program.
func (l *Loader) filterProblem(link netlink.Link, hostName string, pf podFilter) string {
	f, err := l.filterOf(link, pf)
	switch {
	case err != nil:
		return fmt.Sprintf("%s filters of %s: %v", pf.dir, hostName, err)
	case f == nil:
		return fmt.Sprintf("no program attached to %s (%s, %s)", hostName, pf.dir, pf.name)
	case !f.DirectAction:
		return fmt.Sprintf("%s filter on %s is not in direct-action mode", pf.dir, hostName)
	}
	if info, err := pf.prog(l).Info(); err == nil {
		if id, ok := info.ID(); ok && uint32(id) != uint32(f.Id) {
			return fmt.Sprintf("%s of %s runs program %d, not the agent's %d", pf.dir, hostName, f.Id, id)
		}
	}
	return ""
}
