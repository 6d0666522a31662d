package e2e

import (
	"net"
	"strconv"
	"testing"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
)

// TestClusterIPNodeBackend reaches a ClusterIP service whose backend is no
// pod but a process of the first node listening on the node's addresses (as
// the kubernetes Service's API server, or a hostNetwork pod), from a pod on
// that node and from a pod on the other, in both routing modes, IPv4 and
// IPv6, TCP and UDP. The backend's answers reach the pods through the
// node's kernel, so they are translated back on the egress of the pods'
// veths (axon_to_pod); the clients' sockets are connected to the service
// address and take no answer from another.
func TestClusterIPNodeBackend(t *testing.T) {
	for _, mode := range []string{"tunnel", "native"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnvMode(t, 2, mode)
			a, d := e.addPod(0, "pod-a"), e.addPod(1, "pod-d")
			server := e.nodeClient(0)
			n := e.cluster.Nodes[0]
			for _, ip := range []string{n.IP.String(), n.IP6.String()} {
				serveNameOn(t, server, ip, 6443)
			}
			nodes := []string{n.Name}
			var svcs []*datapathv1alpha1.Service
			for _, fam := range []struct{ vip, backend string }{{"10.96.0.1", n.IP.String()}, {"fd00:96::1", n.IP6.String()}} {
				svcs = append(svcs,
					clusterIP(fam.vip, 443, commonv1alpha1.Protocol_PROTOCOL_TCP, 6443, nodes, fam.backend),
					clusterIP(fam.vip, 443, commonv1alpha1.Protocol_PROTOCOL_UDP, 6443, nodes, fam.backend))
			}
			for node := range 2 {
				e.upsert(node, svcs...)
			}
			// The node's first IPv6 packets to a new pod wait for the
			// host veth's link-local address to leave DAD (about a second,
			// before neighbour discovery can start): let the node reach
			// both pods first, and the nodes each other's pods.
			for _, p := range []*pod{a, d} {
				for _, ip := range []string{p.ip, p.ip6} {
					e.eventually(func() error { return e.tryPing(e.cluster.Nodes[p.node].Netns, ip) })
				}
			}
			for _, ip := range []string{d.ip, d.ip6} {
				e.eventually(func() error { return e.tryPing(a.netns, ip) })
			}
			for _, client := range []*pod{a, d} {
				for _, vip := range []string{"10.96.0.1", "fd00:96::1"} {
					for _, network := range []string{"tcp", "udp"} {
						addr := net.JoinHostPort(vip, strconv.Itoa(443))
						name, err := askName(client, network, addr)
						if err != nil || name != server.name {
							t.Errorf("%s %s from %s: %q, %v; want %s\nnode-1 counters %v\nnode-2 counters %v",
								network, addr, client.name, name, err, server.name, e.stats(0), e.stats(1))
						}
					}
				}
			}
		})
	}
}
