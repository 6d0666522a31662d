package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
)

// Errors for input the datapath cannot represent. They are wrapped with
// details; test with errors.Is.
var (
	// ErrIPv6Unsupported: the underlay (tunnel endpoints, the node's own
	// address) is IPv4 only. Pod addresses and blocks may be IPv6.
	ErrIPv6Unsupported = errors.New("datapath: IPv6 underlay addresses are not supported (the underlay is IPv4)")
	ErrInvalidAddress  = errors.New("datapath: invalid IP address")
	ErrInvalidPrefix   = errors.New("datapath: invalid IP prefix")
	ErrInvalidMAC      = errors.New("datapath: invalid MAC address (want 6 bytes)")
	ErrInvalidIfindex  = errors.New("datapath: invalid interface index")
	ErrInvalidMode     = errors.New("datapath: invalid mode")
	ErrNotFound        = errors.New("datapath: not found")
)

// ip4 returns a's four bytes as the kernel stores an IPv4 header field: a
// __u32 holding network-order bytes, i.e. read in native byte order.
// IPv4-mapped IPv6 addresses count as IPv4. It is for underlay (node)
// addresses, which are IPv4 only.
func ip4(a netip.Addr) (uint32, error) {
	if !a.IsValid() {
		return 0, fmt.Errorf("%w: zero address", ErrInvalidAddress)
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, fmt.Errorf("%w: %s", ErrIPv6Unsupported, a)
	}
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:]), nil
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func unicast4(a netip.Addr) (uint32, error) {
	v, err := ip4(a)
	if err != nil {
		return 0, err
	}
	if v == 0 || a.Unmap().IsMulticast() || a.Unmap() == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return 0, fmt.Errorf("%w: %s is not a unicast address", ErrInvalidAddress, a)
	}
	return v, nil
}

// podAddr checks a pod address and returns it unmapped: IPv4 (including
// IPv4-mapped IPv6) or IPv6. An IPv6 pod address must be unicast beyond the
// link: the programs leave link-local and multicast destinations to the
// kernel, so such an endpoint would never be reached. The hairpin
// addresses ([HairpinAddr]) are never a pod's.
func podAddr(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("%w: zero address", ErrInvalidAddress)
	}
	a = a.Unmap()
	if a == HairpinAddr(a) {
		return a, fmt.Errorf("%w: %s is reserved for hairpin connections", ErrInvalidAddress, a)
	}
	if a.Is4() {
		_, err := unicast4(a)
		return a, err
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return a, fmt.Errorf("%w: %s is not a global or unique local IPv6 unicast address", ErrInvalidAddress, a)
	}
	return a, nil
}

func ifindex(i int) (uint32, error) {
	if i <= 0 || i > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %d", ErrInvalidIfindex, i)
	}
	return uint32(i), nil
}

func mac(hw net.HardwareAddr, what string) ([6]uint8, error) {
	var m [6]uint8
	if len(hw) != len(m) {
		return m, fmt.Errorf("%w: %s %q", ErrInvalidMAC, what, hw.String())
	}
	copy(m[:], hw)
	return m, nil
}
