package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// SetNodeAddrs replaces the node's own addresses (axon_node_addrs): those a
// node port's wildcard frontend (0.0.0.0, ::) stands for, that the programs
// take as in-cluster clients and as a SNAT source, and whose packets from a
// pod (replies to a node port's outside client) they route themselves.
// Addresses written before an error stay written.
func (o *Objects) SetNodeAddrs(addrs []netip.Addr) error {
	want := map[podAxonNodeAddr]bool{}
	for _, a := range addrs {
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			return fmt.Errorf("node address %v: %w", a, ErrInvalidAddress)
		}
		want[podAxonNodeAddr{Addr: addr16(a.Unmap())}] = true
	}
	var stale []podAxonNodeAddr
	if err := readAll(o.maps.AxonNodeAddrs, func(k podAxonNodeAddr, _ uint32) {
		if !want[k] {
			stale = append(stale, k)
		}
	}); err != nil {
		return fmt.Errorf("read node addresses: %w", err)
	}
	for k := range want {
		if err := o.maps.AxonNodeAddrs.Put(&k, uint32(0)); err != nil {
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

// NodeAddrs returns the node's addresses as SetNodeAddrs wrote them.
func (o *Objects) NodeAddrs() ([]netip.Addr, error) {
	var out []netip.Addr
	if err := readAll(o.maps.AxonNodeAddrs, func(k podAxonNodeAddr, _ uint32) {
		out = append(out, netip.AddrFrom16(k.Addr).Unmap())
	}); err != nil {
		return nil, fmt.Errorf("read node addresses: %w", err)
	}
	return out, nil
}
