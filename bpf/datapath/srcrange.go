package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// MaxSourceRanges is the most source ranges a frontend entry may hold.
const MaxSourceRanges = 64

// lbFlagSourceRanges is AXON_LB_F_SOURCE_RANGES.
const lbFlagSourceRanges = 1

// sourceKey is the axon_lb_source_ranges key of prefix p of entry id.
func sourceKey(id uint32, p netip.Prefix) podAxonLbSourceKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	var be [4]byte
	binary.BigEndian.PutUint32(be[:], id)
	return podAxonLbSourceKey{Prefixlen: 32 + uint32(bits), ServiceId: binary.NativeEndian.Uint32(be[:]), Addr: addr16(p.Addr())}
}

// sourceFrom is the inverse of sourceKey.
func sourceFrom(k podAxonLbSourceKey) (uint32, netip.Prefix) {
	var be [4]byte
	binary.NativeEndian.PutUint32(be[:], k.ServiceId)
	a := addrFrom16(k.Addr)
	bits := int(k.Prefixlen) - 32
	if a.Is4() {
		bits -= 96
	}
	return binary.BigEndian.Uint32(be[:]), netip.PrefixFrom(a, bits)
}

// sourceRanges reads every entry's source ranges, by service ID. (LPM
// tries have no batch lookups: one syscall per key.)
func (o *Objects) sourceRanges() (map[uint32][]netip.Prefix, error) {
	out := map[uint32][]netip.Prefix{}
	var (
		k podAxonLbSourceKey
		v uint8
	)
	it := o.maps.AxonLbSourceRanges.Iterate()
	for it.Next(&k, &v) {
		id, p := sourceFrom(k)
		out[id] = append(out[id], p)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list source ranges: %w", err)
	}
	return out, nil
}

// putSourceRanges writes prefixes of entry id.
func (o *Objects) putSourceRanges(id uint32, prefixes []netip.Prefix) error {
	for _, p := range prefixes {
		k := sourceKey(id, p)
		if err := o.maps.AxonLbSourceRanges.Put(&k, uint8(1)); err != nil {
			return fmt.Errorf("write source range %s: %w", p, err)
		}
	}
	return nil
}

// deleteSourceRanges removes prefixes of entry id, except those in keep.
func (o *Objects) deleteSourceRanges(id uint32, prefixes, keep []netip.Prefix) {
	kept := map[netip.Prefix]bool{}
	for _, p := range keep {
		kept[p.Masked()] = true
	}
	for _, p := range prefixes {
		if kept[p.Masked()] {
			continue
		}
		k := sourceKey(id, p)
		_ = o.maps.AxonLbSourceRanges.Delete(&k) // missing: nothing to do
	}
}
