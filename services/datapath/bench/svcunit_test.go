package bench

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The service benchmark's pure parts, checked without root.

func TestServiceSet(t *testing.T) {
	real := []netip.Addr{netip.MustParseAddr("10.95.0.20"), netip.MustParseAddr("10.95.0.21")}
	for _, tc := range []struct {
		size, want int
	}{{0, 1}, {1, 1}, {1000, 1000}} {
		svcs, extra := serviceSet(tc.size, real)
		if len(svcs) != tc.want {
			t.Fatalf("size %d: %d services, want %d", tc.size, len(svcs), tc.want)
		}
		seen := map[netip.Addr]bool{extra.VIP: true}
		for i, s := range svcs {
			if seen[s.VIP] {
				t.Fatalf("size %d: VIP %s twice", tc.size, s.VIP)
			}
			seen[s.VIP] = true
			last := i == len(svcs)-1
			for _, b := range s.Backends {
				isReal := b.Addr() == real[0] || b.Addr() == real[1]
				if isReal != last {
					t.Fatalf("size %d: service %d has backend %s (real backends only on the last)", tc.size, i, b)
				}
			}
		}
		if len(extra.Backends) != len(real) || extra.Backends[0].Addr() != real[0] {
			t.Fatalf("size %d: the extra service's backends %v, want the real ones", tc.size, extra.Backends)
		}
	}
}

func TestIPTablesRuleset(t *testing.T) {
	real := []netip.Addr{netip.MustParseAddr("10.95.0.20"), netip.MustParseAddr("10.95.0.21"), netip.MustParseAddr("10.95.0.22")}
	svcs, _ := serviceSet(10, real)
	rs := string(iptablesRuleset(svcs))
	for _, tc := range []struct {
		what string
		want int
	}{
		{"-A PREROUTING ", 1},
		{"-A KUBE-SERVICES ", 10},
		{"-j DNAT ", 10 * svcBackends},
		{"--probability 0.3333333333 ", 10},
		{"--probability 0.5000000000 ", 10},
		{"\n:KUBE-SVC-", 10},
		{"\n:KUBE-SEP-", 10 * svcBackends},
		{"COMMIT\n", 1},
	} {
		if got := strings.Count(rs, tc.what); got != tc.want {
			t.Errorf("%q appears %d times, want %d", tc.what, got, tc.want)
		}
	}
	// The measured service's rule comes last in KUBE-SERVICES.
	last := strings.LastIndex(rs, "-A KUBE-SERVICES ")
	if !strings.HasPrefix(rs[last:], "-A KUBE-SERVICES -d "+svcs[9].VIP.String()+"/32 ") {
		t.Errorf("last KUBE-SERVICES rule is not the measured service's: %q", rs[last:last+80])
	}
}

func TestNftService(t *testing.T) {
	var b bytes.Buffer
	s := svcSpec{Name: "bench/svc-0", VIP: netip.MustParseAddr("10.112.0.1"), Backends: []netip.AddrPort{
		netip.MustParseAddrPort("10.95.0.20:8080"), netip.MustParseAddrPort("10.95.0.21:8080"),
	}}
	writeNftService(&b, s)
	out := b.String()
	for _, want := range []string{
		"numgen random mod 2 vmap { 0 : goto ep-", "dnat to 10.95.0.21:8080\n",
		"add element ip " + nftTable + " services { 10.112.0.1 . tcp . 80 : goto " + nftSvcChain(s) + " }\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestTooSlow(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rows     []*svcRow
		size     int
		limit    time.Duration
		wantSkip bool
	}{
		{"too few sizes", []*svcRow{{Impl: "x", Size: 1000, Program: time.Second}}, 100000, time.Minute, false},
		{"quadratic over the limit", []*svcRow{
			{Impl: "x", Size: 1000, Program: 300 * time.Millisecond}, {Impl: "x", Size: 10000, Program: 30 * time.Second},
		}, 100000, 2 * time.Minute, true},
		{"linear under the limit", []*svcRow{
			{Impl: "x", Size: 1000, Program: 250 * time.Millisecond}, {Impl: "x", Size: 10000, Program: 2500 * time.Millisecond},
		}, 100000, 2 * time.Minute, false},
		{"sublinear counts as linear", []*svcRow{
			{Impl: "x", Size: 1000, Program: 10 * time.Second}, {Impl: "x", Size: 10000, Program: 11 * time.Second},
		}, 100000, time.Minute, true},
		{"failed sizes do not count", []*svcRow{
			{Impl: "x", Size: 1000, Program: 300 * time.Millisecond}, {Impl: "x", Size: 10000, Program: 30 * time.Second, Err: "failed"},
		}, 100000, 2 * time.Minute, false},
		{"other implementations do not count", []*svcRow{
			{Impl: "y", Size: 1000, Program: 300 * time.Millisecond}, {Impl: "y", Size: 10000, Program: 30 * time.Second},
		}, 100000, 2 * time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &svcResults{Rows: tc.rows}
			if got := r.tooSlow("x", tc.size, tc.limit); (got != "") != tc.wantSkip {
				t.Errorf("tooSlow = %q, want skip %v", got, tc.wantSkip)
			}
		})
	}
}
