// Package loadbalancer is a health-checked TCP load balancer for the masters' ports:
// it proxies each client connection at L4 to the best backend, checks every backend
// several times a second, and closes the connections of a backend that goes down, when
// there is a better one, so that long-lived clients (etcd gRPC streams, Kubernetes
// watches) reconnect at once: those of a backend that no longer connects at once, those
// of one that connects but fails its check after the port's DrainAfter (an apiserver
// failing /readyz while etcd elects still serves its streams). The lb role (package
// roles/lb) runs it.
package loadbalancer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// halfCloseTimeout bounds how long a connection may stay open after one side has
// finished sending, in case the other side never does.
const halfCloseTimeout = time.Minute

// copyChunk is how many bytes one io.CopyN (a run of splice calls) may move before
// the byte counters are updated; it bounds how far the bytes metric lags.
const copyChunk = 64 << 10

// warnEvery rate-limits the warnings that would otherwise come once per connection.
const warnEvery = 10 * time.Second

// Balancer balances the configured ports over the backends.
type Balancer struct {
	cfg     Config
	lg      *slog.Logger
	met     *Metrics
	pools   []*pool
	started atomic.Bool
	conns   atomic.Int64 // client connections being handled, for MaxConns

	serving     chan struct{} // closed once listening and the first check round is done
	servingOnce sync.Once

	mu    sync.Mutex // guards the fields below
	addrs map[int]net.Addr
	warns map[string]*warnState
}

// pool is one balanced port.
type pool struct {
	port    int
	listen  string
	checker Checker
	// fixed is set when Config.BackendAddrs names this port's backends: SetBackends
	// leaves it alone.
	fixed bool
	// drainAfter is the port's Config.DrainAfter.
	drainAfter time.Duration

	mu sync.Mutex // guards the fields below
	// backends are in configured order. SetBackends replaces the slice, never changes
	// it in place, so that a reader may range over what list returned.
	backends []*backend
}

type warnState struct {
	last       time.Time
	suppressed int
}

// New builds a balancer from cfg; it starts nothing.
func New(cfg Config) (*Balancer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("lb config: %w", err)
	}
	b := &Balancer{
		cfg:     cfg,
		lg:      cfg.Logger,
		met:     cfg.Metrics,
		serving: make(chan struct{}),
		addrs:   map[int]net.Addr{},
		warns:   map[string]*warnState{},
	}
	for _, port := range cfg.Ports {
		p := &pool{port: port, listen: net.JoinHostPort(cfg.ListenAddress, strconv.Itoa(port)), drainAfter: cfg.DrainAfter[port]}
		if a, ok := cfg.ListenAddrs[port]; ok {
			p.listen = a
		}
		p.checker = cfg.Checkers[port]
		if p.checker == nil {
			kind, ok := cfg.Checks[port]
			if !ok {
				kind = DefaultCheckKind(port)
			}
			c, err := NewChecker(kind, cfg.Dialer, cfg.APIServerTLS, cfg.EtcdTLS)
			if err != nil {
				return nil, fmt.Errorf("lb config: port %d: %w", port, err)
			}
			p.checker = c
		}
		addrs := cfg.BackendAddrs[port]
		p.fixed = addrs != nil
		if addrs == nil {
			for _, h := range cfg.Backends {
				addrs = append(addrs, net.JoinHostPort(h, strconv.Itoa(port)))
			}
		}
		for _, a := range addrs {
			be := newBackend(a, port, &b.cfg, cfg.Metrics)
			be.pool = p
			p.backends = append(p.backends, be)
		}
		b.pools = append(b.pools, p)
	}
	return b, nil
}

// Serving is closed once every port listens and the first round of checks is done.
func (b *Balancer) Serving() <-chan struct{} { return b.serving }

// Addr is the address a port is bound to, once Serving is closed; nil before.
func (b *Balancer) Addr(port int) net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrs[port]
}

// Ready returns nil when every port has at least one backend up (healthy or suspect),
// else an error naming each port without one.
func (b *Balancer) Ready() error {
	var errs []error
	for _, p := range b.pools {
		up := false
		var why []string
		for _, be := range p.list() {
			st := be.status()
			if st.State.Up() {
				up = true
				break
			}
			w := st.Address + " " + st.State.String()
			if st.LastError != "" {
				w += ": " + st.LastError
			}
			why = append(why, w)
		}
		if !up {
			errs = append(errs, fmt.Errorf("port %d: no healthy backend (%s)", p.port, strings.Join(why, "; ")))
		}
	}
	return errors.Join(errs...)
}

// Backends returns every backend of every port, ports in configured order.
func (b *Balancer) Backends() []BackendStatus {
	var out []BackendStatus
	for _, p := range b.pools {
		for _, be := range p.list() {
			out = append(out, be.status())
		}
	}
	return out
}

// Run listens on every port, checks and serves until ctx ends, then closes every
// connection, waits for its goroutines and returns nil. A port that can't be bound
// fails Run at once. Run may be called once.
func (b *Balancer) Run(ctx context.Context) error {
	if b.started.Swap(true) {
		return errors.New("lb: Run called twice")
	}
	if ctx.Err() != nil {
		return nil
	}
	var lc net.ListenConfig
	lns := make([]*net.TCPListener, 0, len(b.pools))
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, p := range b.pools {
		ln, err := lc.Listen(ctx, "tcp", p.listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("lb: port %d: listen on %s: %w", p.port, p.listen, err)
		}
		lns = append(lns, ln.(*net.TCPListener))
		b.mu.Lock()
		b.addrs[p.port] = ln.Addr()
		b.mu.Unlock()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(b.pools))
	wg.Go(func() { b.healthLoop(ctx) })
	for i, p := range b.pools {
		ln := lns[i]
		wg.Go(func() {
			if err := b.acceptLoop(ctx, p, ln, &wg); err != nil {
				errc <- err
			}
		})
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	closeAll()
	for _, p := range b.pools {
		for _, be := range p.list() {
			be.closeAll()
		}
	}
	wg.Wait()
	return err
}

// healthLoop runs a round of checks at once, then one per tick. Rounds never
// overlap: a round that overruns the interval is followed at once by the next.
func (b *Balancer) healthLoop(ctx context.Context) {
	b.checkRound(ctx)
	if ctx.Err() != nil {
		return
	}
	b.servingOnce.Do(func() { close(b.serving) })
	t := b.cfg.NewTicker(b.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			b.checkRound(ctx)
		}
	}
}

// checkRound checks every backend of every port concurrently, each check bounded by
// CheckTimeout, and returns when all are done. Once all results are in, it closes
// the connections of down backends whose clients have somewhere better to go (see
// evict): deciding that on the round's whole picture, not result by result, keeps a
// member that is about to pass from losing its clients because a sibling's check
// happened to finish first, as when etcd has just elected a leader.
func (b *Balancer) checkRound(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range b.pools {
		for _, be := range p.list() {
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, b.cfg.CheckTimeout)
				h, err := p.checker.Check(cctx, be.addr)
				cancel()
				if ctx.Err() != nil {
					return // stopping: not the backend's fault
				}
				switch h {
				case HealthOK:
					be.recordSuccess()
				case HealthFailed:
					if err == nil {
						err = errors.New("check failed")
					}
					be.recordFailure(err)
				default:
					if err != nil {
						b.warn("check-unknown", "health check without result", "backend", be.addr, "err", err)
					}
				}
			})
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for _, p := range b.pools {
		p.evict()
	}
}

func (b *Balancer) acceptLoop(ctx context.Context, p *pool, ln *net.TCPListener, wg *sync.WaitGroup) error {
	// As net/http does: a temporary accept failure (out of file descriptors) waits
	// 5 ms, doubling up to 1 s, so that the loop does not spin.
	pause := &backoff.ExponentialBackOff{InitialInterval: 5 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second}
	pause.Reset()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED) {
				wait := pause.NextBackOff()
				b.warn("accept", "accept failed; retrying", "port", p.port, "err", err, "retry_in", wait)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
				continue
			}
			return fmt.Errorf("lb: port %d: accept: %w", p.port, err)
		}
		pause.Reset()
		wg.Go(func() { b.handle(ctx, p, c) })
	}
}

// handle serves one client connection.
func (b *Balancer) handle(ctx context.Context, p *pool, client *net.TCPConn) {
	defer b.conns.Add(-1)
	if n := b.conns.Add(1); n > int64(b.cfg.MaxConns) {
		client.Close()
		b.met.refused.WithLabelValues(strconv.Itoa(p.port), "max_conns").Inc()
		b.warn("max-conns", "refusing connections: --lb-max-conns reached", "port", p.port, "max", b.cfg.MaxConns)
		return
	}
	pc, be, err := b.open(ctx, p, client)
	if err != nil {
		client.Close()
		if ctx.Err() == nil && !errors.Is(err, errClientGone) {
			b.met.refused.WithLabelValues(strconv.Itoa(p.port), "no_backend").Inc()
			b.warn("no-backend-"+strconv.Itoa(p.port), "no backend accepted a connection", "port", p.port, "err", err)
		}
		return
	}
	defer be.untrack(pc)
	defer pc.close()
	proxy(pc, be.met.bytesIn.Add, be.met.bytesOut.Add)
}

// maxReplay bounds what a client may send before its backend's first answer while the
// connection can still move to another backend. It holds a TLS ClientHello or gRPC's
// preface, settings and first requests many times over.
const maxReplay = 16 << 10

// errClientGone: the client closed or reset its connection before a backend answered.
var errClientGone = errors.New("the client went away")

// open connects client to a backend and returns the tracked connection once the
// backend has answered (sent its first bytes, which the client then has).
//
// Until that answer the client has seen nothing of the backend, so a backend that
// closes or resets the new connection without a word (a master being killed: its
// kernel may complete a handshake after the process is gone), or that is evicted
// meanwhile, is replaced by the next candidate, and what the client sent so far is
// replayed to it. Closing the client instead would cost far more than the failed
// backend: gRPC counts a connection closed before the server's preface as a failed
// connect and waits its reconnect backoff (1 s, then more) before trying again.
// Replaying is safe because every port the lb fronts speaks a protocol whose server
// answers before it acts on anything (TLS's ServerHello, HTTP/2's server preface):
// a backend that said nothing has done nothing.
//
// A backend that accepts but says nothing for DialTimeout (a client-first protocol
// with a silent client) keeps the connection: it is tracked and proxied as usual.
func (b *Balancer) open(ctx context.Context, p *pool, client *net.TCPConn) (*proxyConn, *backend, error) {
	h := &opening{replayable: true}
	tried := map[*backend]bool{}
	var errs []error
	for {
		server, snap, err := b.dial(ctx, p, tried)
		if err != nil {
			return nil, nil, errors.Join(append(errs, err)...)
		}
		be := snap.be
		tried[be] = true
		first, err := h.await(ctx, client, server, b.cfg.DialTimeout)
		switch {
		case errors.Is(err, errClientGone) || ctx.Err() != nil:
			server.Close()
			return nil, nil, errClientGone
		case err != nil:
			server.Close()
			errs = append(errs, fmt.Errorf("%s: %w", be.addr, err))
			be.recordFailure(fmt.Errorf("%w: %w", ErrUnreachable, err))
			if !h.replayable {
				return nil, nil, errors.Join(errs...)
			}
			b.warn("silent-close-"+be.addr, "a backend closed a new connection without answering; trying the next",
				"port", p.port, "backend", be.addr, "err", err)
			continue
		}
		pc := &proxyConn{client: client, server: server}
		if !be.track(pc, snap) {
			// Evicted since the dial (or stopping): the client has seen nothing yet.
			server.Close()
			if !h.replayable || ctx.Err() != nil {
				return nil, nil, errors.Join(append(errs, fmt.Errorf("%s: closed since the dial", be.addr))...)
			}
			continue
		}
		be.met.bytesIn.Add(float64(h.sent))
		if len(first) > 0 {
			if _, err := client.Write(first); err != nil {
				be.untrack(pc)
				pc.close()
				return nil, nil, errClientGone
			}
			be.met.bytesOut.Add(float64(len(first)))
		}
		return pc, be, nil
	}
}

// opening is what a client sent before its backend answered.
type opening struct {
	early      []byte // all the client sent, while replayable
	replayable bool   // early is complete (within maxReplay)
	clientEOF  bool   // the client half-closed
	sent       int    // bytes forwarded to the current backend, for the metrics
}

// await sends the client's early bytes to server, then forwards what the client sends
// while it waits for server's first bytes, and returns them. It returns nil bytes and
// no error when the server stays silent for wait (the connection is kept); an error
// wrapping errClientGone when the client goes away; any other error when the server
// closed or failed without a word.
func (h *opening) await(ctx context.Context, client, server *net.TCPConn, wait time.Duration) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() {
		_ = client.SetReadDeadline(aLongTimeAgo)
		_ = server.SetReadDeadline(aLongTimeAgo)
	})
	defer stop()
	h.sent = len(h.early)
	if len(h.early) > 0 {
		if _, err := server.Write(h.early); err != nil {
			return nil, err
		}
	}
	if h.clientEOF {
		if err := server.CloseWrite(); err != nil {
			return nil, err
		}
	}
	type reply struct {
		buf []byte
		err error
	}
	answered := make(chan reply, 1)
	go func() {
		buf := make([]byte, 4096)
		n, err := server.Read(buf)
		answered <- reply{buf[:n], err}
	}()
	clientDone := make(chan error, 1)
	if h.clientEOF {
		clientDone <- nil
	} else {
		go func() { clientDone <- h.forward(client, server) }()
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var r reply
	var cerr error
	clientEnded := false
	for got := false; !got; {
		select {
		case r = <-answered:
			got = true
		case cerr = <-clientDone:
			clientEnded = true
			if cerr != nil {
				_ = server.SetReadDeadline(aLongTimeAgo)
			}
		case <-timer.C:
			_ = server.SetReadDeadline(aLongTimeAgo) // stop waiting; keep the connection
		}
	}
	if !clientEnded {
		_ = client.SetReadDeadline(aLongTimeAgo)
		cerr = <-clientDone
	}
	_ = client.SetReadDeadline(time.Time{})
	_ = server.SetReadDeadline(time.Time{})
	if swe := (*serverWriteError)(nil); errors.As(cerr, &swe) {
		return nil, swe
	}
	if cerr != nil && !errors.Is(cerr, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("%w: %w", errClientGone, cerr)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", errClientGone, ctx.Err())
	}
	if len(r.buf) > 0 {
		return r.buf, nil
	}
	if errors.Is(r.err, os.ErrDeadlineExceeded) {
		return nil, nil // silent for wait: keep it
	}
	if r.err == nil || errors.Is(r.err, io.EOF) {
		return nil, errors.New("closed the connection without answering")
	}
	return nil, r.err
}

// serverWriteError is a failed write to the backend while the client's first bytes
// are forwarded: the backend's fault, not the client's.
type serverWriteError struct{ err error }

func (e *serverWriteError) Error() string { return "write: " + e.err.Error() }
func (e *serverWriteError) Unwrap() error { return e.err }

// forward copies client to server, remembering what it copied while that fits in
// maxReplay, until the client's read deadline interrupts it (the error is then
// os.ErrDeadlineExceeded), the client half-closes (nil), the client fails, or a
// write to server fails (a *serverWriteError; it also interrupts the server's read).
func (h *opening) forward(client, server *net.TCPConn) error {
	buf := make([]byte, 4096)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if h.replayable && len(h.early)+n <= maxReplay {
				h.early = append(h.early, buf[:n]...)
			} else {
				h.replayable, h.early = false, nil
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				_ = server.SetReadDeadline(aLongTimeAgo)
				return &serverWriteError{werr}
			}
			h.sent += n
		}
		switch {
		case errors.Is(err, io.EOF):
			h.clientEOF = true
			_ = server.CloseWrite()
			return nil
		case err != nil:
			return err
		}
	}
}

// aLongTimeAgo is a deadline in the past, to interrupt a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// candidates orders a snapshot of p's backends for one new connection: best state
// first; within a state, configured order (failover) or fewest connections
// (least-conn). Backends that are not up stay in the list, last, because their
// health may lag and trying them beats refusing the client.
func (b *Balancer) candidates(p *pool) []snapshot {
	backends := p.list()
	snaps := make([]snapshot, len(backends))
	for i, be := range backends {
		snaps[i] = be.snapshot()
	}
	slices.SortStableFunc(snaps, func(x, y snapshot) int {
		if c := cmp.Compare(y.rank(), x.rank()); c != 0 {
			return c
		}
		if b.cfg.Policy == PolicyLeastConn {
			return cmp.Compare(x.active, y.active)
		}
		return 0
	})
	return snaps
}

// dial connects to the first candidate that accepts, skipping those in tried. A
// candidate followed by one not known to be unreachable gets min(DialTimeout,
// CheckTimeout): a LAN connect takes well under a millisecond, and a blackholed
// backend must not hold up the client for the full DialTimeout while another is
// left that accepts connections (even one failing its check for want of an etcd
// leader: it will serve once there is one). A failed dial counts as a failed check.
func (b *Balancer) dial(ctx context.Context, p *pool, tried map[*backend]bool) (*net.TCPConn, snapshot, error) {
	cands := slices.DeleteFunc(b.candidates(p), func(s snapshot) bool { return tried[s.be] })
	if len(cands) == 0 {
		return nil, snapshot{}, errors.New("no backend left to try")
	}
	var errs []error
	for i, s := range cands {
		timeout := b.cfg.DialTimeout
		if i+1 < len(cands) && cands[i+1].reachable() {
			timeout = min(timeout, b.cfg.CheckTimeout)
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		c, err := b.cfg.Dialer.DialContext(dctx, "tcp", s.be.addr)
		cancel()
		if err == nil {
			s.be.met.dial.Observe(time.Since(start).Seconds())
			return c.(*net.TCPConn), s, nil
		}
		if ctx.Err() != nil {
			return nil, snapshot{}, ctx.Err()
		}
		errs = append(errs, err)
		if h, _ := classify(err); h == HealthFailed {
			s.be.recordFailure(fmt.Errorf("%w: %w", ErrUnreachable, err))
		}
	}
	return nil, snapshot{}, errors.Join(errs...)
}

// proxy copies both ways until both sides have finished, passing on half-closes.
// io.Copy between two *net.TCPConn uses splice(2) on Linux, so the bytes never enter
// user space; copyChunk only bounds how often the byte counters are updated.
func proxy(pc *proxyConn, addIn, addOut func(float64)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(pc, pc.server, pc.client, addIn)
	}()
	pipe(pc, pc.client, pc.server, addOut)
	<-done
}

// pipe copies src to dst. On EOF it half-closes dst and gives the other direction
// halfCloseTimeout to finish; on an error it closes both sides.
func pipe(pc *proxyConn, dst, src *net.TCPConn, add func(float64)) {
	for {
		n, err := io.CopyN(dst, src, copyChunk)
		if n > 0 {
			add(float64(n))
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			if dst.CloseWrite() == nil {
				deadline := time.Now().Add(halfCloseTimeout)
				_ = dst.SetReadDeadline(deadline)
				return
			}
		}
		pc.close()
		return
	}
}

// warn logs at most once per warnEvery per key, counting what it held back.
func (b *Balancer) warn(key, msg string, args ...any) {
	now := b.cfg.Now()
	b.mu.Lock()
	w := b.warns[key]
	if w == nil {
		w = &warnState{}
		b.warns[key] = w
	}
	if !w.last.IsZero() && now.Sub(w.last) < warnEvery {
		w.suppressed++
		b.mu.Unlock()
		return
	}
	suppressed := w.suppressed
	w.last, w.suppressed = now, 0
	b.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	b.lg.Warn(msg, args...)
}
