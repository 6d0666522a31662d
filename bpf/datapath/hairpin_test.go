package datapath

import (
	"net/netip"
	"testing"
)

// TestLBHairpin: a pod whose connection to a service goes to the pod itself
// sees it from the hairpin address (never its own, a martian source to its
// kernel), and its answer to that address comes back to it from the
// frontend; the flow is listed and deleted like any other. Other clients of
// the same backend keep their own source.
func TestLBHairpin(t *testing.T) {
	r := newRunner(t)
	must(t, "config", r.objs.SetConfig(tunnelCfg))
	for _, tc := range []struct {
		name        string
		self, other netip.Addr
		vip         netip.Addr
		proto       uint8
	}{
		{"v4 tcp", podA.ip, podB.ip, vip, protoTCP},
		{"v4 udp", podA.ip, podB.ip, vip, protoUDP},
		{"v6 tcp", podA6.ip, podB6.ip, vip6, protoTCP},
		{"v6 udp", podA6.ip, podB6.ip, vip6, protoUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := frontend(tc.vip, 80, tc.proto)
			putServices(t, r.objs, ServiceEntry{Frontend: fe, Service: Service{ID: 11, Active: []Backend{{Addr: tc.self, Port: 8080, Local: true}}}})
			t.Cleanup(func() { r.objs.DeleteServices([]Frontend{fe}) })
			hp := HairpinAddr(tc.self)

			in := l4Frame(ap(tc.self, 42000), ap(tc.vip, 80), tc.proto, tcpSYN, false)
			verdict, out := r.run(t, r.objs.FromPod(), in)
			if verdict != verdictRedirect {
				t.Fatalf("verdict %#x, want redirect (%v)", verdict, r.stats(t).Map())
			}
			if src, dst := tuple(out); src != ap(hp, 42000) || dst != ap(tc.self, 8080) {
				t.Fatalf("hairpin connection sent %s -> %s, want %s -> %s", src, dst, ap(hp, 42000), ap(tc.self, 8080))
			}
			checkSums(t, out, false)

			// The pod answers the hairpin address; it gets the answer from
			// the frontend.
			reply := l4Frame(ap(tc.self, 8080), ap(hp, 42000), tc.proto, tcpSYN|tcpACK, false)
			verdict, back := r.run(t, r.objs.FromPod(), reply)
			if verdict != verdictRedirect {
				t.Fatalf("answer: verdict %#x, want redirect (%v)", verdict, r.stats(t).Map())
			}
			if src, dst := tuple(back); src != ap(tc.vip, 80) || dst != ap(tc.self, 42000) {
				t.Fatalf("answer sent %s -> %s, want %s -> %s", src, dst, ap(tc.vip, 80), ap(tc.self, 42000))
			}
			checkSums(t, back, false)

			// Another pod reaching the same backend is not hairpinned.
			_, out = r.run(t, r.objs.FromPod(), l4Frame(ap(tc.other, 42000), ap(tc.vip, 80), tc.proto, tcpSYN, false))
			if src, _ := tuple(out); src != ap(tc.other, 42000) {
				t.Errorf("another client's connection left from %s, want its own address", src)
			}

			flows, err := r.objs.Flows()
			must(t, "flows", err)
			if len(flows) != 2 {
				t.Fatalf("flows %v, want 2", flows)
			}
			n, err := r.objs.DeleteFlows(func(Flow) bool { return true })
			if err != nil || n != 2 {
				t.Fatalf("DeleteFlows = %d, %v; want 2", n, err)
			}
			left, err := r.objs.ctEntries()
			must(t, "ct entries", err)
			if len(left) != 0 {
				t.Errorf("%d entries left after deleting every flow (a hairpin reply entry not paired?)", len(left))
			}
		})
	}
}

// TestRealHairpin: a pod reaches a service whose only backend is the pod
// itself, TCP and UDP, IPv4 and IPv6, with real sockets: its kernel accepts
// the connection from the hairpin address, and the client socket, connected
// to the service address, gets the answers.
func TestRealHairpin(t *testing.T) {
	requireBPF(t)
	n1, _, _, b, _ := twoNodes(t, ModeTunnel, true)
	for _, fam := range []struct {
		name string
		vip  netip.Addr
		pod  *testPod
	}{{"v4", netip.MustParseAddr("10.96.0.12"), b}, {"v6", netip.MustParseAddr("fd00:96::12"), b.v6()}} {
		t.Run(fam.name, func(t *testing.T) {
			serveNamed(t, fam.pod, "self", 8080)
			for id, proto := range []uint8{protoTCP, protoUDP} {
				fe := frontend(fam.vip, 80, proto)
				putServices(t, n1.objs, ServiceEntry{Frontend: fe, Service: Service{ID: uint32(20 + id), Active: []Backend{{Addr: fam.pod.ip, Port: 8080, Local: true}}}})
				t.Cleanup(func() { n1.objs.DeleteServices([]Frontend{fe}) })
			}
			for range 3 {
				if name, err := tcpNamedEcho(fam.pod, netip.AddrPortFrom(fam.vip, 80)); err != nil || name != "self" {
					t.Fatalf("TCP to %s: %q, %v (%v)", fam.vip, name, err, n1.stats(t).Map())
				}
				if name, err := udpNamedEcho(fam.pod, netip.AddrPortFrom(fam.vip, 80)); err != nil || name != "self" {
					t.Fatalf("UDP to %s: %q, %v (%v)", fam.vip, name, err, n1.stats(t).Map())
				}
			}
		})
	}
}
