package masquerade

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestIntervalElements(t *testing.T) {
	tests := []struct {
		name     string
		prefixes []string
		want     string // "[from" opens an interval, ")to" ends one
	}{
		{"one", []string{"10.0.0.0/8"}, ")0.0.0.0 [10.0.0.0 )11.0.0.0"},
		{"merged overlap and adjacency", []string{"10.1.0.0/16", "10.0.0.0/8", "11.0.0.0/24"}, ")0.0.0.0 [10.0.0.0 )11.0.1.0"},
		{"sorted, apart", []string{"192.168.1.0/24", "10.244.1.0/24"}, ")0.0.0.0 [10.244.1.0 )10.244.2.0 [192.168.1.0 )192.168.2.0"},
		{"from zero", []string{"0.0.0.0/8"}, "[0.0.0.0 )1.0.0.0"},
		{"to the end", []string{"255.255.255.0/24"}, ")0.0.0.0 [255.255.255.0"},
		{"IPv6", []string{"fd00:44::/104", "fd00:45::/64"}, "):: [fd00:44:: )fd00:44::100:0 [fd00:45:: )fd00:45:0:1::"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var in []netip.Prefix
			for _, s := range tc.prefixes {
				in = append(in, netip.MustParsePrefix(s))
			}
			got := ""
			for i, e := range intervalElements(in) {
				a, _ := netip.AddrFromSlice(e.Key)
				mark := "["
				if e.IntervalEnd {
					mark = ")"
				}
				if i > 0 {
					got += " "
				}
				got += fmt.Sprint(mark, a)
			}
			if got != tc.want {
				t.Errorf("elements %s, want %s", got, tc.want)
			}
		})
	}
}
