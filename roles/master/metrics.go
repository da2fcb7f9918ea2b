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

// newMetrics makes the master's collectors and registers them in reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	ms := &metrics{join: join.NewMetrics(), auth: newAuthWatch()}
	if err := errors.Join(ms.join.Register(reg), ms.auth.Register(reg)); err != nil {
		return nil, err
	}
	return ms, nil
}
