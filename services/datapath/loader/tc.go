package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Pods' host-side veths get the program as a cls_bpf filter on a clsact
// qdisc, not a tcx link. A device's first tcx attachment waits for an RCU
// grace period with the rtnl lock held (tcx_entry_sync in kernel/bpf/tcx.c):
// about 10 ms per pod on this kind of VM, and every other netlink user of
// the node waits with it. Adding a qdisc and a filter takes well under a
// millisecond. The filter lives as long as the device and keeps the program
// loaded, so pods keep their traffic while the agent is down, as a pinned
// link would; the node's own devices keep their pinned tcx links.
const (
	// endpointFilter names the filter, so a restarted agent finds its own.
	endpointFilter = "axon_from_pod"
	filterHandle   = 1
	filterPrio     = 1
)

func clsact(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
}

func ingressFilter(ifindex int, prog *ebpf.Program) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: filterHandle, Priority: filterPrio, Protocol: unix.ETH_P_ALL,
		},
		Fd: prog.FD(), Name: endpointFilter, DirectAction: true,
	}
}

// attachFilter puts prog on ifindex's ingress, replacing the filter of an
// earlier attach (or an earlier run's program) in place: the kernel swaps
// the program atomically, no packet misses it.
func (l *Loader) attachFilter(ifindex int, prog *ebpf.Program) error {
	if err := l.nl.QdiscReplace(clsact(ifindex)); err != nil {
		return fmt.Errorf("clsact qdisc on ifindex %d: %w", ifindex, err)
	}
	if err := l.nl.FilterReplace(ingressFilter(ifindex, prog)); err != nil {
		return fmt.Errorf("ingress filter on ifindex %d: %w", ifindex, err)
	}
	return nil
}

// endpointFilterOf returns the ingress filter an agent put on link, or nil.
func (l *Loader) endpointFilterOf(link netlink.Link) (*netlink.BpfFilter, error) {
	filters, err := l.nl.FilterList(link, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return nil, err
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == endpointFilter && bf.Handle == filterHandle {
			return bf, nil
		}
	}
	return nil, nil
}

// adoptEndpoints moves every pod device's filter of an earlier run to the
// freshly loaded program.
func (l *Loader) adoptEndpoints() error {
	links, err := l.nl.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, ln := range links {
		if _, ok := ln.(*netlink.Veth); !ok {
			continue
		}
		f, err := l.endpointFilterOf(ln)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
				continue // removed meanwhile
			}
			return fmt.Errorf("filters of %s: %w", ln.Attrs().Name, err)
		}
		if f == nil {
			continue
		}
		if err := l.attachFilter(ln.Attrs().Index, l.objs.FromPod()); err != nil {
			if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
				continue // removed meanwhile
			}
			return fmt.Errorf("move %s to the new program: %w", ln.Attrs().Name, err)
		}
	}
	return nil
}

// AttachEndpoint attaches the pod program to a pod's host veth. Nothing
// detaches it: deleting the veth removes its qdisc and filter.
func (l *Loader) AttachEndpoint(ifindex int) error {
	if ifindex <= 0 {
		return fmt.Errorf("attach to ifindex %d: not an interface", ifindex)
	}
	return l.attachFilter(ifindex, l.objs.FromPod())
}

// IsEndpointDevice reports whether ifindex carries the agent's pod filter
// (of this run or an earlier one).
func (l *Loader) IsEndpointDevice(ifindex int) bool {
	link, err := l.nl.LinkByIndex(ifindex)
	if err != nil {
		return false
	}
	f, err := l.endpointFilterOf(link)
	return err == nil && f != nil
}

// EndpointProgramProblems describes what is wrong with the pod program on
// hostName; nil when it is in place.
func (l *Loader) EndpointProgramProblems(hostName string) []string {
	link, err := l.nl.LinkByName(hostName)
	if err != nil {
		return []string{fmt.Sprintf("no device %s: %v", hostName, err)}
	}
	f, err := l.endpointFilterOf(link)
	switch {
	case err != nil:
		return []string{fmt.Sprintf("filters of %s: %v", hostName, err)}
	case f == nil:
		return []string{fmt.Sprintf("no program attached to %s", hostName)}
	case !f.DirectAction:
		return []string{fmt.Sprintf("filter on %s is not in direct-action mode", hostName)}
	}
	if info, err := l.objs.FromPod().Info(); err == nil {
		if id, ok := info.ID(); ok && uint32(id) != uint32(f.Id) {
			return []string{fmt.Sprintf("%s runs program %d, not the agent's %d", hostName, f.Id, id)}
		}
	}
	return nil
}
