// Package master is the master role: it gets or creates the cluster's certificates,
// serves the join service, runs this host's etcd member, stores the sealed CA and
// flannel's network config in etcd, and keeps the control plane's files and units.
package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/etcdmember"
	"github.com/haagent/haagent/flannel"
	"github.com/haagent/haagent/join"
	"github.com/haagent/haagent/pki"
	"github.com/haagent/haagent/reconcile"
	"github.com/haagent/haagent/release"
	"github.com/haagent/haagent/status"
)

// seedTimeout bounds the flannel seeding after etcd is ready; it needs a quorum.
const seedTimeout = 2 * time.Minute

// Master is a running master role.
type Master struct {
	cfg    *Config
	lg     *slog.Logger
	member *etcdmember.Server
	reg    prometheus.Gatherer

	mu  sync.Mutex // guards the fields below
	rec *reconcile.Reconciler
}

// New prepares a master from a validated config; it starts nothing.
func New(cfg *Config, lg *slog.Logger, gatherer prometheus.Gatherer) (*Master, error) {
	ec, err := cfg.EmbedConfig()
	if err != nil {
		return nil, err
	}
	ec.Logger = lg
	if !cfg.Insecure {
		ec.TLS = cfg.TLSFiles()
	}
	ec.EtcdLogLevel = slog.LevelWarn
	if lg.Enabled(context.Background(), slog.LevelDebug) {
		ec.EtcdLogLevel = slog.LevelDebug
	}
	member, err := etcdmember.New(ec)
	if err != nil {
		return nil, err
	}
	return &Master{cfg: cfg, lg: lg, member: member, reg: gatherer}, nil
}

// Status is the document behind /status and `haagent status` on a master.
type Status struct {
	Role    string                   `json:"role"`
	Name    string                   `json:"name"`
	Version string                   `json:"version"`
	Etcd    etcdmember.ClusterStatus `json:"etcd"`
	Flannel FlannelStatus            `json:"flannel"`
	Node    *reconcile.Status        `json:"node,omitempty"`
}

// FlannelStatus is flannel's network config as stored in etcd.
type FlannelStatus struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Run blocks until ctx ends (returning nil after a clean stop) or the member fails.
func (m *Master) Run(ctx context.Context) error {
	srv, err := status.Listen(status.Config{
		Address:  m.cfg.StatusAddress,
		Ready:    m.ready,
		Status:   m.status,
		Gatherer: m.reg,
		Logger:   m.lg,
	})
	if err != nil {
		return err
	}
	// Every part runs in the group: the first to fail stops the others, and Run returns
	// only once all of them have.
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx) })
	if err := m.start(ctx, g); err != nil {
		g.Go(func() error { return err })
	}
	err = g.Wait()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	return err
}

// start brings the master up inside g: certificates and the join service, the etcd
// member, then the sealed CA, flannel's config and the node files; then READY=1.
func (m *Master) start(ctx context.Context, g *errgroup.Group) error {
	var token pki.Token
	var shared *pki.Shared
	if m.cfg.Insecure {
		m.lg.Warn("INSECURE MODE: etcd serves plain http without authentication; anyone who reaches port " +
			"2379 owns the cluster and every Secret in it. Use --insecure only in a lab.")
	} else {
		var err error
		if token, err = m.loadOrCreateToken(); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		if shared, err = m.ensurePKI(ctx, token); err != nil {
			return fmt.Errorf("certificates: %w", err)
		}
		js, err := join.Listen(join.ServerConfig{
			Address: net.JoinHostPort(m.cfg.ListenAddress, strconv.Itoa(m.cfg.JoinPort)),
			Token:   token, CACert: shared.CA.CertPEM, GetCertificate: m.servingCert,
			Issue: m.issuer(shared), Logger: m.lg.With("component", "join"),
		})
		if err != nil {
			return err
		}
		g.Go(func() error { return js.Serve(ctx) })
		g.Go(func() error { m.renewLoop(ctx, shared); return nil })
	}
	g.Go(func() error { return m.member.Run(ctx) })
	select {
	case <-m.member.Ready():
	case <-ctx.Done():
		return nil
	}
	if shared != nil {
		if err := m.untilStored(ctx, "the sealed CA", func(ctx context.Context) error {
			return m.syncShared(ctx, m.member.Client(), token, shared)
		}); err != nil {
			return err
		}
	}
	if err := m.seedFlannel(ctx); err != nil {
		return err
	}
	rec, err := m.startReconciler(ctx)
	if err != nil {
		return err
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		m.lg.Warn("could not notify systemd", "err", err)
	}
	// Units start only now: they are ordered after haagent.service, which is active from READY=1.
	g.Go(func() error { return rec.Run(ctx) })
	m.lg.Info("master ready", "name", m.cfg.Name, "status", m.cfg.StatusAddress)
	return nil
}

func (m *Master) seedFlannel(ctx context.Context) error {
	return m.untilStored(ctx, "the flannel config", func(ctx context.Context) error {
		return flannel.Seed(ctx, m.member.Client(), m.cfg.FlannelPrefix, m.cfg.Flannel(), m.lg)
	})
}

// untilStored retries a write to etcd, which needs a quorum, for up to seedTimeout.
// A mismatch (pki.ErrCAMismatch) is final.
func (m *Master) untilStored(ctx context.Context, what string, write func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, seedTimeout)
	defer cancel()
	var err error
	for wait := 200 * time.Millisecond; ; wait = min(wait*2, 2*time.Second) {
		if err = write(ctx); err == nil || errors.Is(err, pki.ErrCAMismatch) {
			return err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil
			}
			return fmt.Errorf("waited %s for etcd to accept %s: %w", seedTimeout, what, err)
		case <-time.After(wait):
		}
	}
}

func (m *Master) status(ctx context.Context) (any, error) {
	cs, err := m.member.Status(ctx)
	if err != nil {
		return nil, err
	}
	st := Status{Role: "master", Name: m.cfg.Name, Version: release.Version, Etcd: cs}
	m.mu.Lock()
	if m.rec != nil {
		ns := m.rec.Status()
		st.Node = &ns
	}
	m.mu.Unlock()
	st.Flannel.Key = flannel.ConfigKey(m.cfg.FlannelPrefix)
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if resp, err := m.member.Client().Get(gctx, st.Flannel.Key); err == nil && len(resp.Kvs) > 0 {
		st.Flannel.Value = string(resp.Kvs[0].Value)
	}
	return st, nil
}

// startReconciler writes the node files and, where systemd runs, keeps the kube and
// flannel units enabled, running, and restarted when a file they read changes.
func (m *Master) startReconciler(ctx context.Context) (*reconcile.Reconciler, error) {
	rec, err := reconcile.ForNode(ctx, m.cfg.Systemd, m.cfg.NodeConfig(), m.lg)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.rec = rec
	m.mu.Unlock()
	return rec, nil
}

// certsRenewed tells the reconciler which units must restart for renewed certificates.
func (m *Master) certsRenewed(paths []string) {
	m.mu.Lock()
	rec := m.rec
	m.mu.Unlock()
	if rec != nil {
		rec.Changed(paths...)
	}
}

// ready is /readyz: the member is healthy and the node files are in place.
func (m *Master) ready() error {
	if err := m.member.Healthy(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rec == nil {
		return errors.New("node files not written yet")
	}
	return nil
}
