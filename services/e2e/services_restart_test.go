package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/internal/nstest"
)

// serveEcho makes a pod answer, on port of all its addresses, every line of
// a TCP connection and every UDP datagram with "<its name> <what it got>",
// so a client sees which backend its flow reached and that it stays there.
func serveEcho(t *testing.T, p *pod, port int) {
	t.Helper()
	var (
		l  net.Listener
		pc net.PacketConn
	)
	addr := fmt.Sprintf(":%d", port)
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
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := fmt.Fprintf(c, "%s %s", p.name, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 256)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(fmt.Appendf(nil, "%s %s", p.name, buf[:n]), from)
		}
	}()
}

// flow is a client's TCP connection or connected UDP socket to a frontend.
type flow struct {
	what    string // for messages
	network string
	conn    net.Conn
	r       *bufio.Reader // TCP
	backend string        // the name of the pod that answered first
}

// dialFlow opens a flow from a pod to addr and exchanges a first message.
func dialFlow(t *testing.T, from *pod, network, addr string) *flow {
	t.Helper()
	f := &flow{what: fmt.Sprintf("%s %s from %s", network, addr, from.name), network: network}
	if err := nstest.DoAt(from.netns, func() (err error) {
		f.conn, err = net.DialTimeout(network, addr, 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("%s: %v", f.what, err)
	}
	t.Cleanup(func() { _ = f.conn.Close() })
	f.r = bufio.NewReader(f.conn)
	var err error
	if f.backend, err = f.exchange("hello"); err != nil {
		t.Fatalf("%s: %v", f.what, err)
	}
	return f
}

// exchange sends msg and returns the name of the backend that echoed it.
func (f *flow) exchange(msg string) (string, error) {
	if err := f.conn.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return "", err
	}
	var got string
	if f.network == "udp" {
		if _, err := f.conn.Write([]byte(msg)); err != nil {
			return "", fmt.Errorf("send %q: %w", msg, err)
		}
		buf := make([]byte, 256)
		n, err := f.conn.Read(buf)
		if err != nil {
			return "", fmt.Errorf("answer to %q: %w", msg, err)
		}
		got = string(buf[:n])
	} else {
		if _, err := fmt.Fprintln(f.conn, msg); err != nil {
			return "", fmt.Errorf("send %q: %w", msg, err)
		}
		line, err := f.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("answer to %q: %w", msg, err)
		}
		got = strings.TrimSuffix(line, "\n")
	}
	name, echoed, ok := strings.Cut(got, " ")
	if !ok || echoed != msg {
		return "", fmt.Errorf("answer to %q: %q", msg, got)
	}
	return name, nil
}

// listServices returns a node's services by frontend ("addr port proto").
func (e *env) listServices(ctx context.Context, node int) (map[string]*datapathv1alpha1.Service, error) {
	out := map[string]*datapathv1alpha1.Service{}
	req := &datapathv1alpha1.ListServicesRequest{}
	for {
		resp, err := e.datapathClient(node).ListServices(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, s := range resp.GetServices() {
			fe := s.GetFrontend()
			out[fmt.Sprintf("%s %d %s", fe.GetAddress(), fe.GetPort(), fe.GetProtocol())] = s
		}
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// withoutOtherNodes is s without the node names of backends on nodes other
// than node, which the maps do not hold: a restarted agent lists them
// without until its next upsert (lb.decompile).
func withoutOtherNodes(s *datapathv1alpha1.Service, node string) *datapathv1alpha1.Service {
	s = proto.CloneOf(s)
	for _, b := range s.GetBackends() {
		if b.GetNodeName() != node {
			b.NodeName = ""
		}
	}
	return s
}

// TestServiceFlowsSurviveRestart kills a node's datapath with SIGKILL
// while pods hold TCP connections and connected UDP sockets through
// ClusterIPs (IPv4 and IPv6) to backends on both nodes, from a client on
// that node and from one on the other: every flow keeps exchanging data on
// its backend while the agent is down and after it is back, new
// connections work meanwhile, and the restarted agent lists the same
// services with the same revisions before anything programs it again.
func TestServiceFlowsSurviveRestart(t *testing.T) {
	e := newEnv(t, 2)
	a, b := e.addPod(0, "pod-a"), e.addPod(0, "pod-b")
	c, d := e.addPod(1, "pod-c"), e.addPod(1, "pod-d")
	for _, p := range []*pod{b, c} {
		serveEcho(t, p, 7070)
	}
	nodes := []string{e.cluster.Nodes[0].Name, e.cluster.Nodes[1].Name}
	svcs := []*datapathv1alpha1.Service{
		clusterIP("10.96.0.20", 80, commonv1alpha1.Protocol_PROTOCOL_TCP, 7070, nodes, b.ip, c.ip),
		clusterIP("10.96.0.20", 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 7070, nodes, b.ip, c.ip),
		clusterIP("fd00:96::20", 80, commonv1alpha1.Protocol_PROTOCOL_TCP, 7070, nodes, b.ip6, c.ip6),
		clusterIP("fd00:96::20", 53, commonv1alpha1.Protocol_PROTOCOL_UDP, 7070, nodes, b.ip6, c.ip6),
	}
	for node := range 2 {
		if _, err := e.datapathClient(node).UpsertServices(t.Context(), &datapathv1alpha1.UpsertServicesRequest{Services: svcs, ReplaceAll: true}); err != nil {
			t.Fatalf("UpsertServices on node %d: %v", node, err)
		}
	}
	for _, ip := range []string{c.ip, c.ip6} {
		e.eventually(func() error { return e.tryPing(a.netns, ip) })
	}
	for _, ip := range []string{b.ip, b.ip6} {
		e.eventually(func() error { return e.tryPing(d.netns, ip) })
	}
	listed, err := e.listServices(t.Context(), 0)
	if err != nil || len(listed) != len(svcs) {
		t.Fatalf("ListServices before the kill: %d services, %v; want %d", len(listed), err, len(svcs))
	}

	// Several flows per client and frontend, so both backends serve some.
	var flows []*flow
	for _, client := range []*pod{a, d} {
		for _, addr := range []string{"10.96.0.20", "fd00:96::20"} {
			for range 4 {
				flows = append(flows, dialFlow(t, client, "tcp", net.JoinHostPort(addr, "80")))
				flows = append(flows, dialFlow(t, client, "udp", net.JoinHostPort(addr, "53")))
			}
		}
	}
	backends := map[string]int{}
	for _, f := range flows {
		backends[f.backend]++
	}
	if backends[b.name] == 0 || backends[c.name] == 0 {
		t.Logf("flows reached %v (random choice; not both)", backends)
	}
	check := func(when string) {
		t.Helper()
		for _, f := range flows {
			name, err := f.exchange(when)
			if err != nil {
				t.Fatalf("%s, %s: %v\nnode-1 counters %v", f.what, when, err, e.stats(0))
			}
			if name != f.backend {
				t.Errorf("%s, %s: answered by %s, the flow began on %s", f.what, when, name, f.backend)
			}
		}
	}
	check("before")

	e.cluster.KillDatapath(0)
	check("while-down")
	// The programs keep balancing new connections without their agent.
	for _, client := range []*pod{a, d} {
		dialFlow(t, client, "tcp", "10.96.0.20:80")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.cluster.StartDatapath(ctx, 0); err != nil {
		t.Fatalf("restart datapath: %v", err)
	}
	// Nothing has programmed the restarted agent: what it lists it
	// restored from the pinned maps.
	restored, err := e.listServices(t.Context(), 0)
	if err != nil {
		t.Fatalf("ListServices after the restart: %v", err)
	}
	if len(restored) != len(listed) {
		t.Errorf("ListServices after the restart: %d services, want %d", len(restored), len(listed))
	}
	for fe, want := range listed {
		got := restored[fe]
		switch {
		case got == nil:
			t.Errorf("frontend %s not restored", fe)
		case got.GetRevision() == "" || got.GetRevision() != want.GetRevision():
			t.Errorf("frontend %s: revision %q after the restart, %q before", fe, got.GetRevision(), want.GetRevision())
		case !proto.Equal(withoutOtherNodes(got, nodes[0]), withoutOtherNodes(want, nodes[0])):
			t.Errorf("frontend %s after the restart:\n%v\nbefore:\n%v", fe, got, want)
		}
	}
	check("after-restart")
	for _, client := range []*pod{a, d} {
		dialFlow(t, client, "udp", "10.96.0.20:53")
	}
}
