package loadbalancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/syncbuf"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echoBackend is a fake master: it greets each connection with its name, echoes
// until EOF, then writes "EOF\n" and closes.
type echoBackend struct {
	name string
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex // guards the fields below
	conns map[net.Conn]struct{}
	gone  int // connections that ended, by EOF or error
}

func newEchoBackend(t *testing.T, name string) *echoBackend {
	t.Helper()
	return newEchoBackendOn(t, name, "127.0.0.1:0")
}

// newEchoBackendOn is newEchoBackend listening on addr.
func newEchoBackendOn(t *testing.T, name, addr string) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e := &echoBackend{name: name, ln: ln, conns: map[net.Conn]struct{}{}}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns[c] = struct{}{}
			e.mu.Unlock()
			e.wg.Go(func() { e.serve(c) })
		}
	})
	t.Cleanup(e.close)
	return e
}

func (e *echoBackend) serve(c net.Conn) {
	defer func() {
		c.Close()
		e.mu.Lock()
		delete(e.conns, c)
		e.gone++
		e.mu.Unlock()
	}()
	if _, err := io.WriteString(c, e.name+"\n"); err != nil {
		return
	}
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	_, _ = io.WriteString(c, "EOF\n")
}

func (e *echoBackend) addr() string { return e.ln.Addr().String() }

func (e *echoBackend) ended() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gone
}

func (e *echoBackend) close() {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// fakeChecker returns whatever the test set per address; unset addresses pass.
type fakeChecker struct {
	mu     sync.Mutex // guards the fields below
	health map[string]Health
	errs   map[string]error
	gates  map[string]chan struct{} // a check of the address waits until its gate closes
}

func newFakeChecker() *fakeChecker {
	return &fakeChecker{health: map[string]Health{}, errs: map[string]error{}, gates: map[string]chan struct{}{}}
}

// hold makes the next checks of addr wait until the returned func is called.
func (f *fakeChecker) hold(addr string) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := make(chan struct{})
	f.gates[addr] = g
	return func() {
		f.mu.Lock()
		delete(f.gates, addr)
		f.mu.Unlock()
		close(g)
	}
}

func (f *fakeChecker) set(addr string, h Health) {
	err := error(nil)
	if h == HealthFailed {
		err = errors.New("fake failure")
	}
	f.setErr(addr, h, err)
}

func (f *fakeChecker) setErr(addr string, h Health, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.health[addr], f.errs[addr] = h, err
}

func (f *fakeChecker) Check(ctx context.Context, addr string) (Health, error) {
	f.mu.Lock()
	g := f.gates[addr]
	f.mu.Unlock()
	if g != nil {
		<-g
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.health[addr]
	if !ok {
		return HealthOK, nil
	}
	return h, f.errs[addr]
}

// manualTicker never ticks unless the test sends on c.
type manualTicker struct{ c chan time.Time }

func (m *manualTicker) C() <-chan time.Time { return m.c }
func (m *manualTicker) Stop()               {}

const testPort = 7000 // a logical port; tests bind 127.0.0.1:0 for it

type testLB struct {
	*Balancer
	checker *fakeChecker
	ticker  *manualTicker
	logs    *syncbuf.Buffer
	ctx     context.Context
}

// startLB runs a balancer on one logical port in front of backends, with a fake
// checker and a manual ticker; the first round of checks has run when it returns.
func startLB(t *testing.T, mod func(*Config), backends ...*echoBackend) *testLB {
	t.Helper()
	addrs := make([]string, len(backends))
	for i, be := range backends {
		addrs[i] = be.addr()
	}
	tl := &testLB{checker: newFakeChecker(), ticker: &manualTicker{c: make(chan time.Time)}, logs: &syncbuf.Buffer{}}
	cfg := Config{
		Ports:        []int{testPort},
		ListenAddrs:  map[int]string{testPort: "127.0.0.1:0"},
		BackendAddrs: map[int][]string{testPort: addrs},
		Checkers:     map[int]Checker{testPort: tl.checker},
		CheckTimeout: 200 * time.Millisecond,
		DialTimeout:  2 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(tl.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		NewTicker:    func(time.Duration) Ticker { return tl.ticker },
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tl.Balancer = b
	tl.ctx = runBalancer(t, b)
	return tl
}

// runBalancer runs b until the test ends and returns once it serves; the context is
// Run's.
func runBalancer(t *testing.T, b *Balancer) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-b.Serving():
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("balancer not serving after 10s")
	}
	return ctx
}

func (tl *testLB) addr() string { return tl.Addr(testPort).String() }

// round runs one round of checks and returns when it is done.
func (tl *testLB) round() { tl.checkRound(tl.ctx) }

func (tl *testLB) state(addr string) State {
	for _, st := range tl.Backends() {
		if st.Address == addr {
			return st.State
		}
	}
	return -1
}

func (tl *testLB) active(addr string) int {
	for _, st := range tl.Backends() {
		if st.Address == addr {
			return st.Active
		}
	}
	return -1
}

// client is a connection through the balancer that has read the backend's greeting.
type client struct {
	net.Conn
	r       *bufio.Reader
	backend string
}

func dialThrough(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	return &client{Conn: c, r: r, backend: name[:len(name)-1]}
}

// echo sends a line and expects it back.
func (c *client) echo(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo: got %q, %v; want %q", got, err, line)
	}
}

// closed reports whether the balancer has closed the connection.
func (c *client) waitClosed(t *testing.T) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.r.ReadByte()
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection through %s still open: %v", c.backend, err)
	}
}

// openFDs counts this process's open fds but pipes: io.Copy between two TCP conns
// splices through pipes that the runtime keeps in a sync.Pool and closes only when a GC
// drops them, so under load they outnumber a baseline for a while, and they are not
// the lb's.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			continue
		}
		n++
	}
	return n
}

func goroutines() int { return runtime.NumGoroutine() }
