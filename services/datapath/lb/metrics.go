package lb

import "github.com/prometheus/client_golang/prometheus"

// Reasons of axon_datapath_service_errors_total.
const (
	// reasonMapFull: a batch refused, or rolled back, because the service
	// map was full.
	reasonMapFull = "map-full"
	// reasonMapWrite: a batch rolled back after another map error.
	reasonMapWrite = "map-write"
	// reasonFlowDelete: UDP flows of removed backends could not be cleared.
	reasonFlowDelete = "flow-delete"
	// reasonFlowGC: a round of idle-flow expiry failed.
	reasonFlowGC = "flow-gc"
	// reasonSocketDestroy: the node's UDP sockets connected to removed
	// backends could not all be destroyed.
	reasonSocketDestroy = "socket-destroy"
)

var (
	servicesDesc = prometheus.NewDesc("axon_datapath_services",
		"Service frontends programmed on this node.", nil, nil)
	mapEntriesDesc = prometheus.NewDesc("axon_datapath_map_entries",
		"Entries in a load balancer or connection-tracker map.", []string{"map"}, nil)
	mapCapacityDesc = prometheus.NewDesc("axon_datapath_map_capacity",
		"Maximum entries of a load balancer or connection-tracker map.", []string{"map"}, nil)
)

// metrics are the Manager's own counters.
type metrics struct {
	errors *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "axon_datapath_service_errors_total",
		Help: "Service programming failures, by reason (map-full, map-write, flow-delete, flow-gc, socket-destroy).",
	}, []string{"reason"})}
	for _, r := range []string{reasonMapFull, reasonMapWrite, reasonFlowDelete, reasonFlowGC, reasonSocketDestroy} {
		m.errors.WithLabelValues(r) // every reason shows, at 0
	}
	return m
}

// collector reads the service count and the maps' fill level at scrape
// time.
type collector struct {
	m *Manager
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- servicesDesc
	ch <- mapEntriesDesc
	ch <- mapCapacityDesc
	c.m.metrics.errors.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(servicesDesc, prometheus.GaugeValue, float64(c.m.Count()))
	c.m.metrics.errors.Collect(ch)
	if c.m.maps == nil {
		return
	}
	if usage, err := c.m.maps.Usage(); err == nil {
		for _, u := range usage {
			ch <- prometheus.MustNewConstMetric(mapEntriesDesc, prometheus.GaugeValue, float64(u.Entries), u.Name)
			ch <- prometheus.MustNewConstMetric(mapCapacityDesc, prometheus.GaugeValue, float64(u.Capacity), u.Name)
		}
	}
}
