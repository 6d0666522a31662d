package datapath

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLBAffinity: with session affinity, every new connection of a client
// goes to the backend of its previous one; once the client has been quiet
// longer than the timeout it may pick another; a remembered backend that
// moved to another slot is still found, one that was removed is not used.
// ExpireAffinity forgets what the programs no longer use. Without affinity
// nothing is remembered.
func TestLBAffinity(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	fe := frontend(vip, 80, protoTCP)
	backends := []Backend{{Addr: podB.ip, Port: 8080, Local: true}, {Addr: remotePod, Port: 8081}, {Addr: remotePod, Port: 8082}, {Addr: remotePod, Port: 8083}}
	const timeout = 60
	put := func(bs []Backend, affinity uint32) {
		putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 13, Active: bs, AffinityTimeout: affinity}})
	}
	put(backends, timeout)
	t.Cleanup(func() { r.objs.DeleteServices([]Frontend{fe}) })

	sport := uint16(43000)
	connect := func(client netip.Addr) netip.AddrPort {
		t.Helper()
		sport++
		verdict, out := r.run(t, r.objs.FromPod(), l4Frame(ap(client, sport), ap(vip, 80), protoTCP, tcpSYN, false))
		if verdict != verdictRedirect {
			t.Fatalf("verdict %#x, want redirect (%v)", verdict, r.stats(t).Map())
		}
		_, dst := tuple(out)
		return dst
	}
	// age makes every remembered backend last used d ago.
	age := func(d time.Duration) {
		t.Helper()
		var ts unix.Timespec
		must(t, "clock", unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
		var k podAxonLbAffinityKey
		var v podAxonLbAffinity
		it := r.objs.maps.AxonLbAffinity.Iterate()
		for it.Next(&k, &v) {
			v.LastUsed = uint64(ts.Nano()) - uint64(d)
			must(t, "age affinity", r.objs.maps.AxonLbAffinity.Put(&k, &v))
		}
		must(t, "iterate affinity", it.Err())
	}

	first := connect(podA.ip)
	for range 20 {
		if dst := connect(podA.ip); dst != first {
			t.Fatalf("with affinity, a new connection went to %s, the first to %s", dst, first)
		}
	}

	// Quiet for less than the timeout: still sticky.
	age((timeout - 1) * time.Second)
	if dst := connect(podA.ip); dst != first {
		t.Fatalf("within the timeout, a new connection went to %s, not %s", dst, first)
	}

	// Expired: the client picks anew (and sticks to that).
	seen := map[netip.AddrPort]bool{}
	for range 24 {
		age((timeout + 1) * time.Second)
		dst := connect(podA.ip)
		seen[dst] = true
		if again := connect(podA.ip); again != dst {
			t.Fatalf("after a new pick, %s then %s", dst, again)
		}
	}
	if len(seen) < 2 {
		t.Errorf("after expiry, 24 picks all went to %v", seen)
	}

	// The remembered backend moves to another slot: still found.
	cur := connect(podA.ip)
	var moved []Backend
	for _, b := range backends {
		if ap(b.Addr, b.Port) != cur {
			moved = append(moved, b)
		}
	}
	for _, b := range backends {
		if ap(b.Addr, b.Port) == cur {
			moved = append(moved, b)
		}
	}
	put(moved, timeout)
	for range 10 {
		if dst := connect(podA.ip); dst != cur {
			t.Fatalf("after its backend moved slots, a connection went to %s, not %s", dst, cur)
		}
	}
	// Removed: never used again.
	put(moved[:len(moved)-1], timeout)
	for range 10 {
		if dst := connect(podA.ip); dst == cur {
			t.Fatalf("a connection went to the removed backend %s", cur)
		}
	}

	// ExpireAffinity keeps fresh entries, forgets expired ones and those
	// of entries without affinity.
	connect(podB.ip)
	n, err := r.objs.ExpireAffinity()
	if err != nil || n != 0 {
		t.Fatalf("ExpireAffinity of fresh entries = %d, %v; want 0", n, err)
	}
	age((timeout + 1) * time.Second)
	if n, err := r.objs.ExpireAffinity(); err != nil || n != 2 {
		t.Fatalf("ExpireAffinity of expired entries = %d, %v; want 2", n, err)
	}
	connect(podA.ip)
	put(backends, 0)
	if n, err := r.objs.ExpireAffinity(); err != nil || n != 1 {
		t.Fatalf("ExpireAffinity after affinity was turned off = %d, %v; want 1", n, err)
	}
	for range 5 {
		connect(podA.ip)
	}
	as, err := r.objs.Affinities()
	must(t, "affinities", err)
	if len(as) != 0 {
		t.Errorf("without affinity, remembered %v", as)
	}
}
