package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Names of the node devices.
const (
	HostDevice = "axon_host"
	NetDevice  = "axon_net"
)

// setupNodeDevices creates (or keeps) the axon_host/axon_net veth pair
// with the router IPs on axon_host, and enables forwarding.
func setupNodeDevices(h *netlink.Handle, routers []netip.Addr, mtu int) error {
	host, err := h.LinkByName(HostDevice)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("find %s: %w", HostDevice, err)
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: HostDevice, MTU: mtu}, PeerName: NetDevice}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("create %s: %w", HostDevice, err)
		}
		if host, err = h.LinkByName(HostDevice); err != nil {
			return fmt.Errorf("find %s: %w", HostDevice, err)
		}
	}
	for _, r := range routers {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: r.AsSlice(), Mask: net.CIDRMask(r.BitLen(), r.BitLen())}}
		if err := h.AddrReplace(host, addr); err != nil {
			return fmt.Errorf("add router IP %s to %s: %w", r, HostDevice, err)
		}
	}
	for _, name := range []string{HostDevice, NetDevice} {
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	sysctls := map[string]string{"/proc/sys/net/ipv4/ip_forward": "1"}
	for _, r := range routers {
		if r.Is6() {
			sysctls["/proc/sys/net/ipv6/conf/all/forwarding"] = "1"
		}
	}
	for path, v := range sysctls {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", path, err)
		}
	}
	return nil
}

// Tunnel protocols and their overlay devices and UDP ports (Linux's and
// Cilium's defaults).
const (
	TunnelVXLAN  = "vxlan"
	TunnelGeneve = "geneve"

	VXLANDevice  = "axon_vxlan"
	GeneveDevice = "axon_geneve"
	VXLANPort    = 8472
	GenevePort   = 6081
)

// ErrNoGeneve means the kernel cannot create Geneve devices.
var ErrNoGeneve = errors.New("this kernel has no Geneve support (no geneve module); use --tunnel-protocol=vxlan")

// tunnelDevice names the overlay device of a tunnel protocol.
func tunnelDevice(protocol string) string {
	if protocol == TunnelGeneve {
		return GeneveDevice
	}
	return VXLANDevice
}

// tunnelOverhead is what encapsulation adds to a pod's packet on the
// underlay: outer IPv4 (20) + UDP (8) + VXLAN or option-less Geneve (8) +
// the inner Ethernet header (14).
const tunnelOverhead = 50

// defaultUnderlayMTU is assumed when no device holds a node address.
const defaultUnderlayMTU = 1500

// underlayMTU returns the MTU of the device holding a node address, or
// defaultUnderlayMTU and found=false when no device holds one.
func underlayMTU(h *netlink.Handle, nodeIPs []netip.Addr) (mtu int, found bool, err error) {
	idx, err := linkWithAddr(h, nodeIPs)
	if err != nil {
		return defaultUnderlayMTU, false, nil
	}
	l, err := h.LinkByIndex(idx)
	if err != nil {
		return 0, false, fmt.Errorf("underlay device %d: %w", idx, err)
	}
	return l.Attrs().MTU, true, nil
}

// podMTU is the pods' MTU on an underlay of MTU underlay: all of it in
// native mode; in tunnel mode less tunnelOverhead, so that a full-size pod
// packet still fits once encapsulated (the programs set DF on the outer
// header, so a larger one would be dropped, not fragmented).
func podMTU(underlay int, mode string) int {
	if mode == ModeTunnel {
		return underlay - tunnelOverhead
	}
	return underlay
}

// linkWithAddr returns the index of the device holding the first of ips
// that a device holds: the node's underlay device.
func linkWithAddr(h *netlink.Handle, ips []netip.Addr) (int, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, ip := range ips {
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				return a.LinkIndex, nil
			}
		}
	}
	return 0, fmt.Errorf("no device holds a node address %v", ips)
}

// ensureTunnel creates (or keeps) the flow-based overlay device, whose
// tunnel endpoints come from the eBPF programs, and returns its ifindex.
// Its MTU is the pods' (the inner packet's); NOARP because the programs,
// not neighbour resolution, pick where a packet goes.
func ensureTunnel(h *netlink.Handle, protocol string, mtu int) (int, error) {
	name := tunnelDevice(protocol)
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return 0, fmt.Errorf("find %s: %w", name, err)
		}
		attrs := netlink.LinkAttrs{Name: name, MTU: mtu}
		var dev netlink.Link = &netlink.Vxlan{LinkAttrs: attrs, FlowBased: true, Port: VXLANPort}
		if protocol == TunnelGeneve {
			dev = &netlink.Geneve{LinkAttrs: attrs, FlowBased: true, Dport: GenevePort}
		}
		if err := h.LinkAdd(dev); err != nil {
			if protocol == TunnelGeneve && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT)) {
				return 0, ErrNoGeneve
			}
			return 0, fmt.Errorf("create %s: %w", name, err)
		}
		if link, err = h.LinkByName(name); err != nil {
			return 0, fmt.Errorf("find %s: %w", name, err)
		}
	}
	if link.Attrs().MTU != mtu {
		// The underlay's MTU (or --mtu) changed since the device was made.
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return 0, fmt.Errorf("set %s MTU %d: %w", name, mtu, err)
		}
	}
	if err := h.LinkSetARPOff(link); err != nil {
		return 0, fmt.Errorf("set %s noarp: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("set %s up: %w", name, err)
	}
	return link.Attrs().Index, nil
}
