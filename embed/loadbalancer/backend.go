package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State is a backend's health as the balancer sees it. States are ordered by
// preference: a higher state is picked before a lower one.
type State int

const (
	// StateDown: Fall failures in a row (or a failure before any success). Picked only
	// when no better backend is left, because health may lag behind reality.
	StateDown State = iota
	// StateUnknown: not checked yet. Its first passed check makes it healthy at once
	// (Rise is for coming back from down), its first failure down.
	StateUnknown
	// StateRecovering: down, then fewer than Rise successes in a row.
	StateRecovering
	// StateSuspect: healthy, then fewer than Fall failures in a row. It still counts as
	// up for readiness, but healthy backends are picked first.
	StateSuspect
	// StateHealthy: passing its checks.
	StateHealthy
)

var stateNames = [...]string{"down", "unknown", "recovering", "suspect", "healthy"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
	return stateNames[s]
}

// MarshalText makes a State read as its name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a State's name, so that status documents round-trip.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown backend state %q", b)
}

// Up reports whether the backend counts as serving: healthy or merely suspect.
func (s State) Up() bool { return s >= StateSuspect }

// Health is the result of one check.
type Health int

const (
	// HealthUnknown: no fresh result (the check was cancelled, or failed for a reason
	// on this host such as running out of file descriptors). It changes nothing.
	HealthUnknown Health = iota
	// HealthOK: the backend passed.
	HealthOK
	// HealthFailed: the backend failed; the error says why.
	HealthFailed
)

func (h Health) String() string {
	switch h {
	case HealthOK:
		return "ok"
	case HealthFailed:
		return "failed"
	}
	return "unknown"
}

// ErrUnreachable marks a failure to open a TCP connection at all (refused, timed out,
// no route), as opposed to a backend that answers but is not ready. Among down
// backends, reachable ones are tried first: an etcd member without a leader still
// beats a blackholed host.
var ErrUnreachable = errors.New("unreachable")

// backend is one host:port behind one port of the balancer.
type backend struct {
	addr string
	port int
	pool *pool // its siblings; nil in unit tests of one backend
	cfg  *Config
	lg   *slog.Logger
	met  backendMetrics

	mu sync.Mutex // guards the fields below
	// state only changes in recordSuccess and recordFailure.
	state       State
	unreachable bool // the last failure was ErrUnreachable
	rises       int  // successes in a row while down or recovering
	falls       int  // failures in a row while healthy or suspect
	lastErr     string
	since       time.Time // when state last changed
	total       uint64
	evictions   uint64 // times evict closed its connections
	conns       map[*proxyConn]struct{}
	closed      bool // the balancer is stopping: track refuses new conns
}

func newBackend(addr string, port int, cfg *Config, met *Metrics) *backend {
	be := &backend{
		addr:  addr,
		port:  port,
		cfg:   cfg,
		lg:    cfg.Logger,
		met:   met.forBackend(port, addr),
		state: StateUnknown,
		since: cfg.Now(),
		conns: map[*proxyConn]struct{}{},
	}
	be.met.up.Set(0)
	return be
}

// recordSuccess counts a passed check. A backend becoming healthy gives the
// connections parked on down siblings somewhere better to go, but the round of
// checks decides that once all its results are in (see Balancer.checkRound): a
// sibling whose check passes a moment later in the same round is no worse.
func (be *backend) recordSuccess() {
	be.mu.Lock()
	be.falls = 0
	be.unreachable = false
	next := be.state
	switch be.state {
	case StateUnknown, StateSuspect:
		next = StateHealthy
	case StateDown, StateRecovering:
		be.rises++
		next = StateRecovering
		if be.rises >= be.cfg.Rise {
			next = StateHealthy
		}
	}
	be.setStateLocked(next, "check passed")
	be.mu.Unlock()
}

// recordFailure counts a failed check or dial. A backend that goes down unreachable
// (or, being down, becomes unreachable) has its connections closed at once: they are
// most likely dead already. One that goes down but still connects (an etcd member
// without a leader) is left to the end of the round of checks, which knows whether
// any sibling is healthy; see evict.
func (be *backend) recordFailure(reason error) {
	be.mu.Lock()
	wasUnreachable := be.unreachable
	be.lastErr = reason.Error()
	be.unreachable = errors.Is(reason, ErrUnreachable)
	be.rises = 0
	next := be.state
	switch be.state {
	case StateUnknown, StateRecovering:
		next = StateDown
	case StateHealthy, StateSuspect:
		be.falls++
		next = StateSuspect
		if be.falls >= be.cfg.Fall {
			next = StateDown
		}
	}
	wentDown := next == StateDown && be.unreachable && (be.state != StateDown || !wasUnreachable)
	be.setStateLocked(next, be.lastErr)
	be.mu.Unlock()
	if wentDown && be.pool != nil {
		be.pool.evict()
	}
}

// evict closes, outside the locks, the connections of every down backend in the
// pool whose clients have somewhere better to go: so that long-lived clients (gRPC
// streams, watches) reconnect at once rather than wait for their own timeouts. That
// is always so for an unreachable backend, whose connections are most likely dead
// already; for a backend that answers but fails its check (every etcd member while
// there is no leader, every apiserver while etcd has no quorum) only when another
// backend of the port is healthy, since closing would just send the clients to a
// backend no better than the one they had, and only once it has been down for the
// port's DrainAfter. (Suspect does not count: in a round where every backend fails,
// some are still suspect when the first goes down.)
func (p *pool) evict() {
	anyHealthy := false
	backends := p.list()
	for _, be := range backends {
		if be.snapshot().state == StateHealthy {
			anyHealthy = true
			break
		}
	}
	for _, be := range backends {
		be.mu.Lock()
		var doomed []*proxyConn
		drained := anyHealthy && be.cfg.Now().Sub(be.since) >= p.drainAfter
		if be.state == StateDown && (be.unreachable || drained) && len(be.conns) > 0 {
			be.evictions++
			doomed = be.connsLocked()
			for _, c := range doomed {
				be.untrackLocked(c)
			}
		}
		be.mu.Unlock()
		if len(doomed) > 0 {
			be.lg.Info(fmt.Sprintf("%s is down: closing its %d connections", be.addr, len(doomed)), "port", be.port)
		}
		for _, c := range doomed {
			c.close()
		}
	}
}

// setStateLocked moves to next, logging and counting the transition once. It is
// logged under the lock so that the log shows transitions in their true order.
func (be *backend) setStateLocked(next State, reason string) {
	if next == be.state {
		return
	}
	prev := be.state
	be.state = next
	be.since = be.cfg.Now()
	if next == StateHealthy {
		be.rises = 0
	}
	up := 0.0
	if next.Up() {
		up = 1
	}
	be.met.up.Set(up)
	be.met.transitions.WithLabelValues(next.String()).Inc()
	level := slog.LevelInfo
	if next < prev && next <= StateSuspect {
		level = slog.LevelWarn
	}
	be.lg.Log(context.Background(), level, fmt.Sprintf("%s %s->%s (%s)", be.addr, prev, next, reason), "port", be.port)
}

func (be *backend) connsLocked() []*proxyConn {
	cs := make([]*proxyConn, 0, len(be.conns))
	for c := range be.conns {
		cs = append(cs, c)
	}
	return cs
}

// track adds a proxied connection dialed from snap. It returns false if the
// backend's connections were evicted since snap was taken (this one must not outlive
// them) or the balancer is stopping.
func (be *backend) track(c *proxyConn, snap snapshot) bool {
	be.mu.Lock()
	defer be.mu.Unlock()
	if be.closed || be.evictions != snap.evictions {
		return false
	}
	be.conns[c] = struct{}{}
	be.total++
	be.met.active.Inc()
	be.met.total.Inc()
	return true
}

func (be *backend) untrack(c *proxyConn) {
	be.mu.Lock()
	defer be.mu.Unlock()
	be.untrackLocked(c)
}

func (be *backend) untrackLocked(c *proxyConn) {
	if _, ok := be.conns[c]; ok {
		delete(be.conns, c)
		be.met.active.Dec()
	}
}

// closeAll refuses new connections and closes the tracked ones.
func (be *backend) closeAll() {
	be.mu.Lock()
	be.closed = true
	doomed := be.connsLocked()
	be.mu.Unlock()
	for _, c := range doomed {
		c.close()
	}
}

// snapshot is a backend's state at one moment, for picking and for status.
type snapshot struct {
	be          *backend
	state       State
	unreachable bool
	active      int
	evictions   uint64
}

func (be *backend) snapshot() snapshot {
	be.mu.Lock()
	defer be.mu.Unlock()
	return snapshot{be: be, state: be.state, unreachable: be.unreachable, active: len(be.conns), evictions: be.evictions}
}

// rank orders candidates: the state first, then, within a state, backends whose last
// failure was a check or dial that could not connect below those that could. Among
// down backends that puts an etcd member without a leader (it will serve once there
// is one) before a blackholed host; among suspect ones, when a round of checks has
// just failed everywhere (the leader is gone and every member's check hangs), it keeps
// a new connection from being dialled to the one host that no longer connects.
func (s snapshot) rank() int {
	r := 2 * int(s.state)
	if s.reachable() {
		r++
	}
	return r
}

// reachable is false when the backend's last failure was ErrUnreachable.
func (s snapshot) reachable() bool { return !s.unreachable }

// BackendStatus is one backend of one port, as /status reports it.
type BackendStatus struct {
	Port    int    `json:"port"`
	Address string `json:"address"`
	State   State  `json:"state"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
	// Active is the number of proxied connections open now; Total counts all since start.
	Active    int    `json:"active"`
	Total     uint64 `json:"total"`
	LastError string `json:"lastError,omitempty"`
}

func (be *backend) status() BackendStatus {
	be.mu.Lock()
	defer be.mu.Unlock()
	return BackendStatus{
		Port: be.port, Address: be.addr, State: be.state, Since: be.since,
		Active: len(be.conns), Total: be.total, LastError: be.lastErr,
	}
}

// proxyConn is a client connection and its backend connection.
type proxyConn struct {
	client, server *net.TCPConn
	once           sync.Once
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		c.client.Close()
		c.server.Close()
	})
}

// backendMetrics are a backend's metrics with the port and backend labels applied.
type backendMetrics struct {
	up, active  prometheus.Gauge
	total       prometheus.Counter
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	dial        prometheus.Observer
	transitions *prometheus.CounterVec // by "to"
}
