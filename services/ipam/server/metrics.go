package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/allocator"
)

// Metrics are axon-ipam's own Prometheus metrics (gRPC metrics come from
// the daemon's interceptors).
type Metrics struct {
	allocations *prometheus.CounterVec
	allocSecs   prometheus.Histogram
	releases    prometheus.Counter
	gcReleased  prometheus.Counter
}

// NewMetrics registers the metrics on reg, including per-pool usage gauges
// read from alloc at scrape time.
func NewMetrics(reg prometheus.Registerer, alloc *allocator.Allocator) *Metrics {
	m := &Metrics{
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "axon", Subsystem: "ipam", Name: "allocations_total",
			Help: "AllocateIP calls by result (the gRPC code name).",
		}, []string{"result"}),
		allocSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "axon", Subsystem: "ipam", Name: "allocation_duration_seconds",
			Help:    "Time to serve AllocateIP, including transaction retries.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "axon", Subsystem: "ipam", Name: "releases_total",
			Help: "Allocations released by ReleaseIP.",
		}),
		gcReleased: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "axon", Subsystem: "ipam", Name: "gc_released_total",
			Help: "Allocations released by GarbageCollect.",
		}),
	}
	reg.MustRegister(m.allocations, m.allocSecs, m.releases, m.gcReleased, &usageCollector{alloc: alloc})
	return m
}

func (m *Metrics) observeAllocate(err error, d time.Duration) {
	m.allocations.WithLabelValues(codeOf.Code(err).String()).Inc()
	m.allocSecs.Observe(d.Seconds())
}

var (
	usageDesc = prometheus.NewDesc("axon_ipam_pool_addresses",
		"Addresses of a pool by family and state (capacity, allocated, held).",
		[]string{"pool", "family", "state"}, nil)
	blocksDesc = prometheus.NewDesc("axon_ipam_pool_blocks",
		"Blocks of a pool by family and state (claimed, total).",
		[]string{"pool", "family", "state"}, nil)
	nodeDesc = prometheus.NewDesc("axon_ipam_node_allocated_addresses",
		"Pod addresses allocated on a node, by pool and family.",
		[]string{"node", "pool", "family"}, nil)
)

func familyLabel(f commonv1alpha1.IPFamily) string {
	if f == commonv1alpha1.IPFamily_IP_FAMILY_IPV6 {
		return "ipv6"
	}
	return "ipv4"
}

// usageCollector reads pool usage from etcd when Prometheus scrapes.
type usageCollector struct{ alloc *allocator.Allocator }

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- usageDesc
	ch <- blocksDesc
	ch <- nodeDesc
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pools, err := c.alloc.ListPools(ctx)
	if err != nil {
		return // etcd is down: the dependency_up gauge already says so
	}
	for _, p := range pools {
		for _, u := range p.GetStatus().GetUsage() {
			fam := familyLabel(u.GetFamily())
			for state, v := range map[string]uint64{"capacity": u.GetCapacity(), "allocated": u.GetAllocated(), "held": u.GetHeld()} {
				ch <- prometheus.MustNewConstMetric(usageDesc, prometheus.GaugeValue, float64(v), p.GetName(), fam, state)
			}
			for state, v := range map[string]uint64{"claimed": u.GetBlocksClaimed(), "total": u.GetBlocksTotal()} {
				ch <- prometheus.MustNewConstMetric(blocksDesc, prometheus.GaugeValue, float64(v), p.GetName(), fam, state)
			}
		}
	}
	nodes, err := c.alloc.UsageByNode(ctx)
	if err != nil {
		return
	}
	for _, u := range nodes {
		ch <- prometheus.MustNewConstMetric(nodeDesc, prometheus.GaugeValue, float64(u.Allocated), u.Node, u.Pool, familyLabel(u.Family))
	}
}
