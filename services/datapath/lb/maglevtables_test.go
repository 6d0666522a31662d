package lb

import (
	"net/netip"
	"testing"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/datapath/lb/maglev"
)

func TestMaglevKey(t *testing.T) {
	for _, tc := range []struct {
		ap    string
		proto uint8
		want  string
	}{
		{"10.0.2.17:8080", 6, "10.0.2.17:8080/TCP"},
		{"[fd00::5]:53", 17, "[fd00::5]:53/UDP"},
		{"10.0.2.17:9", 132, "10.0.2.17:9/SCTP"},
	} {
		if got := maglevKey(netip.MustParseAddrPort(tc.ap), tc.proto); got != tc.want {
			t.Errorf("maglevKey(%s, %d) = %q, want %q", tc.ap, tc.proto, got, tc.want)
		}
	}
	if err := maglev.ValidSize(bpfmaps.MaglevTableSize); err != nil {
		t.Errorf("the datapath's table size: %v", err)
	}
}

// TestMaglevTables: a table names each backend by its first slot, gives a
// backend repeated for its weight that many times the share, is the same
// whatever the order of the slots (every node builds the same), and is
// built once per backend set.
func TestMaglevTables(t *testing.T) {
	be := func(s string) bpfmaps.LBBackend {
		ap := netip.MustParseAddrPort(s)
		return bpfmaps.LBBackend{Addr: ap.Addr(), Port: ap.Port()}
	}
	a, b, c := be("10.0.1.1:80"), be("10.0.1.2:80"), be("10.0.1.3:80")
	tables := newMaglevTables()
	t1 := tables.table([]bpfmaps.LBBackend{a, b, b, c}, 6)
	if len(t1) != bpfmaps.MaglevTableSize {
		t.Fatalf("table of %d entries", len(t1))
	}
	share := map[uint16]int{}
	for _, s := range t1 {
		share[s]++
	}
	if len(share) != 3 || share[0] == 0 || share[1] == 0 || share[3] == 0 {
		t.Fatalf("slots named: %v, want the first slots 0, 1, 3", share)
	}
	if r := float64(share[1]) / float64(share[0]); r < 1.9 || r > 2.1 {
		t.Errorf("a backend of weight 2 has %.2f times the share of one of weight 1", r)
	}
	// Another node learned the backends in another order.
	order := []bpfmaps.LBBackend{c, b, a, b}
	t2 := tables.table(order, 6)
	orig := []bpfmaps.LBBackend{a, b, b, c}
	for i := range t1 {
		if orig[t1[i]] != order[t2[i]] {
			t.Fatalf("position %d: %v here, %v with the slots in another order", i, orig[t1[i]], order[t2[i]])
		}
	}
	if len(tables.cache) != 1 {
		t.Errorf("%d tables built for one backend set", len(tables.cache))
	}
	if tables.table(nil, 6) != nil {
		t.Error("a table without backends")
	}
	var none *maglevTables
	if none.table(orig, 6) != nil {
		t.Error("a nil maglevTables built a table")
	}
}

// TestCompileMaglev: external frontends' entries get a Maglev table over
// their active backends, cluster IPs none.
func TestCompileMaglev(t *testing.T) {
	for _, tc := range []struct {
		svc    string
		typ    bpfmaps.LBType
		maglev bool
	}{
		{"10.96.0.10", bpfmaps.LBTypeClusterIP, false},
		{"192.0.2.10", bpfmaps.LBTypeLoadBalancer, true},
		{"192.0.2.11", bpfmaps.LBTypeExternalIP, true},
		{"0.0.0.0", bpfmaps.LBTypeNodePort, true},
	} {
		svc := withBackends(service(tc.svc, 30080, tcp, datapathv1alpha1.ServiceType(tc.typ)), backend("10.0.1.1:80", 1, active, otherNode), backend("10.0.1.2:80", 1, active, thisNode))
		fe, n, ferr := normalize(svc)
		if ferr != nil {
			t.Fatal(ferr)
		}
		counts, _ := slotCounts(n.GetBackends())
		for _, e := range compile(fe, n, counts, thisNode, []uint32{1, 2}, nil, newMaglevTables()) {
			if got := len(e.Service.Maglev) > 0; got != tc.maglev {
				t.Errorf("%v entry %v: Maglev table %v, want %v", tc.typ, e.Key, got, tc.maglev)
			}
		}
	}
}
