// Package veth wires a pod to its node: the veth pair whose host side
// (lxc<hash>) stays in the node's network namespace and whose pod side is
// the CNI interface, with the pod's addresses, routes and gateway neighbour
// entry. It only does netlink work; the eBPF side is the loader's.
package veth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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

// HostName is the host-side interface name of an attachment: "lxc" and 12
// hex digits of a hash, 15 characters, the kernel's limit.
func HostName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "lxc" + hex.EncodeToString(sum[:])[:12]
}

// Spec is what a pod's interface should look like.
type Spec struct {
	HostName  string
	PodIfName string
	NetnsPath string
	MTU       int
	// Addrs are the pod's addresses with their prefix (/32, /128).
	Addrs []netip.Prefix
	// Gateways are the node's router IPs, one per family of Addrs.
	Gateways []netip.Addr
	// GSOMaxSize, when not 0, is the largest GSO and GRO packet both ends
	// take, IPv4 and IPv6 (BIG TCP); 0 keeps the kernel's 64 KiB.
	GSOMaxSize int
}

// Result describes the wired interfaces.
type Result struct {
	HostIndex int
	HostMAC   net.HardwareAddr
	PodIndex  int
	PodMAC    net.HardwareAddr
	// DefaultVia are the gateways the pod got a default route through: a
	// family whose default route another interface of the pod holds gets
	// none.
	DefaultVia []netip.Addr
}

// ErrPodIfExists means the pod's interface name is taken in its namespace.
var ErrPodIfExists = errors.New("interface exists in the pod")

// Plumber does the netlink work in a node's network namespace.
type Plumber struct {
	// Namespaces opens the node's namespace and pods'. Each call opens its
	// own netlink socket in the node's: the kernel answers a link deletion
	// only after the device's RCU grace periods, which it waits for outside
	// the rtnl lock, and requests on one socket wait for each other's
	// answers, so a shared socket would serialize those waits across pods.
	Namespaces nl.Namespaces
}

// randomMAC returns a random locally administered unicast MAC.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, err
	}
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac, nil
}

func gatewayFor(gws []netip.Addr, a netip.Addr) (netip.Addr, bool) {
	for _, g := range gws {
		if g.Is4() == a.Is4() {
			return g, true
		}
	}
	return netip.Addr{}, false
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func hostRoute(a netip.Addr) *net.IPNet {
	return ipNet(netip.PrefixFrom(a, a.BitLen()))
}

// IsNode reports whether netnsPath is the node's own network namespace; an
// error wraps nl.ErrNetNS when it is no network namespace.
func (p *Plumber) IsNode(netnsPath string) (bool, error) { return p.Namespaces.IsNode(netnsPath) }

// Create makes the veth pair and configures both sides. On failure it
// removes what it made.
func (p *Plumber) Create(s Spec) (res Result, err error) {
	podNS, err := p.Namespaces.Open(s.NetnsPath)
	if err != nil {
		return Result{}, err
	}
	defer podNS.Close()
	pod := podNS.Handle
	node, err := p.Namespaces.Node()
	if err != nil {
		return Result{}, err
	}
	defer node.Close()
	if _, err := pod.LinkByName(s.PodIfName); err == nil {
		return Result{}, fmt.Errorf("%w: %s in %s", ErrPodIfExists, s.PodIfName, s.NetnsPath)
	}
	hostMAC, err := randomMAC()
	if err != nil {
		return Result{}, err
	}
	podMAC, err := randomMAC()
	if err != nil {
		return Result{}, err
	}
	hostAttrs := netlink.LinkAttrs{Name: s.HostName, MTU: s.MTU, HardwareAddr: hostMAC}
	if s.GSOMaxSize > 0 {
		n := uint32(s.GSOMaxSize)
		hostAttrs.GSOMaxSize, hostAttrs.GROMaxSize, hostAttrs.GSOIPv4MaxSize, hostAttrs.GROIPv4MaxSize = n, n, n, n
	}
	v := &netlink.Veth{
		LinkAttrs:        hostAttrs,
		PeerName:         s.PodIfName,
		PeerHardwareAddr: podMAC,
		PeerMTU:          uint32(s.MTU),
		PeerNamespace:    netlink.NsFd(podNS.Ref),
	}
	if err := node.LinkAdd(v); err != nil {
		return Result{}, fmt.Errorf("create veth %s: %w", s.HostName, err)
	}
	defer func() {
		if err != nil {
			_ = node.LinkDel(v)
		}
	}()
	host, err := node.LinkByName(s.HostName)
	if err != nil {
		return Result{}, fmt.Errorf("find %s: %w", s.HostName, err)
	}
	podLink, err := pod.LinkByName(s.PodIfName)
	if err != nil {
		return Result{}, fmt.Errorf("find %s in %s: %w", s.PodIfName, s.NetnsPath, err)
	}
	if s.GSOMaxSize > 0 {
		// The kernel takes these for the new device only, not its peer.
		if err := RaiseGSOMaxSize(pod, podLink, s.GSOMaxSize); err != nil {
			return Result{}, fmt.Errorf("%s in %s: %w", s.PodIfName, s.NetnsPath, err)
		}
	}
	defaults, err := configurePod(pod, podLink, s, hostMAC)
	if err != nil {
		return Result{}, err
	}
	if err := node.LinkSetUp(host); err != nil {
		return Result{}, fmt.Errorf("set %s up: %w", s.HostName, err)
	}
	// The node reaches the pod (and answers it) through a host route on the
	// host-side veth; pod-to-pod traffic never uses it (the eBPF program
	// redirects straight to the peer).
	for _, a := range s.Addrs {
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: hostRoute(a.Addr()), Scope: netlink.SCOPE_LINK}
		if err := node.RouteReplace(r); err != nil {
			return Result{}, fmt.Errorf("route %s dev %s: %w", a.Addr(), s.HostName, err)
		}
	}
	return Result{HostIndex: host.Attrs().Index, HostMAC: hostMAC, PodIndex: podLink.Attrs().Index, PodMAC: podMAC, DefaultVia: defaults}, nil
}

// RaiseGSOMaxSize makes link take GSO and GRO packets of size, for IPv4
// and IPv6 (IPv4 above 64 KiB needs Linux 6.3); a limit that is already
// larger stays.
func RaiseGSOMaxSize(h nl.Handle, link netlink.Link, size int) error {
	a := link.Attrs()
	for _, set := range []struct {
		what string
		cur  uint32
		fn   func(netlink.Link, int) error
	}{
		{"GSO max size", a.GSOMaxSize, h.LinkSetGSOMaxSize}, {"GRO max size", a.GROMaxSize, h.LinkSetGROMaxSize},
		{"IPv4 GSO max size", a.GSOIPv4MaxSize, h.LinkSetGSOIPv4MaxSize}, {"IPv4 GRO max size", a.GROIPv4MaxSize, h.LinkSetGROIPv4MaxSize},
	} {
		if set.cur >= uint32(size) {
			continue
		}
		if err := set.fn(link, size); err != nil {
			return fmt.Errorf("set %s %s %d: %w", a.Name, set.what, size, err)
		}
	}
	return nil
}

// configurePod gives the pod side its addresses, gateway neighbours and
// routes, and returns the gateways it got a default route through.
func configurePod(pod nl.Handle, link netlink.Link, s Spec, hostMAC net.HardwareAddr) (defaults []netip.Addr, err error) {
	for _, a := range s.Addrs {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := pod.AddrAdd(link, addr); err != nil {
			return nil, fmt.Errorf("add %s to %s: %w", a, s.PodIfName, err)
		}
	}
	if err := pod.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", s.PodIfName, err)
	}
	for _, a := range s.Addrs {
		gw, ok := gatewayFor(s.Gateways, a.Addr())
		if !ok {
			return nil, fmt.Errorf("no gateway for %s", a)
		}
		// The gateway is on-link through the veth, answered by a permanent
		// neighbour entry: no ARP/ND round trip delays the first packet.
		family := Family(gw)
		def := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if gw.Is6() {
			def = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		neigh := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: hostMAC}
		if err := pod.NeighSet(neigh); err != nil {
			return nil, fmt.Errorf("neighbour %s in pod: %w", gw, err)
		}
		routes := []*netlink.Route{
			{LinkIndex: link.Attrs().Index, Dst: hostRoute(gw), Scope: netlink.SCOPE_LINK},
		}
		// A second attachment (another network) does not take the default
		// route of the pod's first: only an interface without a rival
		// gets it.
		if !hasOtherDefault(pod, family, link.Attrs().Index) {
			routes = append(routes, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: def, Gw: gw.AsSlice(), Src: a.Addr().AsSlice()})
			defaults = append(defaults, gw)
		}
		for _, r := range routes {
			if err := pod.RouteReplace(r); err != nil {
				return nil, fmt.Errorf("route %s in pod: %w", r.Dst, err)
			}
		}
	}
	return defaults, nil
}

// Family is the netlink address family of a.
func Family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// hasOtherDefault reports whether the pod has a default route of family
// through another interface than ifindex.
func hasOtherDefault(pod nl.Handle, family, ifindex int) bool {
	routes, err := pod.RouteList(nil, family)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(routes, func(r netlink.Route) bool { return IsDefaultRoute(r) && r.LinkIndex != ifindex })
}

// IsDefaultRoute reports whether r is a default route (no destination, or
// the all-zero prefix), as netlink reports them either way.
func IsDefaultRoute(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return r.Dst.IP.IsUnspecified() && ones == 0
}

// Delete removes the host-side veth, which removes the pod side and the
// host routes with it. A missing interface is success.
func (p *Plumber) Delete(hostName string) error {
	node, err := p.Namespaces.Node()
	if err != nil {
		return err
	}
	defer node.Close()
	link, err := node.LinkByName(hostName)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostName, err)
	}
	if err := node.LinkDel(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", hostName, err)
	}
	return nil
}

// Part names the piece of the wiring a Problem is about.
type Part int

// The parts Check verifies.
const (
	PartNetns Part = iota
	PartHostInterface
	PartPodInterface
	PartPodAddress
	PartPodRoute
	PartPodNeighbor
	PartHostRoute
)

// Problem is one difference Check found.
type Problem struct {
	Part    Part
	Message string
}

func (p Problem) String() string { return p.Message }

// Check compares the wiring with s and res and describes every difference.
func (p *Plumber) Check(s Spec, res Result) []Problem {
	var problems []Problem
	add := func(part Part, format string, args ...any) {
		problems = append(problems, Problem{part, fmt.Sprintf(format, args...)})
	}
	node, err := p.Namespaces.Node()
	if err != nil {
		add(PartHostInterface, "%v", err)
		return problems
	}
	defer node.Close()
	host, err := node.LinkByName(s.HostName)
	switch {
	case err != nil:
		add(PartHostInterface, "host interface %s missing", s.HostName)
	case host.Attrs().OperState != netlink.OperUp && host.Attrs().Flags&net.FlagUp == 0:
		add(PartHostInterface, "host interface %s is down", s.HostName)
	case host.Attrs().HardwareAddr.String() != res.HostMAC.String():
		add(PartHostInterface, "host interface %s has MAC %s, want %s", s.HostName, host.Attrs().HardwareAddr, res.HostMAC)
	case s.MTU != 0 && host.Attrs().MTU != s.MTU:
		add(PartHostInterface, "host interface %s has MTU %d, want %d", s.HostName, host.Attrs().MTU, s.MTU)
	}
	if host != nil {
		// The node's way to the pod (and back for the pod's replies).
		routes, err := node.RouteList(host, netlink.FAMILY_ALL)
		if err != nil {
			add(PartHostRoute, "list routes of %s: %v", s.HostName, err)
		}
		for _, a := range s.Addrs {
			if err == nil && !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == hostRoute(a.Addr()).String() }) {
				add(PartHostRoute, "node route to %s via %s missing", a.Addr(), s.HostName)
			}
		}
	}
	podNS, err := p.Namespaces.Open(s.NetnsPath)
	if err != nil {
		add(PartNetns, "network namespace %s unusable: %v", s.NetnsPath, err)
		return problems
	}
	defer podNS.Close()
	pod := podNS.Handle
	link, err := pod.LinkByName(s.PodIfName)
	if err != nil {
		add(PartPodInterface, "pod interface %s missing in %s", s.PodIfName, s.NetnsPath)
		return problems
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		add(PartPodInterface, "pod interface %s is down", s.PodIfName)
	}
	if link.Attrs().HardwareAddr.String() != res.PodMAC.String() {
		add(PartPodInterface, "pod interface %s has MAC %s, want %s", s.PodIfName, link.Attrs().HardwareAddr, res.PodMAC)
	}
	if s.MTU != 0 && link.Attrs().MTU != s.MTU {
		add(PartPodInterface, "pod interface %s has MTU %d, want %d", s.PodIfName, link.Attrs().MTU, s.MTU)
	}
	addrs, err := pod.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		add(PartPodAddress, "list addresses of %s: %v", s.PodIfName, err)
		return problems
	}
	have := map[string]bool{}
	for _, a := range addrs {
		have[a.IPNet.String()] = true
	}
	for _, a := range s.Addrs {
		if !have[ipNet(a).String()] {
			add(PartPodAddress, "address %s missing on %s", a, s.PodIfName)
		}
	}
	routes, err := pod.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		add(PartPodRoute, "list routes of %s: %v", s.PodIfName, err)
		return problems
	}
	neighs, nerr := pod.NeighList(link.Attrs().Index, netlink.FAMILY_ALL)
	if nerr != nil {
		add(PartPodNeighbor, "list neighbours of %s: %v", s.PodIfName, nerr)
	}
	for _, gw := range s.Gateways {
		found := false
		for _, r := range routes {
			if IsDefaultRoute(r) && r.Gw.Equal(gw.AsSlice()) {
				found = true
			}
		}
		if !found && !hasOtherDefault(pod, Family(gw), link.Attrs().Index) {
			add(PartPodRoute, "default route via %s missing in the pod", gw)
		}
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Dst != nil && r.Dst.String() == hostRoute(gw).String() && r.Gw == nil
		}) {
			add(PartPodRoute, "link route to the gateway %s missing in the pod", gw)
		}
		if nerr == nil && !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			return n.IP.Equal(gw.AsSlice()) && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == res.HostMAC.String()
		}) {
			add(PartPodNeighbor, "permanent neighbour entry for the gateway %s (%s) missing in the pod", gw, res.HostMAC)
		}
	}
	return problems
}
