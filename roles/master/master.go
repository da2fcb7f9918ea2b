// Package master is the master role: it gets or creates the cluster's certificates,
// serves the join service, runs this host's etcd member, keeps etcd's authentication
// on with haagent's policy (etcdauth.go), stores the sealed CA and flannel's network
// config in etcd, and keeps the control plane's files and units. It also owns the
// rotations an operator starts on a master: the tokens, the CA and the encryption key
// (rotations.go).
// What a master does on start reads top to bottom in Master.start; what cluster-reset
// does after a lost quorum, in ClusterReset.
package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/release"
	"github.com/haagent/haagent/cluster/addons"
	"github.com/haagent/haagent/cluster/roll"
	"github.com/haagent/haagent/embed/etcdmember"
	"github.com/haagent/haagent/embed/snapshots"
	"github.com/haagent/haagent/embed/spacekeeper"
	"github.com/haagent/haagent/netsetup/flannel"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/pki"
)

// seedTimeout bounds the writes to etcd after the member is ready; they need a quorum.
const seedTimeout = 2 * time.Minute

// Master is a running master role.
type Master struct {
	cfg    *Config
	lg     *slog.Logger
	node   *node.Node
	member *etcdmember.Server
	// etcdTLS is the member's TLS files (nil with --insecure); preparePeerTrust
	// refreshes it before the member runs.
	etcdTLS *etcdmember.TLSFiles
	reg     prometheus.Gatherer
	snaps   *snapshots.Scheduler
	keeper  *spacekeeper.Keeper
	// agent is the agent and lb tokens the join service checks; nil until read from etcd.
	agent   atomic.Pointer[agentState]
	metrics *metrics
	// shared is the CA material as this master holds it (on disk): what its join
	// service trusts and signs with. want is the shared document as etcd holds it,
	// which followRotation applies to shared; wantCh wakes it.
	shared atomic.Pointer[pki.Shared]
	want   atomic.Pointer[pki.Shared]
	wantCh chan struct{}
	// roller rolls this master onto a newly installed haagent binary.
	roller *roll.Roller
}

// New prepares a master from a validated config; it starts nothing.
func New(cfg *Config, deps node.Deps) (*Master, error) {
	lg := deps.Logger
	member, etcdTLS, err := cfg.newMember(lg, slog.LevelWarn)
	if err != nil {
		return nil, err
	}
	m := &Master{cfg: cfg, lg: lg, node: node.New(&cfg.Config, lg), member: member, etcdTLS: etcdTLS, reg: deps.Gatherer,
		wantCh: make(chan struct{}, 1)}
	if m.metrics, err = newMetrics(deps.Registerer); err != nil {
		return nil, err
	}
	if m.snaps, m.keeper, err = m.recoveryParts(deps.Registerer); err != nil {
		return nil, err
	}
	if err := m.newRoller(deps.Registerer); err != nil {
		return nil, err
	}
	return m, nil
}

// newMember prepares the etcd member as the master runs it, and as cluster-reset
// starts it once; etcd's own log lines below etcdLevel are dropped unless lg debugs.
// It returns the member's TLS files too, nil with --insecure.
func (c *Config) newMember(lg *slog.Logger, etcdLevel slog.Level) (*etcdmember.Server, *etcdmember.TLSFiles, error) {
	ec := c.EmbedConfig()
	ec.Logger = lg
	ec.EtcdLogLevel = etcdLevel
	if lg.Enabled(context.Background(), slog.LevelDebug) {
		ec.EtcdLogLevel = slog.LevelDebug
	}
	member, err := etcdmember.New(ec)
	return member, ec.TLS, err
}

// Status is the document behind /status and `haagent status` on a master.
type Status struct {
	Role    string                   `json:"role"`
	Name    string                   `json:"name"`
	Version string                   `json:"version"`
	Etcd    etcdmember.ClusterStatus `json:"etcd"`
	Flannel FlannelStatus            `json:"flannel"`
	Node    *reconcile.Status        `json:"node,omitempty"`
	// NotMembers are the masters in --peers that the cluster does not list: lost ones
	// not yet rebuilt, or, after a cluster-reset, the ones that have not joined yet.
	NotMembers []string `json:"notMembers,omitempty"`
	// CA is the cluster CA this master signs with, and the rotation under way if any;
	// nil with --insecure.
	CA *CAStatus `json:"ca,omitempty"`
	// EtcdAuth is the auth watchdog's view; nil when haagent does not manage etcd's
	// auth (--etcd-auth=false or --insecure).
	EtcdAuth *AuthStatus `json:"etcdAuth,omitempty"`
	// CertWarnings are this master's certificates that expire within 120 days.
	CertWarnings []node.CertWarning `json:"certWarnings,omitempty"`
	// Addons are the add-ons' states, as the master that applies them recorded them.
	Addons []addons.State `json:"addons,omitempty"`
	// Roll is this master's part in rolling a newly installed haagent binary.
	Roll roll.Status `json:"roll"`
}

// FlannelStatus is flannel's network config as stored in etcd.
type FlannelStatus struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Run blocks until ctx ends (returning nil after a clean stop) or a part fails; the
// node's run skeleton runs start, then tells systemd READY=1.
func (m *Master) Run(ctx context.Context) error {
	return m.node.Run(ctx, node.Endpoints{Ready: m.ready, Status: m.status, Gatherer: m.reg}, m.start)
}

// start is what a master does on start, top to bottom. Each step's log lines carry its
// tag; the parts that keep running go into g.
func (m *Master) start(ctx context.Context, g *errgroup.Group) error {
	// [certificates] The token, then the cluster CA and this master's certificates: from
	// its disk, from another master's join service, or, on the first master of a new
	// cluster, a CA of its own.
	var token pki.Token
	var shared *pki.Shared
	if m.cfg.Insecure {
		m.lg.Warn("[certificates] INSECURE MODE: etcd serves plain http without authentication; anyone who reaches port " +
			"2379 owns the cluster and every Secret in it. Use --insecure only in a lab.")
	} else {
		var err error
		if token, shared, err = m.certificates(ctx, g); err != nil {
			return fmt.Errorf("[certificates] %w", err)
		}

		// [peer-tls] What the etcd peer port trusts: the peer CA, and the cluster CA
		// for the masters' names while the cluster moves over.
		if err := m.preparePeerTrust(shared); err != nil {
			return fmt.Errorf("[peer-tls] %w", err)
		}

		// [join] Hand the nodes that come after their certificates.
		if err := m.serveJoin(ctx, g, token, shared); err != nil {
			return fmt.Errorf("[join] %w", err)
		}
	}

	// [membership] [start] The etcd member decides whether to bootstrap, join, restart
	// or replace a stale member, then starts.
	g.Go(func() error { return m.member.Run(ctx) })

	// [health] Wait until the member serves and its cluster has a leader.
	select {
	case <-m.member.Ready():
	case <-ctx.Done():
		return nil
	}

	// [snapshots] [space] Save the local member's data every --snapshot-interval, and
	// get etcd writable again when it fills its quota. Both run until the master stops;
	// their failures are logged and counted in /metrics, never fatal.
	g.Go(func() error { return m.snaps.Run(ctx) })
	g.Go(func() error { return m.keeper.Run(ctx) })

	// [auth] etcd authorization: one user per certificate CN, each limited to what it
	// needs. Every master does it on start; the steps are idempotent, so concurrent
	// masters and an upgrade of a running cluster both come out the same.
	if !m.cfg.Insecure && m.cfg.EtcdAuth {
		policy := NewAuthPolicy(m.cfg.APIServerEtcdPrefix(), m.cfg.FlannelPrefix)
		if err := m.untilStored(ctx, "the etcd users and roles", func(ctx context.Context) error {
			return etcdmember.EnsureAuth(ctx, m.member.Client(), policy, m.lg)
		}); err != nil {
			return fmt.Errorf("[auth] %w", err)
		}
		// [auth] And keep it on: found off, it is back on within seconds.
		g.Go(func() error {
			t := time.NewTicker(authCheckEvery)
			defer t.Stop()
			return m.watchAuth(ctx, policy, t.C)
		})
	}

	// [ca] Store the sealed CA in etcd for the masters that come after, and check that
	// the one stored there is ours.
	if shared != nil {
		if err := m.untilStored(ctx, "the sealed CA", func(ctx context.Context) error {
			return m.syncShared(ctx, m.member.Client(), token, shared)
		}); err != nil {
			return fmt.Errorf("[ca] %w", err)
		}
		g.Go(func() error { return m.watchShared(ctx, token) })
		g.Go(func() error { return m.movePeerTLS(ctx) })
		// [ca] Follow a CA rotation ('haagent certs rotate-ca'), one master at a time.
		g.Go(func() error { return m.followRotation(ctx) })
	}

	// [flannel] Seed flannel's network config, once per cluster.
	if err := m.untilStored(ctx, "the flannel config", func(ctx context.Context) error {
		return flannel.Seed(ctx, m.member.Client(), m.cfg.FlannelPrefix, m.cfg.Flannel(), m.lg)
	}); err != nil {
		return fmt.Errorf("[flannel] %w", err)
	}

	// [encryption] The keys for Secrets at rest, made by the first master and sealed
	// beside the CA; the apiserver is rendered with them from its first start. An
	// --insecure cluster has no token to seal them with.
	rc := reconcile.Config{Render: m.cfg.Render, Units: nodeconf.Units(m.cfg.NodeConfig())}
	if shared != nil {
		ks, err := m.encryption(ctx, g, token)
		if err != nil {
			return fmt.Errorf("[encryption] %w", err)
		}
		rc.Render, rc.Passed = ks.render, ks.passed
	}

	// [files] Write the kube and flannel files; the units follow after READY=1.
	m.node.LogOverrides(nodeconf.Overrides(m.cfg.NodeConfig()))
	if _, err := m.node.StartReconciler(ctx, rc); err != nil {
		return fmt.Errorf("[files] %w", err)
	}
	// [addons] CoreDNS and the operator's add-ons, kept in etcd, applied by one master
	// at a time once the apiservers answer. An --insecure cluster has no admin
	// kubeconfig to apply them with.
	if !m.cfg.Insecure {
		m.runAddons(ctx, g)
	}
	// [roll] Finish a roll onto a new haagent binary that the exec left under way, then
	// roll onto the next one installed, one master at a time.
	g.Go(func() error { return m.runRoll(ctx) })
	m.lg.Info("[ready] master ready", "name", m.cfg.Name, "status", m.node.StatusAddr())
	return nil
}

// untilStored retries a write to etcd, which needs a quorum, for up to seedTimeout.
// A mismatch (pki.ErrCAMismatch) is final.
func (m *Master) untilStored(ctx context.Context, what string, write func(context.Context) error) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		// One write that hangs without a quorum must not use up the whole wait.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := write(wctx)
		if errors.Is(err, pki.ErrCAMismatch) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	},
		backoff.WithBackOff(&backoff.ExponentialBackOff{
			InitialInterval: 200 * time.Millisecond, RandomizationFactor: 0.2, Multiplier: 2, MaxInterval: 2 * time.Second,
		}),
		backoff.WithMaxElapsedTime(seedTimeout))
	switch {
	case err == nil || ctx.Err() != nil:
		return nil
	case errors.Is(err, pki.ErrCAMismatch):
		return err
	}
	return fmt.Errorf("waited %s for etcd to accept %s: %w", seedTimeout, what, err)
}

func (m *Master) status(ctx context.Context) (any, error) {
	cs, err := m.member.Status(ctx)
	if err != nil {
		return nil, err
	}
	st := Status{Role: "master", Name: m.cfg.Name, Version: release.Version, Etcd: cs, Node: m.node.FilesStatus()}
	st.NotMembers = m.notMembers(cs.Members)
	st.CA = m.caStatus(ctx)
	st.CertWarnings = m.node.CertWarnings()
	if !m.cfg.Insecure && m.cfg.EtcdAuth {
		st.EtcdAuth = m.metrics.auth.status()
		st.EtcdAuth.Enabled, _ = m.member.AuthEnabled()
	}
	st.Flannel.Key = flannel.ConfigKey(m.cfg.FlannelPrefix)
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if resp, err := m.member.Client().Get(gctx, st.Flannel.Key); err == nil && len(resp.Kvs) > 0 {
		st.Flannel.Value = string(resp.Kvs[0].Value)
	}
	st.Addons, _ = addons.States(gctx, m.member.Client())
	st.Roll = m.roller.Status()
	return st, nil
}

// notMembers lists the masters in --peers whose name and peer URL no member has.
func (m *Master) notMembers(ms []etcdmember.MemberStatus) []string {
	var out []string
	for _, p := range m.cfg.PeerList() {
		found := false
		for _, mb := range ms {
			found = found || mb.Name == p.Name || slices.Contains(mb.PeerURLs, p.URL.String())
		}
		if !found {
			out = append(out, p.Name)
		}
	}
	return out
}

// ready is /readyz: the member is healthy and the node files are in place.
func (m *Master) ready() error {
	if err := m.member.Healthy(); err != nil {
		return err
	}
	return m.node.FilesWritten()
}
