package iprange

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"testing"
)

func TestRange(t *testing.T) {
	r, err := New(netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.20"))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Contains(netip.MustParseAddr("10.0.0.20")) || r.Contains(netip.MustParseAddr("10.0.0.21")) {
		t.Error("Contains wrong at the edges")
	}
	o := Range{From: netip.MustParseAddr("10.0.0.20"), To: netip.MustParseAddr("10.0.0.30")}
	if !r.Overlaps(o) || r.Overlaps(Range{From: netip.MustParseAddr("10.0.0.21"), To: netip.MustParseAddr("10.0.0.30")}) {
		t.Error("Overlaps wrong at the edges")
	}
	if _, err := New(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Error("reversed range accepted")
	}
	if _, err := New(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::1")); !errors.Is(err, ErrFamilyMismatch) {
		t.Errorf("mixed-family range: err = %v, want %v", err, ErrFamilyMismatch)
	}
}

func TestFromPrefix(t *testing.T) {
	tests := []struct {
		prefix   string
		from, to string
		size     uint64
	}{
		{"10.0.0.0/26", "10.0.0.0", "10.0.0.63", 64},
		{"10.0.0.7/32", "10.0.0.7", "10.0.0.7", 1},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255", 1 << 32},
		{"10.1.2.3/16", "10.1.0.0", "10.1.255.255", 1 << 16},
		{"fd00::/64", "fd00::", "fd00::ffff:ffff:ffff:ffff", math.MaxUint64},
		{"fd00::/65", "fd00::", "fd00::7fff:ffff:ffff:ffff", 1 << 63},
		{"fd00::/122", "fd00::", "fd00::3f", 64},
		{"::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", math.MaxUint64},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			r := FromPrefix(netip.MustParsePrefix(tc.prefix))
			want := Range{From: netip.MustParseAddr(tc.from), To: netip.MustParseAddr(tc.to)}
			if r != want {
				t.Errorf("FromPrefix = %v, want %v", r, want)
			}
			if got := r.Size(); got != tc.size {
				t.Errorf("Size = %d, want %d", got, tc.size)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	r := func(from, to string) Range {
		return Range{From: netip.MustParseAddr(from), To: netip.MustParseAddr(to)}
	}
	tests := []struct {
		name string
		in   []Range
		want []Range
	}{
		{"none", nil, nil},
		{"one", []Range{r("10.0.0.1", "10.0.0.9")}, []Range{r("10.0.0.1", "10.0.0.9")}},
		{"unsorted apart", []Range{r("10.0.0.20", "10.0.0.29"), r("10.0.0.1", "10.0.0.9")}, []Range{r("10.0.0.1", "10.0.0.9"), r("10.0.0.20", "10.0.0.29")}},
		{"overlapping", []Range{r("10.0.0.1", "10.0.0.15"), r("10.0.0.10", "10.0.0.29")}, []Range{r("10.0.0.1", "10.0.0.29")}},
		{"adjacent", []Range{r("10.0.0.10", "10.0.0.19"), r("10.0.0.1", "10.0.0.9")}, []Range{r("10.0.0.1", "10.0.0.19")}},
		{"contained", []Range{r("10.0.0.1", "10.0.0.99"), r("10.0.0.10", "10.0.0.19")}, []Range{r("10.0.0.1", "10.0.0.99")}},
		{"to the end", []Range{r("255.255.255.0", "255.255.255.255"), r("255.255.255.250", "255.255.255.255")}, []Range{r("255.255.255.0", "255.255.255.255")}},
		{"families apart", []Range{r("fd00::", "fd00::1"), r("255.255.255.255", "255.255.255.255")}, []Range{r("255.255.255.255", "255.255.255.255"), r("fd00::", "fd00::1")}},
		{"IPv6", []Range{r("fd00::10", "fd00::1f"), r("fd00::", "fd00::f")}, []Range{r("fd00::", "fd00::1f")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Merge(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("Merge = %v, want %v", got, tc.want)
			}
		})
	}
}
