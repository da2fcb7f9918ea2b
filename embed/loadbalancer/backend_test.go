package loadbalancer

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/haagent/haagent/test/framework/syncbuf"
)

func TestStateMachine(t *testing.T) {
	const (
		U = HealthUnknown
		O = HealthOK
		F = HealthFailed
	)
	tests := []struct {
		name       string
		fall, rise int
		results    []Health
		want       State
		wantLog    []string // transitions, in order
	}{
		{"unchecked", 2, 2, nil, StateUnknown, nil},
		{"unknown changes nothing", 2, 2, []Health{U, U, U}, StateUnknown, nil},
		{"first success is healthy", 2, 2, []Health{O}, StateHealthy, []string{"unknown->healthy"}},
		{"first failure is down", 2, 2, []Health{F}, StateDown, []string{"unknown->down"}},
		{"one failure is suspect", 2, 2, []Health{O, F}, StateSuspect, []string{"unknown->healthy", "healthy->suspect"}},
		{"fall failures are down", 2, 2, []Health{O, F, F}, StateDown,
			[]string{"unknown->healthy", "healthy->suspect", "suspect->down"}},
		{"unknown between failures keeps the count", 2, 2, []Health{O, F, U, F}, StateDown,
			[]string{"unknown->healthy", "healthy->suspect", "suspect->down"}},
		{"success resets the fall count", 3, 2, []Health{O, F, F, O, F, F}, StateSuspect,
			[]string{"unknown->healthy", "healthy->suspect", "suspect->healthy", "healthy->suspect"}},
		{"fall 1 goes straight down", 1, 2, []Health{O, F}, StateDown, []string{"unknown->healthy", "healthy->down"}},
		{"down stays down quietly", 2, 2, []Health{F, F, F, F}, StateDown, []string{"unknown->down"}},
		{"rise successes bring it back", 2, 3, []Health{F, O, O, O}, StateHealthy,
			[]string{"unknown->down", "down->recovering", "recovering->healthy"}},
		{"failure while recovering is down", 2, 3, []Health{F, O, O, F, O}, StateRecovering,
			[]string{"unknown->down", "down->recovering", "recovering->down", "down->recovering"}},
		{"rise 1 goes straight up", 2, 1, []Health{F, O}, StateHealthy, []string{"unknown->down", "down->healthy"}},
		{"unknown while recovering keeps the count", 2, 2, []Health{F, O, U, O}, StateHealthy,
			[]string{"unknown->down", "down->recovering", "recovering->healthy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &syncbuf.Buffer{}
			cfg := Config{Fall: tt.fall, Rise: tt.rise, Logger: slog.New(slog.NewTextHandler(logs, nil))}.withDefaults()
			be := newBackend("10.0.0.1:2379", 2379, &cfg, cfg.Metrics)
			for i, h := range tt.results {
				switch h {
				case HealthOK:
					be.recordSuccess()
				case HealthFailed:
					be.recordFailure(fmt.Errorf("failure %d", i))
				}
			}
			if got := be.status().State; got != tt.want {
				t.Errorf("state %s, want %s", got, tt.want)
			}
			re := regexp.MustCompile(`msg="10\.0\.0\.1:2379 (\w+->\w+) \(([^)]*)\)"`)
			var got []string
			for _, m := range re.FindAllStringSubmatch(logs.String(), -1) {
				got = append(got, m[1])
			}
			if strings.Join(got, ",") != strings.Join(tt.wantLog, ",") {
				t.Errorf("logged transitions %q, want %q\n%s", got, tt.wantLog, logs)
			}
		})
	}
}

func TestRecordFailureReason(t *testing.T) {
	cfg := Config{}.withDefaults()
	be := newBackend("h:1", 1, &cfg, cfg.Metrics)
	be.recordFailure(fmt.Errorf("%w: connection refused", ErrUnreachable))
	s := be.snapshot()
	if !s.unreachable || be.status().LastError != "unreachable: connection refused" {
		t.Errorf("unreachable=%v lastErr=%q", s.unreachable, be.status().LastError)
	}
	be.recordFailure(errors.New("/health: 503"))
	if be.snapshot().unreachable {
		t.Error("a reachable failure still marks the backend unreachable")
	}
}

func TestStateString(t *testing.T) {
	for s := StateDown; s <= StateHealthy; s++ {
		var back State
		txt, _ := s.MarshalText()
		if err := back.UnmarshalText(txt); err != nil || back != s {
			t.Errorf("%s round-trips to %s, %v", s, back, err)
		}
	}
	if got := State(42).String(); got != "state(42)" {
		t.Errorf("State(42) = %q", got)
	}
}

func TestCandidates(t *testing.T) {
	type be struct {
		state       State
		active      int
		unreachable bool
	}
	tests := []struct {
		name     string
		policy   Policy
		backends []be
		want     []int // indexes in configured order
	}{
		{"failover takes the first healthy", PolicyFailover,
			[]be{{StateHealthy, 5, false}, {StateHealthy, 0, false}, {StateHealthy, 0, false}}, []int{0, 1, 2}},
		{"failover skips a down primary", PolicyFailover,
			[]be{{StateDown, 0, false}, {StateHealthy, 0, false}, {StateHealthy, 0, false}}, []int{1, 2, 0}},
		{"healthy before suspect", PolicyFailover,
			[]be{{StateSuspect, 0, false}, {StateHealthy, 0, false}, {StateRecovering, 0, false}}, []int{1, 0, 2}},
		{"none healthy keeps the order", PolicyFailover,
			[]be{{StateDown, 0, false}, {StateDown, 0, false}, {StateDown, 0, false}}, []int{0, 1, 2}},
		{"reachable down before unreachable down", PolicyFailover,
			[]be{{StateDown, 0, true}, {StateDown, 0, false}, {StateDown, 0, true}}, []int{1, 0, 2}},
		{"unknown in order", PolicyFailover,
			[]be{{StateUnknown, 0, false}, {StateUnknown, 0, false}}, []int{0, 1}},
		{"least-conn takes the fewest", PolicyLeastConn,
			[]be{{StateHealthy, 3, false}, {StateHealthy, 1, false}, {StateHealthy, 2, false}}, []int{1, 2, 0}},
		{"least-conn ties keep the order", PolicyLeastConn,
			[]be{{StateHealthy, 1, false}, {StateHealthy, 1, false}, {StateHealthy, 0, false}}, []int{2, 0, 1}},
		{"least-conn only among healthy", PolicyLeastConn,
			[]be{{StateHealthy, 9, false}, {StateDown, 0, false}, {StateHealthy, 4, false}}, []int{2, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Policy: tt.policy}.withDefaults()
			b := &Balancer{cfg: cfg}
			p := &pool{port: 1}
			for i, x := range tt.backends {
				bk := newBackend(fmt.Sprintf("h%d:1", i), 1, &b.cfg, cfg.Metrics)
				bk.state, bk.unreachable = x.state, x.unreachable
				for range x.active {
					bk.conns[&proxyConn{}] = struct{}{}
				}
				p.backends = append(p.backends, bk)
			}
			var got []int
			for _, s := range b.candidates(p) {
				for i, bk := range p.backends {
					if s.be == bk {
						got = append(got, i)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("order %v, want %v", got, tt.want)
			}
		})
	}
}
