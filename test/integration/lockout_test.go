package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// lockOutAttempt sends join requests with a wrong token to a join service as fast as
// it answers, as an attacker who wants to lock the nodes out would.
type lockOutAttempt struct {
	// stopping ends the loop between requests, never during one: a request cut off
	// after a master counted it would make the attacker's count one short.
	stopping atomic.Bool
	done     chan struct{}

	mu sync.Mutex // guards the fields below
	// refused counts the answers 403 or 429; throttled the 429 among them.
	refused, throttled int
	// other is the first answer that was neither.
	other error
}

func (a *lockOutAttempt) one(server string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wrong := pki.Token{Kind: pki.KindAgent, Secret: "not-the-cluster-token-0123456789abcdef"}
	_, _, err := join.Fetch(ctx, server, wrong, nil, nil, join.Request{Role: "minion", Name: "intruder",
		NodeSecret: strings.Repeat("e", 64)})
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case errors.Is(err, join.ErrForbidden):
		a.refused++
		if strings.Contains(err.Error(), "429") {
			a.throttled++
		}
	case a.other == nil:
		a.other = fmt.Errorf("a bad-token join got neither 403 nor 429: %v", err)
	}
}

// startLockOutAttempt sends n bad requests, then keeps sending them in the background
// until stop.
func startLockOutAttempt(server string, n int) *lockOutAttempt {
	a := &lockOutAttempt{done: make(chan struct{})}
	for range n {
		a.one(server)
	}
	go func() {
		defer close(a.done)
		for !a.stopping.Load() {
			a.one(server)
		}
	}()
	return a
}

func (a *lockOutAttempt) counts() (refused, throttled int, other error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refused, a.throttled, a.other
}

func (a *lockOutAttempt) stop() (refused, throttled int, other error) {
	a.stopping.Store(true)
	<-a.done
	return a.counts()
}

// joinRefusals sums haagent_join_refused_total over the masters' /metrics, by reason.
func joinRefusals(t *testing.T, ms []*procs.Master) map[string]float64 {
	t.Helper()
	sum := map[string]float64{}
	for _, m := range ms {
		body, err := httpGet("http://" + m.StatusAddress() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(body, "\n") {
			rest, ok := strings.CutPrefix(line, `haagent_join_refused_total{reason="`)
			if !ok {
				continue
			}
			reason, value, _ := strings.Cut(rest, `"} `)
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("%s: %q", m.Name, line)
			}
			sum[reason] += v
		}
	}
	return sum
}

// requireSlowBodyCutOff sends a join request whose body never comes and checks that
// the join service answers 408 and closes within its read timeout.
func requireSlowBodyCutOff(t *testing.T, server string) {
	t.Helper()
	c, err := tls.Dial("tcp", server, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "POST /v1/join HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\n", server)
	_ = c.SetReadDeadline(time.Now().Add(join.DefaultReadTimeout + 10*time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a request whose body never comes: no answer within %s: %v", time.Since(start), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > join.DefaultReadTimeout+5*time.Second {
		t.Fatalf("a request whose body never comes: %s after %s, want 408 after about %s", resp.Status, time.Since(start), join.DefaultReadTimeout)
	}
}
