// Package cidr is the prefix arithmetic of IPAM: parsing canonical CIDRs,
// cutting pools into blocks, indexing addresses inside a prefix and spelling
// prefixes in etcd keys. Address ranges, which the datapath needs too, are in
// services/internal/iprange. Every function works on both families; counts
// that exceed 64 bits saturate.
package cidr

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"strings"

	"github.com/axon-cni/axon/services/internal/bounded"
)

// ParsePrefix parses a CIDR in canonical form: host bits must be zero and
// IPv4-mapped IPv6 prefixes are refused, so every prefix has one spelling.
func ParsePrefix(s string) (netip.Prefix, error) {
	// netip's errors quote their whole input: bound it first.
	if len(s) > bounded.Address {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %s: longer than %d bytes", bounded.Quote(s), bounded.Address)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %s: %w", bounded.Quote(s), err)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %s: IPv4-mapped IPv6 prefixes are not allowed", bounded.Quote(s))
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %s: host bits set (did you mean %s?)", bounded.Quote(s), p.Masked())
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %s: zones are not allowed", bounded.Quote(s))
	}
	return p, nil
}

// ParseAddr parses an address, unmapping IPv4-mapped IPv6 and refusing zones.
func ParseAddr(s string) (netip.Addr, error) {
	// netip's errors quote their whole input: bound it first.
	if len(s) > bounded.Address {
		return netip.Addr{}, fmt.Errorf("invalid IP address %s: longer than %d bytes", bounded.Quote(s), bounded.Address)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("invalid IP address %s: %w", bounded.Quote(s), err)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("invalid IP address %s: zones are not allowed", bounded.Quote(s))
	}
	return a.Unmap(), nil
}

// Contains reports whether outer contains every address of inner.
func Contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

func toBig(a netip.Addr) *big.Int {
	b := a.AsSlice()
	return new(big.Int).SetBytes(b)
}

func fromBig(v *big.Int, is4 bool) netip.Addr {
	n := 16
	if is4 {
		n = 4
	}
	buf := make([]byte, n)
	v.FillBytes(buf)
	a, _ := netip.AddrFromSlice(buf)
	return a
}

// Size is the number of addresses in p, saturated at math.MaxUint64.
func Size(p netip.Prefix) uint64 {
	host := p.Addr().BitLen() - p.Bits()
	if host >= 64 {
		return math.MaxUint64
	}
	return 1 << host
}

// Nth returns the n-th address of p (0 is the network address). ok is false
// if n is outside p.
func Nth(p netip.Prefix, n uint64) (netip.Addr, bool) {
	if n >= Size(p) && Size(p) != math.MaxUint64 {
		return netip.Addr{}, false
	}
	base := p.Masked().Addr()
	// Fast paths without big integers: IPv4, and IPv6 prefixes whose host
	// part fits the low 64 bits (every block and most pools).
	if base.Is4() {
		b := base.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(n))
		return netip.AddrFrom4(b), true
	}
	if p.Bits() >= 64 {
		b := base.As16()
		binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+n)
		return netip.AddrFrom16(b), true
	}
	v := toBig(base)
	v.Add(v, new(big.Int).SetUint64(n))
	a := fromBig(v, p.Addr().Is4())
	if !p.Contains(a) {
		return netip.Addr{}, false
	}
	return a, true
}

// Index returns the offset of a inside p. ok is false if p does not contain
// a or the offset does not fit 64 bits.
func Index(p netip.Prefix, a netip.Addr) (uint64, bool) {
	if !p.Contains(a) {
		return 0, false
	}
	d := toBig(a)
	d.Sub(d, toBig(p.Masked().Addr()))
	if !d.IsUint64() {
		return 0, false
	}
	return d.Uint64(), true
}

// BlockCount is how many blocks of length bits p is cut into, saturated.
func BlockCount(p netip.Prefix, bits int) uint64 {
	if bits < p.Bits() {
		return 0
	}
	if bits-p.Bits() >= 64 {
		return math.MaxUint64
	}
	return 1 << (bits - p.Bits())
}

// NthBlock returns the n-th block of length bits inside p.
func NthBlock(p netip.Prefix, bits int, n uint64) (netip.Prefix, bool) {
	if bits < p.Bits() || bits > p.Addr().BitLen() || n >= BlockCount(p, bits) && BlockCount(p, bits) != math.MaxUint64 {
		return netip.Prefix{}, false
	}
	v := toBig(p.Masked().Addr())
	off := new(big.Int).SetUint64(n)
	off.Lsh(off, uint(p.Addr().BitLen()-bits))
	v.Add(v, off)
	a := fromBig(v, p.Addr().Is4())
	if !p.Contains(a) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, bits), true
}

// BlockOf returns the block of length bits that contains a.
func BlockOf(a netip.Addr, bits int) netip.Prefix {
	b, _ := a.Prefix(bits)
	return b
}

// Key spells p for use inside an etcd key: the '/' becomes '_', so a prefix
// is one key segment ("10.0.3.0_26").
func Key(p netip.Prefix) string {
	return strings.Replace(p.String(), "/", "_", 1)
}

// ParseKey is the inverse of Key.
func ParseKey(s string) (netip.Prefix, error) {
	return ParsePrefix(strings.Replace(s, "_", "/", 1))
}
