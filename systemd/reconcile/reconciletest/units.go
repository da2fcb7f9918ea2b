// Package reconciletest is systemd for the tests of what drives units through package
// reconcile: it records each call and keeps each unit's active state.
package reconciletest

import (
	"context"
	"sync"

	"github.com/haagent/haagent/systemd/systemdbus"
)

// Units is a reconcile.UnitManager and a reconcile.Retirer. Every unit is loaded and
// "inactive" until a start or restart makes it "active". Calls are recorded as
// "reload", "enable U", "start U", "restart U", "stop U", "disable U", and "states"
// when LogStates is set.
type Units struct {
	// LogStates records each States call as "states".
	LogStates bool

	mu       sync.Mutex
	calls    []string
	active   map[string]string
	failNext map[string]error
}

// SetActive sets a unit's active state, as systemd would report it.
func (f *Units) SetActive(unit, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.active == nil {
		f.active = map[string]string{}
	}
	f.active[unit] = state
}

// FailNext makes the next start or restart of unit fail with err, leaving it "failed".
func (f *Units) FailNext(unit string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext == nil {
		f.failNext = map[string]error{}
	}
	f.failNext[unit] = err
}

// Take returns the calls since the last Take.
func (f *Units) Take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// Len is how many calls Take would return.
func (f *Units) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *Units) Reload(context.Context) error { f.log("reload"); return nil }

func (f *Units) Enable(_ context.Context, units ...string) error {
	for _, u := range units {
		f.log("enable " + u)
	}
	return nil
}

func (f *Units) Disable(_ context.Context, units ...string) error {
	for _, u := range units {
		f.log("disable " + u)
	}
	return nil
}

func (f *Units) Start(_ context.Context, u string) error   { return f.run("start", u) }
func (f *Units) Restart(_ context.Context, u string) error { return f.run("restart", u) }

func (f *Units) Stop(_ context.Context, u string) error {
	f.log("stop " + u)
	f.SetActive(u, "inactive")
	return nil
}

func (f *Units) States(_ context.Context, units ...string) ([]systemdbus.UnitState, error) {
	if f.LogStates {
		f.log("states")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []systemdbus.UnitState
	for _, u := range units {
		st := f.active[u]
		if st == "" {
			st = "inactive"
		}
		out = append(out, systemdbus.UnitState{Name: u, LoadState: "loaded", ActiveState: st})
	}
	return out, nil
}

func (f *Units) log(s string) { f.mu.Lock(); f.calls = append(f.calls, s); f.mu.Unlock() }

func (f *Units) run(verb, u string) error {
	f.log(verb + " " + u)
	f.mu.Lock()
	err := f.failNext[u]
	delete(f.failNext, u)
	f.mu.Unlock()
	if err != nil {
		f.SetActive(u, "failed")
		return err
	}
	f.SetActive(u, "active")
	return nil
}
