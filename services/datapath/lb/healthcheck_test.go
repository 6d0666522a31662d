package lb

import (
	"maps"
	"sync"
	"testing"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
	"github.com/axon-cni/axon/services/datapath/healthcheck"
)

// fakeHealthChecks records the last Sync.
type fakeHealthChecks struct {
	mu   sync.Mutex
	last map[uint16]healthcheck.Service
}

func (f *fakeHealthChecks) Sync(want map[uint16]healthcheck.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = maps.Clone(want)
	return nil
}

func (f *fakeHealthChecks) get() map[uint16]healthcheck.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// TestHealthChecks: the health check node ports follow the services, each
// with its Service's ready local backends (an address once, over every
// frontend naming the port), and come back after a restart.
func TestHealthChecks(t *testing.T) {
	fake := bpffake.New()
	hc := &fakeHealthChecks{}
	m := New(Config{NodeName: thisNode, ServiceMap: bpffake.ServiceMap, HealthChecks: hc}, fake, discard())
	if err := m.Restore(t.Context()); err != nil {
		t.Fatal(err)
	}
	withHC := func(addr string, port uint32, backends ...*datapathv1alpha1.Backend) *datapathv1alpha1.Service {
		s := service(addr, port, tcp, lbType)
		s.TrafficPolicy, s.HealthCheckNodePort, s.Backends = local, 32000, backends
		return s
	}
	svcs := []*datapathv1alpha1.Service{
		withHC("192.0.2.10", 80, backend("10.0.0.1:8080", 1, active, thisNode), backend("10.0.0.2:8080", 1, active, otherNode),
			backend("10.0.0.3:8080", 1, term, thisNode)),
		// The same Service's other port: the same pod counts once.
		withHC("192.0.2.10", 443, backend("10.0.0.1:8443", 1, active, thisNode), backend("10.0.0.4:8443", 1, active, thisNode)),
		service("10.96.0.1", 80, tcp, clusterIP, "10.0.0.9:80"),
	}
	if _, err := m.Apply(t.Context(), svcs, nil, true); err != nil {
		t.Fatal(err)
	}
	want := healthcheck.Service{Namespace: "default", Name: "web", LocalEndpoints: 2}
	if got := hc.get(); len(got) != 1 || got[32000] != want {
		t.Fatalf("health checks %v, want %v on 32000", got, want)
	}

	// After a restart of the agent, from the maps alone.
	hc2 := &fakeHealthChecks{}
	m2 := New(Config{NodeName: thisNode, ServiceMap: bpffake.ServiceMap, HealthChecks: hc2}, fake, discard())
	if err := m2.Restore(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := hc2.get(); len(got) != 1 || got[32000] != want {
		t.Fatalf("restored health checks %v, want %v on 32000", got, want)
	}

	// No local backend left: 0; the port goes with its last service.
	svcs[0].Backends, svcs[1].Backends = svcs[0].Backends[1:2], nil
	if _, err := m.Apply(t.Context(), svcs, nil, true); err != nil {
		t.Fatal(err)
	}
	if got := hc.get(); got[32000].LocalEndpoints != 0 || len(got) != 1 {
		t.Errorf("health checks %v, want 0 local endpoints", got)
	}
	if _, err := m.Apply(t.Context(), svcs[2:], nil, true); err != nil {
		t.Fatal(err)
	}
	if got := hc.get(); len(got) != 0 {
		t.Errorf("health checks %v, want none", got)
	}
}
