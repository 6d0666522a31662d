package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	"github.com/axon-cni/axon/services/ipam/allocator"
)

// Metrics are axon-ipam's own Prometheus metrics (gRPC metrics come from
// the daemon's interceptors).
type Metrics struct {
	allocations    *prometheus.CounterVec
	allocSecs      prometheus.Histogram
	releases       prometheus.Counter
	gcReleased     prometheus.Counter
	usageRefreshed prometheus.Gauge

	alloc *allocator.Allocator
	usage *usageCollector
}

// NewMetrics registers the metrics on reg, including per-pool and per-node
// usage gauges, which report what RunUsage (or RefreshUsage) last read from
// alloc: nothing until the first refresh.
func NewMetrics(reg prometheus.Registerer, alloc *allocator.Allocator) *Metrics {
	m := &Metrics{
		alloc: alloc,
		usage: &usageCollector{},
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
		usageRefreshed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "axon", Subsystem: "ipam", Name: "usage_refreshed_timestamp_seconds",
			Help: "When the pool and node usage gauges were last read from etcd (Unix time).",
		}),
	}
	reg.MustRegister(m.allocations, m.allocSecs, m.releases, m.gcReleased, m.usageRefreshed, m.usage)
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

// usageCollector reports pool and node usage from the snapshot the last
// refreshUsage took: a scrape never waits for etcd, and while etcd is down
// it reports the last usage known (axon_ipam_dependency_up says etcd is
// down, axon_ipam_usage_refreshed_timestamp_seconds how old the usage is).
type usageCollector struct {
	mu      sync.Mutex
	metrics []prometheus.Metric
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- usageDesc
	ch <- blocksDesc
	ch <- nodeDesc
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	metrics := c.metrics
	c.mu.Unlock()
	for _, m := range metrics {
		ch <- m
	}
}

// RefreshUsage reads pool and node usage from the allocator (etcd) and
// makes it what scrapes report.
func (m *Metrics) RefreshUsage(ctx context.Context) error {
	pools, err := m.alloc.ListPools(ctx)
	if err != nil {
		return fmt.Errorf("pool usage: %w", err)
	}
	nodes, err := m.alloc.UsageByNode(ctx)
	if err != nil {
		return fmt.Errorf("node usage: %w", err)
	}
	var out []prometheus.Metric
	for _, p := range pools {
		for _, u := range p.GetStatus().GetUsage() {
			fam := familyLabel(u.GetFamily())
			for state, v := range map[string]uint64{"capacity": u.GetCapacity(), "allocated": u.GetAllocated(), "held": u.GetHeld()} {
				out = append(out, prometheus.MustNewConstMetric(usageDesc, prometheus.GaugeValue, float64(v), p.GetName(), fam, state))
			}
			for state, v := range map[string]uint64{"claimed": u.GetBlocksClaimed(), "total": u.GetBlocksTotal()} {
				out = append(out, prometheus.MustNewConstMetric(blocksDesc, prometheus.GaugeValue, float64(v), p.GetName(), fam, state))
			}
		}
	}
	for _, u := range nodes {
		out = append(out, prometheus.MustNewConstMetric(nodeDesc, prometheus.GaugeValue, float64(u.Allocated), u.Node, u.Pool, familyLabel(u.Family)))
	}
	m.usage.mu.Lock()
	m.usage.metrics = out
	m.usage.mu.Unlock()
	m.usageRefreshed.SetToCurrentTime()
	return nil
}

// RunUsage refreshes the usage metrics at once and then every interval
// until ctx ends. A refresh that fails (etcd down) leaves the last usage in
// place until one succeeds.
func (m *Metrics) RunUsage(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		// Failures need no log: the etcd health check reports the outage.
		_ = m.RefreshUsage(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
