package loader

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	"github.com/axon-cni/axon/bpf/testenv"
	"github.com/axon-cni/axon/services/datapath/bpfmaps"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// TestLBMaps: service entries go through the loader to the pinned maps and
// back, survive a restart on the same pins (the agent restores its view
// from them), and Usage names every map with its capacity.
func TestLBMaps(t *testing.T) {
	testenv.RequireBPF(t)
	ns := nstest.New(t)
	dir := pinDir(t)
	open := func() *Loader {
		t.Helper()
		var l *Loader
		err := ns.Do(func() (err error) { l, err = Open(dir, bpfdp.LoadOptions{CTMapMax: 4096}); return err })
		testenv.RequireLoaded(t, "the datapath", err)
		return l
	}
	l := open()
	entries := []bpfmaps.LBEntry{
		{Key: bpfmaps.LBKey{Addr: netip.MustParseAddr("10.96.0.1"), Port: 443, Proto: 6},
			Service: bpfmaps.LBService{ID: 1, Type: bpfmaps.LBTypeClusterIP, Affinity: 3 * time.Hour, Meta: []byte(`{"name":"kubernetes"}`),
				Active:      []bpfmaps.LBBackend{{Addr: netip.MustParseAddr("10.244.1.5"), Port: 6443, Local: true}},
				Terminating: []bpfmaps.LBBackend{{Addr: netip.MustParseAddr("10.244.2.5"), Port: 6443}}}},
		{Key: bpfmaps.LBKey{Addr: netip.MustParseAddr("fd00:96::a"), Port: 53, Proto: 17, Scope: bpfmaps.LBScopeInternal},
			Service: bpfmaps.LBService{ID: 2, Type: bpfmaps.LBTypeClusterIP,
				Active: []bpfmaps.LBBackend{{Addr: netip.MustParseAddr("fd00:10:244:1::5"), Port: 53, Local: true}}}},
		{Key: bpfmaps.LBKey{Addr: netip.MustParseAddr("192.0.2.10"), Port: 443, Proto: 6},
			Service: bpfmaps.LBService{ID: 3, Type: bpfmaps.LBTypeLoadBalancer,
				Active:       []bpfmaps.LBBackend{{Addr: netip.MustParseAddr("10.244.1.6"), Port: 8443}, {Addr: netip.MustParseAddr("10.244.2.6"), Port: 8443}},
				SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.7/32")},
				Maglev:       alternating(bpfmaps.MaglevTableSize)}},
	}
	if err := l.PutServices(entries); err != nil {
		t.Fatal(err)
	}
	bad := entries[0]
	bad.Service.ID = 0
	if err := l.PutServices([]bpfmaps.LBEntry{bad}); !errors.Is(err, bpfdp.ErrInvalidService) {
		t.Errorf("PutServices(ID 0) = %v, want ErrInvalidService", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = open()
	t.Cleanup(func() { _ = l.Close() })
	got, err := l.Services()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b bpfmaps.LBEntry) int { return int(a.Service.ID) - int(b.Service.ID) })
	if len(got) != len(entries) {
		t.Fatalf("Services() after a restart = %+v, want %+v", got, entries)
	}
	for i, w := range entries {
		g := got[i]
		if g.Key != w.Key || g.Service.ID != w.Service.ID || g.Service.Type != w.Service.Type ||
			g.Service.Affinity != w.Service.Affinity || string(g.Service.Meta) != string(w.Service.Meta) ||
			!slices.Equal(g.Service.Active, w.Service.Active) || !slices.Equal(g.Service.Terminating, w.Service.Terminating) ||
			!slices.Equal(g.Service.SourceRanges, w.Service.SourceRanges) || !slices.Equal(g.Service.Maglev, w.Service.Maglev) {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}

	if err := l.DeleteServices([]bpfmaps.LBKey{entries[0].Key}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.DeleteFlows(func(bpfmaps.Flow) bool { return true }); err != nil || n != 0 {
		t.Errorf("DeleteFlows on an empty tracker = %d, %v", n, err)
	}
	if n, err := l.ExpireFlows(); err != nil || n != 0 {
		t.Errorf("ExpireFlows on an empty tracker = %d, %v", n, err)
	}
	us, err := l.Usage()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bpfmaps.MapUsage{
		"axon_lb_services":      {Name: "axon_lb_services", Entries: 2, Capacity: bpfdp.DefaultServiceMapMax},
		"axon_lb_slots":         {Name: "axon_lb_slots", Entries: 3, Capacity: bpfdp.DefaultSlotMapMax},
		"axon_lb_maglev":        {Name: "axon_lb_maglev", Entries: 1, Capacity: 8192},
		"axon_lb_source_ranges": {Name: "axon_lb_source_ranges", Entries: 2, Capacity: 65536},
		"axon_lb_meta":          {Name: "axon_lb_meta", Entries: 0, Capacity: bpfdp.DefaultServiceMapMax},
		"axon_ct":               {Name: "axon_ct", Entries: 0, Capacity: 4096},
		"axon_endpoints":        {Name: "axon_endpoints", Entries: 0, Capacity: bpfdp.DefaultEndpointMapMax},
	}
	for _, u := range us {
		if w, ok := want[u.Name]; ok && u != w {
			t.Errorf("usage %+v, want %+v", u, w)
		}
		delete(want, u.Name)
	}
	if len(want) != 0 || len(us) != 15 {
		t.Errorf("usage %+v: missing %v", us, want)
	}
}

// alternating is a Maglev table of n entries over two backends.
func alternating(n int) []uint16 {
	t := make([]uint16, n)
	for i := range t {
		t[i] = uint16(i % 2)
	}
	return t
}

// TestMaglevTableSize: the table size the agent builds is the datapath's.
func TestMaglevTableSize(t *testing.T) {
	if bpfmaps.MaglevTableSize != bpfdp.MaglevTableSize {
		t.Errorf("bpfmaps.MaglevTableSize %d, the datapath's %d", bpfmaps.MaglevTableSize, bpfdp.MaglevTableSize)
	}
}
