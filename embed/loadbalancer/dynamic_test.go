package loadbalancer

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/syncbuf"
	"github.com/prometheus/client_golang/prometheus"
)

// TestSetBackends runs a balancer over hosts (not host:port addresses), as the
// node-local lb does, and changes its list while a client is connected: a removed
// host's connections close, a new host starts unknown and takes new connections, a
// host that stays keeps its state and its connections, and an empty list is refused.
func TestSetBackends(t *testing.T) {
	// Three hosts on loopback addresses, listening on the same port, as masters do.
	a := newEchoBackendOn(t, "a", "127.0.0.2:0")
	_, p, _ := net.SplitHostPort(a.addr())
	port, _ := strconv.Atoi(p)
	b := newEchoBackendOn(t, "b", "127.0.0.3:"+p)
	c := newEchoBackendOn(t, "c", "127.0.0.4:"+p)

	reg := prometheus.NewRegistry()
	met := NewMetrics()
	if err := met.Register(reg); err != nil {
		t.Fatal(err)
	}
	checker := newFakeChecker()
	logs := &syncbuf.Buffer{}
	ticker := &manualTicker{c: make(chan time.Time)}
	bal, err := New(Config{
		Ports:        []int{port},
		ListenAddrs:  map[int]string{port: "127.0.0.1:0"},
		Backends:     []string{"127.0.0.2"},
		Checkers:     map[int]Checker{port: checker},
		CheckTimeout: 200 * time.Millisecond,
		DialTimeout:  2 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(logs, nil)),
		Metrics:      met,
		NewTicker:    func(time.Duration) Ticker { return ticker },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := runBalancer(t, bal)
	front := bal.Addr(port).String()
	states := func() map[string]State {
		m := map[string]State{}
		for _, st := range bal.Backends() {
			m[st.Address] = st.State
		}
		return m
	}

	toA := dialThrough(t, front)
	if toA.backend != "a" {
		t.Fatalf("first connection went to %s, want a", toA.backend)
	}

	// a leaves, b and c come: a's connection is closed, the new ones are unknown and
	// take new connections in the given order before any check has run.
	if err := bal.SetBackends([]string{"127.0.0.3", "127.0.0.4"}); err != nil {
		t.Fatal(err)
	}
	toA.waitClosed(t)
	want := map[string]State{b.addr(): StateUnknown, c.addr(): StateUnknown}
	if got := states(); len(got) != 2 || got[b.addr()] != StateUnknown || got[c.addr()] != StateUnknown {
		t.Fatalf("backends after the change: %v, want %v", got, want)
	}
	toB := dialThrough(t, front)
	if toB.backend != "b" {
		t.Fatalf("a new connection went to %s, want b (first of the new list)", toB.backend)
	}
	bal.checkRound(ctx)
	if got := states(); got[b.addr()] != StateHealthy || got[c.addr()] != StateHealthy {
		t.Fatalf("after a round of checks: %v, want both healthy", got)
	}

	// The same hosts in another order: nothing is closed, states stay, c is preferred.
	checker.set(b.addr(), HealthFailed)
	bal.checkRound(ctx)
	if err := bal.SetBackends([]string{"127.0.0.4", "127.0.0.3"}); err != nil {
		t.Fatal(err)
	}
	if got := states(); got[b.addr()] != StateSuspect || got[c.addr()] != StateHealthy {
		t.Fatalf("a reordered list changed the states: %v, want b suspect and c healthy", got)
	}
	toB.echo(t, "still here")
	if toC := dialThrough(t, front); toC.backend != "c" {
		t.Fatalf("a new connection went to %s, want c (first now)", toC.backend)
	}

	// An empty list, or one with a blank or a twin, is refused and changes nothing.
	for _, bad := range [][]string{nil, {""}, {"127.0.0.3", "127.0.0.3"}} {
		if err := bal.SetBackends(bad); err == nil {
			t.Errorf("SetBackends(%q) succeeded", bad)
		}
	}
	if got := states(); len(got) != 2 {
		t.Fatalf("a refused list changed the backends: %v", got)
	}

	// The removed host's series are gone from /metrics; the others' are there.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var series []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "backend" {
					series = append(series, l.GetValue())
				}
			}
		}
	}
	joined := strings.Join(series, " ")
	if strings.Contains(joined, a.addr()) || !strings.Contains(joined, c.addr()) {
		t.Errorf("metrics' backends %v: want %s gone and %s present", series, a.addr(), c.addr())
	}
	if !strings.Contains(logs.String(), "removed="+"["+a.addr()+"]") {
		t.Errorf("the change is not logged with what was removed:\n%s", logs.String())
	}
}

// TestSetBackendsLeavesFixedPorts keeps the backends of a port that Config.BackendAddrs
// names.
func TestSetBackendsLeavesFixedPorts(t *testing.T) {
	a := newEchoBackend(t, "a")
	tl := startLB(t, nil, a)
	if err := tl.SetBackends([]string{"127.0.0.9"}); err != nil {
		t.Fatal(err)
	}
	if got := tl.Backends(); len(got) != 1 || got[0].Address != a.addr() {
		t.Fatalf("backends of a fixed port: %+v, want only %s", got, a.addr())
	}
}
