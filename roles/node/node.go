// Package node is what every role does the same way: the flags they share, getting and
// renewing their certificates and warning before they expire, the run skeleton (status
// endpoints, errgroup, READY=1, STOPPING=1), the start of the reconciler that keeps
// their files and units, and `haagent reset`, which takes all of it off a host. The
// roles (roles/master, roles/minion, roles/lb) keep only what is theirs.
package node

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/base/statusapi"
	"github.com/haagent/haagent/cluster/roll"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/pki"
)

// Node is the part of a running role that every role shares.
type Node struct {
	cfg *Config
	lg  *slog.Logger

	// statusAddr is the status endpoints' bound address, set before start runs.
	statusAddr string
	// certs reports the expiry of the certificates under the root.
	certs *certExpiry

	mu  sync.Mutex // guards the fields below
	rec *reconcile.Reconciler
	// pending are files changed outside Render before the reconciler started.
	pending []string
}

// Deps are what every role is given rather than makes: its logger, and the metrics
// registry that it registers its collectors in (Registerer) and that /metrics serves
// (Gatherer); the agent passes Prometheus' default one.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
}

// New prepares the shared part of a role; it starts nothing.
func New(cfg *Config, lg *slog.Logger) *Node {
	return &Node{cfg: cfg, lg: lg, certs: newCertExpiry(cfg.Root, lg, time.Now)}
}

// Endpoints is what a role's status endpoints report.
type Endpoints struct {
	// Ready is /readyz: nil once the role serves.
	Ready func() error
	// Status is the role's document behind /status.
	Status   func(ctx context.Context) (any, error)
	Gatherer prometheus.Gatherer
}

// Run is the run skeleton of every role. It binds the status endpoints, then runs
// start, which brings the role up step by step and adds its long-running parts to g.
// Once start has returned, Run tells systemd READY=1 and only then lets the reconciler
// start units: they are ordered After=haagent.service, which is active from READY=1,
// so starting them earlier would deadlock. The first part to fail stops the others;
// Run returns once all have, nil after ctx ended, and tells systemd STOPPING=1.
func (n *Node) Run(ctx context.Context, ep Endpoints, start func(ctx context.Context, g *errgroup.Group) error) error {
	certReg := prometheus.NewRegistry()
	if err := certReg.Register(n.certs); err != nil {
		return err
	}
	srv, err := statusapi.Listen(statusapi.Config{
		Address: n.cfg.StatusAddress, Ready: ep.Ready, Status: ep.Status,
		Gatherer: prometheus.Gatherers{ep.Gatherer, certReg}, Logger: n.lg,
	})
	if err != nil {
		return err
	}
	n.statusAddr = srv.Addr().String()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx) })
	g.Go(func() error {
		if err := start(ctx, g); err != nil || ctx.Err() != nil {
			// A start cut short by the end of ctx is a clean stop, not a failure.
			return ignoreCanceled(ctx, err)
		}
		n.notify(daemon.SdNotifyReady)
		n.lg.Debug("[ready] told systemd READY=1")
		g.Go(func() error {
			t := time.NewTicker(RenewCheckEvery)
			defer t.Stop()
			n.certs.run(ctx, t.C)
			return nil
		})
		if rec := n.reconciler(); rec != nil {
			return rec.Run(ctx)
		}
		return nil
	})
	err = g.Wait()
	if rec := n.reconciler(); rec != nil {
		rec.Close()
	}
	// A roll's exec in place keeps the PID: to systemd it is a reload, which the new
	// binary ends with READY=1.
	if ex := (*roll.Exec)(nil); errors.As(err, &ex) {
		n.notify(daemon.SdNotifyReloading)
	} else {
		n.notify(daemon.SdNotifyStopping)
	}
	return err
}

// CertWarnings lists the node's certificates that expire within CertWarnBefore, for
// its role's status.
func (n *Node) CertWarnings() []CertWarning {
	certs, err := pki.Inspect(n.cfg.Root)
	if err != nil {
		return nil
	}
	return certWarnings(certs, n.certs.now())
}

// StatusAddr is where the status endpoints listen, once Run has bound them (a port 0
// in --status-address is resolved).
func (n *Node) StatusAddr() string { return n.statusAddr }

func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return nil
	}
	return err
}

func (n *Node) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.lg.Warn("could not notify systemd", "state", state, "err", err)
	}
}

// StartReconciler writes the node's files now, so that they exist when the role
// reports ready, and keeps them and the units that read them as rc says; Run starts
// the units after READY=1. rc.Owned and rc.Logger default to the node's.
func (n *Node) StartReconciler(ctx context.Context, rc reconcile.Config) (*reconcile.Reconciler, error) {
	if rc.Owned == nil {
		rc.Owned = &files.Owned{Root: n.cfg.Root, StatePath: files.StateFile}
	}
	if rc.Logger == nil {
		rc.Logger = n.lg.With("component", "reconcile")
	}
	rc.UnitDir, rc.PruneDirs = nodeconf.UnitDir, nodeconf.PrunedDirs()
	rec, err := reconcile.Start(ctx, n.cfg.Systemd, rc)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.rec = rec
	pending := n.pending
	n.pending = nil
	n.mu.Unlock()
	rec.Changed(pending...)
	n.lg.Info("[files] node files written; units are managed after READY=1", "systemd", n.cfg.Systemd)
	return rec, nil
}

func (n *Node) reconciler() *reconcile.Reconciler {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rec
}

// FilesChanged tells the reconciler about files written outside its Render (renewed
// certificates), so that the units reading them restart.
func (n *Node) FilesChanged(paths []string) {
	n.mu.Lock()
	rec := n.rec
	if rec == nil {
		n.pending = append(n.pending, paths...)
	}
	n.mu.Unlock()
	if rec != nil {
		rec.Changed(paths...)
	}
}

// SyncFiles makes the reconciler pass now and waits until it has: the files written
// outside its Render (FilesChanged) are read by units restarted for them.
func (n *Node) SyncFiles(ctx context.Context) error {
	rec := n.reconciler()
	if rec == nil {
		return errors.New("node files not written yet")
	}
	return rec.Sync(ctx)
}

// StopUnit stops one of the node's units now; the reconciler's next pass starts it
// again.
func (n *Node) StopUnit(ctx context.Context, unit string) error {
	rec := n.reconciler()
	if rec == nil {
		return errors.New("node files not written yet")
	}
	return rec.Stop(ctx, unit)
}

// FilesWritten is nil once the reconciler has written the node's files.
func (n *Node) FilesWritten() error {
	if n.reconciler() == nil {
		return errors.New("node files not written yet")
	}
	return nil
}

// FilesStatus is the reconciler's view for /status; nil before it started.
func (n *Node) FilesStatus() *reconcile.Status {
	rec := n.reconciler()
	if rec == nil {
		return nil
	}
	st := rec.Status()
	return &st
}
