// Package systemdbus owns haagent's conversation with systemd over D-Bus: enabling,
// starting, restarting and stopping units, waiting for each job's result, and
// reading unit states. It reconnects when the bus connection drops.
package systemdbus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
)

// jobTimeout bounds the wait for one start, restart or stop job.
const jobTimeout = 2 * time.Minute

// Running reports whether systemd is the init system under root, as sd_booted(3) checks.
func Running(root string) bool {
	fi, err := os.Stat(filepath.Join(root, "run/systemd/system"))
	return err == nil && fi.IsDir()
}

// UnitState is what systemd says of a unit.
type UnitState struct {
	Name        string `json:"name"`
	LoadState   string `json:"load"`
	ActiveState string `json:"active"`
	SubState    string `json:"sub"`
}

// Manager manages units; it is safe for concurrent use.
type Manager struct {
	lg *slog.Logger

	mu   sync.Mutex // guards the fields below
	conn *dbus.Conn
}

// New connects to the system bus.
func New(ctx context.Context, lg *slog.Logger) (*Manager, error) {
	m := &Manager{lg: lg}
	if _, err := m.bus(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// bus returns a live connection, reconnecting after a drop (e.g. a daemon-reexec).
func (m *Manager) bus(ctx context.Context) (*dbus.Conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil && m.conn.Connected() {
		return m.conn, nil
	}
	if m.conn != nil {
		m.conn.Close()
		m.lg.Warn("systemd D-Bus connection dropped; reconnecting")
	}
	c, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd over D-Bus: %w", err)
	}
	m.conn = c
	return c, nil
}

// Close closes the bus connection; it is safe to call twice.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
}

// Reload is systemctl daemon-reload.
func (m *Manager) Reload(ctx context.Context) error {
	c, err := m.bus(ctx)
	if err != nil {
		return err
	}
	if err := c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}

// Enable is systemctl enable for the named units.
func (m *Manager) Enable(ctx context.Context, units ...string) error {
	c, err := m.bus(ctx)
	if err != nil {
		return err
	}
	if _, _, err := c.EnableUnitFilesContext(ctx, units, false, true); err != nil {
		return fmt.Errorf("enable %v: %w", units, err)
	}
	return nil
}

// Disable is systemctl disable for the named units.
func (m *Manager) Disable(ctx context.Context, units ...string) error {
	c, err := m.bus(ctx)
	if err != nil {
		return err
	}
	if _, err := c.DisableUnitFilesContext(ctx, units, false); err != nil {
		return fmt.Errorf("disable %v: %w", units, err)
	}
	return nil
}

// Start starts a unit and waits for the job's result.
func (m *Manager) Start(ctx context.Context, unit string) error {
	return m.job(ctx, "start", unit, (*dbus.Conn).StartUnitContext)
}

// Restart restarts a unit and waits for the job's result.
func (m *Manager) Restart(ctx context.Context, unit string) error {
	return m.job(ctx, "restart", unit, (*dbus.Conn).RestartUnitContext)
}

// Stop stops a unit and waits for the job's result.
func (m *Manager) Stop(ctx context.Context, unit string) error {
	return m.job(ctx, "stop", unit, (*dbus.Conn).StopUnitContext)
}

type jobFunc func(*dbus.Conn, context.Context, string, string, chan<- string) (int, error)

// job runs one unit job. Anything but "done" is an error naming the unit and the
// result, so that a failed start never goes unnoticed.
func (m *Manager) job(ctx context.Context, verb, unit string, f jobFunc) error {
	c, err := m.bus(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	ch := make(chan string, 1)
	if _, err := f(c, ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", verb, unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("%s %s: job %s (see journalctl -u %s)", verb, unit, res, unit)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: no job result after %s: %w", verb, unit, jobTimeout, ctx.Err())
	}
}

// States reads the units' states; a unit systemd doesn't know has LoadState "not-found".
func (m *Manager) States(ctx context.Context, units ...string) ([]UnitState, error) {
	c, err := m.bus(ctx)
	if err != nil {
		return nil, err
	}
	us, err := c.ListUnitsByNamesContext(ctx, units)
	if err != nil {
		return nil, fmt.Errorf("unit states: %w", err)
	}
	out := make([]UnitState, 0, len(us))
	for _, u := range us {
		out = append(out, UnitState{Name: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState})
	}
	return out, nil
}
