// Package await is the tests' one way to wait for a condition: it polls the condition
// until it holds, with a deadline, and a failed wait says what it waited for and why the
// condition last failed.
package await

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultEvery is the time between two polls: short against the seconds that the tests'
// waits last, long enough that polling a process (kubectl, etcdctl, nsenter) costs
// little.
const DefaultEvery = 50 * time.Millisecond

// Option changes how Until polls.
type Option func(*poll)

type poll struct{ every time.Duration }

// Every polls every d instead of DefaultEvery: shorter where the wait is what is
// measured, longer where a poll is expensive.
func Every(d time.Duration) Option { return func(p *poll) { p.every = d } }

// stopped marks a condition error that waiting will not cure.
type stopped struct{ err error }

func (s *stopped) Error() string { return s.err.Error() }
func (s *stopped) Unwrap() error { return s.err }

// Stop wraps a condition's error to end the wait at once, for a failure that waiting
// can't cure (the awaited process exited). Until returns err itself, with what it
// waited for.
func Stop(err error) error { return &stopped{err} }

// Until calls cond, then again every DefaultEvery (or Every), until it returns nil, it
// returns an error made by Stop, timeout has passed or ctx ends. what completes "waiting
// for ...": the error then reads "waiting 30s for m1 to be ready: <cond's last error>",
// and wraps that last error.
func Until(ctx context.Context, what string, timeout time.Duration, cond func() error, opts ...Option) error {
	p := poll{every: DefaultEvery}
	for _, o := range opts {
		o(&p)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var s *stopped
		if errors.As(err, &s) {
			return fmt.Errorf("waiting for %s: %w", what, s.err)
		}
		t.Reset(p.every)
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("waiting %s for %s: %w", timeout, what, err)
			}
			return fmt.Errorf("waiting for %s: %w (last: %w)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}
