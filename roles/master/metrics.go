package master

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haagent/haagent/trust/join"
)

// metrics are the master's own collectors, besides those of its recovery parts.
type metrics struct {
	join *join.Metrics
	auth *authWatch
}

// newMetrics makes the master's collectors and registers them in a registry of its
// own, which it returns with the gatherer passed in.
func newMetrics(gatherer prometheus.Gatherer) (*metrics, prometheus.Gatherer, error) {
	ms := &metrics{join: join.NewMetrics(), auth: newAuthWatch()}
	reg := prometheus.NewRegistry()
	if err := errors.Join(ms.join.Register(reg), ms.auth.Register(reg)); err != nil {
		return nil, nil, err
	}
	return ms, prometheus.Gatherers{gatherer, reg}, nil
}
