package vip

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the VIP's Prometheus collectors, all about this host.
type Metrics struct {
	holding   prometheus.Gauge
	since     prometheus.Gauge
	takeovers prometheus.Counter
}

// NewMetrics makes the collectors; Register exposes them.
func NewMetrics() *Metrics {
	return &Metrics{
		holding: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "haagent_vip_holding",
			Help: "1 while this host holds the virtual IP (the address is on its interface), else 0.",
		}),
		since: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "haagent_vip_holding_since_timestamp_seconds",
			Help: "Unix time at which this host took the virtual IP; 0 while it does not hold it.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haagent_vip_takeovers_total",
			Help: "Times this host won the election and added the virtual IP.",
		}),
	}
}

// Register adds the collectors to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	return errors.Join(reg.Register(m.holding), reg.Register(m.since), reg.Register(m.takeovers))
}
