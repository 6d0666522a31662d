package lb

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	datapathv1alpha1 "github.com/axon-cni/axon/gen/axon/datapath/v1alpha1"
	"github.com/axon-cni/axon/services/datapath/bpfmaps/bpffake"
)

// TestMetrics checks the service count and the maps' fill level, read at
// scrape time, and the map-full counter.
func TestMetrics(t *testing.T) {
	fake := bpffake.New()
	fake.SetServiceCapacity(3)
	m := newManager(t, fake)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collector())
	svcs := []*datapathv1alpha1.Service{
		service("10.96.0.10", 80, tcp, clusterIP, "10.0.1.1:8080"),
		withPolicy(service("0.0.0.0", 30080, tcp, nodePort, "10.0.1.1:8080")),
	}
	if _, err := m.Apply(t.Context(), svcs, nil, false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Upsert(t.Context(), service("10.96.0.11", 80, tcp, clusterIP), ""); err == nil {
		t.Fatal("a fourth entry fit a map of 3")
	}
	want := `
# HELP axon_datapath_map_capacity Maximum entries of a load balancer or connection-tracker map.
# TYPE axon_datapath_map_capacity gauge
axon_datapath_map_capacity{map="axon_ct"} 0
axon_datapath_map_capacity{map="axon_lb_services"} 3
# HELP axon_datapath_map_entries Entries in a load balancer or connection-tracker map.
# TYPE axon_datapath_map_entries gauge
axon_datapath_map_entries{map="axon_ct"} 0
axon_datapath_map_entries{map="axon_lb_services"} 3
# HELP axon_datapath_service_errors_total Service programming failures, by reason (map-full, map-write, flow-delete, flow-gc, socket-destroy).
# TYPE axon_datapath_service_errors_total counter
axon_datapath_service_errors_total{reason="flow-delete"} 0
axon_datapath_service_errors_total{reason="flow-gc"} 0
axon_datapath_service_errors_total{reason="map-full"} 1
axon_datapath_service_errors_total{reason="map-write"} 0
axon_datapath_service_errors_total{reason="socket-destroy"} 0
# HELP axon_datapath_services Service frontends programmed on this node.
# TYPE axon_datapath_services gauge
axon_datapath_services 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
