package bench

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
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

// fakeLB records the UpsertServices calls it gets.
type fakeLB struct {
	datapathv1alpha1.UnimplementedDatapathServiceServer
	mu    sync.Mutex
	calls []*datapathv1alpha1.UpsertServicesRequest
}

func (f *fakeLB) UpsertServices(_ context.Context, req *datapathv1alpha1.UpsertServicesRequest) (*datapathv1alpha1.UpsertServicesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	return &datapathv1alpha1.UpsertServicesResponse{Changed: int32(len(req.Services))}, nil
}

// serveFake serves srv on a unix socket for the test's duration.
func serveFake(t *testing.T, srv datapathv1alpha1.DatapathServiceServer) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "dp.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20)) // as axon-datapath
	datapathv1alpha1.RegisterDatapathServiceServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return sock
}

func TestAxonImpl(t *testing.T) {
	real := []netip.Addr{netip.MustParseAddr("10.44.0.20"), netip.MustParseAddr("10.44.0.21"), netip.MustParseAddr("10.44.0.22")}
	for _, tc := range []struct {
		name        string
		size        int
		unavailable bool
		wantCalls   int // with replace_all on the first only
	}{
		{"one service", 0, false, 1},
		{"10k services in one call", 10000, false, 1},
		{"100k services in one call", 100000, false, 1},
		{"Unimplemented is not available", 1000, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeLB{}
			var srv datapathv1alpha1.DatapathServiceServer = fake
			if tc.unavailable {
				srv = datapathv1alpha1.UnimplementedDatapathServiceServer{}
			}
			a, err := newAxonImpl(serveFake(t, srv), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = a.close() })
			svcs, extra := serviceSet(tc.size, real)
			_, err = a.program(t.Context(), svcs)
			if tc.unavailable {
				if !errors.Is(err, errNotAvailable) {
					t.Fatalf("program = %v, want errNotAvailable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.addOne(t.Context(), extra); err != nil {
				t.Fatal(err)
			}
			calls := fake.calls[:len(fake.calls)-1]
			if len(calls) != tc.wantCalls {
				t.Fatalf("%d calls, want %d", len(calls), tc.wantCalls)
			}
			got := 0
			for i, c := range calls {
				if c.ReplaceAll != (i == 0) {
					t.Errorf("call %d: replace_all %v", i, c.ReplaceAll)
				}
				got += len(c.Services)
			}
			if got != len(svcs) {
				t.Errorf("%d services sent, want %d", got, len(svcs))
			}
			last := calls[len(calls)-1].Services
			if fe := last[len(last)-1].GetFrontend(); fe.GetAddress() != svcs[len(svcs)-1].VIP.String() || fe.GetPort() != svcPort {
				t.Errorf("last service sent %v, want %s", fe, svcs[len(svcs)-1].frontend())
			}
			add := fake.calls[len(fake.calls)-1]
			if add.ReplaceAll || len(add.Services) != 1 || len(add.Services[0].Backends) != len(real) {
				t.Errorf("add one sent %v", add)
			}
		})
	}
}
