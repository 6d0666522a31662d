package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// datapathClient dials a node's datapath over its unix socket.
func (e *env) datapathClient(node int) datapathv1alpha1.DatapathServiceClient {
	e.t.Helper()
	conn, err := grpc.NewClient("unix://"+e.cluster.Nodes[node].DatapathSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = conn.Close() })
	return datapathv1alpha1.NewDatapathServiceClient(conn)
}

// serveName makes a pod answer every TCP connection and UDP datagram on
// port with its own name, on all its addresses.
func serveName(t *testing.T, p *pod, port int) {
	t.Helper()
	serveNameOn(t, p, "", port)
}

// serveNameOn is serveName on the address host only ("": all). A UDP
// server that is to answer from the address it was asked at, of several
// the host has, must be bound to it: an unbound socket answers from the
// address the kernel selects for the client.
func serveNameOn(t *testing.T, p *pod, host string, port int) {
	t.Helper()
	var (
		l  net.Listener
		pc net.PacketConn
	)
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if err := nstest.DoAt(p.netns, func() (err error) {
		if l, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", p.name, err)
	}
	t.Cleanup(func() { _ = l.Close(); _ = pc.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, p.name)
			}()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(p.name), from)
		}
	}()
}

// askName connects from a pod to addr (host:port) over TCP or UDP and
// returns the name the backend answers with. A UDP socket is connected, so
// an answer from any other address than addr is not received.
func askName(from *pod, network, addr string) (string, error) {
	var name string
	err := nstest.DoAt(from.netns, func() error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		if network == "udp" {
			if _, err := c.Write([]byte("who")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			name = string(buf[:n])
			return err
		}
		b, err := io.ReadAll(c)
		name = string(b)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s %s from %s: %w", network, addr, from.name, err)
	}
	return name, nil
}

// clusterIP is a ClusterIP frontend with backends on port.
func clusterIP(vip string, port uint32, proto commonv1alpha1.Protocol, backendPort uint32, nodes []string, backends ...string) *datapathv1alpha1.Service {
	s := &datapathv1alpha1.Service{
		Frontend:         &datapathv1alpha1.Frontend{Address: vip, Port: port, Protocol: proto},
		Type:             datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP,
		ServiceNamespace: "default", ServiceName: "echo",
	}
	for i, b := range backends {
		s.Backends = append(s.Backends, &datapathv1alpha1.Backend{Address: b, Port: backendPort, NodeName: nodes[i]})
	}
	return s
}

// TestClusterIP reaches ClusterIP services from pods through the eBPF load
// balancer, in both routing modes, IPv4 and IPv6, TCP and UDP: every answer
// comes back from the service address (the client's sockets are connected
// to it), from backends on the client's node and on another node.
func TestClusterIP(t *testing.T) {
	for _, mode := range []string{"tunnel", "native"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnvMode(t, 2, mode)
			a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(1, "pod-c")
			d := e.addPod(1, "pod-d")
			for _, p := range []*pod{b, c} {
				serveName(t, p, 8080)
			}
			nodes := []string{e.cluster.Nodes[0].Name, e.cluster.Nodes[1].Name}
			svcs := []*datapathv1alpha1.Service{
				clusterIP("10.96.0.10", 80, commonv1alpha1.Protocol_PROTOCOL_TCP, 8080, nodes, b.ip, c.ip),
				clusterIP("10.96.0.10", 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 8080, nodes, b.ip, c.ip),
				clusterIP("fd00:96::10", 80, commonv1alpha1.Protocol_PROTOCOL_TCP, 8080, nodes, b.ip6, c.ip6),
				clusterIP("fd00:96::10", 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 8080, nodes, b.ip6, c.ip6),
			}
			for node := range 2 {
				resp, err := e.datapathClient(node).UpsertServices(t.Context(), &datapathv1alpha1.UpsertServicesRequest{Services: svcs, ReplaceAll: true})
				if err != nil {
					t.Fatalf("UpsertServices on node %d: %v", node, err)
				}
				if resp.GetChanged() != int32(len(svcs)) {
					t.Errorf("node %d: %d services changed, want %d", node, resp.GetChanged(), len(svcs))
				}
			}
			// Each node learns the other's IPv4 and IPv6 blocks on its own.
			for _, ip := range []string{c.ip, c.ip6} {
				e.eventually(func() error { return e.tryPing(a.netns, ip) })
			}
			for _, ip := range []string{b.ip, b.ip6} {
				e.eventually(func() error { return e.tryPing(d.netns, ip) })
			}
			for _, tc := range []struct {
				network, addr string
			}{
				{"tcp", "10.96.0.10:80"},
				{"udp", "10.96.0.10:53"},
				{"tcp", "[fd00:96::10]:80"},
				{"udp", "[fd00:96::10]:53"},
			} {
				for _, client := range []*pod{a, d} {
					// Random choice: 24 tries miss a backend with odds of 2^-23.
					seen := map[string]int{}
					for range 24 {
						name, err := askName(client, tc.network, tc.addr)
						if err != nil {
							t.Fatalf("%v\nnode-1 counters %v\nnode-2 counters %v", err, e.stats(0), e.stats(1))
						}
						seen[name]++
					}
					if seen[b.name] == 0 || seen[c.name] == 0 || len(seen) != 2 {
						t.Errorf("%s %s from %s reached %v; want both %s and %s", tc.network, tc.addr, client.name, seen, b.name, c.name)
					}
				}
			}
			list, err := e.datapathClient(0).ListServices(t.Context(), &datapathv1alpha1.ListServicesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.GetServices()) != len(svcs) {
				t.Errorf("ListServices: %d services, want %d", len(list.GetServices()), len(svcs))
			}
			// A pod may still reach its backends directly.
			if name, err := askName(a, "tcp", net.JoinHostPort(c.ip, "8080")); err != nil || name != c.name {
				t.Errorf("direct connection to %s: %q, %v", c.name, name, err)
			}
		})
	}
}

// TestClusterIPNoBackend refuses connections to a frontend without
// backends at once (TCP: a reset; UDP: an ICMP port unreachable, which a
// connected socket's read reports), IPv4 and IPv6, and answers after
// backends arrive.
func TestClusterIPNoBackend(t *testing.T) {
	e := newEnv(t, 1)
	a, b := e.addPod(0, "pod-a"), e.addPod(0, "pod-b")
	serveName(t, b, 8080)
	dp := e.datapathClient(0)
	for _, tc := range []struct {
		network, vip, backend string
		proto                 commonv1alpha1.Protocol
	}{
		{"tcp", "10.96.0.20", b.ip, commonv1alpha1.Protocol_PROTOCOL_TCP},
		{"udp", "10.96.0.20", b.ip, commonv1alpha1.Protocol_PROTOCOL_UDP},
		{"tcp", "fd00:96::20", b.ip6, commonv1alpha1.Protocol_PROTOCOL_TCP},
		{"udp", "fd00:96::20", b.ip6, commonv1alpha1.Protocol_PROTOCOL_UDP},
	} {
		t.Run(tc.network+" "+tc.vip, func(t *testing.T) {
			addr := net.JoinHostPort(tc.vip, "80")
			empty := clusterIP(tc.vip, 80, tc.proto, 8080, nil)
			if _, err := dp.UpsertService(t.Context(), &datapathv1alpha1.UpsertServiceRequest{Service: empty}); err != nil {
				t.Fatal(err)
			}
			// Refused, not left to time out.
			if _, err := askName(a, tc.network, addr); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("connecting to a frontend without backends: %v; want connection refused\ncounters %v", err, e.stats(0))
			}
			withB := clusterIP(tc.vip, 80, tc.proto, 8080, []string{e.cluster.Nodes[0].Name}, tc.backend)
			if _, err := dp.UpsertService(t.Context(), &datapathv1alpha1.UpsertServiceRequest{Service: withB}); err != nil {
				t.Fatal(err)
			}
			name, err := askName(a, tc.network, addr)
			if err != nil || name != b.name {
				t.Fatalf("after the backend arrived: %q, %v", name, err)
			}
		})
	}
}

// TestServiceHairpinAffinitySourceRanges: a pod reaches a service whose
// backend is itself (hairpin); a ClusterIP with ClientIP affinity sends
// every connection of a client to one backend; a LoadBalancer address
// (picked by its Maglev table) takes connections only from its source
// ranges. IPv4 and IPv6, TCP and UDP where it matters.
func TestServiceHairpinAffinitySourceRanges(t *testing.T) {
	e := newEnv(t, 1)
	a, b, c := e.addPod(0, "pod-a"), e.addPod(0, "pod-b"), e.addPod(0, "pod-c")
	for _, p := range []*pod{b, c} {
		serveName(t, p, 8080)
	}
	node := e.cluster.Nodes[0].Name
	nodes := []string{node, node}
	tcp, udp := commonv1alpha1.Protocol_PROTOCOL_TCP, commonv1alpha1.Protocol_PROTOCOL_UDP
	sticky := clusterIP("10.96.0.31", 80, tcp, 8080, nodes, b.ip, c.ip)
	sticky.SessionAffinity = datapathv1alpha1.SessionAffinity_SESSION_AFFINITY_CLIENT_IP
	lb := clusterIP("192.0.2.31", 80, tcp, 8080, nodes, b.ip, c.ip)
	lb.Type = datapathv1alpha1.ServiceType_SERVICE_TYPE_LOAD_BALANCER
	lb.SourceRanges = []string{a.ip + "/32"}
	svcs := []*datapathv1alpha1.Service{
		clusterIP("10.96.0.30", 80, tcp, 8080, nodes[:1], b.ip),
		clusterIP("10.96.0.30", 53, udp, 8080, nodes[:1], b.ip),
		clusterIP("fd00:96::30", 80, tcp, 8080, nodes[:1], b.ip6),
		clusterIP("fd00:96::30", 53, udp, 8080, nodes[:1], b.ip6),
		sticky, lb,
	}
	if _, err := e.datapathClient(0).UpsertServices(t.Context(), &datapathv1alpha1.UpsertServicesRequest{Services: svcs, ReplaceAll: true}); err != nil {
		t.Fatal(err)
	}

	t.Run("hairpin", func(t *testing.T) {
		for _, tc := range []struct{ network, addr string }{
			{"tcp", "10.96.0.30:80"}, {"udp", "10.96.0.30:53"}, {"tcp", "[fd00:96::30]:80"}, {"udp", "[fd00:96::30]:53"},
		} {
			if name, err := askName(b, tc.network, tc.addr); err != nil || name != b.name {
				t.Errorf("%s %s from its own backend: %q, %v\ncounters %v", tc.network, tc.addr, name, err, e.stats(0))
			}
		}
	})
	t.Run("affinity", func(t *testing.T) {
		seen := map[string]int{}
		for range 16 {
			name, err := askName(a, "tcp", "10.96.0.31:80")
			if err != nil {
				t.Fatal(err)
			}
			seen[name]++
		}
		if len(seen) != 1 {
			t.Errorf("with ClientIP affinity, one client reached %v", seen)
		}
	})
	t.Run("source ranges", func(t *testing.T) {
		seen := map[string]int{}
		for range 16 {
			name, err := askName(a, "tcp", "192.0.2.31:80")
			if err != nil {
				t.Fatalf("from inside the source ranges: %v\ncounters %v", err, e.stats(0))
			}
			seen[name]++
		}
		if len(seen) != 2 {
			t.Errorf("connections (by Maglev) reached %v, want both backends", seen)
		}
		before := e.stats(0)["drop-source-range"]
		if _, err := askName(c, "tcp", "192.0.2.31:80"); err == nil {
			t.Errorf("a client outside the source ranges connected")
		}
		if e.stats(0)["drop-source-range"] == before {
			t.Errorf("drop-source-range did not count the refused client")
		}
	})
}
