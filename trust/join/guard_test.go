package join

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haagent/haagent/trust/pki"
)

// startGuarded starts a join service with registered metrics, the agent token agent and
// an in-memory name binding; edit may change the rest.
func startGuarded(t *testing.T, server, agent pki.Token, edit func(*ServerConfig)) (string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	var current atomic.Pointer[pki.Token]
	current.Store(&agent)
	addr, _ := startServerWith(t, server, func(c *ServerConfig) {
		c.AgentToken = func() (*pki.Token, bool) { return current.Load(), true }
		c.Bind = (&names{m: map[string]string{}}).bind
		c.Metrics = m
		edit(c)
	})
	return addr, reg
}

// counter is the value of a counter of reg with the label name=value.
func counter(t *testing.T, reg *prometheus.Registry, metric, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// awaitCounter polls a counter until it reaches want: connection states are counted
// after the client has seen the connection close.
func awaitCounter(t *testing.T, reg *prometheus.Registry, metric, name, value string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := counter(t, reg, metric, name, value)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s=%q} = %v, want %v", metric, name, value, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLockOutAttempt: many bad-token requests from one source (as every node has the
// lb's address behind the lb) are refused, then throttled, while legitimate joins from
// the same source, with the token or with a certificate, still succeed.
func TestLockOutAttempt(t *testing.T) {
	server, _ := pki.GenerateToken(pki.KindServer)
	agent, _ := pki.GenerateToken(pki.KindAgent)
	addr, reg := startGuarded(t, server, agent, func(c *ServerConfig) { c.FailureBudget = 5 })
	ctx := context.Background()
	wrong, _ := pki.GenerateToken(pki.KindAgent)
	attacker := Request{Role: "minion", Name: "evil", NodeSecret: secretB}
	const attempts = 30
	var throttled int
	for i := range attempts {
		_, _, err := Fetch(ctx, addr, wrong, nil, nil, attacker)
		if !errors.Is(err, ErrForbidden) {
			t.Fatalf("bad attempt %d: err = %v, want forbidden", i, err)
		}
		if strings.Contains(err.Error(), "429") {
			throttled++
		}
	}
	if throttled != attempts-5 {
		t.Fatalf("%d of %d bad attempts throttled, want all but the budget of 5", throttled, attempts)
	}

	fs, _, err := Fetch(ctx, addr, agent, nil, nil, Request{Role: "minion", Name: "minion1", Hosts: []string{"10.0.0.31"}, NodeSecret: secretA})
	if err != nil {
		t.Fatalf("a legitimate join during the lock-out attempt: %v", err)
	}
	cert := clientCert(t, fs, pki.KubeletClientCert, pki.KubeletClientKey)
	if _, _, err := Fetch(ctx, addr, pki.Token{}, nil, &cert, Request{Role: "minion", Name: "minion1"}); err != nil {
		t.Fatalf("a renewal with the node's certificate during the lock-out attempt: %v", err)
	}
	if got := counter(t, reg, "haagent_join_refused_total", "reason", ReasonWrongToken); got != 5 {
		t.Errorf("wrong-token refusals counted %v, want 5", got)
	}
	if got := counter(t, reg, "haagent_join_refused_total", "reason", ReasonThrottled); got != attempts-5 {
		t.Errorf("throttled refusals counted %v, want %d", got, attempts-5)
	}
	if got := counter(t, reg, "haagent_join_issued_total", "via", "agent token"); got != 1 {
		t.Errorf("joins with the agent token counted %v, want 1", got)
	}
	if got := counter(t, reg, "haagent_join_issued_total", "via", "certificate"); got != 1 {
		t.Errorf("renewals counted %v, want 1", got)
	}
}

// rawConn opens a TLS connection to the join service without verifying it, as an
// attacker's client would.
func rawConn(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRequestLimits: the header, the body and the time to send them are bounded, and
// each refusal is counted by reason.
func TestRequestLimits(t *testing.T) {
	server, _ := pki.GenerateToken(pki.KindServer)
	agent, _ := pki.GenerateToken(pki.KindAgent)
	const readTimeout = 500 * time.Millisecond
	var logMu sync.Mutex
	var log bytes.Buffer
	addr, reg := startGuarded(t, server, agent, func(c *ServerConfig) {
		c.ReadTimeout = readTimeout
		c.FailureBudget = 100
		c.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &log}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	status := func(t *testing.T, c net.Conn) int {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	t.Run("a body larger than the limit is refused with 413", func(t *testing.T) {
		c := rawConn(t, addr)
		body := bytes.Repeat([]byte("x"), maxRequestBytes+1)
		fmt.Fprintf(c, "POST /v1/join HTTP/1.1\r\nHost: m\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", agent.Secret, len(body))
		_, _ = c.Write(body)
		if got := status(t, c); got != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", got)
		}
		awaitCounter(t, reg, "haagent_join_refused_total", "reason", ReasonTooLarge, 1)
	})

	t.Run("a body that never comes is cut off after the read timeout", func(t *testing.T) {
		c := rawConn(t, addr)
		start := time.Now()
		fmt.Fprintf(c, "POST /v1/join HTTP/1.1\r\nHost: m\r\nContent-Length: 100\r\n\r\n")
		if got := status(t, c); got != http.StatusRequestTimeout {
			t.Fatalf("status %d, want 408", got)
		}
		if held := time.Since(start); held > readTimeout+2*time.Second {
			t.Fatalf("the connection was held %s, want about the read timeout %s", held, readTimeout)
		}
		awaitCounter(t, reg, "haagent_join_refused_total", "reason", ReasonSlowBody, 1)
	})

	t.Run("a header larger than the limit is refused and counted", func(t *testing.T) {
		c := rawConn(t, addr)
		fmt.Fprintf(c, "POST /v1/join HTTP/1.1\r\nHost: m\r\nX-Junk: %s\r\n\r\n", strings.Repeat("y", 2*maxHeaderBytes))
		if got := status(t, c); got != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", got)
		}
		c.Close()
		awaitCounter(t, reg, "haagent_join_refused_total", "reason", ReasonIncomplete, 1)
	})

	t.Run("a header that never ends is cut off", func(t *testing.T) {
		c := rawConn(t, addr)
		fmt.Fprintf(c, "POST /v1/join HTTP/1.1\r\nHost: m\r\n")
		_ = c.SetReadDeadline(time.Now().Add(readHeaderTimeout + 5*time.Second))
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, io.EOF) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server held a header that never ended for over %s", readHeaderTimeout+5*time.Second)
			}
		}
		awaitCounter(t, reg, "haagent_join_refused_total", "reason", ReasonIncomplete, 2)
	})

	t.Run("a connection that is not TLS is counted; one that sends nothing is not", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		bare := c.LocalAddr().String()
		c.Close() // the lb's TCP health check
		// net/http logs the empty handshake, then closes the connection and counts.
		deadline := time.Now().Add(5 * time.Second)
		for {
			logMu.Lock()
			seen := strings.Contains(log.String(), "TLS handshake error from "+bare)
			logMu.Unlock()
			if seen {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the join service never logged the closed connection from %s", bare)
			}
			time.Sleep(10 * time.Millisecond)
		}
		c, err = net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\n\r\n")
		_, _ = io.ReadAll(c)
		c.Close()
		awaitCounter(t, reg, "haagent_join_refused_total", "reason", ReasonIncomplete, 3)
	})
}
