package lb

import (
	"log/slog"
	"net/netip"
	"testing"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

const (
	thisNode  = "node-a"
	otherNode = "node-b"
	tcp       = commonv1alpha1.Protocol_PROTOCOL_TCP
	udp       = commonv1alpha1.Protocol_PROTOCOL_UDP
	clusterIP = datapathv1alpha1.ServiceType_SERVICE_TYPE_CLUSTER_IP
	nodePort  = datapathv1alpha1.ServiceType_SERVICE_TYPE_NODE_PORT
	lbType    = datapathv1alpha1.ServiceType_SERVICE_TYPE_LOAD_BALANCER
	local     = datapathv1alpha1.TrafficPolicy_TRAFFIC_POLICY_LOCAL
	active    = datapathv1alpha1.BackendState_BACKEND_STATE_ACTIVE
	term      = datapathv1alpha1.BackendState_BACKEND_STATE_TERMINATING
)

// discard is a logger that drops everything.
func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newManager returns a restored Manager of node-a over fake.
func newManager(t *testing.T, fake *bpffake.Fake) *Manager {
	t.Helper()
	m := New(Config{NodeName: thisNode, ServiceMap: bpffake.ServiceMap}, fake, slog.New(slog.DiscardHandler))
	if err := m.Restore(t.Context()); err != nil {
		t.Fatal(err)
	}
	return m
}

// service is a service of the given frontend and backends ("addr:port"
// on node-b, weight 1, active).
func service(addr string, port uint32, proto commonv1alpha1.Protocol, typ datapathv1alpha1.ServiceType, backends ...string) *datapathv1alpha1.Service {
	s := &datapathv1alpha1.Service{
		Frontend: &datapathv1alpha1.Frontend{Address: addr, Port: port, Protocol: proto},
		Type:     typ, ServiceNamespace: "default", ServiceName: "web", PortName: "http",
	}
	for _, b := range backends {
		s.Backends = append(s.Backends, backend(b, 1, active, otherNode))
	}
	return s
}

func backend(addrPort string, weight uint32, state datapathv1alpha1.BackendState, node string) *datapathv1alpha1.Backend {
	ap := mustAddrPort(addrPort)
	return &datapathv1alpha1.Backend{Address: ap.Addr().String(), Port: uint32(ap.Port()), Weight: weight, State: state, NodeName: node}
}

// listAll lists every service.
func listAll(t *testing.T, m *Manager) []*datapathv1alpha1.Service {
	t.Helper()
	out, _, err := m.List(Query{Limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
