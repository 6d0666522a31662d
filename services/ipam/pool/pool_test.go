package pool

import (
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
)

func TestParse(t *testing.T) {
	fam := func(bits uint32, cidrs ...string) *ipamv1alpha1.PoolFamily {
		return &ipamv1alpha1.PoolFamily{Cidrs: cidrs, BlockPrefixLength: bits}
	}
	tests := []struct {
		name    string
		pool    *ipamv1alpha1.Pool
		wantErr string
	}{
		{name: "v4 defaults", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(0, "10.0.0.0/16")}},
		{name: "dual stack", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(24, "10.0.0.0/16"), Ipv6: fam(120, "fd00::/64")}},
		{name: "host scope without CIDRs", pool: &ipamv1alpha1.Pool{Name: "h", Mode: ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE, Ipv4: fam(0)}},
		{name: "nil", pool: nil, wantErr: "required"},
		{name: "no family", pool: &ipamv1alpha1.Pool{Name: "a"}, wantErr: "at least one of ipv4 and ipv6"},
		{name: "bad name", pool: &ipamv1alpha1.Pool{Name: "A", Ipv4: fam(0, "10.0.0.0/16")}, wantErr: "DNS-1123"},
		{name: "cluster scope without CIDR", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(0)}, wantErr: "at least one CIDR"},
		{name: "wrong family", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(0, "fd00::/64")}, wantErr: "is not ipv4"},
		{name: "host bits", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(0, "10.0.0.1/16")}, wantErr: "host bits"},
		{name: "block too big", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(8, "10.0.0.0/16")}, wantErr: "does not fit"},
		{name: "block too small", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(31, "10.0.0.0/16")}, wantErr: "at most 30"},
		{name: "own overlap", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: fam(0, "10.0.0.0/16", "10.0.1.0/24")}, wantErr: "overlaps"},
		{name: "reserved outside", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: &ipamv1alpha1.PoolFamily{
			Cidrs: []string{"10.0.0.0/16"}, ReservedRanges: []*commonv1alpha1.AddressRange{{Cidr: "10.1.0.0/24"}}}}, wantErr: "not inside"},
		{name: "reserved reversed", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: &ipamv1alpha1.PoolFamily{
			Cidrs: []string{"10.0.0.0/16"}, ReservedRanges: []*commonv1alpha1.AddressRange{{Start: "10.0.0.9", End: "10.0.0.1"}}}}, wantErr: "end before start"},
		{name: "reserved both forms", pool: &ipamv1alpha1.Pool{Name: "a", Ipv4: &ipamv1alpha1.PoolFamily{
			Cidrs: []string{"10.0.0.0/16"}, ReservedRanges: []*commonv1alpha1.AddressRange{{Cidr: "10.0.0.0/24", Start: "10.0.0.1"}}}}, wantErr: "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.pool)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestUsable(t *testing.T) {
	p, err := Parse(&ipamv1alpha1.Pool{Name: "a", Ipv4: &ipamv1alpha1.PoolFamily{
		Cidrs: []string{"10.0.0.0/24"}, ReservedRanges: []*commonv1alpha1.AddressRange{{Start: "10.0.0.10", End: "10.0.0.12"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	fs := p.Family(IPv4)
	outer := netip.MustParsePrefix("10.0.0.0/24")
	for addr, want := range map[string]bool{
		"10.0.0.0": false, "10.0.0.1": true, "10.0.0.10": false, "10.0.0.12": false,
		"10.0.0.13": true, "10.0.0.255": false, "10.0.0.254": true,
	} {
		if got := fs.Usable(outer, netip.MustParseAddr(addr)); got != want {
			t.Errorf("Usable(%s) = %v, want %v", addr, got, want)
		}
	}
}

// FuzzParse feeds arbitrary wire-format pools to Parse: it must never
// panic, and what it accepts must satisfy the allocator's assumptions.
func FuzzParse(f *testing.F) {
	for _, p := range []*ipamv1alpha1.Pool{
		{Name: "a", Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.0.0.0/16"}}},
		{Name: "b", Ipv6: &ipamv1alpha1.PoolFamily{Cidrs: []string{"fd00::/64"}, BlockPrefixLength: 120,
			ReservedRanges: []*commonv1alpha1.AddressRange{{Start: "fd00::1", End: "fd00::9"}}}},
		{Name: "h", Mode: ipamv1alpha1.PoolMode_POOL_MODE_HOST_SCOPE, Ipv4: &ipamv1alpha1.PoolFamily{}},
	} {
		b, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &ipamv1alpha1.Pool{}
		if proto.Unmarshal(data, in) != nil {
			return
		}
		p, err := Parse(in)
		if err != nil {
			return
		}
		for _, fam := range p.FamilyList() {
			fs := p.Family(fam)
			for _, c := range fs.CIDRs {
				if c.Masked() != c || FamilyOf(c.Addr()) != fam {
					t.Fatalf("accepted non-canonical or wrong-family CIDR %s", c)
				}
				if p.Mode == ClusterScope && (fs.BlockBits < c.Bits() || fs.BlockBits > c.Addr().BitLen()) {
					t.Fatalf("accepted block size %d for %s", fs.BlockBits, c)
				}
			}
			for _, r := range fs.Reserved {
				if r.To.Less(r.From) || FamilyOf(r.From) != fam {
					t.Fatalf("accepted bad reserved range %s", r)
				}
			}
		}
	})
}
