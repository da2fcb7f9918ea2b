// Package reconcile keeps a node's files and units as haagent wants them: it writes the
// files that changed, restarts exactly the units that read a changed file, and brings
// back a unit that stopped or failed, with backoff. Retire takes units off a host for
// good, for a reset.
package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/systemdbus"
)

// Defaults for the loop.
const (
	DefaultInterval = 2 * time.Second
	minBackoff      = time.Second
	maxBackoff      = time.Minute
)

// UnitManager is the part of systemdbus.Manager the reconciler uses.
type UnitManager interface {
	Reload(ctx context.Context) error
	Enable(ctx context.Context, units ...string) error
	Start(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
	States(ctx context.Context, units ...string) ([]systemdbus.UnitState, error)
}

// Config wires a reconciler.
type Config struct {
	// Render returns every file the node owns: its EnvironmentFiles and unit files.
	Render func() ([]files.File, error)
	// Units are the node's units in start order, with the files each reads.
	Units []Unit
	// UnitDir is where Render puts unit files, relative to Owned's root: a change
	// there needs a daemon-reload.
	UnitDir string
	// PruneDirs are dirs, relative to Owned's root, where a file that Render no longer
	// returns is removed (a mirror dropped from the flags, say).
	PruneDirs []string
	Owned     *files.Owned
	// Manager is nil where systemd does not run: files are still kept, units are not.
	Manager  UnitManager
	Interval time.Duration
	Logger   *slog.Logger
	// Now is the clock, injectable for tests.
	Now func() time.Time
	// Passed, if set, is called with the status after each pass that managed the units
	// (or, without systemd, wrote the files): a master reports from it that its
	// apiserver runs with what it rendered.
	Passed func(Status)
}

// Unit is a unit the reconciler keeps running, and the files it reads: a change to
// one of them restarts it.
type Unit struct {
	Name  string
	Reads []string
}

// UnitStatus is one unit as the reconciler last saw it.
type UnitStatus struct {
	Name      string    `json:"name"`
	Active    string    `json:"active"`
	Sub       string    `json:"sub"`
	Restarts  int       `json:"restartsByHaagent"`
	LastError string    `json:"lastError,omitempty"`
	NextTry   time.Time `json:"nextTry,omitzero"`
}

// Status is the reconciler's view, for /status.
type Status struct {
	Units       []UnitStatus `json:"units"`
	Reverted    int          `json:"filesReverted"`
	LastPass    time.Time    `json:"lastPass"`
	LastError   string       `json:"lastError,omitempty"`
	Systemd     bool         `json:"systemd"`
	ManagedFile []string     `json:"managedFiles,omitempty"`
}

// Reconciler runs the loop.
type Reconciler struct {
	cfg Config

	mu      sync.Mutex // guards the fields below
	st      Status
	backoff map[string]*backoff.ExponentialBackOff // per unit, while its action fails
	pending map[string]bool                        // files changed outside Render (e.g. renewed certificates)
	enabled bool
	// changedBeforeUnits carries the files written by a files-only pass to the first
	// pass that manages units, so that their readers restart.
	changedBeforeUnits []string
	closeManager       func()
	closeOnce          sync.Once
	// firstPass is closed once the units have been brought in line once (the files at
	// least written, where no units are managed).
	firstPass     chan struct{}
	firstPassOnce sync.Once
	// syncs are the Sync calls waiting for the next pass of Run; kick wakes Run for it.
	syncs []chan struct{}
	kick  chan struct{}
}

// New makes a reconciler; it starts nothing.
func New(cfg Config) *Reconciler {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Reconciler{cfg: cfg, backoff: map[string]*backoff.ExponentialBackOff{}, pending: map[string]bool{}, firstPass: make(chan struct{}), kick: make(chan struct{}, 1)}
	r.st.Systemd = cfg.Manager != nil
	for _, u := range cfg.Units {
		r.st.Units = append(r.st.Units, UnitStatus{Name: u.Name})
	}
	return r
}

// Changed tells the reconciler that files changed outside Render, so the units that
// read them restart on the next pass.
func (r *Reconciler) Changed(paths ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range paths {
		r.pending[p] = true
	}
}

// Status returns a copy of the current view.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Units = slices.Clone(r.st.Units)
	return st
}

// Run passes once at start and then every Interval, or at once when Sync asks, until
// ctx ends; it returns nil then. Failures are logged and retried: the node keeps
// converging.
func (r *Reconciler) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		r.mu.Lock()
		waiting := r.syncs
		r.syncs = nil
		r.mu.Unlock()
		r.Once(ctx)
		for _, w := range waiting {
			close(w)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.kick:
		}
	}
}

// Stop stops one of the node's units now, for a caller that must have it down while it
// changes what the unit depends on; the next pass starts it again. Without systemd it
// does nothing.
func (r *Reconciler) Stop(ctx context.Context, unit string) error {
	if r.cfg.Manager == nil {
		return nil
	}
	if err := r.cfg.Manager.Stop(ctx, unit); err != nil {
		return fmt.Errorf("stop %s: %w", unit, err)
	}
	return nil
}

// Sync makes Run pass now, and returns once a pass that began after the call has
// ended: the files written, and the units that read a changed file restarted (a
// Type=notify unit's restart ends when it serves). It needs Run to be running.
func (r *Reconciler) Sync(ctx context.Context) error {
	done := make(chan struct{})
	r.mu.Lock()
	r.syncs = append(r.syncs, done)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default: // a pass is asked for already
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a pass of the node's files and units: %w", ctx.Err())
	}
}

// Close releases the systemd connection that Start made; call it once Run has
// returned. It is safe to call twice.
func (r *Reconciler) Close() {
	r.closeOnce.Do(func() {
		if r.closeManager != nil {
			r.closeManager()
		}
	})
}

// Once makes one pass and returns the paths it rewrote.
func (r *Reconciler) Once(ctx context.Context) []string {
	defer r.firstPassOnce.Do(func() { close(r.firstPass) })
	return r.pass(ctx, true)
}

// FirstPass is closed after the first full pass: the units have been started, or
// restarted for the files that changed, once. What needs a unit running with haagent's
// files (importing images into containerd) waits for it.
func (r *Reconciler) FirstPass() <-chan struct{} { return r.firstPass }

// pass writes the files and, with units, brings the units in line.
func (r *Reconciler) pass(ctx context.Context, units bool) []string {
	lg := r.cfg.Logger
	fs, err := r.cfg.Render()
	if err != nil {
		r.setErr("render: " + err.Error())
		lg.Error("render node files", "err", err)
		return nil
	}
	changes, err := r.cfg.Owned.Apply(fs)
	if err != nil {
		r.setErr(err.Error())
		lg.Error("write node files", "err", err)
		return nil
	}
	for _, d := range r.cfg.PruneDirs {
		pruned, err := r.cfg.Owned.Prune(d, fs)
		changes = append(changes, pruned...)
		if err != nil {
			r.setErr(err.Error())
			lg.Error("remove stale node files", "dir", "/"+d, "err", err)
			return nil
		}
	}
	changed := map[string]bool{}
	var paths []string
	for _, c := range changes {
		changed[c.Path] = true
		paths = append(paths, c.Path)
		switch {
		case c.Removed && c.Backup != "":
			lg.Warn("file no longer rendered was edited by hand: backed up and removed", "file", "/"+c.Path, "backup", c.Backup)
		case c.Removed:
			lg.Info("removed file no longer rendered", "file", "/"+c.Path)
		case c.Backup != "":
			lg.Warn("file was edited by hand: backed up and replaced", "file", "/"+c.Path, "backup", c.Backup)
			r.mu.Lock()
			r.st.Reverted++
			r.mu.Unlock()
		default:
			lg.Info("wrote file", "file", "/"+c.Path)
		}
	}
	r.mu.Lock()
	if !units {
		r.changedBeforeUnits = append(r.changedBeforeUnits, paths...)
	} else {
		for _, p := range r.changedBeforeUnits {
			changed[p] = true
		}
		r.changedBeforeUnits = nil
	}
	for p := range r.pending {
		changed[p] = true
	}
	r.pending = map[string]bool{}
	r.st.LastPass = r.cfg.Now()
	for _, f := range fs {
		if !slices.Contains(r.st.ManagedFile, "/"+f.Path) {
			r.st.ManagedFile = append(r.st.ManagedFile, "/"+f.Path)
		}
	}
	r.st.ManagedFile = slices.DeleteFunc(r.st.ManagedFile, func(p string) bool {
		return slices.ContainsFunc(changes, func(c files.Change) bool { return c.Removed && "/"+c.Path == p })
	})
	r.mu.Unlock()
	if r.cfg.Manager == nil || !units {
		r.setErr("")
		if units && r.cfg.Passed != nil {
			r.cfg.Passed(r.Status())
		}
		return paths
	}
	r.units(ctx, changed)
	if r.cfg.Passed != nil {
		r.cfg.Passed(r.Status())
	}
	return paths
}

func (r *Reconciler) units(ctx context.Context, changed map[string]bool) {
	lg, m := r.cfg.Logger, r.cfg.Manager
	unitFileChanged := false
	for p := range changed {
		if r.cfg.UnitDir != "" && strings.HasPrefix(p, r.cfg.UnitDir+"/") {
			unitFileChanged = true
		}
	}
	if unitFileChanged || !r.enabled {
		if err := m.Reload(ctx); err != nil {
			r.setErr(err.Error())
			lg.Error("daemon-reload", "err", err)
			return
		}
	}
	names := make([]string, len(r.cfg.Units))
	for i, u := range r.cfg.Units {
		names[i] = u.Name
	}
	if !r.enabled {
		// Enable one by one: a runtime unit that isn't installed must not keep the others off.
		for _, n := range names {
			if err := m.Enable(ctx, n); err != nil {
				lg.Warn("enable unit", "unit", n, "err", err)
			}
		}
		r.enabled = true
	}
	states, err := m.States(ctx, names...)
	if err != nil {
		r.setErr(err.Error())
		lg.Error("read unit states", "err", err)
		return
	}
	byName := map[string]systemdbus.UnitState{}
	for _, s := range states {
		byName[s.Name] = s
	}
	now := r.cfg.Now()
	for i, u := range r.cfg.Units {
		s := byName[u.Name]
		reads := false
		for _, p := range u.Reads {
			reads = reads || changed[p]
		}
		var err error
		var action string
		switch {
		case s.LoadState == "not-found" || s.LoadState == "":
			err = errNotInstalled(u.Name)
		case s.ActiveState == "active" && reads:
			action, err = "restart", m.Restart(ctx, u.Name)
		case s.ActiveState == "active" || s.ActiveState == "activating" || s.ActiveState == "reloading":
		default:
			r.mu.Lock()
			next := r.st.Units[i].NextTry
			r.mu.Unlock()
			if now.Before(next) {
				break
			}
			action, err = "start", m.Start(ctx, u.Name)
		}
		r.record(i, u.Name, s, action, err, now)
	}
	r.setErr("")
}

type errNotInstalled string

func (e errNotInstalled) Error() string {
	return "unit " + string(e) + " is not installed: install its package or binary"
}

// record updates a unit's status and backoff, logging each action once.
func (r *Reconciler) record(i int, name string, s systemdbus.UnitState, action string, err error, now time.Time) {
	lg := r.cfg.Logger
	r.mu.Lock()
	defer r.mu.Unlock()
	us := &r.st.Units[i]
	us.Active, us.Sub = s.ActiveState, s.SubState
	switch {
	case action == "" && err == nil:
		us.LastError = ""
		delete(r.backoff, name)
	case err == nil:
		us.Restarts++
		us.LastError = ""
		us.Active = "active"
		delete(r.backoff, name)
		if action == "start" && s.ActiveState != "" {
			lg.Warn("unit was not running: started it", "unit", name, "was", s.ActiveState+"/"+s.SubState)
		} else {
			lg.Info(action+"ed unit", "unit", name)
		}
	default:
		bo := r.backoff[name]
		if bo == nil {
			// Not randomized: a unit's retries follow the doubling that /status shows.
			bo = &backoff.ExponentialBackOff{InitialInterval: minBackoff, Multiplier: 2, MaxInterval: maxBackoff}
			bo.Reset()
			r.backoff[name] = bo
		}
		b := bo.NextBackOff()
		us.NextTry = now.Add(b)
		if us.LastError != err.Error() {
			lg.Error("unit action failed; retrying with backoff", "unit", name, "action", action, "err", err, "retry-in", b)
		}
		us.LastError = err.Error()
	}
}

func (r *Reconciler) setErr(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.LastError = msg
}

// Systemd modes of --systemd.
const (
	SystemdAuto = "auto"
	SystemdOn   = "on"
	SystemdOff  = "off"
)

// Connect returns the unit manager for a --systemd mode: auto uses systemd where it
// runs and otherwise warns once; on insists; off never manages units.
func Connect(ctx context.Context, mode string, lg *slog.Logger) (*systemdbus.Manager, error) {
	switch mode {
	case SystemdOff:
		return nil, nil
	case SystemdAuto:
		if !systemdbus.Running("/") {
			lg.Warn("systemd is not running here (no /run/systemd/system): files are written, units are not managed")
			return nil, nil
		}
	}
	return systemdbus.New(ctx, lg)
}

// Start connects to systemd per mode and writes the files now, so that they exist when
// the role reports ready. Units are left to Run, which the role starts after it has told
// systemd it is ready: the units are ordered After=haagent.service, so starting them
// while haagent is still activating would deadlock. Close releases the connection.
func Start(ctx context.Context, mode string, cfg Config) (*Reconciler, error) {
	var mgr *systemdbus.Manager
	if cfg.Manager == nil { // else the caller's (a test's) drives the units
		var err error
		if mgr, err = Connect(ctx, mode, cfg.Logger); err != nil {
			return nil, fmt.Errorf("--systemd=%s: %w", mode, err)
		}
		if mgr != nil {
			cfg.Manager = mgr
		}
	}
	r := New(cfg)
	r.closeManager = func() {
		if mgr != nil {
			mgr.Close()
		}
	}
	r.pass(ctx, false)
	return r, nil
}
