package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	bpfdp "github.com/axon-cni/axon/bpf/datapath"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	ipamv1alpha1 "github.com/axon-cni/axon/gen/axon/ipam/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/health"
	"github.com/axon-cni/axon/services/datapath/veth"
	"github.com/axon-cni/axon/services/internal/nstest"
	"github.com/axon-cni/axon/services/localcluster"
)

// TestPodsOnOneNode wires pods through the real CNI plugin and checks they
// reach each other and their node, that CHECK, STATUS and GC behave, and
// that DEL leaves nothing behind.
func TestPodsOnOneNode(t *testing.T) {
	e := newEnv(t, 1)
	node := e.cluster.Nodes[0]
	conf := e.conflist(0)
	if err := e.cni.GetStatusNetworkList(t.Context(), conf); err != nil {
		t.Fatalf("CNI STATUS on a ready node: %v", err)
	}
	a, b := e.addPod(0, "pod-a"), e.addPod(0, "pod-b")
	if a.ip == b.ip {
		t.Fatalf("both pods got %s", a.ip)
	}
	e.ping(a.netns, b.ip)
	e.ping(b.netns, a.ip)
	e.ping(node.Netns, a.ip)
	// The outside has no route to pods: only masquerading gets replies back.
	e.ping(a.netns, e.cluster.Outside.IP.String())
	if s := e.stats(0); s["forwarded-local"] == 0 {
		t.Errorf("pod-to-pod traffic did not go through the eBPF redirect: %v", s)
	}

	// ADD again (a runtime retry) returns the same address.
	again, err := e.cni.AddNetworkList(t.Context(), conf, a.rt)
	if err != nil {
		t.Fatalf("repeated ADD: %v", err)
	}
	if r, err := current.NewResultFromResult(again); err != nil || r.IPs[0].Address.IP.String() != a.ip {
		t.Fatalf("repeated ADD = %v, %v; want %s again", again, err, a.ip)
	}
	if err := e.cni.CheckNetworkList(t.Context(), conf, a.rt); err != nil {
		t.Fatalf("CNI CHECK: %v", err)
	}
	// Every piece CHECK covers, broken at once, is named.
	hostA := veth.HostName(a.rt.ContainerID, a.rt.IfName)
	gw, _ := run(a.netns, "sh", "-c", "ip -4 route show default | cut -d' ' -f3")
	for _, cmd := range [][]string{
		{a.netns, "ip", "route", "del", "default"},
		{a.netns, "ip", "link", "set", "eth0", "mtu", "1280"},
		{a.netns, "ip", "neigh", "del", gw, "dev", "eth0"},
		{node.Netns, "ip", "route", "del", a.ip, "dev", hostA},
	} {
		if out, err := run(cmd[0], cmd[1], cmd[2:]...); err != nil {
			t.Fatalf("%v: %v %s", cmd[1:], err, out)
		}
	}
	objs, err := bpfdp.Load("/sys/fs/bpf/"+e.prefix+node.Name, bpfdp.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := objs.Endpoint(netip.MustParseAddr(a.ip))
	if err == nil {
		entry.Ifindex += 1000
		err = objs.PutEndpoint(netip.MustParseAddr(a.ip), entry)
	}
	_ = objs.Close()
	if err != nil {
		t.Fatal(err)
	}
	err = e.cni.CheckNetworkList(t.Context(), conf, a.rt)
	for _, want := range []string{"default route", "MTU 1280", "neighbour entry for the gateway " + gw, "node route to " + a.ip, "sends to ifindex"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CNI CHECK after breaking the pod = %v, want %q named", err, want)
		}
	}
	// Without its egress program, replies of services whose backends are no
	// pods would reach pod-b untranslated.
	if _, err := run(node.Netns, "tc", "filter", "del", "dev", veth.HostName(b.rt.ContainerID, b.rt.IfName), "egress"); err != nil {
		t.Fatal(err)
	}
	if err := e.cni.CheckNetworkList(t.Context(), conf, b.rt); err == nil || !strings.Contains(err.Error(), "(egress, axon_to_pod)") {
		t.Fatalf("CNI CHECK after removing the egress program = %v, want it named", err)
	}
	// Without its program, pod-b's traffic would take the node's routes.
	if _, err := run(node.Netns, "tc", "qdisc", "del", "dev", veth.HostName(b.rt.ContainerID, b.rt.IfName), "clsact"); err != nil {
		t.Fatal(err)
	}
	if err := e.cni.CheckNetworkList(t.Context(), conf, b.rt); err == nil || !strings.Contains(err.Error(), "no program attached") {
		t.Fatalf("CNI CHECK after removing the program = %v, want it named", err)
	}

	// A GC of another network using axon-cni leaves this network's pods
	// alone, even with nothing valid there.
	if err := e.cni.GCNetworkList(t.Context(), e.namedConflist(0, "other-net"), gcArgs()); err != nil {
		t.Fatalf("CNI GC of another network: %v", err)
	}
	if l := lxcLinks(node.Netns); len(l) != 2 {
		t.Fatalf("after GCs that must keep both pods the node has %v", l)
	}
	// GC with only pod-b live removes pod-a.
	if err := e.cni.GCNetworkList(t.Context(), conf, gcArgs(b)); err != nil {
		t.Fatalf("CNI GC: %v", err)
	}
	if l := lxcLinks(node.Netns); len(l) != 1 {
		t.Fatalf("after GC the node has %v, want only pod-b's veth", l)
	}
	e.delPod(b)
	e.delPod(b) // DEL is idempotent
	if l := lxcLinks(node.Netns); len(l) != 0 {
		t.Fatalf("links left after DEL: %v", l)
	}
	e.delPod(a) // DEL of what GC already removed is success
	e.assertNothingLeft(0)

	// A node device gone: STATUS says limited connectivity (51).
	if _, err := run(node.Netns, "ip", "link", "del", "axon_vxlan"); err != nil {
		t.Fatal(err)
	}
	var cniErr *types.Error
	if err := e.cni.GetStatusNetworkList(t.Context(), conf); !errors.As(err, &cniErr) || cniErr.Code != types.ErrLimitedConnectivity {
		t.Errorf("CNI STATUS without axon_vxlan = %v, want error %d", err, types.ErrLimitedConnectivity)
	}
}

// nodeToPod holds a TCP conversation between node's own network and pod p
// on another node. The pod's replies leave through its node's kernel, which
// masquerades pod traffic leaving the pod CIDRs: they reach the node
// unchanged only if that kernel saw the connection come in.
func nodeToPod(t *testing.T, e *env, node int, p *pod) {
	t.Helper()
	conn, r := echoConn(t, &pod{name: fmt.Sprintf("node-%d", node+1), netns: e.cluster.Nodes[node].Netns}, p)
	for i := range 3 {
		roundTrip(t, conn, r, fmt.Sprintf("node to pod %d", i))
	}
}

// lxcLinks lists the pods' host-side veths in a node's namespace (not the
// node's health endpoint's).
func lxcLinks(netns string) []string {
	var out []string
	for _, l := range links(netns) {
		if strings.HasPrefix(l, "lxc") && !isHealthVeth(l) {
			out = append(out, l)
		}
	}
	return out
}

// isHealthVeth reports whether name is the host-side veth of a simulated
// node's health endpoint (localcluster names nodes node-1, node-2, ...).
func isHealthVeth(name string) bool {
	for i := 1; i <= 16; i++ {
		if name == veth.HostName(health.ContainerID(fmt.Sprintf("node-%d", i)), "eth0") {
			return true
		}
	}
	return false
}

// TestPodsAcrossNodesNative wires a pod on each of two nodes in native
// routing mode: each node routes the other's blocks via its underlay IP.
func TestPodsAcrossNodesNative(t *testing.T) {
	e := newEnvMode(t, 2, "native")
	a, b := e.addPod(0, "pod-a"), e.addPod(1, "pod-b")
	e.eventually(func() error { return e.tryPing(a.netns, b.ip) })
	e.ping(b.netns, a.ip)
	e.ping(e.cluster.Nodes[1].Netns, a.ip) // node-2 to a pod on node-1
	e.ping(a.netns, e.cluster.Nodes[1].IP.String())
	nodeToPod(t, e, 1, a)
	if s := e.stats(0); s["forwarded-native"] == 0 || s["from-overlay-local"] == 0 {
		t.Errorf("node-1 counters %v: want pod traffic to node-2's block routed and node-2's delivered by the programs", s)
	}
	e.delPod(a)
	e.delPod(b)
}

// TestPodsAcrossNodesTunnel is the same across a VXLAN overlay: the pod
// programs encapsulate towards the block's node, the overlay programs
// deliver, and node-originated traffic into the overlay (from the node's
// router IP) gets its tunnel endpoint from the egress program.
func TestPodsAcrossNodesTunnel(t *testing.T) {
	e := newEnvMode(t, 2, "tunnel")
	// A strict reverse-path filter (RHEL's default): every path below must
	// come back the way it went.
	for _, n := range e.cluster.Nodes {
		if out, err := run(n.Netns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"); err != nil {
			t.Fatalf("rp_filter on %s: %v %s", n.Name, err, out)
		}
	}
	a, b := e.addPod(0, "pod-a"), e.addPod(1, "pod-b")
	e.eventually(func() error { return e.tryPing(a.netns, b.ip) })
	e.ping(b.netns, a.ip)
	e.ping(e.cluster.Nodes[1].Netns, a.ip) // node-2 to a pod on node-1, through the overlay
	e.ping(a.netns, e.cluster.Nodes[1].IP.String())
	nodeToPod(t, e, 1, a)
	if s := e.stats(0); s["forwarded-tunnel"] == 0 || s["from-overlay-local"] == 0 || s["from-underlay-to-host"] == 0 {
		t.Errorf("node-1 counters %v: want packets encapsulated, delivered from the overlay, and the node's own seen on the underlay", s)
	}
	// Each node probes the other's health endpoint through the overlay.
	e.eventually(func() error {
		st, err := e.nodeStatus(0)
		if err != nil {
			return err
		}
		if len(st.GetPeers()) != 1 || !st.GetPeers()[0].GetNodeReachable() || !st.GetPeers()[0].GetHealthEndpointReachable() {
			return fmt.Errorf("node-1 peers: %v", st.GetPeers())
		}
		if st.GetReadiness() != datapathv1alpha1.ReadinessState_READINESS_STATE_READY || st.GetEndpointCount() != 2 { // pod-a and the health endpoint
			return fmt.Errorf("node-1 status: %v", st)
		}
		return nil
	})
	e.delPod(a)
	e.delPod(b)
}

// TestTunnelPathMTUBelowUnderlay puts a hop with a smaller MTU than the
// nodes' devices between them: it drops larger frames without a word, as a
// bridge does. Once the nodes know the path MTU (here a locked route MTU,
// as an ICMP "need to fragment" would teach them), full-size pod packets
// get through, fragmented by the tunnel device, instead of being sent with
// DF and lost. For bulk TCP the pod sends GSO packets (over 64 KiB with BIG
// TCP, IPv6 ones with a jumbo header), and their segments are what must
// fit. Small packets, and everything on a path as wide as the devices, are
// still encapsulated by the programs.
func TestTunnelPathMTUBelowUnderlay(t *testing.T) {
	const path = 1400
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"BIG TCP", []string{"--big-tcp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvMode(t, 2, "tunnel", func(c *localcluster.Config) { c.DatapathArgs = append(c.DatapathArgs, tc.args...) })
			a, b := e.addPod(0, "pod-a"), e.addPod(1, "pod-b")
			e.eventually(func() error { return e.tryPing(a.netns, b.ip) })
			// bulk sends 64 MiB from pod-a to ip of pod-b and returns how
			// many packets node-1 sent through the tunnel device and how
			// many the programs encapsulated meanwhile. (The simulated
			// wire does not segment GSO packets, so only these counters
			// show which way they went.)
			bulk := func(ip string) (device, programs uint64) {
				before := e.stats(0)
				bulkTransfer(t, a, b, ip, nil)
				after := e.stats(0)
				return after["forwarded-tunnel-device"] - before["forwarded-tunnel-device"], after["forwarded-tunnel"] - before["forwarded-tunnel"]
			}
			for _, ip := range []string{b.ip, b.ip6} {
				if device, programs := bulk(ip); programs < 10*device {
					t.Errorf("bulk TCP to %s on a full-width path: %d packets through the tunnel device, %d encapsulated by the programs; want nearly all by the programs", ip, device, programs)
				}
			}

			if out, err := run("/run/netns/"+e.prefix+"underlay", "ip", "link", "set", "n2", "mtu", fmt.Sprint(path)); err != nil {
				t.Fatalf("narrow the wire to node-2: %v %s", err, out)
			}
			nodes := e.cluster.Nodes
			for i, n := range nodes {
				peer := nodes[1-i].IP.String()
				if out, err := run(n.Netns, "ip", "route", "add", peer+"/32", "dev", "eth0", "mtu", "lock", fmt.Sprint(path)); err != nil {
					t.Fatalf("path MTU on %s: %v %s", n.Name, err, out)
				}
			}
			before := e.stats(0)
			const podMTU, count = 1450, 10 // 1500 less VXLAN
			for _, ping := range []struct {
				from, to string
				payload  int // filling the pod MTU
			}{
				{a.netns, b.ip, podMTU - 28},
				{b.netns, a.ip, podMTU - 28}, // node-1 sends the replies
				{a.netns, b.ip6, podMTU - 48},
			} {
				if out, err := run(ping.from, "ping", "-c", fmt.Sprint(count), "-i", "0.1", "-W", "2", "-M", "do", "-s", fmt.Sprint(ping.payload), ping.to); err != nil {
					t.Fatalf("full-size ping to %s over a %d-byte path: %v\n%s", ping.to, path, err, out)
				}
			}
			e.ping(a.netns, b.ip)
			after := e.stats(0)
			// The node's own probes of the other also count (a few a second).
			if after["forwarded-tunnel-device"] < before["forwarded-tunnel-device"]+3*count || after["forwarded-tunnel"] == before["forwarded-tunnel"] {
				t.Errorf("node-1 counters before %v, after %v: want full-size packets through the tunnel device and small ones encapsulated by the programs", before, after)
			}
			for _, ip := range []string{b.ip, b.ip6} {
				if device, programs := bulk(ip); device < 10*programs {
					t.Errorf("bulk TCP to %s over a %d-byte path: %d packets through the tunnel device, %d encapsulated by the programs; want nearly all through the device", ip, path, device, programs)
				}
			}
			e.delPod(a)
			e.delPod(b)
		})
	}
}

// TestPodMTUFollowsUnderlay runs nodes on a jumbo-frame underlay: pods get
// its MTU, less the encapsulation in tunnel mode, and full-size packets
// that must not be fragmented cross between nodes.
func TestPodMTUFollowsUnderlay(t *testing.T) {
	const underlay = 9000
	for _, tc := range []struct {
		mode string
		pod  int
	}{
		{"tunnel", underlay - 50},
		{"native", underlay},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := newEnvMode(t, 2, tc.mode, func(c *localcluster.Config) { c.UnderlayMTU = underlay })
			a, b := e.addPod(0, "pod-a"), e.addPod(1, "pod-b")
			for _, p := range []*pod{a, b} {
				out, err := run(p.netns, "ip", "-o", "link", "show", "eth0")
				if err != nil || !strings.Contains(out, fmt.Sprintf(" mtu %d ", tc.pod)) {
					t.Fatalf("%s eth0: %q, %v; want mtu %d", p.name, out, err, tc.pod)
				}
			}
			full := fmt.Sprint(tc.pod - 28) // ICMP payload filling the pod MTU
			e.eventually(func() error {
				if out, err := run(a.netns, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", full, b.ip); err != nil {
					return fmt.Errorf("full-size ping %s from pod-a: %v\n%s", b.ip, err, out)
				}
				return nil
			})
			e.delPod(a)
			e.delPod(b)
		})
	}
}

// TestMasqueradeFollowsPools: pods of a pool created after the node started
// reach the outside too (their traffic is masqueraded; the outside has no
// route to them).
func TestMasqueradeFollowsPools(t *testing.T) {
	e := newEnv(t, 1)
	conn, err := grpc.NewClient("unix://"+e.cluster.IPAMSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	blue := &ipamv1alpha1.Pool{Name: "blue", Ipv4: &ipamv1alpha1.PoolFamily{Cidrs: []string{"10.55.0.0/16"}}}
	if _, err := ipamv1alpha1.NewIPAMServiceClient(conn).CreatePool(t.Context(), &ipamv1alpha1.CreatePoolRequest{Pool: blue}); err != nil {
		t.Fatal(err)
	}
	conf := e.editConflist(0, func(m map[string]any) {
		m["plugins"].([]any)[0].(map[string]any)["pools"] = []string{"blue"}
	})
	p := e.addPodConf(0, "pod-blue", conf)
	if !strings.HasPrefix(p.ip, "10.55.") {
		t.Fatalf("pod-blue got %s, want an address of pool blue", p.ip)
	}
	e.eventually(func() error { return e.tryPing(p.netns, e.cluster.Outside.IP.String()) })
	// A flushed ruleset (a firewall reload) is put back.
	if err := nstest.DoAt(e.cluster.Nodes[0].Netns, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.FlushRuleset()
		return c.Flush()
	}); err != nil {
		t.Fatalf("flush the node's ruleset: %v", err)
	}
	e.eventually(func() error { return e.tryPing(p.netns, e.cluster.Outside.IP.String()) })
	e.delPod(p)
}

// TestTwoAttachments gives one pod a second Axon interface (another
// network, as Multus would): both addresses are reachable, the first
// interface keeps the default route, and replies that leave by the other
// interface are not taken for spoofing.
func TestTwoAttachments(t *testing.T) {
	e := newEnvMode(t, 2, "tunnel")
	p := e.addPod(0, "pod-two")
	second := *p.rt
	second.IfName = "net1"
	conf2 := e.namedConflist(0, "axon-b")
	res, err := e.cni.AddNetworkList(t.Context(), conf2, &second)
	if err != nil {
		t.Fatalf("ADD of the second attachment: %v", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		t.Fatalf("second attachment's result %v, %v", res, err)
	}
	ip2 := r.IPs[0].Address.IP.String()
	// The result lists the routes net1 got: its gateways, no default.
	var gwRoutes int
	for _, rt := range r.Routes {
		if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
			t.Errorf("second attachment's result lists default route %v, which net1 does not get", rt)
		} else if rt.GW == nil {
			gwRoutes++
		}
	}
	if gwRoutes == 0 {
		t.Errorf("second attachment's result routes %v: want its gateways' link routes", r.Routes)
	}
	if out, _ := run(p.netns, "ip", "-4", "route", "show", "default"); !strings.Contains(out, "dev eth0") || strings.Contains(out, "net1") {
		t.Errorf("pod default routes %q, want eth0's only", out)
	}
	peer := e.addPod(1, "pod-peer")
	before := e.stats(0)["drop-spoofed"]
	e.eventually(func() error { return e.tryPing(peer.netns, p.ip) })
	e.ping(peer.netns, ip2) // the reply from net1's address leaves by eth0
	if d := e.stats(0)["drop-spoofed"] - before; d != 0 {
		t.Errorf("drop-spoofed grew by %d", d)
	}
	if err := e.cni.CheckNetworkList(t.Context(), conf2, &second); err != nil {
		t.Errorf("CHECK of the second attachment: %v", err)
	}
	if err := e.cni.DelNetworkList(t.Context(), conf2, &second); err != nil {
		t.Fatal(err)
	}
	e.delPod(p)
	e.delPod(peer)
}
