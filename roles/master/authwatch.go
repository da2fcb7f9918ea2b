package master

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haagent/haagent/embed/etcdmember"
)

// authCheckEvery is how often a master checks that etcd's authentication is on. It reads
// the local member's applied state, so a check costs nothing.
const authCheckEvery = time.Second

// AuthStatus is what `haagent status` shows of the auth watchdog.
type AuthStatus struct {
	// Enabled is etcd's authentication as this member sees it now.
	Enabled bool `json:"enabled"`
	// FoundOff counts the times this master found it off and turned it back on.
	FoundOff int `json:"foundOff"`
	// LastFoundOff is when it last did.
	LastFoundOff *time.Time `json:"lastFoundOff,omitempty"`
	// LastError is the last failure to turn it back on; "" once it is on.
	LastError string `json:"lastError,omitempty"`
}

// authWatch keeps etcd's authentication on: whoever turned it off (by hand, or a forged
// raft entry), a master turns it back on within seconds and says so.
type authWatch struct {
	foundOff prometheus.Counter
	enabled  prometheus.Gauge

	mu sync.Mutex // guards the fields below
	st AuthStatus
}

func newAuthWatch() *authWatch {
	return &authWatch{
		foundOff: prometheus.NewCounter(prometheus.CounterOpts{Name: "haagent_etcd_auth_found_disabled_total",
			Help: "Checks at which this master found etcd's authentication off; each turns it back on."}),
		enabled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haagent_etcd_auth_enabled",
			Help: "1 while etcd's authentication is on, as this master's member sees it."}),
	}
}

// Register adds the metrics to reg.
func (a *authWatch) Register(reg prometheus.Registerer) error {
	if err := reg.Register(a.foundOff); err != nil {
		return err
	}
	return reg.Register(a.enabled)
}

func (a *authWatch) status() *AuthStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	return &st
}

// watchAuth checks at every tick that etcd's authentication is on, and when it is off,
// logs it, counts it and runs the [auth] step again, which enables it. It returns nil
// when ctx ends.
func (m *Master) watchAuth(ctx context.Context, policy etcdmember.AuthPolicy, tick <-chan time.Time) error {
	a := m.metrics.auth
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
		on, known := m.member.AuthEnabled()
		if !known {
			continue
		}
		if on {
			a.enabled.Set(1)
			a.mu.Lock()
			a.st.LastError = ""
			a.mu.Unlock()
			continue
		}
		a.enabled.Set(0)
		a.foundOff.Inc()
		now := time.Now()
		m.lg.Error("[auth] etcd authentication was found OFF: every client certificate could read and write everything; turning it back on")
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := etcdmember.EnsureAuth(actx, m.member.Client(), policy, m.lg)
		cancel()
		a.mu.Lock()
		a.st.FoundOff, a.st.LastFoundOff = a.st.FoundOff+1, &now
		if err != nil {
			a.st.LastError = err.Error()
		}
		a.mu.Unlock()
		if err != nil {
			m.lg.Error("[auth] could not turn etcd authentication back on; trying again", "err", err)
			continue
		}
		a.enabled.Set(1)
		m.lg.Warn("[auth] etcd authentication is on again; find out who turned it off (etcd's log names the user of the AuthDisable request)")
	}
}
