package e2e

import "testing"

// TestDualStackNative gives pods an IPv4 and an IPv6 address and checks
// IPv6 reaches pods on the same node and, in native mode, on another node.
func TestDualStackNative(t *testing.T) {
	e := newEnvMode(t, 2, "native")
	a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(1, "pod-c")
	for _, p := range []*pod{a, b, c} {
		if p.ip6 == "" {
			t.Fatalf("%s got no IPv6 address", p.name)
		}
	}
	e.ping(a.netns, b.ip6)
	e.eventually(func() error { return e.tryPing(a.netns, c.ip6) })
	// IPv6 across nodes takes the programs both ways, as IPv4 does: FIB
	// lookup and redirect_neigh out, redirect_peer in.
	before := e.stats(0)
	e.ping(a.netns, c.ip6)
	after := e.stats(0)
	for _, name := range []string{"forwarded-native", "from-overlay-local"} {
		if after[name]-before[name] < 2 {
			t.Errorf("node-1 %s grew by %d over two IPv6 pings across nodes, want >= 2", name, after[name]-before[name])
		}
	}
	e.ping(c.netns, a.ip6)
	e.ping(e.cluster.Nodes[0].Netns, b.ip6)
	// The outside has no route to pods: IPv6 is masqueraded like IPv4.
	e.ping(a.netns, e.cluster.Outside.IP6.String())
}

// TestDualStackTunnel carries IPv6 between pods of two nodes through the
// eBPF programs and the IPv4 VXLAN overlay.
func TestDualStackTunnel(t *testing.T) {
	e := newEnvMode(t, 2, "tunnel")
	a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(1, "pod-c")
	for _, p := range []*pod{a, b, c} {
		if p.ip6 == "" {
			t.Fatalf("%s got no IPv6 address", p.name)
		}
	}
	// Each path is asserted by the counters of the program that takes it,
	// as the native twin does: two pings are two requests and two replies.
	grew := func(what string, names []string, fn func()) {
		t.Helper()
		before := e.stats(0)
		fn()
		after := e.stats(0)
		for _, name := range names {
			if d := after[name] - before[name]; d < 2 {
				t.Errorf("node-1 %s grew by %d over %s, want >= 2", name, d, what)
			}
		}
	}
	grew("two IPv6 pings on the node", []string{"forwarded-local"}, func() { e.ping(a.netns, b.ip6) })
	e.eventually(func() error { return e.tryPing(a.netns, c.ip6) })
	// Out: axon_from_pod builds the VXLAN packet itself; in: the replies
	// are unwrapped by axon_from_underlay and delivered into the pod.
	grew("two IPv6 pings across nodes", []string{"forwarded-tunnel", "from-overlay-local"}, func() { e.ping(a.netns, c.ip6) })
	e.ping(c.netns, a.ip6)
	e.ping(c.netns, e.cluster.Outside.IP6.String())
	// The node itself reaches a remote pod over IPv6 through the overlay
	// device, whose egress program supplies the tunnel endpoint.
	grew("two IPv6 pings from the node to a remote pod", []string{"forwarded-tunnel-device"}, func() { e.ping(e.cluster.Nodes[0].Netns, c.ip6) })
}
