package datapath

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// TestLBMaglev: an entry with a Maglev table sends each new connection to
// the backend of the table's entry at the hash of its tuple: the same
// backend for the same flow on every connection and on an independently
// loaded datapath (another node), whatever the random source says; a
// removed backend's flows move, the others keep their backend for new
// connections too. Terminating backends are still picked at random once
// no backend is active.
func TestLBMaglev(t *testing.T) {
	r1, r2 := newRunner(t), newRunner(t)
	for _, r := range []*runner{r1, r2} {
		must(t, "config", r.objs.SetConfig(tunnelCfg))
	}
	fe := frontend(vip, 80, protoTCP)
	bs := []Backend{{Addr: podB.ip, Port: 8080, Local: true}, {Addr: remotePod, Port: 8081}, {Addr: remotePod, Port: 8082}, {Addr: remotePod, Port: 8083}}
	t1 := make([]uint16, MaglevTableSize)
	for i := range t1 {
		t1[i] = uint16(i % len(bs))
	}
	put := func(r *runner, active []Backend, table []uint16) {
		t.Helper()
		putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 40, Active: active, Maglev: table}})
	}
	// picks returns the backend each of 200 new connections goes to.
	picks := func(r *runner) []netip.AddrPort {
		t.Helper()
		if _, err := r.objs.DeleteFlows(func(Flow) bool { return true }); err != nil {
			t.Fatal(err)
		}
		var out []netip.AddrPort
		for sport := uint16(45000); sport < 45200; sport++ {
			verdict, f := r.run(t, r.objs.FromPod(), l4Frame(ap(podA.ip, sport), ap(vip, 80), protoTCP, tcpSYN, false))
			if verdict != verdictRedirect {
				t.Fatalf("verdict %#x (%v)", verdict, r.stats(t).Map())
			}
			_, dst := tuple(f)
			out = append(out, dst)
		}
		return out
	}
	put(r1, bs, t1)
	put(r2, bs, t1)
	first := picks(r1)
	if again := picks(r1); !slices.Equal(first, again) {
		t.Fatal("the same flows picked other backends on new connections")
	}
	if other := picks(r2); !slices.Equal(first, other) {
		t.Fatal("another datapath picked other backends for the same flows")
	}
	count := map[netip.AddrPort]int{}
	for _, b := range first {
		count[b]++
	}
	if len(count) != len(bs) {
		t.Errorf("200 flows went to %v, want every backend", count)
	}

	// Backend 2 goes: its table entries go to the others (as Maglev
	// does), and backend 3 moves from slot 3 to slot 2.
	removed := ap(bs[2].Addr, bs[2].Port)
	left := []Backend{bs[0], bs[1], bs[3]}
	t2 := make([]uint16, MaglevTableSize)
	for i, s := range t1 {
		switch s {
		case 2:
			t2[i] = uint16(i % 2)
		case 3:
			t2[i] = 2
		default:
			t2[i] = s
		}
	}
	put(r1, left, t2)
	moved := 0
	for i, b := range picks(r1) {
		switch {
		case b == removed:
			t.Fatalf("flow %d went to the removed backend", i)
		case first[i] == removed:
			moved++
		case b != first[i]:
			t.Errorf("flow %d moved from %s to %s, though its backend stayed", i, first[i], b)
		}
	}
	if moved != count[removed] {
		t.Errorf("%d flows moved, want the removed backend's %d", moved, count[removed])
	}

	// Readback, and a table that does not fit the backends.
	entries, err := r1.objs.Services()
	must(t, "services", err)
	if len(entries) != 1 || !slices.Equal(entries[0].Service.Maglev, t2) {
		t.Errorf("Maglev table not read back as written")
	}
	if err := r1.objs.PutServices([]ServiceEntry{{Frontend: fe, Service: Service{ID: 40, Active: left[:2], Maglev: t2}}}); !errors.Is(err, ErrInvalidService) {
		t.Errorf("a table naming slot 2 of 2 backends: %v, want ErrInvalidService", err)
	}

	// No active backend: terminating ones at random, the table unused.
	putServices(t, r1.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 40, Terminating: left}})
	seen := map[netip.AddrPort]bool{}
	for _, b := range picks(r1) {
		seen[b] = true
	}
	if len(seen) != len(left) {
		t.Errorf("terminating backends picked: %v, want all %d", seen, len(left))
	}
	var k podAxonLbMaglevKey
	var v podAxonLbMaglev
	if it := r1.objs.maps.AxonLbMaglev.Iterate(); it.Next(&k, &v) {
		t.Errorf("a Maglev table left behind: %+v", k)
	}
}
