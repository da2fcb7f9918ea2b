package addons

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Defaults.
const (
	// DefaultResync is how often the applier applies everything again even when
	// nothing changed in etcd: an object deleted or edited by hand comes back.
	DefaultResync = 30 * time.Second
	// sessionTTL bounds how long a dead applier holds the election, in seconds.
	sessionTTL = 10
	// retryEvery is the pause after a pass the apiserver did not answer.
	retryEvery = 5 * time.Second
)

// ControllerConfig is what the controller needs.
type ControllerConfig struct {
	// Client returns the master's etcd client as it is now: a master that restarts its
	// member (a CA rotation does) has a new one.
	Client func() *clientv3.Client
	// Master is this master's name, its candidate name in the election.
	Master string
	// Disable are the built-in add-ons this master's --disable names.
	Disable []string
	// Builtins renders the built-in add-ons, by name, for the cluster as it is.
	Builtins func(Facts) (map[string][]byte, error)
	// Applier reaches the apiserver; it is made once this master leads.
	Applier func() (*Applier, error)
	// Resync is how often everything is applied again; DefaultResync when 0.
	Resync time.Duration
	Logger *slog.Logger
}

// Controller applies the add-ons while this master holds the election; every master
// runs one, and one applies at a time.
type Controller struct {
	cfg ControllerConfig
	lg  *slog.Logger
}

// NewController prepares a controller; it starts nothing.
func NewController(cfg ControllerConfig) *Controller {
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	return &Controller{cfg: cfg, lg: cfg.Logger.With("part", "addons")}
}

// Run records this master's --disable, then campaigns and applies while it leads,
// until ctx ends. Failures are logged and retried, never fatal.
func (c *Controller) Run(ctx context.Context) error {
	names := slices.Sorted(slices.Values(c.cfg.Disable))
	data, _ := json.Marshal(names)
	_, _ = backoff.Retry(ctx, func() (struct{}, error) {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.cfg.Client().Put(wctx, DisabledPrefix+c.cfg.Master, string(data))
		if err != nil && ctx.Err() == nil {
			c.lg.Warn("[addons] record this master's --disable", "err", err, "retry in", retryEvery)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(backoff.NewConstantBackOff(retryEvery)), backoff.WithMaxElapsedTime(0))
	_, _ = backoff.Retry(ctx, func() (struct{}, error) {
		err := c.lead(ctx)
		if err != nil && ctx.Err() == nil {
			c.lg.Warn("[addons] applier stopped; campaigning again", "err", err, "in", retryEvery)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(backoff.NewConstantBackOff(retryEvery)), backoff.WithMaxElapsedTime(0))
	return nil
}

// lead campaigns, then applies on every change under Prefix and every Resync until
// the session ends (etcd lost this master's lease) or ctx does.
func (c *Controller) lead(ctx context.Context) error {
	cli := c.cfg.Client()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer s.Close()
	e := concurrency.NewElection(s, ElectionPrefix)
	if err := e.Campaign(ctx, c.cfg.Master); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	c.lg.Info("[addons] this master applies the add-ons")
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer rcancel()
		_ = e.Resign(rctx)
	}()
	app, err := c.cfg.Applier()
	if err != nil {
		return fmt.Errorf("apiserver client: %w", err)
	}
	wch := cli.Watch(clientv3.WithRequireLeader(lctx), Prefix, clientv3.WithPrefix())
	tick := time.NewTicker(c.cfg.Resync)
	defer tick.Stop()
	lastErr := ""
	for {
		if err := c.Sync(lctx, cli, app); err != nil {
			if lctx.Err() != nil {
				return lctx.Err()
			}
			// An apiserver that is not up yet fails every pass the same way: say it once.
			if err.Error() != lastErr {
				c.lg.Warn("[addons] pass failed; trying again every "+retryEvery.String(), "err", err)
				lastErr = err.Error()
			}
			select {
			case <-lctx.Done():
				return lctx.Err()
			case <-time.After(retryEvery):
			}
			continue
		}
		if lastErr != "" {
			c.lg.Info("[addons] pass done after failures")
			lastErr = ""
		}
		if err := waitChange(lctx, wch, tick.C); err != nil {
			return err
		}
	}
}

// waitChange returns when a manifest or a --disable changes, or at the next tick.
func waitChange(ctx context.Context, wch clientv3.WatchChan, tick <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			return nil
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("watch %s: %v", Prefix, wr.Err())
			}
			if relevant(wr) {
				return nil
			}
		}
	}
}

// relevant says whether a watch event changes what should be applied: a manifest or
// a master's --disable, not the states this controller writes.
func relevant(wr clientv3.WatchResponse) bool {
	for _, ev := range wr.Events {
		k := string(ev.Kv.Key)
		if strings.HasPrefix(k, ManifestsPrefix) || strings.HasPrefix(k, DisabledPrefix) {
			return true
		}
	}
	return false
}

// Facts are what the built-in add-ons are rendered from besides the flags.
type Facts struct {
	// RootCAHash is the hash of the CA bundle pods trust (RootCAHash): a built-in's
	// pods carry it, so that they restart, with the new bundle, after a CA rotation.
	// Their in-cluster clients read it only at start.
	RootCAHash string
}

// desired is one add-on to apply.
type desired struct {
	source string
	data   []byte
}

// Sync is one pass: apply every add-on that should be there, delete the objects of
// those that should not, and record each one's State. It returns an error only when
// the pass could not be made (etcd or the apiserver did not answer); an add-on that
// fails is recorded as Failed, and the others are still applied.
func (c *Controller) Sync(ctx context.Context, cli *clientv3.Client, app *Applier) error {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := cli.Get(gctx, Prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return fmt.Errorf("read %s: %w", Prefix, err)
	}
	want := map[string]desired{}
	old := map[string]State{}
	disabledBy := map[string][]string{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		switch {
		case strings.HasPrefix(k, ManifestsPrefix):
			want[strings.TrimPrefix(k, ManifestsPrefix)] = desired{source: SourceManifest, data: kv.Value}
		case strings.HasPrefix(k, StatusPrefix):
			var st State
			if json.Unmarshal(kv.Value, &st) == nil {
				old[st.Name] = st
			}
		case strings.HasPrefix(k, DisabledPrefix):
			var names []string
			_ = json.Unmarshal(kv.Value, &names)
			for _, n := range names {
				disabledBy[n] = append(disabledBy[n], strings.TrimPrefix(k, DisabledPrefix))
			}
		}
	}
	rootCA, err := app.RootCAHash(ctx)
	if err != nil {
		return err
	}
	builtins, err := c.cfg.Builtins(Facts{RootCAHash: rootCA})
	if err != nil {
		return fmt.Errorf("render the built-in add-ons: %w", err)
	}
	for name, data := range builtins {
		if _, ok := disabledBy[name]; ok {
			continue
		}
		// An operator's manifest of the same name replaces the built-in.
		if _, ok := want[name]; !ok {
			want[name] = desired{source: SourceBuiltin, data: data}
		}
	}
	for name, by := range disabledBy {
		if _, ok := builtins[name]; ok || slices.Contains(Builtins, name) {
			if _, seen := old[name]; !seen {
				if err := c.record(ctx, cli, State{}, disabledState(name, by, c.cfg.Master)); err != nil {
					return err
				}
			}
		}
	}
	names := slices.Sorted(maps.Keys(want))
	for _, name := range names {
		st, err := c.apply(ctx, app, name, want[name], old[name])
		if err != nil {
			return err
		}
		if err := c.record(ctx, cli, old[name], st); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old)) {
		if _, ok := want[name]; ok {
			continue
		}
		st := old[name]
		if err := app.Delete(ctx, st.Objects); err != nil {
			c.lg.Error("[addons] delete the objects of a removed add-on", "addon", name, "err", err)
			st.Error = err.Error()
			if err := c.record(ctx, cli, old[name], st); err != nil {
				return err
			}
			continue
		}
		if by, ok := disabledBy[name]; ok {
			if err := c.record(ctx, cli, st, disabledState(name, by, c.cfg.Master)); err != nil {
				return err
			}
			continue
		}
		c.lg.Info("[addons] removed", "addon", name, "deleted", len(st.Objects))
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Delete(dctx, StatusPrefix+name)
		cancel()
		if err != nil {
			return fmt.Errorf("forget add-on %s: %w", name, err)
		}
	}
	return nil
}

func disabledState(name string, by []string, master string) State {
	by = slices.Sorted(slices.Values(by))
	return State{Name: name, Source: SourceBuiltin, Phase: PhaseDisabled, DisabledBy: by, By: master}
}

// apply applies one add-on and returns its new State. Only a complete, successful
// apply deletes what the manifest no longer holds.
func (c *Controller) apply(ctx context.Context, app *Applier, name string, d desired, old State) (State, error) {
	st := State{Name: name, Source: d.source, Hash: Hash(d.data), By: c.cfg.Master, Objects: old.Objects}
	if old.Phase == PhaseDisabled {
		st.Objects = nil
	}
	objs, err := Parse(name, d.data)
	if err != nil {
		st.Phase, st.Error = PhaseFailed, err.Error()
		if old.Error != st.Error {
			c.lg.Error("[addons] manifest does not parse; nothing of it is applied or deleted", "addon", name, "err", err)
		}
		return st, nil
	}
	applied, err := app.Apply(ctx, name, objs)
	var oe *ObjectError
	if err != nil && !errors.As(err, &oe) {
		return st, err // the apiserver did not answer
	}
	if err != nil {
		st.Phase, st.Error = PhaseFailed, err.Error()
		st.Objects = union(st.Objects, applied)
		if old.Error != st.Error {
			c.lg.Error("[addons] the apiserver refused objects; the rest are applied and nothing is deleted", "addon", name, "err", err)
		}
		return st, nil
	}
	var gone []Ref
	for _, r := range st.Objects {
		if !slices.Contains(applied, r) {
			gone = append(gone, r)
		}
	}
	st.Objects = applied
	if err := app.Delete(ctx, gone); err != nil {
		st.Phase, st.Error = PhaseFailed, "delete what the manifest no longer holds: "+err.Error()
		st.Objects = union(applied, gone)
		return st, nil
	}
	st.Phase = PhaseApplied
	if old.Phase != PhaseApplied || old.Hash != st.Hash {
		c.lg.Info("[addons] applied", "addon", name, "source", d.source, "objects", len(applied), "deleted", len(gone))
	}
	return st, nil
}

// record writes st when it differs from old, stamped now if its phase, hash or error
// changed.
func (c *Controller) record(ctx context.Context, cli *clientv3.Client, old, st State) error {
	st.At = old.At
	if old.Phase != st.Phase || old.Hash != st.Hash || old.Error != st.Error || st.At.IsZero() {
		st.At = time.Now().UTC().Truncate(time.Second)
	}
	a, _ := json.Marshal(old)
	b, _ := json.Marshal(st)
	if string(a) == string(b) {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Put(wctx, StatusPrefix+st.Name, string(b)); err != nil {
		return fmt.Errorf("record add-on %s: %w", st.Name, err)
	}
	return nil
}

func union(a, b []Ref) []Ref {
	out := slices.Clone(a)
	for _, r := range b {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// Put stores the manifest of the add-on name, for the applying master to apply; the
// caller has parsed it (Parse).
func Put(ctx context.Context, cli *clientv3.Client, name string, manifest []byte) error {
	_, err := cli.Put(ctx, ManifestsPrefix+name, string(manifest))
	return err
}

// Delete removes the manifest of the add-on name, and reports whether there was one;
// the applying master then deletes its objects.
func Delete(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	resp, err := cli.Delete(ctx, ManifestsPrefix+name)
	if err != nil {
		return false, err
	}
	return resp.Deleted > 0, nil
}

// States reads every add-on's State, sorted by name.
func States(ctx context.Context, cli *clientv3.Client) ([]State, error) {
	resp, err := cli.Get(ctx, StatusPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", StatusPrefix, err)
	}
	out := make([]State, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var st State
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b State) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// WaitHash waits up to timeout for name's State to be about the manifest with hash, and
// returns it.
func WaitHash(ctx context.Context, cli *clientv3.Client, name, hash string, timeout time.Duration) (State, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wch := cli.Watch(ctx, StatusPrefix+name)
	for {
		gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli.Get(gctx, StatusPrefix+name)
		gcancel()
		if err == nil && len(resp.Kvs) > 0 {
			var st State
			if json.Unmarshal(resp.Kvs[0].Value, &st) == nil && st.Hash == hash {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			return State{}, fmt.Errorf("waited %s for a master to apply add-on %s (is a master's apiserver up? 'haagent status' says): %w", timeout, name, ctx.Err())
		case <-wch:
		case <-time.After(2 * time.Second):
		}
	}
}
