package datapath

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// TestLBSourceRanges: a frontend entry with source ranges takes new
// connections only from clients inside them (others dropped, counted
// drop-source-range), never from another entry's ranges; flows admitted
// before stay; the ranges read back masked and sorted, follow updates and
// go with the entry.
func TestLBSourceRanges(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	for _, tc := range []struct {
		name             string
		vip              netip.Addr
		allowed, denied  netip.Addr
		ranges, widened  []netip.Prefix
		otherEntryRanges []netip.Prefix
	}{
		{"v4", vip, podA.ip, podB.ip,
			[]netip.Prefix{netip.MustParsePrefix("10.244.1.0/28"), netip.MustParsePrefix("192.0.2.0/24")},
			[]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
			[]netip.Prefix{netip.MustParsePrefix("10.244.1.16/28")}},
		{"v6", vip6, podA6.ip, podB6.ip,
			[]netip.Prefix{netip.MustParsePrefix("fd00:10:244:1::/124"), netip.MustParsePrefix("2001:db8::/32")},
			[]netip.Prefix{netip.MustParsePrefix("fd00:10:244:1::/64")},
			[]netip.Prefix{netip.MustParsePrefix("fd00:10:244:1::10/124")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe, other := frontend(tc.vip, 80, protoTCP), frontend(tc.vip, 81, protoTCP)
			bs := []Backend{{Addr: remotePod, Port: 8080}}
			if tc.vip.Is6() {
				bs = []Backend{{Addr: remotePod6, Port: 8080}}
			}
			t.Cleanup(func() { r.objs.DeleteServices([]Frontend{fe, other}) })
			sport := uint16(44000)
			connect := func(client netip.Addr, port uint16) uint32 {
				t.Helper()
				sport++
				v, _ := r.run(t, r.objs.FromPod(), l4Frame(ap(client, sport), ap(tc.vip, port), protoTCP, tcpSYN, false))
				return v
			}
			// A flow of the denied client admitted before the ranges.
			putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 30, Active: bs}})
			early := l4Frame(ap(tc.denied, 44999), ap(tc.vip, 80), protoTCP, tcpSYN, false)
			if v, _ := r.run(t, r.objs.FromPod(), early); v != verdictRedirect {
				t.Fatalf("before the ranges: verdict %#x", v)
			}

			putServices(t, r.objs,
				ServiceEntry{Frontend: fe, Service: Service{ID: 30, Active: bs, SourceRanges: tc.ranges}},
				ServiceEntry{Frontend: other, Service: Service{ID: 31, Active: bs, SourceRanges: tc.otherEntryRanges}})
			before := r.stats(t)
			if v := connect(tc.allowed, 80); v != verdictRedirect {
				t.Errorf("client inside the ranges: verdict %#x, want redirect", v)
			}
			if v := connect(tc.denied, 80); v != verdictDrop {
				t.Errorf("client outside the ranges (inside another entry's): verdict %#x, want drop", v)
			}
			if v := connect(tc.denied, 81); v != verdictRedirect {
				t.Errorf("client inside the other entry's ranges: verdict %#x, want redirect", v)
			}
			if d := r.stats(t).DropSourceRange - before.DropSourceRange; d != 1 {
				t.Errorf("drop-source-range grew by %d, want 1", d)
			}
			if v, _ := r.run(t, r.objs.FromPod(), early); v != verdictRedirect {
				t.Errorf("a flow admitted before the ranges: verdict %#x, want redirect", v)
			}
			if got := rangesOf(t, r.objs, 30); !slices.Equal(got, slices.SortedFunc(slices.Values(tc.ranges), comparePrefix)) {
				t.Errorf("read back %v, want %v", got, tc.ranges)
			}

			// Widened: the denied client is in; the old ranges are gone.
			putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 30, Active: bs, SourceRanges: tc.widened}})
			if v := connect(tc.denied, 80); v != verdictRedirect {
				t.Errorf("after widening: verdict %#x, want redirect", v)
			}
			if got := rangesOf(t, r.objs, 30); !slices.Equal(got, tc.widened) {
				t.Errorf("after widening read back %v, want %v", got, tc.widened)
			}
			// Under a new ID, then none: every client, nothing left behind.
			putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 32, Active: bs, SourceRanges: tc.ranges}})
			if v := connect(tc.denied, 80); v != verdictDrop {
				t.Errorf("under a new ID: verdict %#x, want drop", v)
			}
			putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 32, Active: bs}})
			if v := connect(tc.denied, 80); v != verdictRedirect {
				t.Errorf("without ranges: verdict %#x, want redirect", v)
			}
			must(t, "delete", r.objs.DeleteServices([]Frontend{other}))
			all, err := r.objs.sourceRanges()
			must(t, "source ranges", err)
			if len(all) != 0 {
				t.Errorf("ranges left behind: %v", all)
			}
		})
	}
}

// rangesOf returns the source ranges Services reads back for entry id.
func rangesOf(t *testing.T, o *Objects, id uint32) []netip.Prefix {
	t.Helper()
	entries, err := o.Services()
	must(t, "services", err)
	for _, e := range entries {
		if e.Service.ID == id {
			return e.Service.SourceRanges
		}
	}
	t.Fatalf("no entry %d", id)
	return nil
}

// TestSourceRangeInvalid: ranges of the other family or too many are
// refused before anything is written.
func TestSourceRangeInvalid(t *testing.T) {
	o := mustLoad(t, "")
	many := make([]netip.Prefix, MaxSourceRanges+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
	}
	for _, rs := range [][]netip.Prefix{
		{netip.MustParsePrefix("fd00::/64")},
		{netip.MustParsePrefix("::ffff:10.0.0.0/104")},
		{{}},
		many,
	} {
		err := o.PutServices([]ServiceEntry{{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, SourceRanges: rs}}})
		if !errors.Is(err, ErrInvalidService) {
			t.Errorf("source ranges %v: %v, want ErrInvalidService", rs, err)
		}
	}
}
