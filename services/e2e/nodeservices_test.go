package e2e

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// nodeClient is node i's own network namespace as a client: its
// processes, not a pod's.
func (e *env) nodeClient(i int) *pod {
	n := e.cluster.Nodes[i]
	return &pod{name: n.Name, netns: n.Netns, node: i}
}

// upsert replaces every service of node with svcs.
func (e *env) upsert(node int, svcs ...*datapathv1alpha1.Service) {
	e.t.Helper()
	if _, err := e.datapathClient(node).UpsertServices(e.t.Context(), &datapathv1alpha1.UpsertServicesRequest{Services: svcs, ReplaceAll: true}); err != nil {
		e.t.Fatalf("UpsertServices on node %d: %v", node, err)
	}
}

// reached asks addr's name 24 times from client and returns who answered
// how often (random choice: 24 tries miss one of two backends with odds
// of 2^-23).
func (e *env) reached(client *pod, network, addr string) map[string]int {
	e.t.Helper()
	seen := map[string]int{}
	for range 24 {
		name, err := askName(client, network, addr)
		if err != nil {
			e.t.Fatalf("%v\nnode-1 counters %v\nnode-2 counters %v", err, e.stats(0), e.stats(1))
		}
		seen[name]++
	}
	return seen
}

var nodeServiceCases = []struct{ network, addr string }{
	{"tcp", "10.96.0.10:80"},
	{"udp", "10.96.0.10:53"},
	{"tcp", "[fd00:96::10]:80"},
	{"udp", "[fd00:96::10]:53"},
}

// TestNodeClusterIP reaches ClusterIPs from the nodes' own network
// namespaces (the socket programs), TCP and UDP, IPv4 and IPv6, with
// backends on the same node and the other; checks that the two nodes'
// programs, attached to the same cgroup, translate only their own node's
// sockets; and that the translation goes on while a node's agent is down
// and after it restarted. In both routing modes.
func TestNodeClusterIP(t *testing.T) {
	for _, mode := range []string{"tunnel", "native"} {
		t.Run(mode, func(t *testing.T) { testNodeClusterIP(t, newEnvMode(t, 2, mode)) })
	}
}

func testNodeClusterIP(t *testing.T, e *env) {
	b, c := e.addPod(0, "pod-b"), e.addPod(1, "pod-c")
	for _, p := range []*pod{b, c} {
		serveName(t, p, 8080)
	}
	nodes := []string{e.cluster.Nodes[0].Name, e.cluster.Nodes[1].Name}
	services := func(ip4s, ip6s []string, on []string) []*datapathv1alpha1.Service {
		return []*datapathv1alpha1.Service{
			clusterIP("10.96.0.10", 80, commonv1alpha1.Protocol_PROTOCOL_TCP, 8080, on, ip4s...),
			clusterIP("10.96.0.10", 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 8080, on, ip4s...),
			clusterIP("fd00:96::10", 80, commonv1alpha1.Protocol_PROTOCOL_TCP, 8080, on, ip6s...),
			clusterIP("fd00:96::10", 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 8080, on, ip6s...),
		}
	}
	both := services([]string{b.ip, c.ip}, []string{b.ip6, c.ip6}, nodes)
	for node := range 2 {
		e.upsert(node, both...)
	}
	for i := range 2 {
		for _, ip := range []string{b.ip, b.ip6, c.ip, c.ip6} {
			e.eventually(func() error { return e.tryPing(e.cluster.Nodes[i].Netns, ip) })
		}
	}
	reachBoth := func(node int) {
		t.Helper()
		for _, tc := range nodeServiceCases {
			seen := e.reached(e.nodeClient(node), tc.network, tc.addr)
			if seen[b.name] == 0 || seen[c.name] == 0 || len(seen) != 2 {
				t.Errorf("%s %s from %s reached %v; want both %s and %s", tc.network, tc.addr, nodes[node], seen, b.name, c.name)
			}
		}
	}
	for node := range 2 {
		reachBoth(node)
	}

	// Node 2 keeps only its own backend: node 1's programs, which run for
	// every socket of the machine too, must leave node 2's sockets alone.
	e.upsert(1, services([]string{c.ip}, []string{c.ip6}, nodes[1:])...)
	for _, tc := range nodeServiceCases {
		if seen := e.reached(e.nodeClient(1), tc.network, tc.addr); len(seen) != 1 || seen[c.name] == 0 {
			t.Errorf("%s %s from %s reached %v; want only %s", tc.network, tc.addr, nodes[1], seen, c.name)
		}
	}
	reachBoth(0)

	// The pinned links keep translating while node 1's agent is down, and
	// the restarted agent takes them over.
	e.cluster.KillDatapath(0)
	reachBoth(0)
	if err := e.cluster.StartDatapath(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	reachBoth(0)
	// Each node on its own backend: whichever node's programs run first
	// on the shared hooks, one acting for the other node's sockets would
	// send some to its own backend.
	e.upsert(0, services([]string{b.ip}, []string{b.ip6}, nodes[:1])...)
	for node, want := range []*pod{b, c} {
		for _, tc := range nodeServiceCases {
			if seen := e.reached(e.nodeClient(node), tc.network, tc.addr); len(seen) != 1 || seen[want.name] == 0 {
				t.Errorf("after the restart, %s %s from %s reached %v; want only %s", tc.network, tc.addr, nodes[node], seen, want.name)
			}
		}
	}
}

// dialUDP connects a UDP socket in client's namespace to addr.
func dialUDP(t *testing.T, client *pod, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := nstest.DoAt(client.netns, func() (err error) {
		c, err = net.Dial("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ask sends on a connected UDP socket and returns the name that answers.
func ask(c net.Conn) (string, error) {
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte("who")); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestUDPBackendRemoved: connected UDP sockets do not stay pinned to a
// backend that left their service (cilium/cilium#27300). A pod's socket
// (per-packet translation: the agent deletes its flows) keeps sending and
// reaches the remaining backend; the node's socket (socket-level
// translation: connected to the backend itself) is destroyed (sock_diag),
// one on the remaining backend is not, and a new one reaches the remaining
// backend.
func TestUDPBackendRemoved(t *testing.T) {
	e := newEnv(t, 2)
	a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(1, "pod-c")
	for _, p := range []*pod{b, c} {
		serveName(t, p, 8080)
	}
	nodes := []string{e.cluster.Nodes[0].Name, e.cluster.Nodes[1].Name}
	names := map[string]*pod{b.name: b, c.name: c}
	for _, fam := range []struct{ vip, addr, bIP, cIP string }{
		{"10.96.0.20", "10.96.0.20:53", b.ip, c.ip},
		{"fd00:96::20", "[fd00:96::20]:53", b.ip6, c.ip6},
	} {
		t.Run(fam.vip, func(t *testing.T) {
			svc := func(ips []string, on []string) *datapathv1alpha1.Service {
				return clusterIP(fam.vip, 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 8080, on, ips...)
			}
			e.upsert(0, svc([]string{fam.bIP, fam.cIP}, nodes))
			e.eventually(func() error { return e.tryPing(a.netns, fam.cIP) })
			e.eventually(func() error { return e.tryPing(e.cluster.Nodes[0].Netns, fam.cIP) })
			podSock := dialUDP(t, a, fam.addr)
			first, err := ask(podSock)
			if err != nil {
				t.Fatalf("pod: %v", err)
			}
			left, keep := c, fam.cIP // the backend that stays
			if first == c.name {
				left, keep = b, fam.bIP
			}
			// A node socket on each backend (24 tries find both with odds
			// of 1 - 2^-23).
			nodeSocks := map[string]net.Conn{}
			for range 24 {
				s := dialUDP(t, e.nodeClient(0), fam.addr)
				name, err := ask(s)
				if err != nil {
					t.Fatalf("node: %v", err)
				}
				if nodeSocks[name] == nil {
					nodeSocks[name] = s
				}
			}
			if len(nodeSocks) != 2 {
				t.Fatalf("node sockets reached %v; want both backends", nodeSocks)
			}
			e.upsert(0, svc([]string{keep}, []string{nodes[left.node]}))
			for range 5 {
				if name, err := ask(podSock); err != nil || name != left.name {
					t.Fatalf("pod socket after %s left: %q, %v; want %s", first, name, err, left.name)
				}
			}
			if name, err := ask(nodeSocks[left.name]); err != nil || name != left.name {
				t.Errorf("node socket whose backend %s stayed: %q, %v", left.name, name, err)
			}
			// Destroyed: disconnected, so a send fails (EDESTADDRREQ), and
			// a receive pending meanwhile would have seen ECONNABORTED.
			if _, err := ask(nodeSocks[first]); !errors.Is(err, unix.EDESTADDRREQ) && !errors.Is(err, unix.ECONNABORTED) {
				t.Errorf("node socket whose backend %s left: %v, want it destroyed (EDESTADDRREQ or ECONNABORTED)", first, err)
			}
			if name, err := ask(dialUDP(t, e.nodeClient(0), fam.addr)); err != nil || names[name] != left {
				t.Errorf("new node socket: %q, %v; want %s", name, err, left.name)
			}
		})
	}
}
