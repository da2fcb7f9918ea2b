package loadbalancer

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the balancer's Prometheus collectors. Every series carries the port and
// the backend's host:port.
type Metrics struct {
	up          *prometheus.GaugeVec
	active      *prometheus.GaugeVec
	total       *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	dial        *prometheus.HistogramVec
	transitions *prometheus.CounterVec
	refused     *prometheus.CounterVec
}

// NewMetrics makes the collectors; Register exposes them.
func NewMetrics() *Metrics {
	labels := []string{"port", "backend"}
	return &Metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haagent_lb_backend_up",
			Help: "1 if the backend is healthy or suspect, 0 if it is down, recovering or unchecked.",
		}, labels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haagent_lb_backend_active_connections",
			Help: "Proxied connections open to the backend.",
		}, labels),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haagent_lb_backend_connections_total",
			Help: "Connections proxied to the backend.",
		}, labels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haagent_lb_backend_bytes_total",
			Help: "Bytes proxied; direction in is client to backend, out is backend to client.",
		}, append(labels, "direction")),
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haagent_lb_backend_dial_duration_seconds",
			Help:    "Time to connect to the backend, successful dials only.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, labels),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haagent_lb_backend_transitions_total",
			Help: "Health state changes of the backend, by the state entered.",
		}, append(labels, "to")),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haagent_lb_refused_connections_total",
			Help: "Client connections closed unserved, by reason (max_conns, no_backend).",
		}, []string{"port", "reason"}),
	}
}

// Register adds the collectors to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.up, m.active, m.total, m.bytes, m.dial, m.transitions, m.refused} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Metrics) forBackend(port int, addr string) backendMetrics {
	p := strconv.Itoa(port)
	return backendMetrics{
		up:          m.up.WithLabelValues(p, addr),
		active:      m.active.WithLabelValues(p, addr),
		total:       m.total.WithLabelValues(p, addr),
		bytesIn:     m.bytes.WithLabelValues(p, addr, "in"),
		bytesOut:    m.bytes.WithLabelValues(p, addr, "out"),
		dial:        m.dial.WithLabelValues(p, addr),
		transitions: m.transitions.MustCurryWith(prometheus.Labels{"port": p, "backend": addr}),
	}
}
