package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
)

// slots summarizes a backend list as "addr:port xN" in order, with "L"
// for local ones.
func slots(list []bpfmaps.LBBackend) string {
	var out []string
	for i := 0; i < len(list); {
		j := i
		for j < len(list) && list[j] == list[i] {
			j++
		}
		s := fmt.Sprintf("%s x%d", netip.AddrPortFrom(list[i].Addr, list[i].Port), j-i)
		if list[i].Local {
			s += " L"
		}
		out = append(out, s)
		i = j
	}
	return strings.Join(out, ", ")
}

// TestCompile checks weights, states, traffic policies and scopes.
func TestCompile(t *testing.T) {
	type want struct {
		scope               bpfmaps.LBScope
		active, terminating string
	}
	for _, tc := range []struct {
		name     string
		svc      *datapathv1alpha1.Service
		affinity time.Duration
		ranges   []netip.Prefix // on every entry
		want     []want
	}{
		{
			name: "weights reduced by the gcd of all backends' weights",
			svc: withBackends(service("10.96.0.10", 80, tcp, clusterIP),
				backend("10.0.1.1:80", 2, active, otherNode), backend("10.0.1.2:80", 4, active, thisNode), backend("10.0.1.3:80", 6, term, otherNode)),
			want: []want{{bpfmaps.LBScopeExternal, "10.0.1.1:80 x1, 10.0.1.2:80 x2 L", "10.0.1.3:80 x3"}},
		},
		{
			name: "zero weight is 1",
			svc: withBackends(service("10.96.0.10", 80, tcp, clusterIP),
				backend("10.0.1.1:80", 0, active, otherNode), backend("10.0.1.2:80", 3, active, otherNode)),
			want: []want{{bpfmaps.LBScopeExternal, "10.0.1.1:80 x1, 10.0.1.2:80 x3", ""}},
		},
		{
			name: "cluster IP, internal policy local: this node's backends only",
			svc: withPolicy(withBackends(service("10.96.0.10", 80, tcp, clusterIP),
				backend("10.0.1.1:80", 1, active, otherNode), backend("10.0.1.2:80", 1, active, thisNode), backend("10.0.1.3:80", 1, term, thisNode))),
			want: []want{{bpfmaps.LBScopeExternal, "10.0.1.2:80 x1 L", "10.0.1.3:80 x1 L"}},
		},
		{
			name: "node port, external policy local: external entry local, internal all",
			svc: withPolicy(withBackends(service("0.0.0.0", 30080, tcp, nodePort),
				backend("10.0.1.1:80", 1, active, otherNode), backend("10.0.1.2:80", 1, active, thisNode))),
			want: []want{
				{bpfmaps.LBScopeExternal, "10.0.1.2:80 x1 L", ""},
				{bpfmaps.LBScopeInternal, "10.0.1.1:80 x1, 10.0.1.2:80 x1 L", ""},
			},
		},
		{
			name: "load balancer, external policy local, no local backend: empty external entry",
			svc:  withPolicy(withBackends(service("192.0.2.10", 443, tcp, lbType), backend("10.0.1.1:443", 1, active, otherNode))),
			want: []want{
				{bpfmaps.LBScopeExternal, "", ""},
				{bpfmaps.LBScopeInternal, "10.0.1.1:443 x1", ""},
			},
		},
		{
			name: "load balancer source ranges: on both entries, sorted",
			svc: func() *datapathv1alpha1.Service {
				s := withPolicy(withBackends(service("192.0.2.10", 443, tcp, lbType), backend("10.0.1.1:443", 1, active, thisNode)))
				s.SourceRanges = []string{"203.0.113.0/24", "198.51.100.7/32"}
				return s
			}(),
			ranges: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("203.0.113.0/24")},
			want: []want{
				{bpfmaps.LBScopeExternal, "10.0.1.1:443 x1 L", ""},
				{bpfmaps.LBScopeInternal, "10.0.1.1:443 x1 L", ""},
			},
		},
		{
			name:     "client IP affinity defaults to 10800 s",
			svc:      withAffinity(service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.1:80")),
			affinity: DefaultAffinity,
			want:     []want{{bpfmaps.LBScopeExternal, "10.0.1.1:80 x1", ""}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe, svc, ferr := normalize(tc.svc)
			if ferr != nil {
				t.Fatal(ferr)
			}
			counts, _ := slotCounts(svc.GetBackends())
			entries := compile(fe, svc, counts, thisNode, []uint32{7, 8}, []byte("meta"), nil)
			if len(entries) != len(tc.want) {
				t.Fatalf("%d entries, want %d: %+v", len(entries), len(tc.want), entries)
			}
			for i, w := range tc.want {
				e := entries[i]
				if e.Key.Scope != w.scope || e.Key.Addr != fe.addr || e.Key.Port != fe.port || e.Key.Proto != fe.proto {
					t.Errorf("entry %d key %+v, want scope %d of %s", i, e.Key, w.scope, fe)
				}
				if e.Service.ID != uint32(7+i) || string(e.Service.Meta) != "meta" || e.Service.Type != bpfmaps.LBType(svc.GetType()) || e.Service.Affinity != tc.affinity {
					t.Errorf("entry %d: %+v", i, e.Service)
				}
				if !slices.Equal(e.Service.SourceRanges, tc.ranges) {
					t.Errorf("entry %d source ranges %v, want %v", i, e.Service.SourceRanges, tc.ranges)
				}
				if got := slots(e.Service.Active); got != w.active {
					t.Errorf("entry %d active %q, want %q", i, got, w.active)
				}
				if got := slots(e.Service.Terminating); got != w.terminating {
					t.Errorf("entry %d terminating %q, want %q", i, got, w.terminating)
				}
			}
		})
	}
}

// TestSlotCountsScale checks that weights whose slots would exceed
// MaxSlots are scaled down, each backend keeping at least one slot.
func TestSlotCountsScale(t *testing.T) {
	var backends []*datapathv1alpha1.Backend
	for i := range MaxBackends {
		w := uint32(MaxWeight)
		if i == 0 {
			w = 1
		}
		backends = append(backends, &datapathv1alpha1.Backend{Address: "10.0.0.1", Port: uint32(i + 1), Weight: w, State: active})
	}
	counts, unit := slotCounts(backends)
	sum := 0
	for _, c := range counts {
		sum += c
	}
	if unit != 0 || sum > MaxSlots || slices.Min(counts) < 1 {
		t.Errorf("unit %d, %d slots, least %d; want unit 0, at most %d slots, at least 1 each", unit, sum, slices.Min(counts), MaxSlots)
	}
	if counts[1] <= counts[0] {
		t.Errorf("heavy backend has %d slots, light one %d", counts[1], counts[0])
	}
	// Active and terminating backends share one entry's slots.
	split := []*datapathv1alpha1.Backend{
		{Address: "10.0.0.1", Port: 1, Weight: 40000, State: active},
		{Address: "10.0.0.2", Port: 1, Weight: 40001, State: datapathv1alpha1.BackendState_BACKEND_STATE_TERMINATING},
	}
	if counts, _ := slotCounts(split); counts[0]+counts[1] > MaxSlots {
		t.Errorf("active %d and terminating %d slots: over %d together", counts[0], counts[1], MaxSlots)
	}
}

// TestMetaFitsAtTheLimits checks that the largest metadata validation
// allows fits bpfmaps.MaxLBMeta and reads back.
func TestMetaFitsAtTheLimits(t *testing.T) {
	m := meta{
		namespace: strings.Repeat("n", maxNameLen), name: strings.Repeat("s", maxNameLen), portName: strings.Repeat("p", maxPortNameLen),
		policy: int32(local), revision: 1<<64 - 1, updateTime: time.Date(2200, 1, 1, 0, 0, 0, 999, time.UTC), weightUnit: MaxWeight,
	}
	for i := range MaxSourceRanges {
		m.sourceRanges = append(m.sourceRanges, netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8:ffff:ffff:ffff:ffff:ffff:%x", 0xff00+i)), 128))
	}
	b := m.encode()
	if len(b) > bpfmaps.MaxLBMeta {
		t.Fatalf("metadata of %d bytes, at most %d", len(b), bpfmaps.MaxLBMeta)
	}
	got, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.namespace != m.namespace || got.name != m.name || got.portName != m.portName || got.policy != m.policy ||
		got.revision != m.revision || !got.updateTime.Equal(m.updateTime) || got.weightUnit != m.weightUnit || !slices.Equal(got.sourceRanges, m.sourceRanges) {
		t.Errorf("decoded %+v, want %+v", got, m)
	}
	if _, err := decodeMeta(b[:len(b)-3]); err == nil {
		t.Error("truncated metadata decoded")
	}
}

func withBackends(s *datapathv1alpha1.Service, b ...*datapathv1alpha1.Backend) *datapathv1alpha1.Service {
	s.Backends = b
	return s
}

func withPolicy(s *datapathv1alpha1.Service) *datapathv1alpha1.Service {
	s.TrafficPolicy = local
	return s
}

func withAffinity(s *datapathv1alpha1.Service) *datapathv1alpha1.Service {
	s.SessionAffinity = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP
	return s
}
