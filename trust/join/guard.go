package join

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// What keeps the join service answering legitimate nodes while others misbehave:
// bounded requests and times, a throttle that only ever slows down refused requests,
// and a count of every refusal by reason.
//
// The throttle is keyed by source address, which behind the lb is the lb's for every
// node. So that nobody can lock the others out through it, a request's credential is
// checked before the throttle is consulted, and a request that proves what it asks for
// is never throttled: only the answer to a refused request turns into 429 once its
// source has used up its budget. Guessing a token online is out of reach anyway (the
// flags refuse secrets under 128 bits); the throttle bounds the work and the log lines
// that bad requests cost.
const (
	// maxHeaderBytes bounds a request's header: a join sends a bearer token and a few
	// short headers (net/http allows 4 KiB more before answering 431).
	maxHeaderBytes = 8 << 10
	// readHeaderTimeout bounds the TLS handshake and the header.
	readHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds the whole request, body included: a join body is at most
	// maxRequestBytes, which any node sends in well under a second.
	DefaultReadTimeout = 10 * time.Second
	// writeTimeout bounds the answer, which waits for the name binding in etcd (5 s).
	writeTimeout = 30 * time.Second
	// idleTimeout closes a kept-alive connection that sends nothing more.
	idleTimeout = 30 * time.Second
	// maxTrackedSources bounds the throttle's memory: past it, sources with no recent
	// refusal are forgotten first, then the table starts over.
	maxTrackedSources = 4096
)

// Reasons a request is refused, the label of haagent_join_refused_total.
const (
	// ReasonMalformed is a body that is not a valid join request (400).
	ReasonMalformed = "malformed"
	// ReasonTooLarge is a body over maxRequestBytes (413).
	ReasonTooLarge = "too-large"
	// ReasonSlowBody is a body that did not arrive within the read timeout (408).
	ReasonSlowBody = "slow-body"
	// ReasonWrongToken is a missing, wrong or rotated token (403).
	ReasonWrongToken = "wrong-token"
	// ReasonNotAllowed is a valid credential asking for more than it allows (403).
	ReasonNotAllowed = "not-allowed"
	// ReasonNameTaken is a name bound to another node's secret (403).
	ReasonNameTaken = "name-taken"
	// ReasonThrottled is a refused request from a source over its budget (429).
	ReasonThrottled = "throttled"
	// ReasonUnavailable is a master not ready to decide yet (503).
	ReasonUnavailable = "unavailable"
	// ReasonIssueFailed is a failure to sign the node's files (500).
	ReasonIssueFailed = "issue-failed"
	// ReasonIncomplete is a connection that sent bytes but never a whole request: a
	// failed TLS handshake, a header too large or too slow. A connection that sends
	// nothing (the lb's TCP health check) is not counted.
	ReasonIncomplete = "incomplete"
)

var reasons = []string{ReasonMalformed, ReasonTooLarge, ReasonSlowBody, ReasonWrongToken, ReasonNotAllowed,
	ReasonNameTaken, ReasonThrottled, ReasonUnavailable, ReasonIssueFailed, ReasonIncomplete}

// Metrics counts what the join service answers.
type Metrics struct {
	refused *prometheus.CounterVec // by reason
	issued  *prometheus.CounterVec // by via
}

// NewMetrics makes the join service's metrics; Register adds them to a registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "haagent_join_refused_total",
			Help: "Join requests (and connections that never made one) refused by this master's join service, by reason."}, []string{"reason"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "haagent_join_issued_total",
			Help: "Joins this master's join service answered with certificates, by what proved the request."}, []string{"via"}),
	}
	for _, r := range reasons {
		m.refused.WithLabelValues(r) // every reason shows, at 0, from the start
	}
	return m
}

// Register adds the metrics to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	if err := reg.Register(m.refused); err != nil {
		return err
	}
	return reg.Register(m.issued)
}

// throttle counts refused requests per source over a window.
type throttle struct {
	budget int
	window time.Duration

	mu       sync.Mutex // guards the fields below
	failures map[string][]time.Time
}

// recentLocked keeps src's refusals within the window.
func (t *throttle) recentLocked(src string, now time.Time) []time.Time {
	var kept []time.Time
	for _, at := range t.failures[src] {
		if now.Sub(at) < t.window {
			kept = append(kept, at)
		}
	}
	return kept
}

// refused records one refusal of src, and says whether src was already over its
// budget (the answer becomes 429) and whether this refusal put it there (logged once).
func (t *throttle) refused(src string, now time.Time) (throttled, crossed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kept := t.recentLocked(src, now)
	if len(kept) >= t.budget {
		t.failures[src] = kept
		return true, false
	}
	if _, known := t.failures[src]; !known && len(t.failures) >= maxTrackedSources {
		t.sweepLocked(now)
	}
	t.failures[src] = append(kept, now)
	return false, len(kept)+1 == t.budget
}

// sweepLocked forgets the sources with no refusal in the window, and everything when
// that is not enough: a flood from many addresses must not grow the table for ever.
func (t *throttle) sweepLocked(now time.Time) {
	for src := range t.failures {
		if len(t.recentLocked(src, now)) == 0 {
			delete(t.failures, src)
		}
	}
	if len(t.failures) >= maxTrackedSources {
		clear(t.failures)
	}
}

// countingListener marks each connection with whether it sent any bytes and whether a
// request reached the handler, so that a connection that sent bytes and never a whole
// request is counted as ReasonIncomplete when it closes.
type countingListener struct{ net.Listener }

type countingConn struct {
	net.Conn
	read   atomic.Bool
	served atomic.Bool
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c}, nil
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

type connKey struct{}

// countingOf finds the countingConn under the TLS connection net/http hands out.
func countingOf(c net.Conn) *countingConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*countingConn)
	return cc
}

// guard sets the limits on srv and counts the connections that never made a request.
func (s *Server) guard(srv *http.Server) {
	srv.ReadHeaderTimeout = readHeaderTimeout
	srv.ReadTimeout = s.cfg.ReadTimeout
	srv.WriteTimeout = writeTimeout
	srv.IdleTimeout = idleTimeout
	srv.MaxHeaderBytes = maxHeaderBytes
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, countingOf(c))
	}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if st != http.StateClosed {
			return
		}
		if cc := countingOf(c); cc != nil && cc.read.Load() && !cc.served.Load() {
			s.metrics.refused.WithLabelValues(ReasonIncomplete).Inc()
		}
	}
	next := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cc, _ := r.Context().Value(connKey{}).(*countingConn); cc != nil {
			cc.served.Store(true)
		}
		next.ServeHTTP(w, r)
	})
}
