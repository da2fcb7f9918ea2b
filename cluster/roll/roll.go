// Package roll moves a master onto a newly installed haagent binary while the cluster
// keeps serving, so that a package upgrade landing on every master at once restarts
// one etcd member at a time. It owns:
//   - noticing that the package manager replaced the binary this process runs from,
//     and trying the new one (`haagent version`) before anything stops;
//   - the masters' roll lock in etcd (clientv3/concurrency), taken only while every
//     member is healthy;
//   - the hand-over: the binary being replaced is kept, the master is taken out of
//     service (its caller's BeforeStop), and the process execs the new binary in
//     place, keeping its PID, so that systemd's Type=notify unit sees one service;
//   - on the new binary's side, the gate it must pass (its caller's Gate: the etcd
//     member healthy and caught up, the apiserver ready) before the lock goes to the
//     next master;
//   - the way back: a gate that fails within its limit execs the kept binary again,
//     which passes the gate and releases the lock, and the roll of that binary stops
//     on every master, saying why in etcd, the log, /status and /metrics.
//
// The lock's lease outlives the exec: the old process writes it to the state file and
// stops renewing it, and the new one renews it until its gate passes. A master that
// dies mid-roll leaves its record "rolling" with no lock held; the next master to take
// the lock finds it and stops the roll rather than restart a second member.
// etcd itself hands leadership away when a leader's member stops cleanly
// (EtcdServer.Stop transfers it), so the exec costs no election.
package roll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/base/release"
)

// Keys in etcd; the masters' etcd user (root role) reads and writes them, no other.
const (
	// LockPrefix is the masters' roll lock (concurrency.Mutex).
	LockPrefix = "/haagent/roll/lock"
	// NodesPrefix holds each master's Record, by name.
	NodesPrefix = "/haagent/roll/nodes/"
	// StoppedKey holds the Stopped record of a binary whose roll stopped.
	StoppedKey = "/haagent/roll/stopped"
)

// Timings.
const (
	// LeaseTTL is the lock's lease: it must outlive the exec and the new binary's start
	// up to its first renewal (the member's restart, seconds); a master that dies
	// mid-roll frees the lock after it.
	LeaseTTL = 60 * time.Second
	// DefaultGateTimeout is how long the new binary has to pass its gate, as kubeadm
	// waits 5 minutes for each static pod of an upgrade.
	DefaultGateTimeout = 5 * time.Minute
	// CheckEvery paces the look at the installed binary, and the retries of a roll
	// that could not start (the lock's holder busy, a member unhealthy).
	CheckEvery = 2 * time.Second
	// probeTimeout bounds `haagent version` of the installed binary.
	probeTimeout = 30 * time.Second
)

// Record states.
const (
	StateRolling    = "rolling"
	StateDone       = "done"
	StateRolledBack = "rolled-back"
)

// Binary identifies a haagent build: its version, and the hash that tells two builds
// of one version apart.
type Binary struct {
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
}

func (b Binary) String() string {
	if len(b.SHA256) < 12 {
		return b.Version
	}
	return b.Version + " (" + b.SHA256[:12] + ")"
}

// Record is a master's last roll, in etcd under NodesPrefix.
type Record struct {
	State  string    `json:"state"`
	From   Binary    `json:"from"`
	To     Binary    `json:"to"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
}

// Stopped says that the roll of a binary stopped, where and why. No master rolls onto
// that binary again; installing another one starts a new roll.
type Stopped struct {
	Binary Binary    `json:"binary"`
	Node   string    `json:"node"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Status is the roll's part of a master's /status.
type Status struct {
	Running Binary `json:"running"`
	// Installed is the binary at the installed path when it differs from the running one.
	Installed *Binary `json:"installed,omitempty"`
	// State says what the roll does now, in words.
	State string `json:"state"`
	// Stopped is the stopped roll, if any.
	Stopped *Stopped `json:"stopped,omitempty"`
}

// Exec asks the caller to exec Path in place of this process, once the role has
// stopped: the roll's hand-over to a new binary, or back to the kept one.
type Exec struct {
	Path   string
	Reason string
}

func (e *Exec) Error() string { return "exec " + e.Path + ": " + e.Reason }

// state is the local record of a roll under way, which survives the exec.
type state struct {
	From  Binary           `json:"from"`
	To    Binary           `json:"to"`
	Lease clientv3.LeaseID `json:"lease"`
	Since time.Time        `json:"since"`
	// RolledBack is why To failed its gate, once From runs again.
	RolledBack string `json:"rolledBack,omitempty"`
	// Serving is what served before the exec (BeforeStop's answer): the gate waits for
	// the same to serve again.
	Serving []string `json:"serving,omitempty"`
}

// Config is what a Roller needs from its master.
type Config struct {
	// Name is this master's name.
	Name string
	// Dir keeps the state file and the replaced binary (/var/lib/haagent/roll).
	Dir string
	// Installed is where the package installs haagent: this process's executable path.
	Installed string
	// GateTimeout bounds the new binary's gate (DefaultGateTimeout when 0).
	GateTimeout time.Duration
	// Client is the master's etcd client.
	Client func() *clientv3.Client
	// ClusterHealthy fails unless every etcd member is healthy: no member restarts
	// while another is down, which would cost the quorum.
	ClusterHealthy func(ctx context.Context) error
	// Leader says whether this master's etcd member leads, and how many members there
	// are: the leader rolls last, so that a roll moves etcd's leadership once, and
	// each move drops the proposals in flight to the old leader.
	Leader func(ctx context.Context) (leads bool, members int, err error)
	// BeforeStop takes the master out of service before the exec, and says what of it
	// served until then (its apiserver, say), which the gate then waits for.
	BeforeStop func(ctx context.Context) (serving []string, err error)
	// Gate returns once the master serves again as before (serving), or fails when
	// ctx ends first.
	Gate   func(ctx context.Context, serving []string) error
	Logger *slog.Logger
}

// Roller rolls one master.
type Roller struct {
	cfg     Config
	running Binary
	// runningFile is the file this process runs from, to tell an install from it.
	runningFile os.FileInfo

	mu     sync.Mutex
	status Status
	// probedFile and probed are the installed file last probed and what it was: the
	// probe (an exec and a hash) runs again only for another file.
	probedFile os.FileInfo
	probed     Binary

	waiting, stopped prometheus.Gauge
	rollbacks        prometheus.Counter
	gateSeconds      prometheus.Gauge
}

// selfExe is the file this process runs from, even once the package manager has
// replaced (unlinked) it.
const selfExe = "/proc/self/exe"

// New identifies the running binary and registers the roll's metrics with reg.
func New(cfg Config, reg prometheus.Registerer) (*Roller, error) {
	if cfg.GateTimeout == 0 {
		cfg.GateTimeout = DefaultGateTimeout
	}
	fi, err := os.Stat(selfExe)
	if err != nil {
		return nil, fmt.Errorf("roll: %w", err)
	}
	sum, err := files.SHA256(selfExe)
	if err != nil {
		return nil, fmt.Errorf("roll: %w", err)
	}
	r := &Roller{cfg: cfg, running: Binary{Version: release.Version, SHA256: sum}, runningFile: fi,
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haagent_roll_waiting",
			Help: "1 while a newly installed haagent binary waits for this master's turn to roll onto it."}),
		stopped: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haagent_roll_stopped",
			Help: "1 while the roll of the installed haagent binary is stopped (a master failed its gate); /status says why."}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "haagent_roll_rollbacks_total",
			Help: "Times this master went back to the binary it ran before, because the new one failed its gate."}),
		gateSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haagent_roll_last_gate_seconds",
			Help: "How long this master's last roll took from the exec to its gate passing."}),
	}
	r.status = Status{Running: r.running, State: "idle"}
	var st state
	if readJSON(r.statePath(), &st) == nil {
		r.status.State = fmt.Sprintf("finishing the roll from %s to %s", st.From, st.To)
	}
	for _, c := range []prometheus.Collector{r.waiting, r.stopped, r.rollbacks, r.gateSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("roll: register metrics: %w", err)
		}
	}
	return r, nil
}

// Status is the roll as this master sees it.
func (r *Roller) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *Roller) setState(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.State = fmt.Sprintf(format, args...)
}

func (r *Roller) statePath() string    { return filepath.Join(r.cfg.Dir, "state.json") }
func (r *Roller) previousPath() string { return filepath.Join(r.cfg.Dir, "previous") }
func refusedPath(dir string) string    { return filepath.Join(dir, "refused.json") }

// Back returns the kept binary to exec at once, before anything else starts, when
// the binary running is one whose gate failed on this host: systemd starts the
// installed binary again after a crash or a reboot, and the way back must hold.
func Back(dir string) (string, bool) {
	var refused Binary
	if err := readJSON(refusedPath(dir), &refused); err != nil {
		return "", false
	}
	sum, err := files.SHA256(selfExe)
	if err != nil || sum != refused.SHA256 {
		return "", false
	}
	prev := filepath.Join(dir, "previous")
	if psum, err := files.SHA256(prev); err != nil || psum == sum {
		return "", false
	}
	return prev, true
}

// Resume finishes a roll that the exec left under way, once the master has started:
// on the new binary, the gate, then the lock goes; on the kept binary after a failed
// gate, the same. It returns an *Exec when the gate failed and the kept binary must
// run again. Without a roll under way it does nothing.
func (r *Roller) Resume(ctx context.Context) error {
	var st state
	if err := readJSON(r.statePath(), &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		r.cfg.Logger.Warn("[roll] unreadable roll state; dropping it", "file", r.statePath(), "err", err)
		return os.Remove(r.statePath())
	}
	cli := r.cfg.Client()
	switch {
	case r.running.SHA256 == st.To.SHA256 && st.RolledBack == "":
		r.setState("rolled onto %s: waiting for this master to serve again (limit %s)", st.To, r.cfg.GateTimeout)
		r.cfg.Logger.Info("[roll] this master runs the new binary: waiting until it serves again before the next master's turn",
			"from", st.From.String(), "to", st.To.String(), "limit", r.cfg.GateTimeout)
		if err := r.gate(ctx, cli, st); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			reason := fmt.Sprintf("%s failed its gate on %s: %v", st.To, r.cfg.Name, err)
			r.cfg.Logger.Error("[roll] the new binary failed its gate: going back to the one before it and stopping the roll", "reason", reason)
			st.RolledBack = reason
			if err := r.stopRoll(ctx, cli, st, reason); err != nil {
				r.cfg.Logger.Warn("[roll] could not record the stopped roll in etcd; going back anyway", "err", err)
			}
			if err := writeJSON(r.statePath(), st); err != nil {
				return err
			}
			if err := writeJSON(refusedPath(r.cfg.Dir), st.To); err != nil {
				return err
			}
			return &Exec{Path: r.previousPath(), Reason: reason}
		}
		r.gateSeconds.Set(time.Since(st.Since).Seconds())
		return r.finish(ctx, cli, st, Record{State: StateDone, From: st.From, To: st.To, Since: st.Since},
			"[roll] this master serves on the new binary: the next master may roll")
	case r.running.SHA256 == st.From.SHA256 && st.RolledBack != "":
		r.rollbacks.Inc() // counted by the binary that runs after it
		r.setState("back on %s after %s", st.From, st.RolledBack)
		r.cfg.Logger.Warn("[roll] back on the binary before the roll: waiting until this master serves again", "reason", st.RolledBack)
		if err := r.gate(ctx, cli, st); err != nil {
			// The lock stays held until its lease lapses: no other master starts a roll
			// while this one does not serve.
			return fmt.Errorf("roll: back on %s, but this master does not serve again: %w", st.From, err)
		}
		return r.finish(ctx, cli, st, Record{State: StateRolledBack, From: st.From, To: st.To, Since: st.Since, Reason: st.RolledBack},
			"[roll] this master serves again on the binary before the roll; the roll is stopped")
	default:
		r.cfg.Logger.Warn("[roll] a roll was under way, but this binary is neither end of it (installed and restarted by hand?); releasing the lock",
			"running", r.running.String(), "from", st.From.String(), "to", st.To.String())
		return r.finish(ctx, cli, st, Record{State: StateDone, From: st.From, To: r.running, Since: st.Since}, "[roll] released the roll lock")
	}
}

// gate runs the caller's gate within the limit, renewing the lock's lease meanwhile.
func (r *Roller) gate(ctx context.Context, cli *clientv3.Client, st state) error {
	lease := st.Lease
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if ch, err := cli.KeepAlive(kctx, lease); err == nil {
		go func() {
			for range ch {
			}
		}()
	} else {
		r.cfg.Logger.Warn("[roll] could not renew the roll lock's lease", "lease", fmt.Sprintf("%x", lease), "err", err)
	}
	gctx, gcancel := context.WithTimeout(ctx, r.cfg.GateTimeout)
	defer gcancel()
	if fault := faultGate(); fault != "" {
		return errors.New(fault)
	}
	return r.cfg.Gate(gctx, st.Serving)
}

// finish records rec, releases the lock and forgets the local state.
func (r *Roller) finish(ctx context.Context, cli *clientv3.Client, st state, rec Record, msg string) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := putJSON(wctx, cli, NodesPrefix+r.cfg.Name, rec); err != nil {
		return fmt.Errorf("roll: record this master's roll: %w", err)
	}
	if _, err := cli.Revoke(wctx, st.Lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("roll: release the roll lock: %w", err)
	}
	if err := os.Remove(r.statePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("roll: %w", err)
	}
	r.setState("idle")
	r.cfg.Logger.Info(msg, "running", r.running.String())
	return nil
}

// stopRoll records that st.To's roll stopped, and this master's part in it.
func (r *Roller) stopRoll(ctx context.Context, cli *clientv3.Client, st state, reason string) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := putJSON(wctx, cli, StoppedKey, Stopped{Binary: st.To, Node: r.cfg.Name, Reason: reason, At: time.Now().UTC()}); err != nil {
		return err
	}
	return putJSON(wctx, cli, NodesPrefix+r.cfg.Name, Record{State: StateRolledBack, From: st.From, To: st.To, Since: st.Since, Reason: reason})
}

// Watch looks at the installed binary every CheckEvery until ctx ends, and rolls onto
// a new one when this master's turn comes: it returns the *Exec of the hand-over.
func (r *Roller) Watch(ctx context.Context) error {
	t := time.NewTicker(CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := r.step(ctx)
		var ex *Exec
		if errors.As(err, &ex) {
			return err
		}
		if err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("[roll] could not roll onto the installed binary; trying again", "err", err)
		}
	}
}

// step rolls onto the installed binary if it is new, allowed and this master's turn.
func (r *Roller) step(ctx context.Context) error {
	fi, err := os.Stat(r.cfg.Installed)
	if err != nil || os.SameFile(fi, r.runningFile) {
		r.waiting.Set(0)
		return nil // nothing installed over this binary (or it is being replaced right now)
	}
	inst, err := r.probed, error(nil)
	if r.probedFile == nil || !os.SameFile(fi, r.probedFile) || !fi.ModTime().Equal(r.probedFile.ModTime()) {
		inst, err = r.probe(ctx)
		if err == nil {
			r.probedFile, r.probed = fi, inst
		}
	}
	if err != nil {
		r.setInstalled(nil, "the installed binary does not run: "+err.Error())
		return err
	}
	if inst.SHA256 == r.running.SHA256 {
		return nil // the same build installed again
	}
	cli := r.cfg.Client()
	if stop, err := r.stoppedFor(ctx, cli, inst); err != nil || stop != nil {
		return err
	}
	r.setInstalled(&inst, "waiting for this master's turn to roll onto "+inst.String())
	r.waiting.Set(1)

	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(int(LeaseTTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("roll lock: %w", err)
	}
	handedOver := false
	defer func() {
		if !handedOver {
			sess.Close() // revokes the lease: the lock goes to the next master
		}
	}()
	mu := concurrency.NewMutex(sess, LockPrefix)
	if err := mu.Lock(ctx); err != nil {
		return fmt.Errorf("roll lock: %w", err)
	}
	// Under the lock: what another master did meanwhile decides.
	if stop, err := r.stoppedFor(ctx, cli, inst); err != nil || stop != nil {
		return err
	}
	records, err := readRecords(ctx, cli)
	if err != nil {
		return err
	}
	if stale := unfinished(records); stale != "" {
		reason := fmt.Sprintf("%s did not finish its roll onto %s (it stopped mid-roll): not restarting another member", stale, inst)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := putJSON(wctx, cli, StoppedKey, Stopped{Binary: inst, Node: stale, Reason: reason, At: time.Now().UTC()}); err != nil {
			return err
		}
		r.cfg.Logger.Error("[roll] stopping the roll", "reason", reason)
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	leads, members, err := r.cfg.Leader(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("roll: is this member etcd's leader: %w", err)
	}
	if leads {
		if rolled := r.rolledOnto(records, inst); rolled < members-1 {
			r.setState("waiting to roll onto %s: the etcd leader rolls last, after the other masters (%d of %d rolled)", inst, rolled, members-1)
			return nil
		}
	}
	hctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	err = r.cfg.ClusterHealthy(hctx)
	cancel()
	if err != nil {
		r.setState("waiting for every etcd member to be healthy before rolling onto %s: %v", inst, err)
		return fmt.Errorf("not rolling while the cluster is not healthy: %w", err)
	}
	// Check the file again: what was probed is what runs.
	if sum, err := files.SHA256(r.cfg.Installed); err != nil || sum != inst.SHA256 {
		return fmt.Errorf("the installed binary changed while waiting for the lock; looking again")
	}

	st := state{From: r.running, To: inst, Lease: sess.Lease(), Since: time.Now().UTC()}
	if err := r.keepPrevious(); err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := putJSON(wctx, cli, NodesPrefix+r.cfg.Name, Record{State: StateRolling, From: st.From, To: st.To, Since: st.Since}); err != nil {
		return fmt.Errorf("roll: record this master's roll: %w", err)
	}
	if err := writeJSON(r.statePath(), st); err != nil {
		return err
	}
	r.setState("rolling onto %s", inst)
	r.cfg.Logger.Info("[roll] this master's turn: taking it out of service and starting the new binary", "from", r.running.String(), "to", inst.String())
	serving, err := r.cfg.BeforeStop(ctx)
	if err != nil {
		r.cfg.Logger.Warn("[roll] could not take this master out of service before the restart", "err", err)
	}
	st.Serving = serving
	if err := writeJSON(r.statePath(), st); err != nil {
		return err
	}
	sess.Orphan() // the lease outlives this process: the new binary renews and revokes it
	handedOver = true
	r.waiting.Set(0)
	return &Exec{Path: r.cfg.Installed, Reason: "roll onto " + inst.String()}
}

// stoppedFor returns the stopped roll that names inst, and says so in the status.
func (r *Roller) stoppedFor(ctx context.Context, cli *clientv3.Client, inst Binary) (*Stopped, error) {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var s Stopped
	found, err := getJSON(gctx, cli, StoppedKey, &s)
	if err != nil {
		return nil, fmt.Errorf("roll: %w", err)
	}
	refused := Binary{}
	_ = readJSON(refusedPath(r.cfg.Dir), &refused)
	if !found || s.Binary.SHA256 != inst.SHA256 {
		if refused.SHA256 == inst.SHA256 {
			s = Stopped{Binary: inst, Node: r.cfg.Name, Reason: "this master went back from it"}
		} else {
			r.stopped.Set(0)
			r.mu.Lock()
			r.status.Stopped = nil
			r.mu.Unlock()
			return nil, nil
		}
	}
	r.stopped.Set(1)
	r.waiting.Set(0)
	r.mu.Lock()
	r.status.Stopped = &s
	r.status.State = "the roll onto " + inst.String() + " is stopped: " + s.Reason + "; install another build to roll again"
	r.mu.Unlock()
	return &s, nil
}

// readRecords reads every master's Record, by name; under the lock they say what the
// other masters did.
func readRecords(ctx context.Context, cli *clientv3.Client) (map[string]Record, error) {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, NodesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("roll: read the masters' records: %w", err)
	}
	out := map[string]Record{}
	for _, kv := range resp.Kvs {
		var rec Record
		if json.Unmarshal(kv.Value, &rec) == nil {
			out[strings.TrimPrefix(string(kv.Key), NodesPrefix)] = rec
		}
	}
	return out, nil
}

// rolledOnto counts the other masters whose record says they rolled onto inst.
func (r *Roller) rolledOnto(records map[string]Record, inst Binary) int {
	n := 0
	for name, rec := range records {
		if name != r.cfg.Name && rec.State == StateDone && rec.To.SHA256 == inst.SHA256 {
			n++
		}
	}
	return n
}

// unfinished names a master whose record says it is rolling: under the lock, nobody
// is, so that master stopped mid-roll.
func unfinished(records map[string]Record) string {
	for name, rec := range records {
		if rec.State == StateRolling {
			return name
		}
	}
	return ""
}

func (r *Roller) setInstalled(b *Binary, state string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Installed, r.status.State = b, state
}

// probe runs the installed binary's `version`, which proves that it runs here, and
// identifies it.
func (r *Roller) probe(ctx context.Context) (Binary, error) {
	sum, err := files.SHA256(r.cfg.Installed)
	if err != nil {
		return Binary{}, err
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	out, err := exec.CommandContext(pctx, r.cfg.Installed, "version").Output()
	if err != nil {
		return Binary{}, fmt.Errorf("%s version: %w", r.cfg.Installed, err)
	}
	// "haagent 0.1.0 (commit ...)"
	fields := strings.Fields(string(out))
	if len(fields) < 2 || fields[0] != "haagent" {
		return Binary{}, fmt.Errorf("%s version printed %q, not haagent's version", r.cfg.Installed, strings.TrimSpace(string(out)))
	}
	return Binary{Version: fields[1], SHA256: sum}, nil
}

// keepPrevious copies the running binary aside, for the way back.
func (r *Roller) keepPrevious() error {
	b, err := os.ReadFile(selfExe)
	if err != nil {
		return fmt.Errorf("roll: keep the running binary: %w", err)
	}
	if err := files.Atomic(r.previousPath(), b, 0o755); err != nil {
		return fmt.Errorf("roll: keep the running binary: %w", err)
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return files.Atomic(path, append(b, '\n'), 0o600)
}

func putJSON(ctx context.Context, cli *clientv3.Client, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, key, string(b)); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func getJSON(ctx context.Context, cli *clientv3.Client, key string, v any) (bool, error) {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	return true, json.Unmarshal(resp.Kvs[0].Value, v)
}
