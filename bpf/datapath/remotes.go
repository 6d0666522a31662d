package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

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
