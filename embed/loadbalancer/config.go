package loadbalancer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Defaults for Config. They are sized so that a master that vanishes without a RST
// (a blackhole: power loss, a pulled cable, a dropped route) stops receiving traffic
// well within 1.5 s, which is about the time etcd itself needs to elect a new leader:
//
//   - A round of checks starts at most CheckInterval (250 ms) after the fault. It fails
//     after CheckTimeout (300 ms): the backend is now suspect and new connections
//     already prefer the others. Rounds wait for their slowest check, so the next round
//     starts at once and fails 300 ms later: with Fall 2 the backend is down, and its
//     proxied connections are closed so that clients reconnect through a live master.
//     Worst case 250+300+300 = 850 ms; a killed process (RST) is seen by the first
//     failing check or dial, in a few milliseconds.
//   - A new connection that meets the blackhole first waits at most CheckTimeout for
//     the connect while a backend is left to try that is not known to be unreachable
//     (healthy, or failing its check while it still connects, like an etcd member
//     waiting for a leader), then goes on to it; the failed dial counts as a failed
//     check, so later connections skip the backend. Without such an alternative the
//     connect gets the full DialTimeout (1 s): nothing better is left to try, and a
//     LAN connect that takes longer has failed.
//   - A backend that accepts a new connection and closes it before answering (the
//     kernel of a master whose process was just killed) does not cost the client its
//     connection: the lb moves it to the next backend (see Balancer.open).
//   - 300 ms is 100x a LAN round trip; a master that can't answer /readyz or /health
//     within it twice in a row is no place to send new work. Fall 2 and Rise 2 keep a
//     single lost packet from moving traffic back and forth.
//   - Six backends (3 masters × 2 ports) at 4 checks a second is 24 light requests a
//     second spread over three hosts.
const (
	DefaultListenAddress = "0.0.0.0"
	DefaultCheckInterval = 250 * time.Millisecond
	DefaultCheckTimeout  = 300 * time.Millisecond
	DefaultFall          = 2
	DefaultRise          = 2
	DefaultDialTimeout   = 1 * time.Second
	// DefaultAPIServerDrainAfter is how long an apiserver that still connects but
	// fails /readyz keeps its connections while another is healthy (see
	// Config.DrainAfter): longer than etcd's election plus Rise rounds, so that an
	// election, or a /readyz slowed by load, cuts no watch, exec or log stream.
	DefaultAPIServerDrainAfter = 5 * time.Second
	DefaultMaxConns            = 10000
	DefaultPolicy              = PolicyFailover
)

// Well-known ports whose default check is more than a TCP connect.
const (
	PortAPIServer  = 6443
	PortEtcdClient = 2379
)

// TLSFunc gives the client TLS config to dial host (an IP or a DNS name, without the
// port) with. The checks call it at every dial, so that what it reads, like the CAs it
// trusts, may change between checks; a config without ServerName gets host.
type TLSFunc func(host string) (*tls.Config, error)

// Policy says which healthy backend a new connection goes to.
type Policy string

const (
	// PolicyFailover sends every new connection to the first healthy backend in the
	// configured order; when an earlier backend recovers, new connections go back to
	// it while existing ones stay where they are.
	PolicyFailover Policy = "failover"
	// PolicyLeastConn sends each new connection to the healthy backend with the fewest
	// active connections, ties broken by the configured order.
	PolicyLeastConn Policy = "least-conn"
)

// Policies lists the valid policies.
var Policies = []Policy{PolicyFailover, PolicyLeastConn}

// CheckKind names a health check.
type CheckKind string

const (
	// CheckTCP passes when a TCP connect succeeds.
	CheckTCP CheckKind = "tcp"
	// CheckAPIServer passes when HTTPS GET /readyz answers 200.
	CheckAPIServer CheckKind = "apiserver"
	// CheckEtcd passes when GET /health answers 200 with {"health":"true"}.
	CheckEtcd CheckKind = "etcd"
)

// DefaultCheckKind is the check used for a port that Config.Checks does not name:
// apiserver for 6443, etcd for 2379, tcp for anything else.
func DefaultCheckKind(port int) CheckKind {
	switch port {
	case PortAPIServer:
		return CheckAPIServer
	case PortEtcdClient:
		return CheckEtcd
	}
	return CheckTCP
}

// Config describes a Balancer. Zero durations and counts mean the Default* values.
type Config struct {
	// ListenAddress is the IP every port binds to.
	ListenAddress string
	// Ports are the ports to balance; each listens on ListenAddress:port and forwards
	// to host:port on every backend.
	Ports []int
	// Backends are the backend hosts (IPs or names), primary first.
	Backends []string
	// Policy picks among healthy backends.
	Policy Policy
	// CheckInterval is the time between the starts of two rounds of health checks.
	// A round that takes longer delays the next one; rounds never overlap.
	CheckInterval time.Duration
	// CheckTimeout bounds each health check, connect included.
	CheckTimeout time.Duration
	// Fall is how many failures in a row take a healthy backend down.
	Fall int
	// Rise is how many successes in a row bring a down backend back.
	Rise int
	// DialTimeout bounds the connect to a backend; while a candidate not known to be
	// unreachable is left to try after this one, the connect gets only
	// min(DialTimeout, CheckTimeout). It also bounds the wait for a new connection's
	// first answer while the client's first bytes can still be replayed elsewhere.
	DialTimeout time.Duration
	// MaxConns caps the client connections held at once, over all ports; past it new
	// clients are closed at once.
	MaxConns int

	// Checks chooses the check per port; a port not listed gets DefaultCheckKind.
	Checks map[int]CheckKind
	// Checkers overrides the check per port with any Checker (tests, custom checks).
	Checkers map[int]Checker
	// DrainAfter is, per port, how long a down backend that still connects (it fails
	// its check, but not for want of a TCP connection) keeps its connections while
	// another backend of the port is healthy; past it they are closed, so that clients
	// move. An unreachable backend loses them at once. A port not listed gets
	// DefaultAPIServerDrainAfter when its check is the apiserver's, else 0: an
	// apiserver that fails /readyz because etcd is electing, or is slow under load,
	// still serves watches from its cache and streams exec, logs and port-forward from
	// the kubelets, while an etcd member without a leader serves nothing.
	DrainAfter map[int]time.Duration
	// APIServerTLS gives the configs that verify the apiservers' serving certs in the
	// apiserver check. Nil
	// skips verification: the check then only asks whether the apiserver is ready,
	// and clients still verify the cert themselves through the TCP pass-through.
	APIServerTLS TLSFunc
	// EtcdTLS, if set, makes the etcd check use https with the configs it gives (client
	// cert included); nil means plain http.
	EtcdTLS TLSFunc

	// ListenAddrs overrides ListenAddress:port for a port with any host:port, for
	// example "127.0.0.1:0" in tests. Addr reports what was bound.
	ListenAddrs map[int]string
	// BackendAddrs overrides the backends of a port with explicit host:port addresses,
	// in preference order (tests, masters on other ports).
	BackendAddrs map[int][]string

	// Logger receives state transitions and rate-limited warnings; nil discards.
	Logger *slog.Logger
	// Metrics receives the balancer's metrics; nil makes an unregistered set.
	Metrics *Metrics
	// NewTicker makes the health-check ticker; nil means time.NewTicker. Tests step it.
	NewTicker func(d time.Duration) Ticker
	// Now is the clock for timestamps and log rate limits; nil means time.Now.
	Now func() time.Time
	// Dialer dials backends, for proxying and for the tcp check; nil means a
	// net.Dialer with its defaults (15 s keep-alive).
	Dialer *net.Dialer
}

// Ticker is the part of *time.Ticker the health loop uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

type timeTicker struct{ *time.Ticker }

func (t timeTicker) C() <-chan time.Time { return t.Ticker.C }

func newTimeTicker(d time.Duration) Ticker { return timeTicker{time.NewTicker(d)} }

// withDefaults returns a copy of c with zero values replaced by the defaults.
func (c Config) withDefaults() Config {
	if c.ListenAddress == "" {
		c.ListenAddress = DefaultListenAddress
	}
	if c.Policy == "" {
		c.Policy = DefaultPolicy
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = DefaultCheckTimeout
	}
	if c.Fall == 0 {
		c.Fall = DefaultFall
	}
	if c.Rise == 0 {
		c.Rise = DefaultRise
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	drain := make(map[int]time.Duration, len(c.Ports))
	for _, p := range c.Ports {
		d, ok := c.DrainAfter[p]
		if !ok && c.Checkers[p] == nil {
			if k, set := c.Checks[p]; (set && k == CheckAPIServer) || (!set && DefaultCheckKind(p) == CheckAPIServer) {
				d = DefaultAPIServerDrainAfter
			}
		}
		drain[p] = d
	}
	c.DrainAfter = drain
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics()
	}
	if c.NewTicker == nil {
		c.NewTicker = newTimeTicker
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	return c
}

// validate reports every problem of a defaulted config at once.
func (c *Config) validate() error {
	var errs []error
	if len(c.Ports) == 0 {
		errs = append(errs, errors.New("no ports"))
	}
	seen := map[int]bool{}
	for _, p := range c.Ports {
		if p < 0 || p > 65535 || (p == 0 && c.ListenAddrs[p] == "") {
			errs = append(errs, fmt.Errorf("port %d is not in 1-65535", p))
		}
		if seen[p] {
			errs = append(errs, fmt.Errorf("port %d is listed twice", p))
		}
		seen[p] = true
		if len(c.BackendAddrs[p]) == 0 && len(c.Backends) == 0 {
			errs = append(errs, fmt.Errorf("port %d has no backends", p))
		}
		for _, a := range c.BackendAddrs[p] {
			if _, _, err := net.SplitHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("port %d: backend %q is not host:port", p, a))
			}
		}
		if k, ok := c.Checks[p]; ok && k != CheckTCP && k != CheckAPIServer && k != CheckEtcd {
			errs = append(errs, fmt.Errorf("port %d: unknown check %q", p, k))
		}
	}
	for _, h := range c.Backends {
		if h == "" {
			errs = append(errs, errors.New("empty backend host"))
		}
	}
	if c.Policy != PolicyFailover && c.Policy != PolicyLeastConn {
		errs = append(errs, fmt.Errorf("unknown policy %q", c.Policy))
	}
	for p, d := range c.DrainAfter {
		if d < 0 {
			errs = append(errs, fmt.Errorf("port %d: negative drain time %s", p, d))
		}
	}
	if c.CheckInterval < 0 || c.CheckTimeout < 0 || c.DialTimeout < 0 {
		errs = append(errs, errors.New("negative interval or timeout"))
	}
	if c.Fall < 1 || c.Rise < 1 {
		errs = append(errs, fmt.Errorf("fall %d and rise %d must be at least 1", c.Fall, c.Rise))
	}
	if c.MaxConns < 1 {
		errs = append(errs, fmt.Errorf("max conns %d must be at least 1", c.MaxConns))
	}
	return errors.Join(errs...)
}
