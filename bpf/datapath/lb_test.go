package datapath

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Service frontends of the BPF_PROG_TEST_RUN tests.
var (
	vip  = netip.MustParseAddr("10.96.0.10")
	vip6 = netip.MustParseAddr("fd00:96::10")
)

const (
	protoTCP = 6
	protoUDP = 17
	tcpSYN   = 0x02
	tcpACK   = 0x10
	tcpFIN   = 0x01
)

// l4Frame builds Ethernet + IPv4 or IPv6 + TCP (flags) or UDP from src to
// dst, with every checksum valid (an IPv4 UDP datagram with noCsum carries
// none), as podA's host-side veth would receive it.
func l4Frame(src, dst netip.AddrPort, proto, flags uint8, noCsum bool) []byte {
	payload := []byte("axon service test")
	var l4 []byte
	if proto == protoTCP {
		l4 = make([]byte, 20+len(payload))
		binary.BigEndian.PutUint32(l4[4:], 1000) // seq
		l4[12] = 5 << 4
		l4[13] = flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], payload)
	} else {
		l4 = make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], payload)
	}
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	var f []byte
	if src.Addr().Is4() {
		f = udp4(src.Addr(), dst.Addr(), 64)[:14+20]
		f = append(f, l4...)
		f[14+9] = proto
		binary.BigEndian.PutUint16(f[14+2:], uint16(20+len(l4)))
		setChecksum(f)
	} else {
		f = ip6Frame(src.Addr(), dst.Addr(), 64, proto, l4)
	}
	if !(noCsum && proto == protoUDP && src.Addr().Is4()) {
		off := csumOff(f)
		s := ^l4Sum(f)
		if s == 0 && proto == protoUDP {
			s = 0xffff
		}
		binary.BigEndian.PutUint16(f[off:], s)
	}
	return f
}

// l4Start is the offset of the transport header of f.
func l4Start(f []byte) int {
	if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
		return 14 + int(f[14]&0x0f)*4
	}
	return 14 + 40
}

func l4Proto(f []byte) uint8 {
	if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
		return f[14+9]
	}
	return f[14+6]
}

func csumOff(f []byte) int {
	if l4Proto(f) == protoTCP {
		return l4Start(f) + 16
	}
	return l4Start(f) + 6
}

// l4Sum is the one's-complement sum of f's transport segment with its
// pseudo header: 0xffff when the checksum is valid.
func l4Sum(f []byte) uint16 {
	l4 := f[l4Start(f):]
	var pseudo []byte
	if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
		pseudo = append(pseudo, f[14+12:14+20]...)
	} else {
		pseudo = append(pseudo, f[14+8:14+40]...)
	}
	pseudo = append(pseudo, 0, l4Proto(f), byte(len(l4)>>8), byte(len(l4)))
	data := append(pseudo, l4...)
	if len(data)%2 == 1 {
		data = append(data, 0)
	}
	return onesSum(data)
}

// tuple returns the source and destination of f.
func tuple(f []byte) (src, dst netip.AddrPort) {
	l4 := l4Start(f)
	sp, dp := binary.BigEndian.Uint16(f[l4:]), binary.BigEndian.Uint16(f[l4+2:])
	if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
		s, d := [4]byte(f[14+12:14+16]), [4]byte(f[14+16:14+20])
		return netip.AddrPortFrom(netip.AddrFrom4(s), sp), netip.AddrPortFrom(netip.AddrFrom4(d), dp)
	}
	s, d := [16]byte(f[14+8:14+24]), [16]byte(f[14+24:14+40])
	return netip.AddrPortFrom(netip.AddrFrom16(s), sp), netip.AddrPortFrom(netip.AddrFrom16(d), dp)
}

// checkSums fails unless f's IPv4 header and transport checksums are valid
// (an IPv4 UDP datagram without checksum must still have none).
func checkSums(t *testing.T, f []byte, noCsum bool) {
	t.Helper()
	if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
		if s := onesSum(f[14 : 14+int(f[14]&0x0f)*4]); s != 0xffff {
			t.Errorf("IPv4 header checksum invalid (sum %#04x)", s)
		}
	}
	c := binary.BigEndian.Uint16(f[csumOff(f):])
	if noCsum {
		if c != 0 {
			t.Errorf("UDP checksum %#04x, want none (0)", c)
		}
		return
	}
	if s := l4Sum(f); s != 0xffff || c == 0 {
		t.Errorf("transport checksum %#04x invalid (sum %#04x)", c, s)
	}
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func putServices(t *testing.T, o *Objects, entries ...ServiceEntry) {
	t.Helper()
	if err := o.PutServices(entries); err != nil {
		t.Fatalf("PutServices: %v", err)
	}
}

func frontend(a netip.Addr, port uint16, proto uint8) Frontend {
	return Frontend{Addr: a, Port: port, Proto: proto}
}

// TestLBRun: a pod's new connection to a frontend goes to one of its
// backends (local pod or remote block) with valid checksums, keeps it, and
// the replies come back from the frontend, over IPv4 and IPv6, TCP and UDP.
func TestLBRun(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	for _, fam := range []struct {
		name              string
		client, local, rm netip.Addr
		vip               netip.Addr
	}{
		{"v4", podA.ip, podB.ip, remotePod, vip},
		{"v6", podA6.ip, podB6.ip, remotePod6, vip6},
	} {
		for _, proto := range []uint8{protoTCP, protoUDP} {
			for _, noCsum := range []bool{false, true} {
				if noCsum && (proto == protoTCP || fam.name == "v6") {
					continue
				}
				name := fam.name + map[uint8]string{protoTCP: " tcp", protoUDP: " udp"}[proto]
				if noCsum {
					name += " no checksum"
				}
				t.Run(name, func(t *testing.T) {
					testLBRun(t, r, fam.client, fam.local, fam.rm, fam.vip, proto, noCsum)
				})
			}
		}
	}
}

func testLBRun(t *testing.T, r *runner, client, local, rm, vipAddr netip.Addr, proto uint8, noCsum bool) {
	fe := frontend(vipAddr, 80, proto)
	backends := []Backend{{Addr: local, Port: 8080, Local: true}, {Addr: rm, Port: 8081}}
	putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 7, Active: backends}})
	t.Cleanup(func() { r.objs.DeleteServices([]Frontend{fe}) })

	seen := map[netip.AddrPort]int{}
	for sport := uint16(40000); sport < 40040; sport++ {
		before := r.stats(t)
		in := l4Frame(ap(client, sport), ap(vipAddr, 80), proto, tcpSYN, noCsum)
		verdict, out := r.run(t, r.objs.FromPod(), in)
		if verdict != verdictRedirect {
			t.Fatalf("new connection: verdict %#x, want redirect (%v)", verdict, r.stats(t).Map())
		}
		out = out[:len(in)]
		src, dst := tuple(out)
		if src != ap(client, sport) || (dst != ap(local, 8080) && dst != ap(rm, 8081)) {
			t.Fatalf("translated to %s -> %s, want %s -> a backend", src, dst, ap(client, sport))
		}
		checkSums(t, out, noCsum)
		after := r.stats(t)
		if after.Total()-before.Total() != 1 {
			t.Errorf("one packet moved the counters by %d", after.Total()-before.Total())
		}
		seen[dst]++

		// The flow keeps its backend.
		for range 3 {
			_, again := r.run(t, r.objs.FromPod(), l4Frame(ap(client, sport), ap(vipAddr, 80), proto, tcpACK, noCsum))
			if _, d := tuple(again); d != dst {
				t.Fatalf("flow moved from %s to %s", dst, d)
			}
		}

		// The backend's reply comes back from the frontend: from a local
		// backend through axon_from_pod, from a remote one through the
		// overlay.
		prog := r.objs.FromPod()
		if dst.Addr() == rm {
			prog = r.objs.FromOverlay()
		}
		reply := l4Frame(dst, ap(client, sport), proto, tcpSYN|tcpACK, noCsum)
		verdict, back := r.run(t, prog, reply)
		if verdict != verdictRedirect {
			t.Fatalf("reply: verdict %#x, want redirect", verdict)
		}
		back = back[:len(reply)]
		if s, d := tuple(back); s != ap(vipAddr, 80) || d != ap(client, sport) {
			t.Fatalf("reply translated to %s -> %s, want %s -> %s", s, d, ap(vipAddr, 80), ap(client, sport))
		}
		checkSums(t, back, noCsum)
	}
	if len(seen) != 2 {
		t.Errorf("40 connections went to %v, want both backends", seen)
	}

	flows, err := r.objs.Flows()
	must(t, "flows", err)
	n := 0
	for _, f := range flows {
		if f.ServiceID == 7 && f.Proto == proto && f.Frontend == ap(vipAddr, 80) && f.Client.Addr() == client {
			n++
		}
	}
	if n != 40 {
		t.Errorf("%d flows of the service, want 40", n)
	}
	removed, err := r.objs.DeleteFlows(func(f Flow) bool { return f.ServiceID == 7 })
	if err != nil || removed != 40 {
		t.Errorf("DeleteFlows = %d, %v; want 40", removed, err)
	}
}

// TestLBBackendChoice: terminating backends take new connections only when
// no backend is active; none at all refuses them (counted); a port or
// protocol that is not the frontend's is not translated.
func TestLBBackendChoice(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	fe := frontend(vip, 53, protoUDP)
	for _, tc := range []struct {
		name    string
		svc     Service
		in      []byte
		verdict uint32
		dsts    []netip.AddrPort // allowed destinations
		counter string
	}{
		{"terminating only", Service{ID: 1, Terminating: []Backend{{Addr: podB.ip, Port: 5353}}},
			l4Frame(ap(podA.ip, 1000), ap(vip, 53), protoUDP, 0, false), verdictRedirect, []netip.AddrPort{ap(podB.ip, 5353)}, "forwarded-local"},
		{"active before terminating", Service{ID: 1, Active: []Backend{{Addr: remotePod, Port: 5353}}, Terminating: []Backend{{Addr: podB.ip, Port: 5353}}},
			l4Frame(ap(podA.ip, 1001), ap(vip, 53), protoUDP, 0, false), verdictRedirect, []netip.AddrPort{ap(remotePod, 5353)}, "forwarded-tunnel-device"},
		{"no backend", Service{ID: 1},
			l4Frame(ap(podA.ip, 1002), ap(vip, 53), protoUDP, 0, false), verdictRedirect, nil, "rejected-no-backend"},
		{"other port", Service{ID: 1, Active: []Backend{{Addr: podB.ip, Port: 5353}}},
			l4Frame(ap(podA.ip, 1003), ap(vip, 54), protoUDP, 0, false), verdictNext, []netip.AddrPort{ap(vip, 54)}, "to-host"},
		{"other protocol", Service{ID: 1, Active: []Backend{{Addr: podB.ip, Port: 5353}}},
			l4Frame(ap(podA.ip, 1004), ap(vip, 53), protoTCP, tcpSYN, false), verdictNext, []netip.AddrPort{ap(vip, 53)}, "to-host"},
		// IPv6 to the IPv4-mapped form of an IPv4 frontend is not the
		// frontend's.
		{"v6 to a mapped IPv4 frontend", Service{ID: 1, Active: []Backend{{Addr: podB.ip, Port: 5353}}},
			l4Frame(ap(podA6.ip, 1005), ap(netip.AddrFrom16(vip.As16()), 53), protoUDP, 0, false), verdictNext, []netip.AddrPort{ap(netip.AddrFrom16(vip.As16()), 53)}, "to-host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: tc.svc})
			for range 10 {
				before := r.stats(t).Map()
				verdict, out := r.run(t, r.objs.FromPod(), tc.in)
				if verdict != tc.verdict {
					t.Fatalf("verdict %#x, want %#x (%v)", verdict, tc.verdict, r.stats(t).Map())
				}
				if d := r.stats(t).Map()[tc.counter] - before[tc.counter]; d != 1 {
					t.Errorf("%s grew by %d, want 1", tc.counter, d)
				}
				if tc.dsts == nil {
					continue
				}
				if _, dst := tuple(out); !slices.Contains(tc.dsts, dst) {
					t.Errorf("sent to %s, want one of %v", dst, tc.dsts)
				}
			}
		})
	}
}

// TestLBCTFull: a new connection that finds the connection tracker full is
// dropped and counted; flows already tracked go on.
func TestLBCTFull(t *testing.T) {
	requireBPF(t)
	o, err := Load("", LoadOptions{CTMapMax: 2})
	must(t, "load", err)
	t.Cleanup(func() { o.Close() })
	putFixture(t, o)
	r := newRunner(t)
	r.objs = o
	must(t, "config", o.SetConfig(tunnelCfg))
	putServices(t, o, ServiceEntry{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 3, Active: []Backend{{Addr: podB.ip, Port: 80}}}})
	first := l4Frame(ap(podA.ip, 2000), ap(vip, 80), protoTCP, tcpSYN, false)
	if v, _ := r.run(t, o.FromPod(), first); v != verdictRedirect {
		t.Fatalf("first connection: verdict %#x", v)
	}
	if v, _ := r.run(t, o.FromPod(), l4Frame(ap(podA.ip, 2001), ap(vip, 80), protoTCP, tcpSYN, false)); v != verdictDrop {
		t.Fatalf("second connection: verdict %#x, want drop", v)
	}
	if s := r.stats(t); s.DropCTFull != 1 {
		t.Errorf("drop-ct-full %d, want 1", s.DropCTFull)
	}
	if v, _ := r.run(t, o.FromPod(), first); v != verdictRedirect {
		t.Errorf("tracked connection: verdict %#x", v)
	}
}

// TestLBNeverHalfWritten runs new connections through axon_from_pod while
// another goroutine switches the frontend between two backend sets of
// different sizes, in batches with other frontends: every packet goes to a
// backend of one of the sets (never another frontend's, never a zero
// address), none is dropped for a missing slot.
func TestLBNeverHalfWritten(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	fe := frontend(vip, 80, protoUDP)
	set := func(ports ...uint16) []Backend {
		var bs []Backend
		for _, p := range ports {
			bs = append(bs, Backend{Addr: podB.ip, Port: p, Local: true})
		}
		return bs
	}
	sets := [2][]Backend{set(1001, 1002), set(2001, 2002, 2003, 2004, 2005)}
	allowed := map[uint16]bool{}
	for _, s := range sets {
		for _, b := range s {
			allowed[b.Port] = true
		}
	}
	putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 9, Active: sets[0]}})
	var others []ServiceEntry
	for i := range 48 {
		others = append(others, ServiceEntry{Frontend: frontend(vip, uint16(1000+i), protoUDP), Service: Service{
			ID: uint32(100 + i), Active: set(uint16(3000+i), uint16(4000+i)),
		}})
	}

	const minSwitches, minPackets = 300, 5000
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		switches int
		stop     = make(chan struct{})
		errc     = make(chan error, 1)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Alternating IDs too: the slots of both move. Amid other
			// frontends (never sent to): a replaced map element is
			// reused by the next write of the batch.
			batch := slices.Clone(others[:24])
			batch = append(batch, ServiceEntry{Frontend: fe, Service: Service{ID: 9 + uint32(i%2)*10, Active: sets[i%2]}})
			batch = append(batch, others[24:]...)
			for j := range batch {
				if batch[j].Frontend != fe {
					batch[j].Service.Active = batch[j].Service.Active[i%2:]
				}
			}
			if err := r.objs.PutServices(batch); err != nil {
				errc <- err
				return
			}
			mu.Lock()
			switches++
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	packets := 0
	err := inNetNS(r.ns, func() error {
		for sport := 0; ; sport++ {
			mu.Lock()
			done := switches >= minSwitches && packets >= minPackets
			mu.Unlock()
			if done {
				return nil
			}
			select {
			case err := <-errc:
				return err
			default:
			}
			in := l4Frame(ap(podA.ip, uint16(1024+sport%60000)), ap(vip, 80), protoUDP, 0, false)
			opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
			verdict, err := r.objs.FromPod().Run(&opts)
			if err != nil {
				return err
			}
			packets++
			if verdict != verdictRedirect {
				t.Errorf("packet %d: verdict %#x (%v)", packets, verdict, r.stats(t).Map())
				return nil
			}
			if _, dst := tuple(opts.DataOut[:len(in)]); dst.Addr() != podB.ip || !allowed[dst.Port()] {
				t.Errorf("packet %d went to %s", packets, dst)
				return nil
			}
			// Keep the tracker small: every packet is a new connection.
			if sport%1000 == 999 {
				if _, err := r.objs.DeleteFlows(func(Flow) bool { return true }); err != nil {
					return err
				}
			}
		}
	})
	must(t, "run", err)
	s := r.stats(t)
	if s.DropNoBackend != 0 || s.DropNAT != 0 || s.DropCTFull != 0 {
		t.Errorf("drops: %v", s.Map())
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d packets over %d switches", packets, switches)
}

// TestServicesRoundTrip: entries read back as written, both families and
// scopes; a switch writes the other generation and leaves no stale slot;
// deletion removes slots and metadata; bad entries and full maps fail as
// documented.
func TestServicesRoundTrip(t *testing.T) {
	o := mustLoad(t, "")
	entries := []ServiceEntry{
		{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, Type: 1, Active: []Backend{
			{Addr: podB.ip, Port: 8080, Local: true}, {Addr: podB.ip, Port: 8080, Local: true}, {Addr: remotePod, Port: 8080},
		}, Terminating: []Backend{{Addr: netip.MustParseAddr("10.244.2.31"), Port: 8080}}, Meta: []byte("svc default/web")}},
		{Frontend: Frontend{Addr: vip6, Port: 443, Proto: protoTCP, Scope: ScopeInternal}, Service: Service{ID: 2, Type: 2, AffinityTimeout: 300,
			Active: []Backend{{Addr: podB6.ip, Port: 8443, Local: true}}}},
		{Frontend: frontend(netip.IPv4Unspecified(), 30080, protoUDP), Service: Service{ID: 3, Type: 2}},
	}
	lbOn := func() bool {
		var c podAxonConfig
		must(t, "config", o.maps.AxonConfig.Lookup(uint32(0), &c))
		return c.Flags&configLB != 0
	}
	must(t, "put nothing", o.PutServices(nil))
	if lbOn() {
		t.Error("service lookups enabled without a service")
	}
	putServices(t, o, entries...)
	// The agent's configuration keeps the service lookups on.
	must(t, "config", o.SetConfig(tunnelCfg))
	if !lbOn() {
		t.Error("SetConfig turned the service lookups off")
	}
	check := func(want []ServiceEntry) {
		t.Helper()
		got, err := o.Services()
		must(t, "services", err)
		if len(got) != len(want) {
			t.Fatalf("Services() = %d entries, want %d: %+v", len(got), len(want), got)
		}
		for _, w := range want {
			i := slices.IndexFunc(got, func(g ServiceEntry) bool { return g.Frontend == w.Frontend })
			if i < 0 {
				t.Errorf("frontend %s missing", w.Frontend)
				continue
			}
			g := got[i].Service
			if g.ID != w.Service.ID || g.Type != w.Service.Type || g.AffinityTimeout != w.Service.AffinityTimeout ||
				!slices.Equal(g.Active, w.Service.Active) || !slices.Equal(g.Terminating, w.Service.Terminating) ||
				string(g.Meta) != string(w.Service.Meta) {
				t.Errorf("frontend %s: %+v, want %+v", w.Frontend, g, w.Service)
			}
		}
		slots := 0
		for _, w := range want {
			slots += len(w.Service.Active) + len(w.Service.Terminating)
		}
		if n := usage(t, o, podMapAxonLbSlots); n != slots {
			t.Errorf("%d slots in the map, want %d (no stale ones)", n, slots)
		}
	}
	check(entries)

	// Switch: fewer backends, another ID, no metadata.
	var v podAxonLbService
	k := lbKey(entries[0].Frontend)
	must(t, "lookup", o.maps.AxonLbServices.Lookup(&k, &v))
	entries[0].Service = Service{ID: 11, Type: 1, Active: []Backend{{Addr: remotePod, Port: 9090}}}
	putServices(t, o, entries[0])
	var v2 podAxonLbService
	must(t, "lookup", o.maps.AxonLbServices.Lookup(&k, &v2))
	if v2.Gen != v.Gen^1 {
		t.Errorf("generation %d after a switch from %d", v2.Gen, v.Gen)
	}
	check(entries)
	if n := usage(t, o, podMapAxonLbMeta); n != 0 {
		t.Errorf("%d metadata entries, want 0", n)
	}

	// The same frontend twice in one call: the last wins.
	twice := entries[1]
	twice.Service.Active = append(twice.Service.Active, Backend{Addr: remotePod6, Port: 8443})
	putServices(t, o, entries[1], twice)
	entries[1] = twice
	check(entries)

	must(t, "delete", o.DeleteServices([]Frontend{entries[0].Frontend, frontend(vip, 9, protoTCP)}))
	check(entries[1:])

	for _, bad := range []ServiceEntry{
		{Frontend: frontend(vip, 80, protoTCP), Service: Service{}},
		{Frontend: frontend(vip, 80, 1), Service: Service{ID: 1}},
		{Frontend: frontend(vip, 0, protoTCP), Service: Service{ID: 1}},
		{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, Active: []Backend{{Addr: podB6.ip, Port: 1}}}},
		{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, Meta: make([]byte, MaxServiceMeta+1)}},
	} {
		if err := o.PutServices([]ServiceEntry{entries[1], bad}); !errors.Is(err, ErrInvalidService) {
			t.Errorf("PutServices(%+v) = %v, want ErrInvalidService", bad, err)
		}
	}
	check(entries[1:])
}

// TestServicesFull: a full frontend map fails with E2BIG; the entries
// before stay, the failed one and the rest leave nothing behind.
func TestServicesFull(t *testing.T) {
	requireBPF(t)
	o, err := Load("", LoadOptions{ServiceMapMax: 2})
	must(t, "load", err)
	t.Cleanup(func() { o.Close() })
	var entries []ServiceEntry
	for i := range 4 {
		entries = append(entries, ServiceEntry{Frontend: frontend(vip, uint16(80+i), protoTCP),
			Service: Service{ID: uint32(i + 1), Active: []Backend{{Addr: podB.ip, Port: 80}}, Meta: []byte{byte(i)}}})
	}
	if err := o.PutServices(entries); !errors.Is(err, unix.E2BIG) {
		t.Fatalf("PutServices = %v, want E2BIG", err)
	}
	got, err := o.Services()
	must(t, "services", err)
	if len(got) != 2 {
		t.Errorf("%d entries written, want 2", len(got))
	}
	for _, m := range []string{podMapAxonLbSlots, podMapAxonLbMeta} {
		if n := usage(t, o, m); n != 2 {
			t.Errorf("%s holds %d entries, want 2", m, n)
		}
	}
}

func usage(t *testing.T, o *Objects, name string) int {
	t.Helper()
	us, err := o.Usage()
	must(t, "usage", err)
	for _, u := range us {
		if u.Name == name {
			return u.Entries
		}
	}
	t.Fatalf("no usage of %s in %v", name, us)
	return 0
}

// TestExpireFlows: flows expire by protocol and state, both entries at
// once; Usage counts them.
func TestExpireFlows(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	putServices(t, r.objs,
		ServiceEntry{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, Active: []Backend{{Addr: podB.ip, Port: 80}}}},
		ServiceEntry{Frontend: frontend(vip, 53, protoUDP), Service: Service{ID: 2, Active: []Backend{{Addr: podB.ip, Port: 53}}}},
	)
	send := func(src, dst netip.AddrPort, proto, flags uint8) {
		t.Helper()
		if v, _ := r.run(t, r.objs.FromPod(), l4Frame(src, dst, proto, flags, false)); v != verdictRedirect {
			t.Fatalf("%s -> %s: verdict %#x", src, dst, v)
		}
	}
	// A TCP flow answered (established), one never answered, one closed,
	// and a UDP flow.
	send(ap(podA.ip, 3000), ap(vip, 80), protoTCP, tcpSYN)
	send(ap(podB.ip, 80), ap(podA.ip, 3000), protoTCP, tcpSYN|tcpACK)
	send(ap(podA.ip, 3001), ap(vip, 80), protoTCP, tcpSYN)
	send(ap(podA.ip, 3002), ap(vip, 80), protoTCP, tcpSYN)
	send(ap(podB.ip, 80), ap(podA.ip, 3002), protoTCP, tcpSYN|tcpACK)
	send(ap(podA.ip, 3002), ap(vip, 80), protoTCP, tcpFIN|tcpACK)
	send(ap(podA.ip, 3003), ap(vip, 53), protoUDP, 0)
	// A closed tuple opened again (a client reusing its port): established,
	// not closing.
	send(ap(podA.ip, 3004), ap(vip, 80), protoTCP, tcpSYN)
	send(ap(podB.ip, 80), ap(podA.ip, 3004), protoTCP, tcpSYN|tcpACK)
	send(ap(podA.ip, 3004), ap(vip, 80), protoTCP, tcpFIN|tcpACK)
	send(ap(podB.ip, 80), ap(podA.ip, 3004), protoTCP, tcpFIN|tcpACK)
	send(ap(podA.ip, 3004), ap(vip, 80), protoTCP, tcpSYN)
	send(ap(podB.ip, 80), ap(podA.ip, 3004), protoTCP, tcpSYN|tcpACK)
	if n := usage(t, r.objs, podMapAxonCt); n != 10 {
		t.Fatalf("axon_ct holds %d entries, want 10", n)
	}
	var ts unix.Timespec
	must(t, "clock", unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	now := uint64(ts.Nano())
	sec := uint64(1e9)
	for _, step := range []struct {
		at   uint64
		want int // flows removed
		left int // entries left
	}{
		{now, 0, 10},
		{now + 15*sec, 1, 8},     // the closed one
		{now + 65*sec, 2, 4},     // the unanswered TCP and the UDP
		{now + 7*3600*sec, 2, 0}, // the established one and the reopened one
	} {
		n, err := r.objs.expireFlows(step.at)
		if err != nil || n != step.want {
			t.Errorf("expire at +%ds = %d, %v; want %d", (step.at-now)/sec, n, err, step.want)
		}
		if left := usage(t, r.objs, podMapAxonCt); left != step.left {
			t.Errorf("at +%ds: %d entries left, want %d", (step.at-now)/sec, left, step.left)
		}
	}
	if n, err := r.objs.ExpireFlows(); err != nil || n != 0 {
		t.Errorf("ExpireFlows() = %d, %v on an empty tracker", n, err)
	}
}

// benchService is benchObjects with a TCP frontend of two local backends
// (which sets AXON_CONFIG_LB, so every packet from a pod looks up
// frontends and flows).
func benchService(b *testing.B) *Objects {
	objs := benchObjects(b, tunnelCfg)
	if err := objs.PutServices([]ServiceEntry{{Frontend: frontend(vip, 80, protoTCP), Service: Service{ID: 1, Active: []Backend{
		{Addr: podB.ip, Port: 8080, Local: true}, {Addr: podB.ip, Port: 8081, Local: true},
	}}}}); err != nil {
		b.Fatal(err)
	}
	return objs
}

// withTTL sets the TTL (hop limit) of f's IP header, for benchmarks that
// run a frame many times on one skb.
func withTTL(f []byte, ttl uint8) []byte {
	if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
		f[14+8] = ttl
		setChecksum(f)
	} else {
		f[14+7] = ttl
	}
	return f
}

// benchRunOnce is benchRun for programs that translate the skb test-run
// reuses: every run is a call of its own, and the figure the kernel's time
// of that one run (with the timer's own cost in it: compare it with
// BenchmarkFromPodLocalOnce, not with benchRun's figures).
func benchRunOnce(b *testing.B, prog *ebpf.Program, frame []byte, verdict uint32) {
	b.Helper()
	var total time.Duration
	for range b.N {
		ret, per, err := prog.Benchmark(frame, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != verdict {
			b.Fatalf("verdict %d, want %d", int32(ret), int32(verdict))
		}
		total += per
	}
	b.ReportMetric(float64(total)/float64(b.N), "ns/op")
}

// BenchmarkFromPodService is a packet of an established connection to a
// frontend: frontend lookups, flow lookup, translation, local delivery.
func BenchmarkFromPodService(b *testing.B) {
	objs := benchService(b)
	benchRunOnce(b, objs.FromPod(), l4Frame(ap(podA.ip, 40000), ap(vip, 80), protoTCP, tcpACK, false), verdictRedirect)
}

// BenchmarkFromPodLocalOnce is BenchmarkFromPodService's baseline: a TCP
// packet to a local pod on a node without services, measured the same way.
func BenchmarkFromPodLocalOnce(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRunOnce(b, objs.FromPod(), l4Frame(ap(podA.ip, 40000), ap(podB.ip, 80), protoTCP, tcpACK, false), verdictRedirect)
}

// BenchmarkFromPodLocalWithServices is BenchmarkFromPodLocalTCP on a node
// with services: what the frontend and flow lookups add to other traffic.
func BenchmarkFromPodLocalWithServices(b *testing.B) {
	objs := benchService(b)
	benchRun(b, objs.FromPod(), withTTL(l4Frame(ap(podA.ip, 40000), ap(podB.ip, 80), protoTCP, tcpACK, false), 255), verdictRedirect)
}

// BenchmarkFromPodLocalTCP is a TCP packet to a local pod, no services.
func BenchmarkFromPodLocalTCP(b *testing.B) {
	objs := benchObjects(b, tunnelCfg)
	benchRun(b, objs.FromPod(), withTTL(l4Frame(ap(podA.ip, 40000), ap(podB.ip, 80), protoTCP, tcpACK, false), 255), verdictRedirect)
}

// BenchmarkPutServices programs 10,000 new frontends of three backends in
// one call (the target: 10k in 100 ms), then switches them all to
// new backends.
func BenchmarkPutServices(b *testing.B) {
	requireBPF(b)
	const n = 10000
	entries := make([]ServiceEntry, n)
	for i := range entries {
		a := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		entries[i] = ServiceEntry{Frontend: frontend(a, 80, protoTCP), Service: Service{ID: uint32(i + 1), Active: []Backend{
			{Addr: podB.ip, Port: 8080}, {Addr: remotePod, Port: 8080}, {Addr: podA.ip, Port: 8080},
		}}}
	}
	for b.Loop() {
		b.StopTimer()
		o, err := Load("", LoadOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := o.PutServices(entries); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		o.Close()
		b.StartTimer()
	}
}

// TestPutServicesLarge: a call big enough to read the entries in place
// whole and to span batches switches every frontend, the last of a
// frontend named twice winning, and leaves no stale slot.
func TestPutServicesLarge(t *testing.T) {
	o := mustLoad(t, "")
	const n = lbBatchMax + 1000
	entries := make([]ServiceEntry, n)
	for i := range entries {
		a := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		entries[i] = ServiceEntry{Frontend: frontend(a, 80, protoTCP), Service: Service{ID: uint32(i + 1), Active: []Backend{
			{Addr: podB.ip, Port: 1}, {Addr: podB.ip, Port: 2},
		}}}
	}
	putServices(t, o, entries...)
	for i := range entries {
		entries[i].Service.Active = []Backend{{Addr: podB.ip, Port: uint16(3 + i%3)}}
	}
	twice := entries[7]
	twice.Service.Active = []Backend{{Addr: remotePod, Port: 9}, {Addr: remotePod, Port: 10}}
	putServices(t, o, append(slices.Clone(entries), twice)...)
	entries[7] = twice
	got, err := o.Services()
	must(t, "services", err)
	byFrontend := map[Frontend]Service{}
	for _, e := range got {
		byFrontend[e.Frontend] = e.Service
	}
	if len(byFrontend) != n {
		t.Fatalf("%d frontends, want %d", len(byFrontend), n)
	}
	for _, e := range entries {
		if g := byFrontend[e.Frontend]; !slices.Equal(g.Active, e.Service.Active) {
			t.Fatalf("frontend %s: %v, want %v", e.Frontend, g.Active, e.Service.Active)
		}
	}
	if s := usage(t, o, podMapAxonLbSlots); s != n+1 {
		t.Errorf("%d slots, want %d", s, n+1)
	}
}
