package nodedev

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/axon-cni/axon/services/datapath/nl"
	"github.com/axon-cni/axon/services/datapath/veth"
)

// BIG TCP (Cilium's enable-ipv4-big-tcp and enable-ipv6-big-tcp): pods'
// TCP stacks build and take GSO packets of up to bigTCPMaxSize instead of
// 64 KiB, so the fixed costs of a packet (both TCP stacks, the programs,
// the skb itself) are paid a third as often per byte. IPv4 needs Linux 6.3,
// IPv6 5.19. A device that is told a smaller maximum makes the kernel cut
// such a packet up in software, so every device on a pod packet's way
// takes the size: the pod's veth pair (set when it is made), the node's
// axon_host pair and the underlay device (raised at start-up, as far as
// its driver allows: tso_max_size). Tunnel mode qualifies because the
// programs encapsulate VXLAN themselves and send straight to the underlay
// device. Geneve does not: its packets go through axon_geneve, and a
// flow-based tunnel device has no lower device to take a larger limit
// from, so it takes at most 64 KiB. On the receiving side, NICs merge
// tunnelled packets (GRO) up to 64 KiB only, so in tunnel mode the
// larger packets are the sender's gain.
const (
	bigTCPMaxSize = 196608 // Cilium's default
	legacyGSOMax  = 65536
)

// ErrBigTCP wraps the reasons --big-tcp cannot be used on this node.
var ErrBigTCP = errors.New("BIG TCP unavailable")

// BigTCPSize returns the GSO size pods get with BIG TCP on this node (its
// underlay addresses nodeIPs, routing mode and tunnel protocol), or why it
// cannot be used.
func BigTCPSize(h nl.Handle, nodeIPs []netip.Addr, device, mode, protocol string) (int, error) {
	if mode == ModeTunnel {
		if protocol == TunnelGeneve {
			return 0, fmt.Errorf("%w: Geneve packets go through axon_geneve, a flow-based device that takes GSO packets of at most 64 KiB; use VXLAN or native routing", ErrBigTCP)
		}
		if !slices.ContainsFunc(nodeIPs, netip.Addr.Is4) {
			return 0, fmt.Errorf("%w: tunnel mode needs an IPv4 node address, which the programs encapsulate to", ErrBigTCP)
		}
	}
	dev, err := UnderlayDevice(h, nodeIPs, device)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBigTCP, err)
	}
	size := min(bigTCPMaxSize, int(dev.Attrs().TSOMaxSize))
	if size <= legacyGSOMax {
		return 0, fmt.Errorf("%w: underlay device %s takes GSO packets of at most %d bytes (its driver's tso_max_size)",
			ErrBigTCP, dev.Attrs().Name, dev.Attrs().TSOMaxSize)
	}
	return size, nil
}

// RaiseGSOMaxSize sets the node devices pod packets cross to take GSO
// packets of size: the underlay device and the axon_host/axon_net pair.
// A device that already takes more keeps its settings.
func RaiseGSOMaxSize(h nl.Handle, nodeIPs []netip.Addr, device string, size int) error {
	dev, err := UnderlayDevice(h, nodeIPs, device)
	if err != nil {
		return err
	}
	links := []netlink.Link{dev}
	for _, name := range []string{HostDevice, NetDevice} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		links = append(links, l)
	}
	for _, l := range links {
		if err := veth.RaiseGSOMaxSize(h, l, size); err != nil {
			return err
		}
	}
	return nil
}
