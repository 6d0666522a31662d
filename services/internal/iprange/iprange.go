// Package iprange is inclusive ranges of IP addresses: building them from
// prefixes or endpoints, comparing them and merging them. It is the address
// arithmetic that IPAM (reserved ranges, pool usage) and the datapath
// (masquerade exemptions) share; every function works on both families.
package iprange

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
)

// ErrFamilyMismatch is returned when a range would mix IPv4 and IPv6.
var ErrFamilyMismatch = errors.New("IP family mismatch")

// Range is an inclusive range of addresses of one family.
type Range struct {
	From, To netip.Addr
}

// FromPrefix returns the range covering p.
func FromPrefix(p netip.Prefix) Range {
	first := p.Masked().Addr()
	b := first.As16()
	// Set every host bit; an IPv4 address sits in the last 32 of the 128 bits.
	netBits := p.Bits()
	if first.Is4() {
		netBits += 96
	}
	for i := netBits; i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last := netip.AddrFrom16(b)
	if first.Is4() {
		last = last.Unmap()
	}
	return Range{From: first, To: last}
}

// New returns the range [from, to], checking family and order.
func New(from, to netip.Addr) (Range, error) {
	if from.Is4() != to.Is4() {
		return Range{}, fmt.Errorf("range %s-%s: %w", from, to, ErrFamilyMismatch)
	}
	if to.Less(from) {
		return Range{}, fmt.Errorf("range %s-%s: end before start", from, to)
	}
	return Range{From: from, To: to}, nil
}

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() == r.From.Is4() && !a.Less(r.From) && !r.To.Less(a)
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.From.Is4() == o.From.Is4() && !r.To.Less(o.From) && !o.To.Less(r.From)
}

// Within reports whether r lies entirely inside p.
func (r Range) Within(p netip.Prefix) bool {
	return p.Contains(r.From) && p.Contains(r.To)
}

// Size is the number of addresses in r, saturated at math.MaxUint64.
func (r Range) Size() uint64 {
	fromHi, fromLo := split(r.From)
	toHi, toLo := split(r.To)
	lo, borrow := bits.Sub64(toLo, fromLo, 0)
	hi, _ := bits.Sub64(toHi, fromHi, borrow)
	if hi != 0 || lo == math.MaxUint64 {
		return math.MaxUint64
	}
	return lo + 1
}

// split returns a's 128-bit form (IPv4 as IPv4-mapped) as two halves.
func split(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo
}

// String is "from-to", or the single address.
func (r Range) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// Merge returns the union of rs as sorted ranges that neither overlap nor
// touch (adjacent ranges are joined). rs is not changed.
func Merge(rs []Range) []Range {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(x, y Range) int { return x.From.Compare(y.From) })
	var out []Range
	for _, r := range sorted {
		if n := len(out); n > 0 && (!out[n-1].To.Less(r.From) || out[n-1].To.Next() == r.From) {
			if out[n-1].To.Less(r.To) {
				out[n-1].To = r.To
			}
			continue
		}
		out = append(out, r)
	}
	return out
}
