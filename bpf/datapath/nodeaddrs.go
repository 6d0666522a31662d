package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Flags of axon_node_addrs' values (datapath.h).
const (
	nodeAddrOwn  = 1 // AXON_NODE_ADDR_OWN
	nodeAddrSNAT = 2 // AXON_NODE_ADDR_SNAT
)

// SetNodeAddrs replaces the node's own addresses (axon_node_addrs): those a
// node port's wildcard frontend (0.0.0.0, ::) stands for, that the programs
// take as in-cluster clients, and whose packets from a pod (replies to a
// node port's outside client) they route themselves. The first address of
// each family is also its SNAT source: connections from outside to a
// frontend that is not a node address (LoadBalancer, external IPs) leave
// with it for another node's backend. Addresses written before an error
// stay written.
func (o *Objects) SetNodeAddrs(addrs []netip.Addr) error {
	want := map[podAxonNodeAddr]podAxonNodeAddrValue{}
	for _, a := range addrs {
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			return fmt.Errorf("node address %v: %w", a, ErrInvalidAddress)
		}
		a = a.Unmap()
		want[podAxonNodeAddr{Addr: addr16(a)}] = podAxonNodeAddrValue{Flags: nodeAddrOwn}
		wildcard := podAxonNodeAddr{Addr: addr16(netip.IPv6Unspecified())}
		if a.Is4() {
			wildcard.Addr = addr16(netip.IPv4Unspecified())
		}
		if _, ok := want[wildcard]; !ok {
			want[wildcard] = podAxonNodeAddrValue{Flags: nodeAddrSNAT, Snat: addr16(a)}
		}
	}
	var stale []podAxonNodeAddr
	if err := readAll(o.maps.AxonNodeAddrs, func(k podAxonNodeAddr, _ podAxonNodeAddrValue) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}); err != nil {
		return fmt.Errorf("read node addresses: %w", err)
	}
	for k, v := range want {
		if err := o.maps.AxonNodeAddrs.Put(&k, &v); err != nil {
			return fmt.Errorf("write node address %v: %w", netip.AddrFrom16(k.Addr).Unmap(), err)
		}
	}
	for i := range stale {
		if err := o.maps.AxonNodeAddrs.Delete(&stale[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete node address %v: %w", netip.AddrFrom16(stale[i].Addr).Unmap(), err)
		}
	}
	return nil
}

// NodeAddrs returns the node's addresses as SetNodeAddrs wrote them, and
// the SNAT source of each family it has one for.
func (o *Objects) NodeAddrs() (addrs, snat []netip.Addr, err error) {
	if err := readAll(o.maps.AxonNodeAddrs, func(k podAxonNodeAddr, v podAxonNodeAddrValue) {
		if v.Flags&nodeAddrOwn != 0 {
			addrs = append(addrs, netip.AddrFrom16(k.Addr).Unmap())
		}
		if v.Flags&nodeAddrSNAT != 0 {
			snat = append(snat, netip.AddrFrom16(v.Snat).Unmap())
		}
	}); err != nil {
		return nil, nil, fmt.Errorf("read node addresses: %w", err)
	}
	return addrs, snat, nil
}
