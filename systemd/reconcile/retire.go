package reconcile

import (
	"context"
	"log/slog"
	"slices"

	"github.com/haagent/haagent/systemd/systemdbus"
)

// Retirer is what Retire needs of systemd; *systemdbus.Manager has it.
type Retirer interface {
	States(ctx context.Context, units ...string) ([]systemdbus.UnitState, error)
	Stop(ctx context.Context, unit string) error
	Disable(ctx context.Context, units ...string) error
	Reload(ctx context.Context) error
}

// Retire takes units out of systemd's hands for good, for a host's reset: it stops and
// disables those that systemd has loaded, last first (the reverse of their start order),
// then runs remove, which deletes their unit files among others, and has systemd
// reload so that it forgets the files that are gone. A unit that won't stop or disable
// is logged and the rest go on; remove's error is returned.
func Retire(ctx context.Context, m Retirer, units []string, remove func() error, lg *slog.Logger) error {
	states, err := m.States(ctx, units...)
	if err != nil {
		return err
	}
	for _, u := range slices.Backward(states) {
		if u.LoadState != "loaded" {
			continue // this host's role never had it
		}
		if err := m.Stop(ctx, u.Name); err != nil {
			lg.Warn("stop unit", "unit", u.Name, "err", err)
		}
		if err := m.Disable(ctx, u.Name); err != nil {
			lg.Warn("disable unit", "unit", u.Name, "err", err)
		}
	}
	err = remove()
	if rerr := m.Reload(ctx); rerr != nil {
		lg.Warn("daemon-reload", "err", rerr)
	}
	return err
}
