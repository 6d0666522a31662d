package cidr

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{in: "10.0.0.0/16"},
		{in: "fd00:10::/104"},
		{in: "10.0.0.1/16", wantErr: "host bits set (did you mean 10.0.0.0/16?)"},
		{in: "::ffff:10.0.0.0/104", wantErr: "IPv4-mapped"},
		{in: "10.0.0.0", wantErr: "invalid CIDR"},
		{in: "10.0.0.0/33", wantErr: "invalid CIDR"},
		{in: "", wantErr: "invalid CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParsePrefix(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParsePrefix(%q) = %v", tt.in, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParsePrefix(%q) = %v, want %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestBlocksAndAddresses(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/24")
	if got := BlockCount(p, 26); got != 4 {
		t.Errorf("BlockCount = %d, want 4", got)
	}
	b, ok := NthBlock(p, 26, 3)
	if !ok || b != netip.MustParsePrefix("10.0.0.192/26") {
		t.Errorf("NthBlock(3) = %v %v", b, ok)
	}
	if _, ok := NthBlock(p, 26, 4); ok {
		t.Error("NthBlock(4) of 4 blocks succeeded")
	}
	if a, ok := Nth(b, 63); !ok || a != netip.MustParseAddr("10.0.0.255") {
		t.Errorf("Nth(63) = %v %v", a, ok)
	}
	if _, ok := Nth(b, 64); ok {
		t.Error("Nth(64) of a /26 succeeded")
	}
	if i, ok := Index(b, netip.MustParseAddr("10.0.0.200")); !ok || i != 8 {
		t.Errorf("Index = %d %v", i, ok)
	}
	if got := BlockOf(netip.MustParseAddr("10.0.0.200"), 26); got != b {
		t.Errorf("BlockOf = %v", got)
	}
	v6 := netip.MustParsePrefix("fd00::/64")
	if Size(v6) != math.MaxUint64 || BlockCount(v6, 122) != 1<<58 {
		t.Errorf("IPv6 sizes: %d %d", Size(v6), BlockCount(v6, 122))
	}
	b6, ok := NthBlock(v6, 122, 5)
	if !ok || b6 != netip.MustParsePrefix("fd00::140/122") {
		t.Errorf("NthBlock v6 = %v %v", b6, ok)
	}
}

// FuzzPrefixArithmetic checks the invariants the allocator relies on:
// blocks lie inside their prefix, Nth and Index are inverse, keys round-trip.
func FuzzPrefixArithmetic(f *testing.F) {
	f.Add("10.0.0.0/16", 26, uint64(7), uint64(3))
	f.Add("fd00:10::/104", 122, uint64(1<<17), uint64(63))
	f.Add("0.0.0.0/0", 32, uint64(math.MaxUint64), uint64(0))
	f.Fuzz(func(t *testing.T, s string, bits int, n, m uint64) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if k, err := ParseKey(Key(p)); err != nil || k != p {
			t.Fatalf("key round trip of %s: %v %v", p, k, err)
		}
		b, ok := NthBlock(p, bits, n)
		if !ok {
			return
		}
		if !Contains(p, b) || b.Bits() != bits || b.Masked() != b {
			t.Fatalf("block %s of %s/%d not inside", b, p, bits)
		}
		if BlockOf(b.Addr(), bits) != b {
			t.Fatalf("BlockOf(%s) != %s", b.Addr(), b)
		}
		a, ok := Nth(b, m)
		if !ok {
			return
		}
		if i, ok := Index(b, a); !ok || i != m {
			t.Fatalf("Index(Nth(%d)) = %d %v in %s", m, i, ok, b)
		}
	})
}
