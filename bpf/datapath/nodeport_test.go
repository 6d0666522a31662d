package datapath

import (
	"net/netip"
	"slices"
	"testing"
)

// Node addresses of the node-port tests: the fixture's node IPv4 and an
// IPv6 one.
var (
	nodeIP  = tunnelCfg.NodeIP
	nodeIP6 = netip.MustParseAddr("fd00:192::1")
)

// TestNodeAddrs writes, replaces and reads back the node's addresses and
// SNAT sources (the first address of each family).
func TestNodeAddrs(t *testing.T) {
	o := mustLoad(t, "")
	second6 := netip.MustParseAddr("fd00:192::2")
	for _, tc := range []struct {
		set, want, snat []netip.Addr
	}{
		{[]netip.Addr{nodeIP, second6, nodeIP6}, []netip.Addr{nodeIP, second6, nodeIP6}, []netip.Addr{nodeIP, second6}},
		{[]netip.Addr{netip.MustParseAddr("::ffff:192.0.2.5")}, []netip.Addr{netip.MustParseAddr("192.0.2.5")}, []netip.Addr{netip.MustParseAddr("192.0.2.5")}},
		{nil, nil, nil},
	} {
		must(t, "set node addresses", o.SetNodeAddrs(tc.set))
		got, snat, err := o.NodeAddrs()
		must(t, "node addresses", err)
		for _, l := range [][]netip.Addr{got, snat, tc.want, tc.snat} {
			slices.SortFunc(l, netip.Addr.Compare)
		}
		if !slices.Equal(got, tc.want) || !slices.Equal(snat, tc.snat) {
			t.Errorf("NodeAddrs = %v, SNAT %v; want %v, SNAT %v", got, snat, tc.want, tc.snat)
		}
	}
	if err := o.SetNodeAddrs([]netip.Addr{{}}); err == nil {
		t.Error("SetNodeAddrs accepted an invalid address")
	}
}

// TestNodePortRun: an outside client's connection arriving on the underlay
// at a node port (a wildcard frontend, on every node address) or at an
// exact frontend goes to a local backend with the client's address kept,
// or to a remote one from the node's address and a SNAT port; the replies
// go back to the client from the frontend. IPv4 and IPv6, TCP and UDP.
func TestNodePortRun(t *testing.T) {
	for _, mode := range []struct {
		name string
		cfg  Config
	}{{"tunnel", tunnelCfg}, {"native", nativeCfg}} {
		t.Run(mode.name, func(t *testing.T) {
			r := newRunner(t)
			must(t, "config", r.objs.SetConfig(mode.cfg))
			must(t, "node addresses", r.objs.SetNodeAddrs([]netip.Addr{nodeIP, nodeIP6}))
			for _, fam := range []struct {
				name                 string
				client, node, local  netip.Addr
				rm, wildcard, lbAddr netip.Addr
			}{
				{"v4", outsideIP, nodeIP, podB.ip, remotePod, netip.IPv4Unspecified(), netip.MustParseAddr("203.0.113.10")},
				{"v6", outsideIP6, nodeIP6, podB6.ip, remotePod6, netip.IPv6Unspecified(), netip.MustParseAddr("2001:db8:200::10")},
			} {
				for _, proto := range []uint8{protoTCP, protoUDP} {
					name := fam.name + map[uint8]string{protoTCP: " tcp", protoUDP: " udp"}[proto]
					t.Run(name+" node port", func(t *testing.T) {
						testNodePort(t, r, fam.client, fam.node, fam.wildcard, fam.local, fam.rm, proto, mode.cfg.Mode)
					})
					// A LoadBalancer address: exact, not a node address.
					t.Run(name+" load balancer", func(t *testing.T) {
						testNodePort(t, r, fam.client, fam.lbAddr, fam.lbAddr, fam.local, fam.rm, proto, mode.cfg.Mode)
					})
				}
			}
		})
	}
}

// testNodePort sends connections from client to dst:30080, a frontend at
// feAddr with a local and a remote backend, through axon_from_underlay.
func testNodePort(t *testing.T, r *runner, client, dst, feAddr, local, rm netip.Addr, proto uint8, mode Mode) {
	fe := frontend(feAddr, 30080, proto)
	backends := []Backend{{Addr: local, Port: 8080, Local: true}, {Addr: rm, Port: 8081}}
	putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 9, Type: 2, Active: backends}})
	t.Cleanup(func() { _ = r.objs.DeleteServices([]Frontend{fe}) })
	// The SNAT address of a frontend that is not a node address: the
	// family's first node address.
	snat := dst
	if dst != nodeIP && dst != nodeIP6 {
		snat = map[bool]netip.Addr{true: nodeIP, false: nodeIP6}[dst.Is4()]
	}

	seen := map[netip.AddrPort]int{}
	for sport := uint16(40000); sport < 40032; sport++ {
		before := r.stats(t)
		in := toNode(l4Frame(ap(client, sport), ap(dst, 30080), proto, tcpSYN, false))
		verdict, out := r.run(t, r.objs.FromUnderlay(), in)
		out = out[:len(in)]
		src, to := tuple(out)
		checkSums(t, out, false)
		after := r.stats(t)
		if after.Total()-before.Total() != 1 {
			t.Errorf("one packet moved the counters by %d", after.Total()-before.Total())
		}
		var replyProg = r.objs.FromPod()
		switch to {
		case ap(local, 8080):
			// Delivered into the pod, the client's address kept.
			if verdict != verdictRedirect || src != ap(client, sport) {
				t.Fatalf("to the local backend: verdict %#x, from %s; want redirect from %s", verdict, src, ap(client, sport))
			}
		case ap(rm, 8081):
			// From the node's address and a SNAT port; tunnelled (the
			// empty test namespace has no route: through the device) or
			// routed (no route: the FIB misses, the kernel gets it).
			if src.Addr() != snat || src.Port() < 61000 {
				t.Fatalf("to the remote backend from %s, want %s and a SNAT port", src, snat)
			}
			if want := map[Mode]uint32{ModeTunnel: verdictRedirect, ModeNative: verdictNext}[mode]; verdict != want {
				t.Fatalf("to the remote backend: verdict %#x, want %#x (%v)", verdict, want, after.Map())
			}
			replyProg = r.objs.FromUnderlay()
		default:
			t.Fatalf("translated to %s -> %s, want a backend (verdict %#x, %v)", src, to, verdict, after.Map())
		}
		seen[to]++

		// The flow keeps its backend and SNAT port.
		_, again := r.run(t, r.objs.FromUnderlay(), toNode(l4Frame(ap(client, sport), ap(dst, 30080), proto, tcpACK, false)))
		if s, d := tuple(again); s != src || d != to {
			t.Fatalf("flow moved from %s -> %s to %s -> %s", src, to, s, d)
		}

		// The backend's reply goes back to the client from the frontend
		// (the FIB of the empty namespace misses: left to the kernel).
		reply := toNode(l4Frame(to, src, proto, tcpSYN|tcpACK, false))
		verdict, back := r.run(t, replyProg, reply)
		back = back[:len(reply)]
		if s, d := tuple(back); s != ap(dst, 30080) || d != ap(client, sport) {
			t.Fatalf("reply (verdict %#x) translated to %s -> %s, want %s -> %s", verdict, s, d, ap(dst, 30080), ap(client, sport))
		}
		checkSums(t, back, false)
	}
	if len(seen) != 2 {
		t.Errorf("32 connections went to %v, want both backends", seen)
	}
	removed, err := r.objs.DeleteFlows(func(f Flow) bool { return f.ServiceID == 9 })
	if err != nil || removed != 32 {
		t.Errorf("DeleteFlows = %d, %v; want 32", removed, err)
	}
}

// TestNodePortNotMine: packets to a node address without a frontend on
// their port, and to other addresses, go on unchanged.
func TestNodePortNotMine(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(nativeCfg))
	must(t, "node addresses", r.objs.SetNodeAddrs([]netip.Addr{nodeIP}))
	fe := frontend(netip.IPv4Unspecified(), 30080, protoTCP)
	putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 3, Active: []Backend{{Addr: podB.ip, Port: 8080, Local: true}}}})
	for _, in := range [][]byte{
		toNode(l4Frame(ap(outsideIP, 40000), ap(nodeIP, 22), protoTCP, tcpSYN, false)),
		toNode(l4Frame(ap(outsideIP, 40000), ap(netip.MustParseAddr("192.0.2.99"), 30080), protoTCP, tcpSYN, false)),
		toNode(l4Frame(ap(outsideIP, 40000), ap(nodeIP, 62000), protoTCP, tcpACK, false)), // a SNAT port, no flow
	} {
		verdict, out := r.run(t, r.objs.FromUnderlay(), in)
		if verdict != verdictNext || string(out[:len(in)]) != string(in) {
			t.Errorf("%v -> verdict %#x, changed %v; want next, unchanged", tupleString(in), verdict, string(out[:len(in)]) != string(in))
		}
	}
}

// TestNodePortLocalPolicy: a frontend with externalTrafficPolicy Local
// (an external entry with this node's backends, an internal one with
// all): an outside client without a local backend is dropped, an
// in-cluster one (another node's pod) uses every backend.
func TestNodePortLocalPolicy(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	must(t, "node addresses", r.objs.SetNodeAddrs([]netip.Addr{nodeIP}))
	ext, in := frontend(netip.IPv4Unspecified(), 30090, protoTCP), frontend(netip.IPv4Unspecified(), 30090, protoTCP)
	in.Scope = ScopeInternal
	remote := []Backend{{Addr: remotePod, Port: 8081}}
	putServices(t, r.objs,
		ServiceEntry{Frontend: ext, Service: Service{ID: 11, Type: 2}},
		ServiceEntry{Frontend: in, Service: Service{ID: 12, Type: 2, Active: remote}})

	before := r.stats(t)
	verdict, _ := r.run(t, r.objs.FromUnderlay(), toNode(l4Frame(ap(outsideIP, 40000), ap(nodeIP, 30090), protoTCP, tcpSYN, false)))
	if after := r.stats(t); verdict != verdictDrop || after.DropNoBackend != before.DropNoBackend+1 {
		t.Errorf("outside client: verdict %#x, drop-no-backend %d -> %d; want a drop", verdict, before.DropNoBackend, after.DropNoBackend)
	}
	// Another node's pod (masquerading aside, as native routing delivers it).
	other := netip.MustParseAddr("10.244.2.77")
	in4 := toNode(l4Frame(ap(other, 40000), ap(nodeIP, 30090), protoTCP, tcpSYN, false))
	verdict, out := r.run(t, r.objs.FromUnderlay(), in4)
	if s, d := tuple(out[:len(in4)]); verdict != verdictRedirect || d != ap(remotePod, 8081) || s.Addr() != nodeIP {
		t.Errorf("in-cluster client: verdict %#x, %s -> %s; want redirect to %s", verdict, s, d, ap(remotePod, 8081))
	}

	// With a local backend an outside client keeps its address.
	putServices(t, r.objs, ServiceEntry{Frontend: ext, Service: Service{ID: 11, Type: 2, Active: []Backend{{Addr: podB.ip, Port: 8080, Local: true}}}})
	in4 = toNode(l4Frame(ap(outsideIP, 40001), ap(nodeIP, 30090), protoTCP, tcpSYN, false))
	verdict, out = r.run(t, r.objs.FromUnderlay(), in4)
	if s, d := tuple(out[:len(in4)]); verdict != verdictRedirect || s != ap(outsideIP, 40001) || d != ap(podB.ip, 8080) {
		t.Errorf("outside client, local backend: verdict %#x, %s -> %s", verdict, s, d)
	}
}

func tupleString(f []byte) string {
	s, d := tuple(f)
	return s.String() + " -> " + d.String()
}

// TestNodePortFromPod: a pod reaches a node port on its own node's address
// through the wildcard frontend, its address kept; an address that is not
// the node's is no node port.
func TestNodePortFromPod(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	must(t, "node addresses", r.objs.SetNodeAddrs([]netip.Addr{nodeIP}))
	fe := frontend(netip.IPv4Unspecified(), 30080, protoTCP)
	putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 5, Type: 2, Active: []Backend{{Addr: podB.ip, Port: 8080, Local: true}}}})

	in := l4Frame(ap(podA.ip, 40000), ap(nodeIP, 30080), protoTCP, tcpSYN, false)
	verdict, out := r.run(t, r.objs.FromPod(), in)
	if s, d := tuple(out[:len(in)]); verdict != verdictRedirect || s != ap(podA.ip, 40000) || d != ap(podB.ip, 8080) {
		t.Errorf("pod -> node port: verdict %#x, %s -> %s; want redirect to %s", verdict, s, d, ap(podB.ip, 8080))
	}
	reply := l4Frame(ap(podB.ip, 8080), ap(podA.ip, 40000), protoTCP, tcpSYN|tcpACK, false)
	verdict, back := r.run(t, r.objs.FromPod(), reply)
	if s, d := tuple(back[:len(reply)]); verdict != verdictRedirect || s != ap(nodeIP, 30080) || d != ap(podA.ip, 40000) {
		t.Errorf("reply: verdict %#x, %s -> %s; want redirect from %s", verdict, s, d, ap(nodeIP, 30080))
	}

	other := l4Frame(ap(podA.ip, 40001), ap(netip.MustParseAddr("192.0.2.77"), 30080), protoTCP, tcpSYN, false)
	if verdict, out := r.run(t, r.objs.FromPod(), other); verdict != verdictNext || string(out[:len(other)]) != string(other) {
		t.Errorf("pod -> another address's port 30080: verdict %#x, changed %v; want next, unchanged", verdict, string(out[:len(other)]) != string(other))
	}
}

// TestNodePortSourceRanges: a LoadBalancer frontend with source ranges
// takes connections from outside clients inside them only; others are
// dropped and counted, whether it has backends or not.
func TestNodePortSourceRanges(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	must(t, "node addresses", r.objs.SetNodeAddrs([]netip.Addr{nodeIP}))
	lbIP := netip.MustParseAddr("192.0.2.200")
	fe := frontend(lbIP, 443, protoTCP)
	allowed := netip.PrefixFrom(outsideIP, 32)
	denied := netip.MustParseAddr("198.51.100.9")
	for _, backends := range [][]Backend{{{Addr: podB.ip, Port: 8443, Local: true}}, nil} {
		putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 40, Type: 3, Active: backends, SourceRanges: []netip.Prefix{allowed}}})
		before := r.stats(t)
		v, _ := r.run(t, r.objs.FromUnderlay(), toNode(l4Frame(ap(denied, 40000), ap(lbIP, 443), protoTCP, tcpSYN, false)))
		if after := r.stats(t); v != verdictDrop || after.DropSourceRange != before.DropSourceRange+1 {
			t.Errorf("%d backends, client outside the ranges: verdict %#x, drop-source-range %d -> %d; want a drop",
				len(backends), v, before.DropSourceRange, after.DropSourceRange)
		}
	}
	putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 40, Type: 3, Active: []Backend{{Addr: podB.ip, Port: 8443, Local: true}}, SourceRanges: []netip.Prefix{allowed}}})
	in := toNode(l4Frame(ap(outsideIP, 40001), ap(lbIP, 443), protoTCP, tcpSYN, false))
	v, out := r.run(t, r.objs.FromUnderlay(), in)
	if s, d := tuple(out[:len(in)]); v != verdictRedirect || s != ap(outsideIP, 40001) || d != ap(podB.ip, 8443) {
		t.Errorf("client inside the ranges: verdict %#x, %s -> %s; want redirect to %s", v, s, d, ap(podB.ip, 8443))
	}
}
