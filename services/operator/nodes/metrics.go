package nodes

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the node controller's Prometheus metrics.
type Metrics struct {
	reconciles *prometheus.CounterVec
}

// NewMetrics registers the node controller's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "axon", Subsystem: "operator", Name: "node_reconciles_total",
			Help: "Nodes reconciled with IPAM, by operation (register, delete) and result (ok, error).",
		}, []string{"op", "result"}),
	}
	reg.MustRegister(m.reconciles)
	return m
}

// observe counts one reconcile; a nil m counts nothing.
func (m *Metrics) observe(op string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reconciles.WithLabelValues(op, result).Inc()
}
