package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
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

// Mode is how the datapath reaches other nodes' pods (axon_config.mode).
type Mode uint32

const (
	// ModeNone is the state before SetConfig: the programs leave every
	// packet to the kernel (axon_to_overlay, which has no kernel path to
	// leave it to, drops it).
	ModeNone = Mode(podAxonModeAXON_MODE_NONE)
	// ModeTunnel encapsulates in VXLAN: the programs build and strip it
	// themselves, and send what they cannot through the flow-based tunnel
	// device.
	ModeTunnel = Mode(podAxonModeAXON_MODE_TUNNEL)
	// ModeNative routes through the node's FIB (routes for remote blocks are
	// the agent's, via netlink).
	ModeNative = Mode(podAxonModeAXON_MODE_NATIVE)
)

func (m Mode) String() string {
	switch m {
	case ModeNone:
		return "none"
	case ModeTunnel:
		return "tunnel"
	case ModeNative:
		return "native"
	default:
		return fmt.Sprintf("Mode(%d)", uint32(m))
	}
}

// Config is the node-wide configuration (the single axon_config entry).
type Config struct {
	Mode Mode
	// VXLANIfindex is the ifindex of axon_vxlan; required in ModeTunnel.
	VXLANIfindex int
	// NodeIP is this node's underlay IPv4, used as the outer source address
	// in tunnel mode (for IPv6 pod traffic too: the underlay is IPv4; an
	// IPv6 NodeIP is refused with [ErrIPv6Unsupported]). The zero Addr lets
	// the kernel pick it by route.
	NodeIP netip.Addr
	// Geneve says the tunnel device is Geneve: tunnelled packets all go
	// through it, the programs build and strip no VXLAN themselves.
	Geneve bool
}

// configGeneve is AXON_CONFIG_GENEVE of datapath.h (bpf2go copies types,
// not macros).
const configGeneve = 1

// Endpoint is a pod on this node (an axon_endpoints value).
type Endpoint struct {
	// Ifindex is the host-side veth's index in the node's namespace: the
	// programs redirect to its peer, the pod's interface.
	Ifindex  int
	ID       uint32
	PodMAC   net.HardwareAddr // MAC of the pod-side interface
	HostMAC  net.HardwareAddr // MAC of the host-side veth (the pod's router)
	Identity uint32           // security identity, for policy later
}

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
// kernel, so such an endpoint would never be reached.
func podAddr(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("%w: zero address", ErrInvalidAddress)
	}
	a = a.Unmap()
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

// endpointMap returns the endpoint map of ip's family and the key of ip in
// it (*podAxonEndpointKey or *podAxonEndpointKey6).
func (o *Objects) endpointMap(ip netip.Addr) (*ebpf.Map, any, error) {
	ip, err := podAddr(ip)
	if err != nil {
		return nil, nil, err
	}
	if ip.Is4() {
		k := endpointKey4(ip)
		return o.maps.AxonEndpoints, &k, nil
	}
	k := endpointKey6(ip)
	return o.maps.AxonEndpoints6, &k, nil
}

// endpointKey4 and endpointKey6 take addresses podAddr accepted.
func endpointKey4(ip netip.Addr) podAxonEndpointKey {
	b := ip.As4()
	return podAxonEndpointKey{Ip4: binary.NativeEndian.Uint32(b[:])}
}

func endpointKey6(ip netip.Addr) podAxonEndpointKey6 {
	return podAxonEndpointKey6{Ip6: ip.As16()}
}

// PutEndpoint adds or replaces the endpoint with address ip (IPv4 or IPv6;
// a dual-stack pod has one entry per address).
func (o *Objects) PutEndpoint(ip netip.Addr, ep Endpoint) error {
	m, key, err := o.endpointMap(ip)
	if err != nil {
		return err
	}
	var v podAxonEndpoint
	if v.Ifindex, err = ifindex(ep.Ifindex); err != nil {
		return err
	}
	if v.PodMac, err = mac(ep.PodMAC, "pod MAC"); err != nil {
		return err
	}
	if v.HostMac, err = mac(ep.HostMAC, "host MAC"); err != nil {
		return err
	}
	v.Id = ep.ID
	v.Identity = ep.Identity
	if err := m.Put(key, &v); err != nil {
		return fmt.Errorf("put endpoint %s: %w", ip, err)
	}
	return nil
}

// PutDevice records that the host-side veth dev (an ifindex) belongs to the pod
// with key pod (the same for all of a pod's attachments, different for
// every other pod): the pod may send any of its addresses out of any of
// its veths.
func (o *Objects) PutDevice(dev int, pod uint32) error {
	idx, err := ifindex(dev)
	if err != nil {
		return err
	}
	if err := o.maps.AxonDevices.Put(&idx, &pod); err != nil {
		return fmt.Errorf("put device %d: %w", dev, err)
	}
	return nil
}

// DeleteDevice forgets a host-side veth; a missing one is not an error.
func (o *Objects) DeleteDevice(dev int) error {
	idx, err := ifindex(dev)
	if err != nil {
		return err
	}
	if err := o.maps.AxonDevices.Delete(&idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete device %d: %w", dev, err)
	}
	return nil
}

// Device returns the pod key recorded for the host-side veth dev, or an
// error wrapping ErrNotFound.
func (o *Objects) Device(dev int) (uint32, error) {
	idx, err := ifindex(dev)
	if err != nil {
		return 0, err
	}
	var pod uint32
	if err := o.maps.AxonDevices.Lookup(&idx, &pod); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("device %d: %w", dev, ErrNotFound)
		}
		return 0, fmt.Errorf("look up device %d: %w", dev, err)
	}
	return pod, nil
}

// DeleteEndpoint removes the endpoint with address ip. Deleting an endpoint
// that does not exist is not an error.
func (o *Objects) DeleteEndpoint(ip netip.Addr) error {
	m, key, err := o.endpointMap(ip)
	if err != nil {
		return err
	}
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint %s: %w", ip, err)
	}
	return nil
}

// Endpoint returns the endpoint with address ip, or an error wrapping
// ErrNotFound.
func (o *Objects) Endpoint(ip netip.Addr) (Endpoint, error) {
	m, key, err := o.endpointMap(ip)
	if err != nil {
		return Endpoint{}, err
	}
	var v podAxonEndpoint
	if err := m.Lookup(key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Endpoint{}, fmt.Errorf("endpoint %s: %w", ip, ErrNotFound)
		}
		return Endpoint{}, fmt.Errorf("look up endpoint %s: %w", ip, err)
	}
	return endpointFrom(v), nil
}

// Endpoints returns every endpoint in the maps, IPv4 and IPv6, for
// reconciliation.
func (o *Objects) Endpoints() (map[netip.Addr]Endpoint, error) {
	eps := make(map[netip.Addr]Endpoint)
	var (
		k4 podAxonEndpointKey
		k6 podAxonEndpointKey6
		v  podAxonEndpoint
	)
	it := o.maps.AxonEndpoints.Iterate()
	for it.Next(&k4, &v) {
		eps[addr4(k4.Ip4)] = endpointFrom(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	it = o.maps.AxonEndpoints6.Iterate()
	for it.Next(&k6, &v) {
		eps[netip.AddrFrom16(k6.Ip6)] = endpointFrom(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list IPv6 endpoints: %w", err)
	}
	return eps, nil
}

func endpointFrom(v podAxonEndpoint) Endpoint {
	return Endpoint{
		Ifindex:  int(v.Ifindex),
		ID:       v.Id,
		PodMAC:   net.HardwareAddr(v.PodMac[:]),
		HostMAC:  net.HardwareAddr(v.HostMac[:]),
		Identity: v.Identity,
	}
}

var (
	linkLocal6 = netip.MustParsePrefix("fe80::/10")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// remotePrefix checks a pod block and returns it masked, IPv4-mapped
// prefixes (::ffff:a.b.c.d/96+n) as IPv4. An IPv6 block inside the
// link-local or multicast range is refused: the programs never look such
// destinations up.
func remotePrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("%w: %s", ErrInvalidPrefix, p)
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return p, fmt.Errorf("%w: %s", ErrInvalidPrefix, p)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	if p.Addr().Is6() {
		for _, r := range []netip.Prefix{linkLocal6, multicast6} {
			if p.Bits() >= r.Bits() && r.Contains(p.Addr()) {
				return p, fmt.Errorf("%w: %s is link-local or multicast", ErrInvalidPrefix, p)
			}
		}
	}
	return p, nil
}

// remoteKey4 and remoteKey6 take prefixes remotePrefix accepted.
func remoteKey4(p netip.Prefix) podAxonRemoteKey4 {
	b := p.Addr().As4()
	return podAxonRemoteKey4{Prefixlen: uint32(p.Bits()), Ip4: binary.NativeEndian.Uint32(b[:])}
}

func remoteKey6(p netip.Prefix) podAxonRemoteKey6 {
	return podAxonRemoteKey6{Prefixlen: uint32(p.Bits()), Ip6: p.Addr().As16()}
}

// remoteMap returns the remote-block map of prefix's family and the key of
// prefix in it.
func (o *Objects) remoteMap(prefix netip.Prefix) (*ebpf.Map, any, error) {
	p, err := remotePrefix(prefix)
	if err != nil {
		return nil, nil, err
	}
	if p.Addr().Is4() {
		k := remoteKey4(p)
		return o.maps.AxonRemote4, &k, nil
	}
	k := remoteKey6(p)
	return o.maps.AxonRemote6, &k, nil
}

// PutRemote routes the pod block prefix (of another node; IPv4 or IPv6) to
// that node's underlay address nodeIP, the tunnel endpoint in tunnel mode.
// The underlay is IPv4 for both families: an IPv6 nodeIP is refused with
// [ErrIPv6Unsupported]. The prefix is masked to its length.
func (o *Objects) PutRemote(prefix netip.Prefix, nodeIP netip.Addr) error {
	m, key, err := o.remoteMap(prefix)
	if err != nil {
		return err
	}
	node, err := unicast4(nodeIP)
	if err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	if err := m.Put(key, &podAxonRemote{NodeIp4: node}); err != nil {
		return fmt.Errorf("put remote %s: %w", prefix, err)
	}
	return nil
}

// DeleteRemote removes the pod block prefix. Deleting a block that does not
// exist is not an error.
func (o *Objects) DeleteRemote(prefix netip.Prefix) error {
	m, key, err := o.remoteMap(prefix)
	if err != nil {
		return err
	}
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete remote %s: %w", prefix, err)
	}
	return nil
}

// Remotes returns every remote block, IPv4 and IPv6, and its node's
// (IPv4) address.
func (o *Objects) Remotes() (map[netip.Prefix]netip.Addr, error) {
	remotes := make(map[netip.Prefix]netip.Addr)
	var (
		k4 podAxonRemoteKey4
		k6 podAxonRemoteKey6
		v  podAxonRemote
	)
	it := o.maps.AxonRemote4.Iterate()
	for it.Next(&k4, &v) {
		remotes[netip.PrefixFrom(addr4(k4.Ip4), int(k4.Prefixlen))] = addr4(v.NodeIp4)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list remotes: %w", err)
	}
	it = o.maps.AxonRemote6.Iterate()
	for it.Next(&k6, &v) {
		remotes[netip.PrefixFrom(netip.AddrFrom16(k6.Ip6), int(k6.Prefixlen))] = addr4(v.NodeIp4)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list IPv6 remotes: %w", err)
	}
	return remotes, nil
}

// SetConfig writes the node configuration. The programs read it per packet,
// so a change takes effect at once.
func (o *Objects) SetConfig(c Config) error {
	var v podAxonConfig
	switch c.Mode {
	case ModeNone, ModeNative:
	case ModeTunnel:
		var err error
		if v.VxlanIfindex, err = ifindex(c.VXLANIfindex); err != nil {
			return fmt.Errorf("tunnel mode needs the VXLAN device: %w", err)
		}
	default:
		return fmt.Errorf("%w: %d", ErrInvalidMode, uint32(c.Mode))
	}
	v.Mode = uint32(c.Mode)
	if c.Geneve {
		v.Flags |= configGeneve
	}
	if c.NodeIP.IsValid() {
		var err error
		if v.NodeIp4, err = unicast4(c.NodeIP); err != nil {
			return fmt.Errorf("node address: %w", err)
		}
	}
	if err := o.maps.AxonConfig.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	return nil
}

// Config returns the node configuration.
func (o *Objects) Config() (Config, error) {
	var v podAxonConfig
	if err := o.maps.AxonConfig.Lookup(uint32(0), &v); err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c := Config{Mode: Mode(v.Mode), VXLANIfindex: int(v.VxlanIfindex), Geneve: v.Flags&configGeneve != 0}
	if v.NodeIp4 != 0 {
		c.NodeIP = addr4(v.NodeIp4)
	}
	return c, nil
}
