package loadbalancer

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestProxyBothWays(t *testing.T) {
	a := newEchoBackend(t, "a")
	reg := prometheus.NewRegistry()
	met := NewMetrics()
	if err := met.Register(reg); err != nil {
		t.Fatal(err)
	}
	tl := startLB(t, func(c *Config) { c.Metrics = met }, a)
	c := dialThrough(t, tl.addr())
	if c.backend != "a" {
		t.Fatalf("served by %q", c.backend)
	}
	c.echo(t, "hello")

	// A payload much larger than the socket buffers, written while reading back.
	payload := make([]byte, 4<<20)
	_, _ = rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		errc <- err
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c.r, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload corrupted")
	}
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c.r); err != nil || string(rest) != "EOF\n" {
		t.Fatalf("after the payload got %q, %v", rest, err)
	}
	want := float64(len("hello\n") + len(payload))
	waitFor(t, "the byte counters", func() bool {
		in, out := byteCounters(t, reg, a.addr())
		return in == want && out == want+float64(len("a\nEOF\n"))
	})
}

func byteCounters(t *testing.T, reg *prometheus.Registry, backend string) (in, out float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "haagent_lb_backend_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["backend"] != backend || labels["port"] != strconv.Itoa(testPort) {
				continue
			}
			if labels["direction"] == "in" {
				in = m.GetCounter().GetValue()
			} else {
				out = m.GetCounter().GetValue()
			}
		}
	}
	return in, out
}

func TestHalfClose(t *testing.T) {
	a := newEchoBackend(t, "a")
	tl := startLB(t, nil, a)
	c := dialThrough(t, tl.addr())
	if _, err := io.WriteString(c, "last words\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The backend sees EOF only through the half-close, and still replies.
	rest, err := io.ReadAll(c.r)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "last words\nEOF\n" {
		t.Fatalf("after half-close got %q", rest)
	}
	waitFor(t, "the connection to be untracked", func() bool { return tl.active(a.addr()) == 0 })
}

func TestDialFailureTriesNext(t *testing.T) {
	dead := newEchoBackend(t, "dead")
	dead.close() // connections to it are refused
	b := newEchoBackend(t, "b")
	tl := startLB(t, nil, dead, b)
	// The fake checker said both are healthy, so the dead one is tried first.
	if st := tl.state(dead.addr()); st != StateHealthy {
		t.Fatalf("dead backend starts %s", st)
	}
	c := dialThrough(t, tl.addr())
	if c.backend != "b" {
		t.Fatalf("served by %q, want b", c.backend)
	}
	c.echo(t, "ping")
	if st := tl.state(dead.addr()); st != StateSuspect {
		t.Errorf("after a failed dial the dead backend is %s, want suspect", st)
	}
	if !strings.Contains(tl.logs.String(), dead.addr()+" healthy->suspect (unreachable: dial tcp") {
		t.Errorf("transition not logged:\n%s", tl.logs)
	}
	// Suspect ranks below healthy, so the next client goes straight to b.
	if c := dialThrough(t, tl.addr()); c.backend != "b" {
		t.Errorf("second client served by %q", c.backend)
	}
}

// blackhole returns the address of a listener whose accept queue is full, so that
// further SYNs are dropped and connects hang, as to a host that has vanished.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Skip(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Skip(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the accept queue")
	return ""
}

func TestBlackholedPrimary(t *testing.T) {
	const checkTimeout, dialTimeout = 150 * time.Millisecond, 800 * time.Millisecond
	tests := []struct {
		name          string
		secondary     Health // what the checker says of the live secondary
		secondaryErr  error  // and why it failed
		min, max      time.Duration
		wantPrimaryIs State
	}{
		// A healthy secondary is left: the primary gets only CheckTimeout.
		{"healthy alternative", HealthOK, nil, checkTimeout, dialTimeout - 100*time.Millisecond, StateSuspect},
		// The secondary fails its check but connects (an etcd member without a leader):
		// it will serve once there is one, so the primary gets only CheckTimeout too.
		{"alternative that connects", HealthFailed, errors.New("/health: 503 no leader"),
			checkTimeout, dialTimeout - 100*time.Millisecond, StateSuspect},
		// The secondary does not connect either: the primary gets the full DialTimeout.
		{"no reachable alternative", HealthFailed, fmt.Errorf("%w: connect: no route to host", ErrUnreachable),
			dialTimeout, 5 * time.Second, StateSuspect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hole := blackhole(t)
			b := newEchoBackend(t, "b")
			tl := startLB(t, func(c *Config) {
				c.BackendAddrs = map[int][]string{testPort: {hole, b.addr()}}
				c.CheckTimeout = checkTimeout
				c.DialTimeout = dialTimeout
			})
			tl.checker.setErr(b.addr(), tt.secondary, tt.secondaryErr)
			tl.round()
			tl.round() // Fall is 2
			start := time.Now()
			c := dialThrough(t, tl.addr())
			took := time.Since(start)
			if c.backend != "b" {
				t.Fatalf("served by %q", c.backend)
			}
			if took < tt.min || took > tt.max {
				t.Errorf("first client took %s, want %s-%s", took, tt.min, tt.max)
			}
			if st := tl.state(hole); st != tt.wantPrimaryIs {
				t.Errorf("blackholed primary is %s, want %s", st, tt.wantPrimaryIs)
			}
			if tt.secondary != HealthOK {
				return
			}
			// Suspect ranks below healthy: the next client goes straight to b.
			start = time.Now()
			if c := dialThrough(t, tl.addr()); c.backend != "b" || time.Since(start) > checkTimeout {
				t.Errorf("second client served by %q after %s; want b at once", c.backend, time.Since(start))
			}
		})
	}
}

func TestDownClosesConnections(t *testing.T) {
	a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
	tl := startLB(t, func(c *Config) { c.Policy = PolicyLeastConn }, a, b)
	ca := dialThrough(t, tl.addr())
	cb := dialThrough(t, tl.addr())
	if ca.backend != "a" || cb.backend != "b" {
		t.Fatalf("least-conn spread the clients to %s and %s", ca.backend, cb.backend)
	}
	tl.checker.set(a.addr(), HealthFailed)
	tl.round()
	if st := tl.state(a.addr()); st != StateSuspect {
		t.Fatalf("after one failure a is %s", st)
	}
	ca.echo(t, "still up while suspect")
	tl.round()
	if st := tl.state(a.addr()); st != StateDown {
		t.Fatalf("after two failures a is %s", st)
	}
	ca.waitClosed(t)
	waitFor(t, "a's backend side to close", func() bool { return a.ended() == 1 })
	cb.echo(t, "b untouched")
	if n := tl.active(a.addr()); n != 0 {
		t.Errorf("a still tracks %d connections", n)
	}
}

func TestEviction(t *testing.T) {
	unreachable := fmt.Errorf("%w: fake connect timeout", ErrUnreachable)
	tests := []struct {
		name string
		// aErr and bErr are the failures of a and b (nil: passes), checked twice.
		aErr, bErr error
		wantClosed bool
	}{
		{"down with a healthy alternative", errors.New("503"), nil, true},
		{"unreachable without an alternative", unreachable, errors.New("503"), true},
		// Every etcd member without a leader: closing would gain nothing.
		{"all answering but failing", errors.New("no leader"), errors.New("no leader"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
			tl := startLB(t, nil, a, b)
			ca := dialThrough(t, tl.addr())
			for addr, err := range map[string]error{a.addr(): tt.aErr, b.addr(): tt.bErr} {
				if err != nil {
					tl.checker.setErr(addr, HealthFailed, err)
				}
			}
			tl.round()
			tl.round()
			if st := tl.state(a.addr()); st != StateDown {
				t.Fatalf("a is %s", st)
			}
			if tt.wantClosed {
				ca.waitClosed(t)
				return
			}
			ca.echo(t, "kept while nothing is better")
			// Clients still get through, in order, to a backend that answers.
			if c := dialThrough(t, tl.addr()); c.backend != "a" {
				t.Errorf("with all down served by %s", c.backend)
			}
			// Once b is up again, a's clients have somewhere better to go.
			tl.checker.set(b.addr(), HealthOK)
			tl.round()
			tl.round()
			if st := tl.state(b.addr()); st != StateHealthy {
				t.Fatalf("b is %s", st)
			}
			ca.waitClosed(t)
			waitFor(t, "a's connections to go", func() bool { return tl.active(a.addr()) == 0 })
		})
	}
}

func TestFailoverReturnsToPrimary(t *testing.T) {
	a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
	tl := startLB(t, nil, a, b)
	if c := dialThrough(t, tl.addr()); c.backend != "a" {
		t.Fatalf("primary not preferred: %s", c.backend)
	}
	tl.checker.set(a.addr(), HealthFailed)
	tl.round()
	tl.round()
	old := dialThrough(t, tl.addr())
	if old.backend != "b" {
		t.Fatalf("with a down served by %s", old.backend)
	}
	tl.checker.set(a.addr(), HealthOK)
	tl.round()
	if st := tl.state(a.addr()); st != StateRecovering {
		t.Fatalf("after one success a is %s", st)
	}
	if c := dialThrough(t, tl.addr()); c.backend != "b" {
		t.Errorf("recovering primary picked before Rise: %s", c.backend)
	}
	tl.round()
	if c := dialThrough(t, tl.addr()); c.backend != "a" {
		t.Errorf("recovered primary not picked: %s", c.backend)
	}
	old.echo(t, "old connection stays on b")
}

func TestHealthLoopTicks(t *testing.T) {
	a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
	tl := startLB(t, nil, a, b)
	tl.checker.set(b.addr(), HealthFailed)
	// The loop reads a tick only after finishing the previous round, so after three
	// sends at least two rounds have completed.
	for range 3 {
		tl.ticker.c <- time.Now()
	}
	waitFor(t, "b down", func() bool { return tl.state(b.addr()) == StateDown })
}

func TestMaxConns(t *testing.T) {
	a := newEchoBackend(t, "a")
	reg := prometheus.NewRegistry()
	met := NewMetrics()
	_ = met.Register(reg)
	tl := startLB(t, func(c *Config) { c.MaxConns = 2; c.Metrics = met }, a)
	c1 := dialThrough(t, tl.addr())
	dialThrough(t, tl.addr())
	// The third is accepted by the kernel, then closed unserved.
	c3, err := net.Dial("tcp", tl.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	_ = c3.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c3.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("over the limit: read %d, %v; want EOF", n, err)
	}
	for range 5 { // more refusals: logged once
		c, err := net.Dial("tcp", tl.addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	if n := strings.Count(tl.logs.String(), "max-conns reached"); n != 1 {
		t.Errorf("logged the refusal %d times, want once", n)
	}
	c1.Close()
	waitFor(t, "a slot to free up", func() bool { return tl.conns.Load() < 2 })
	dialThrough(t, tl.addr()).echo(t, "room again")
}

func TestNoLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2000 connections")
	}
	a := newEchoBackend(t, "a")
	tl := startLB(t, nil, a)
	dialThrough(t, tl.addr()).Close() // warm up lazily started runtime goroutines
	waitFor(t, "the warm-up connection to end", func() bool { return a.ended() == 1 })
	baseG, baseFD := goroutines(), openFDs(t)

	const total, workers = 2000, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 16)
			for i := w; i < total; i += workers {
				c, err := net.Dial("tcp", tl.addr())
				if err != nil {
					errs <- err
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.WriteString(c, "x\n")
				// Greeting "a\n" then the echo "x\n"; every 3rd client leaves early.
				if i%3 != 0 {
					if _, err := io.ReadFull(c, buf[:4]); err != nil {
						errs <- err
						c.Close()
						return
					}
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "all backend connections to end", func() bool { return a.ended() == total+1 })
	waitFor(t, "no tracked connections", func() bool { return tl.active(a.addr()) == 0 && tl.conns.Load() == 0 })
	var g, fd int
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, fd = goroutines(), openFDs(t)
		if g <= baseG && fd <= baseFD {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d connections: %d goroutines (baseline %d), %d fds (baseline %d)", total, g, baseG, fd, baseFD)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := tl.Backends()[0]; st.Total != total+1 {
		t.Errorf("total %d, want %d", st.Total, total+1)
	}
}

func TestRunBindError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	b, err := New(Config{
		Ports:        []int{1, 2},
		ListenAddrs:  map[int]string{1: "127.0.0.1:0", 2: busy.Addr().String()},
		BackendAddrs: map[int][]string{1: {"127.0.0.1:9"}, 2: {"127.0.0.1:9"}},
		Checks:       map[int]CheckKind{1: CheckTCP, 2: CheckTCP},
	})
	if err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	err = b.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "port 2: listen on "+busy.Addr().String()) {
		t.Fatalf("Run = %v; want a bind error naming port 2", err)
	}
	if after := openFDs(t); after > before {
		t.Errorf("leaked %d fds after a failed start", after-before)
	}
}

func TestReady(t *testing.T) {
	a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
	tl := startLB(t, nil, a, b)
	if err := tl.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	tl.checker.set(a.addr(), HealthFailed)
	tl.round()
	if err := tl.Ready(); err != nil {
		t.Fatalf("with one backend suspect Ready = %v", err)
	}
	tl.checker.set(b.addr(), HealthFailed)
	tl.round()
	tl.round()
	err := tl.Ready()
	if err == nil || !strings.Contains(err.Error(), "port 7000: no healthy backend") || !strings.Contains(err.Error(), "fake failure") {
		t.Fatalf("with all down Ready = %v", err)
	}
	// Even with every backend down, connections are still tried in order.
	if c := dialThrough(t, tl.addr()); c.backend != "a" {
		t.Errorf("with all down served by %q, want a", c.backend)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no ports", Config{Backends: []string{"h"}}, "no ports"},
		{"bad port", Config{Ports: []int{70000}, Backends: []string{"h"}}, "port 70000 is not in 1-65535"},
		{"dup port", Config{Ports: []int{1, 1}, Backends: []string{"h"}}, "port 1 is listed twice"},
		{"no backends", Config{Ports: []int{1}}, "port 1 has no backends"},
		{"policy", Config{Ports: []int{1}, Backends: []string{"h"}, Policy: "random"}, `unknown policy "random"`},
		{"fall", Config{Ports: []int{1}, Backends: []string{"h"}, Fall: -1}, "fall -1"},
		{"check", Config{Ports: []int{1}, Backends: []string{"h"}, Checks: map[int]CheckKind{1: "icmp"}}, `unknown check "icmp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v; want %q", err, tt.want)
			}
		})
	}
}

func TestMetricsRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := m.Register(reg); err == nil {
		t.Error("registering twice succeeded")
	}
}

// silentBackend accepts connections and resets them without a word, as the kernel of
// a master whose process was just killed does with connections it had queued; with
// readFirst it reads the client's first bytes before the reset.
func silentBackend(t *testing.T, readFirst bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if readFirst {
				_, _ = c.Read(make([]byte, 64))
			}
			_ = c.(*net.TCPConn).SetLinger(0) // RST
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestSilentCloseMovesOn: a backend that accepts a new connection and closes it before
// answering does not cost the client its connection (gRPC would wait its reconnect
// backoff): the lb moves it to the next backend, replaying what the client sent.
func TestSilentCloseMovesOn(t *testing.T) {
	for _, readFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("readFirst=%v", readFirst), func(t *testing.T) { testSilentClose(t, readFirst) })
	}
}

func testSilentClose(t *testing.T, readFirst bool) {
	silent := silentBackend(t, readFirst)
	b := newEchoBackend(t, "b")
	tl := startLB(t, func(c *Config) { c.BackendAddrs = map[int][]string{testPort: {silent, b.addr()}} })
	if st := tl.state(silent); st != StateHealthy {
		t.Fatalf("silent backend starts %s", st)
	}
	c, err := net.DialTimeout("tcp", tl.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// The client speaks first, as a gRPC client does (its preface), before any answer.
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	for _, want := range []string{"b\n", "hello\n"} {
		got, err := r.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("through the lb: got %q, %v; want %q (the greeting, then the replayed line)", got, err, want)
		}
	}
	if st := tl.state(silent); st != StateSuspect {
		t.Errorf("after closing a new connection silently the backend is %s, want suspect", st)
	}
	if !strings.Contains(tl.logs.String(), silent+" healthy->suspect (unreachable: ") {
		t.Errorf("transition not logged:\n%s", tl.logs)
	}
}

// TestEvictionWaitsForTheRound: when etcd has a leader again, the members pass their
// checks in the same round, in any order. A member whose check passes a moment after a
// sibling's became healthy keeps its clients: the round decides on all its results.
func TestEvictionWaitsForTheRound(t *testing.T) {
	a, b, c := newEchoBackend(t, "a"), newEchoBackend(t, "b"), newEchoBackend(t, "c")
	tl := startLB(t, nil, a, b, c)
	noLeader := errors.New("/health: 503 no leader")
	tl.checker.setErr(a.addr(), HealthFailed, fmt.Errorf("%w: connect: no route to host", ErrUnreachable))
	tl.checker.setErr(b.addr(), HealthFailed, noLeader)
	tl.checker.setErr(c.addr(), HealthFailed, noLeader)
	tl.round()
	tl.round()
	// Every member is down; b answers, so it gets the client (a does not connect).
	cb := dialThrough(t, tl.addr())
	if cb.backend != "b" {
		t.Fatalf("with every backend down, served by %s; want b", cb.backend)
	}
	// A leader: c passes once (recovering), then c and b pass in one round, b's result
	// coming in only after c has become healthy.
	tl.checker.set(c.addr(), HealthOK)
	tl.round()
	tl.checker.set(b.addr(), HealthOK)
	release := tl.checker.hold(b.addr())
	done := make(chan struct{})
	go func() { tl.round(); close(done) }()
	waitFor(t, "c to become healthy", func() bool { return tl.state(c.addr()) == StateHealthy })
	release()
	<-done
	if st := tl.state(b.addr()); st != StateRecovering {
		t.Fatalf("b is %s, want recovering", st)
	}
	cb.echo(t, "b's client kept")
	if strings.Contains(tl.logs.String(), b.addr()+" is down: closing") {
		t.Errorf("b's connections were closed:\n%s", tl.logs)
	}
}

// TestSuspectUnreachableRanksLast: in a round where every check fails (the etcd leader
// is gone: every member's check hangs), the one backend that did not even connect ranks
// below those that did, so that a new connection is not dialled to it first.
func TestSuspectUnreachableRanksLast(t *testing.T) {
	a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
	tl := startLB(t, nil, a, b)
	tl.checker.setErr(a.addr(), HealthFailed, fmt.Errorf("%w: context deadline exceeded", ErrUnreachable))
	tl.checker.setErr(b.addr(), HealthFailed, errors.New("context deadline exceeded"))
	tl.round()
	for _, be := range []string{a.addr(), b.addr()} {
		if st := tl.state(be); st != StateSuspect {
			t.Fatalf("%s is %s, want suspect", be, st)
		}
	}
	if c := dialThrough(t, tl.addr()); c.backend != "b" {
		t.Errorf("served by %s; want b, which connects", c.backend)
	}
}

// TestDrainAfter: a backend that still connects but fails its check (an apiserver whose
// /readyz fails while etcd elects, or under load) keeps its clients for the port's
// DrainAfter even though another backend is healthy; then they move. An unreachable
// backend loses them at once, drain time or not.
func TestDrainAfter(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	for _, tt := range []struct {
		name       string
		err        error
		wantKeptAt bool
	}{
		{"answering but not ready", errors.New("/readyz: 500 [-]etcd failed"), true},
		{"unreachable", fmt.Errorf("%w: connect: connection refused", ErrUnreachable), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
			tl := startLB(t, func(c *Config) {
				c.Now = clock
				c.DrainAfter = map[int]time.Duration{testPort: 5 * time.Second}
			}, a, b)
			ca := dialThrough(t, tl.addr())
			tl.checker.setErr(a.addr(), HealthFailed, tt.err)
			tl.round()
			tl.round()
			if st := tl.state(a.addr()); st != StateDown {
				t.Fatalf("a is %s", st)
			}
			if !tt.wantKeptAt {
				ca.waitClosed(t)
				return
			}
			advance(4 * time.Second)
			tl.round()
			ca.echo(t, "kept within the drain time")
			if c := dialThrough(t, tl.addr()); c.backend != "b" {
				t.Errorf("a new client went to %s, want the healthy b", c.backend)
			}
			advance(time.Second)
			tl.round()
			ca.waitClosed(t)
			waitFor(t, "a's connections to go", func() bool { return tl.active(a.addr()) == 0 })
		})
	}
}

// TestDrainAfterDefaults: the apiserver port drains after DefaultAPIServerDrainAfter,
// etcd's and plain TCP ports at once, and an explicit setting wins.
func TestDrainAfterDefaults(t *testing.T) {
	c := Config{Ports: []int{PortAPIServer, PortEtcdClient, 9345, 7443}, Backends: []string{"m1"},
		Checks: map[int]CheckKind{7443: CheckAPIServer}, DrainAfter: map[int]time.Duration{9345: time.Second}}.withDefaults()
	want := map[int]time.Duration{PortAPIServer: DefaultAPIServerDrainAfter, PortEtcdClient: 0, 9345: time.Second, 7443: DefaultAPIServerDrainAfter}
	for p, d := range want {
		if c.DrainAfter[p] != d {
			t.Errorf("port %d drains after %s, want %s", p, c.DrainAfter[p], d)
		}
	}
}
