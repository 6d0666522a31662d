// Package nodedev owns the node's own devices: the axon_host/axon_net pair
// holding the router IPs, the overlay (tunnel) device, the underlay device
// and the pod MTU derived from it, BIG TCP sizing, and the forwarding
// sysctls. It works through an nl.Handle in the node's namespace.
package nodedev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/axon-cni/axon/services/datapath/nl"
)

// Routing modes between nodes.
const (
	ModeTunnel = "tunnel"
	ModeNative = "native"
)

// Names of the node devices.
const (
	HostDevice = "axon_host"
	NetDevice  = "axon_net"
)

// Sysctl writes a kernel parameter given by its /proc/sys path.
type Sysctl func(path, value string) error

// WriteSysctl is the real Sysctl: it writes the file.
func WriteSysctl(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set %s: %w", path, err)
	}
	return nil
}

// Setup creates (or keeps) the axon_host/axon_net veth pair with the
// router IPs on axon_host, and enables forwarding through sysctl.
func Setup(h nl.Handle, sysctl Sysctl, routers []netip.Addr, mtu int) error {
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
		if r.Is6() {
			// Usable at once: a tentative address (during duplicate
			// address detection) cannot be a route's source.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(host, addr); err != nil {
			return fmt.Errorf("add router IP %s to %s: %w", r, HostDevice, err)
		}
	}
	for _, name := range []string{HostDevice, NetDevice} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if l.Attrs().MTU != mtu {
			// The pod MTU changed since the pair was made (a new underlay or --mtu).
			if err := h.LinkSetMTU(l, mtu); err != nil {
				return fmt.Errorf("set %s MTU %d: %w", name, mtu, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
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
		if err := sysctl(path, v); err != nil {
			return err
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

// TunnelDevice names the overlay device of a tunnel protocol.
func TunnelDevice(protocol string) string {
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

// MinPodMTU is the smallest pod MTU the agent accepts (IPv4's minimum);
// below IPv6MinMTU pods cannot use IPv6.
const (
	MinPodMTU  = 576
	IPv6MinMTU = 1280
)

// ErrNoUnderlay means no device holds a node address.
var ErrNoUnderlay = errors.New("no device holds a node address")

// ErrUnderlayRefused means the underlay device cannot be chosen safely: the
// node address is on a device that says nothing about where packets leave
// (loopback, dummy), or --underlay-device names an unusable device.
var ErrUnderlayRefused = errors.New("underlay device refused")

// UnderlayDevice returns the node's underlay device: the device named, when
// one is (--underlay-device), else the one holding the primary node address
// (the first IPv4 one, which tunnels use as their source), else the first
// other node address a device holds. A node address on a loopback or dummy
// device (a /32 announced by BGP, say) tells nothing about where packets
// leave, and guessing (the default route's device, say) would attach
// axon_from_underlay and size pods for a device traffic may not take: that
// is refused with ErrUnderlayRefused, naming the flag to set.
func UnderlayDevice(h nl.Handle, nodeIPs []netip.Addr, device string) (netlink.Link, error) {
	if device != "" {
		l, err := h.LinkByName(device)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil, fmt.Errorf("%w: --underlay-device %s does not exist", ErrUnderlayRefused, device)
			}
			return nil, fmt.Errorf("find underlay device %s: %w", device, err)
		}
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			return nil, fmt.Errorf("%w: --underlay-device %s is the loopback device, which no packet leaves by", ErrUnderlayRefused, device)
		}
		return l, nil
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	ordered := slices.Clone(nodeIPs)
	slices.SortStableFunc(ordered, func(a, b netip.Addr) int {
		switch {
		case a.Is4() == b.Is4():
			return 0
		case a.Is4():
			return -1
		default:
			return 1
		}
	})
	for _, ip := range ordered {
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); !ok || got.Unmap() != ip {
				continue
			}
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("device of node address %s: %w", ip, err)
			}
			kind := l.Type()
			if l.Attrs().Flags&net.FlagLoopback != 0 {
				kind = "loopback"
			}
			if kind == "loopback" || kind == "dummy" {
				return nil, fmt.Errorf("%w: node address %s is on %s, a %s device, which says nothing about where packets leave: set --underlay-device to the device they leave by",
					ErrUnderlayRefused, ip, l.Attrs().Name, kind)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("%w %v", ErrNoUnderlay, nodeIPs)
}

// DerivePodMTU is the pods' MTU on the node's underlay: all of the underlay
// device's MTU in native mode; in tunnel mode less tunnelOverhead, so that a
// full-size pod packet still fits the device once encapsulated (the
// programs set DF on the outer header; only a packet too large for the path
// MTU the node knows goes to the tunnel device, which fragments it).
// The underlay device is found as UnderlayDevice finds it; without one it
// assumes defaultUnderlayMTU and also returns the ErrNoUnderlay error saying
// why.
func DerivePodMTU(h nl.Handle, nodeIPs []netip.Addr, device, mode string) (pod int, underlay netlink.Link, err error) {
	mtu := defaultUnderlayMTU
	underlay, err = UnderlayDevice(h, nodeIPs, device)
	switch {
	case err == nil:
		mtu = underlay.Attrs().MTU
	case !errors.Is(err, ErrNoUnderlay):
		return 0, nil, err
	}
	pod = mtu
	if mode == ModeTunnel {
		pod -= tunnelOverhead
	}
	if pod < MinPodMTU {
		return 0, nil, fmt.Errorf("an underlay MTU of %d leaves pods %d bytes, below %d: set --mtu", mtu, pod, MinPodMTU)
	}
	return pod, underlay, err
}

// ProbeGeneve reports ErrNoGeneve when the kernel cannot create the
// Geneve overlay device, by creating and deleting a throwaway one (unless
// the device exists already).
func ProbeGeneve(h nl.Handle) error {
	if _, err := h.LinkByName(GeneveDevice); err == nil {
		return nil
	}
	probe := &netlink.Geneve{LinkAttrs: netlink.LinkAttrs{Name: "axon_gnvprobe"}, ID: 1, Remote: net.IPv4(127, 0, 0, 1)}
	if err := h.LinkAdd(probe); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT) {
			return ErrNoGeneve
		}
		return fmt.Errorf("probe Geneve support: %w", err)
	}
	if err := h.LinkDel(probe); err != nil {
		return fmt.Errorf("remove the Geneve probe device: %w", err)
	}
	return nil
}

// EnsureTunnel creates (or keeps) the flow-based overlay device, whose
// tunnel endpoints come from the eBPF programs, and returns its ifindex.
// Its MTU is the pods' (the inner packet's); NOARP because the programs,
// not neighbour resolution, pick where a packet goes.
func EnsureTunnel(h nl.Handle, protocol string, mtu int) (int, error) {
	name := TunnelDevice(protocol)
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
