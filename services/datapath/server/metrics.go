package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// StatsSource reads the eBPF packet counters.
type StatsSource interface {
	Stats() (map[string]uint64, error)
}

var (
	packetsDesc = prometheus.NewDesc("axon_datapath_packets_total",
		"Packets the eBPF programs handled, by outcome (forwarded-local, forwarded-tunnel, to-host, drop-*, ...).",
		[]string{"outcome"}, nil)
	endpointsDesc = prometheus.NewDesc("axon_datapath_endpoints",
		"Pod endpoints wired on this node.", nil, nil)
	peersDesc = prometheus.NewDesc("axon_datapath_peer_reachable",
		"Whether a peer node's health address answered the last probe through the pod network (1) or not (0).",
		[]string{"peer"}, nil)
)

// collector exposes the node's counters, endpoints and peer health at
// scrape time.
type collector struct {
	stats StatsSource
	node  Node
}

// RegisterMetrics registers the datapath's metrics on reg.
func RegisterMetrics(reg prometheus.Registerer, stats StatsSource, node Node) {
	reg.MustRegister(&collector{stats: stats, node: node})
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- endpointsDesc
	ch <- peersDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if s, err := c.stats.Stats(); err == nil {
		for outcome, n := range s {
			ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(n), outcome)
		}
	}
	st := c.node.NodeStatus()
	ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(st.GetEndpointCount()))
	for _, p := range st.GetPeers() {
		v := 0.0
		if p.GetHealthEndpointReachable() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, v, p.GetNodeName())
	}
}
