package await

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	errNotYet := errors.New("not yet")
	errGone := errors.New("gone")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		timeout  time.Duration
		cond     func(n int) error
		wantErr  error  // errors.Is the returned error
		wantMsg  string // a part of it
		maxCalls int
	}{
		{"holds at once", context.Background(), time.Second, func(int) error { return nil }, nil, "", 1},
		{"holds later", context.Background(), time.Second, func(n int) error {
			if n < 3 {
				return errNotYet
			}
			return nil
		}, nil, "", 3},
		{"times out with the last error", context.Background(), 30 * time.Millisecond, func(int) error { return errNotYet }, errNotYet, "waiting 30ms for the thing: not yet", 0},
		{"Stop ends the wait", context.Background(), time.Minute, func(int) error { return Stop(errGone) }, errGone, "waiting for the thing: gone", 1},
		{"ctx canceled", canceled, time.Minute, func(int) error { return errNotYet }, context.Canceled, "waiting for the thing: context canceled (last: not yet)", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := Until(tc.ctx, "the thing", tc.timeout, func() error { n++; return tc.cond(n) }, Every(time.Millisecond))
			if tc.wantErr == nil && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg)) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
			if tc.maxCalls > 0 && n != tc.maxCalls {
				t.Errorf("cond called %d times, want %d", n, tc.maxCalls)
			}
		})
	}
}
