package bpffake

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// full reports whether adding key to m would exceed the capacity.
func full[K comparable, V any](f *Fake, m map[K]V, key K) bool {
	_, ok := m[key]
	return !ok && f.capacity > 0 && len(m) >= f.capacity
}

func checkIfindex(i int) error {
	if i <= 0 || i > 1<<31-1 {
		return fmt.Errorf("%w: %d", bpfdp.ErrInvalidIfindex, i)
	}
	return nil
}

func checkMAC(hw net.HardwareAddr, what string) error {
	if len(hw) != 6 {
		return fmt.Errorf("%w: %s %q", bpfdp.ErrInvalidMAC, what, hw.String())
	}
	return nil
}

// unicast4 checks an underlay address: IPv4 (or IPv4-mapped), unicast.
func unicast4(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("%w: zero address", bpfdp.ErrInvalidAddress)
	}
	a = a.Unmap()
	if !a.Is4() {
		return a, fmt.Errorf("%w: %s", bpfdp.ErrIPv6Unsupported, a)
	}
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return a, fmt.Errorf("%w: %s is not a unicast address", bpfdp.ErrInvalidAddress, a)
	}
	return a, nil
}

// podAddr checks a pod address as the real maps do and unmaps it.
func podAddr(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("%w: zero address", bpfdp.ErrInvalidAddress)
	}
	a = a.Unmap()
	if a.Is4() {
		return unicast4(a)
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return a, fmt.Errorf("%w: %s is not a global or unique local IPv6 unicast address", bpfdp.ErrInvalidAddress, a)
	}
	return a, nil
}

// blockPrefix checks a remote block and masks it.
func blockPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("%w: %s", bpfdp.ErrInvalidPrefix, p)
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return p, fmt.Errorf("%w: %s", bpfdp.ErrInvalidPrefix, p)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	if a := p.Addr(); a.Is6() && (a.IsLinkLocalUnicast() || a.IsMulticast()) {
		return p, fmt.Errorf("%w: %s is link-local or multicast", bpfdp.ErrInvalidPrefix, p)
	}
	return p, nil
}

func cloneEndpoint(ep bpfmaps.Endpoint) bpfmaps.Endpoint {
	ep.PodMAC, ep.HostMAC = slices.Clone(ep.PodMAC), slices.Clone(ep.HostMAC)
	return ep
}
