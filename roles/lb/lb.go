// Package lb is the lb role: it fronts the masters' ports with the health-checked
// balancer of package loadbalancer (or hands an nginx stream config and nginx.service
// to the node's reconciler), serves the status endpoints and tells systemd when it is
// ready.
package lb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/base/release"
	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/embed/vip"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// LB is a running lb role.
type LB struct {
	cfg  *Config
	lg   *slog.Logger
	node *node.Node
	reg  prometheus.Gatherer
	met  *loadbalancer.Metrics
	// bal is set once start has built it; nil with --lb-impl=nginx.
	bal atomic.Pointer[loadbalancer.Balancer]
	// elect is the VIP's election and address, set once start has built it; nil
	// without --vip.
	elect  atomic.Pointer[vip.VIP]
	vipMet *vip.Metrics

	// Units drives nginx.service for the reconciler (--lb-impl=nginx), in place of the
	// systemd that --systemd connects to. Set it before Run; tests do.
	Units reconcile.UnitManager
}

// New prepares the lb from a validated config; it starts nothing.
func New(cfg *Config, deps node.Deps) (*LB, error) {
	lg, registerer := deps.Logger, deps.Registerer
	l := &LB{cfg: cfg, lg: lg, node: node.New(&cfg.Config, lg), reg: deps.Gatherer}
	if cfg.Impl == ImplNginx {
		return l, nil
	}
	l.met = loadbalancer.NewMetrics()
	if cfg.VIP != "" {
		l.vipMet = vip.NewMetrics()
	}
	if registerer != nil {
		if err := l.met.Register(registerer); err != nil {
			return nil, fmt.Errorf("lb metrics: %w", err)
		}
		if l.vipMet != nil {
			if err := l.vipMet.Register(registerer); err != nil {
				return nil, fmt.Errorf("vip metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Run blocks until ctx ends (returning nil after a clean stop) or a part fails; the
// node's run skeleton runs start, then tells systemd READY=1.
func (l *LB) Run(ctx context.Context) error {
	ready := l.ready
	if l.cfg.Impl == ImplNginx {
		ready = l.nginxReady
	}
	return l.node.Run(ctx, node.Endpoints{Ready: ready, Status: l.status, Gatherer: l.reg}, l.start)
}

// start is what an lb does on start, top to bottom; each step's log lines carry its tag.
func (l *LB) start(ctx context.Context, g *errgroup.Group) error {
	if l.cfg.Impl == ImplNginx {
		return l.startNginx(ctx)
	}
	bc := l.cfg.BalancerConfig()
	bc.Logger = l.lg
	bc.Metrics = l.met
	var etcdTLS *node.ClientTLS // the lb's etcd client identity; nil: plain http
	if !l.cfg.Insecure {
		// [certificates] The etcd client certificate and the CA that the health checks
		// use, from a master's join service; renewed at 2/3 of their lifetime.
		creds, err := l.credentials()
		if err == nil {
			err = l.node.KeepCredentials(ctx, g, creds)
		}
		if err == nil {
			etcdTLS, err = l.checkTLS(&bc)
		}
		if err != nil {
			return fmt.Errorf("[certificates] %w", err)
		}
	}

	// [start] Bind the balanced ports and start the health checks.
	bal, err := loadbalancer.New(bc)
	if err != nil {
		return fmt.Errorf("[start] %w", err)
	}
	l.bal.Store(bal)
	g.Go(func() error { return bal.Run(ctx) })

	// [health] Wait until every port accepts connections.
	select {
	case <-bal.Serving():
	case <-ctx.Done():
		return nil
	}
	l.lg.Info("[ready] lb ready", "name", l.cfg.Name, "ports", l.cfg.Ports, "masters", l.cfg.Masters,
		"policy", l.cfg.Policy, "status", l.node.StatusAddr())
	if err := bal.Ready(); err != nil {
		l.lg.Warn("[health] lb serving without a healthy master on every port", "err", err)
	}

	// [vip] Only an lb that serves campaigns for the VIP.
	if l.cfg.VIP != "" {
		vc := l.cfg.VIPConfig()
		vc.Logger, vc.Metrics = l.lg, l.vipMet
		if etcdTLS != nil {
			vc.Credentials = etcdTLS.GRPC()
		}
		v := vip.New(vc)
		l.elect.Store(v)
		g.Go(func() error { return v.Run(ctx) })
	}
	return nil
}

// credentials is how the lb gets its certificate: from any master's join service.
func (l *LB) credentials() (node.Credentials, error) {
	token, err := l.cfg.JoinToken()
	if err != nil {
		return node.Credentials{}, err
	}
	var servers []string
	for _, m := range l.cfg.Masters {
		servers = append(servers, net.JoinHostPort(m, strconv.Itoa(l.cfg.JoinPort)))
	}
	return node.Credentials{
		Need: []string{pki.EtcdClientCert},
		Get: l.node.JoinVia(servers, token, join.Request{Role: "lb", Name: l.cfg.Name},
			&node.Renewal{Cert: pki.EtcdClientCert, Key: pki.EtcdClientKey}),
		Stale:    l.node.TrustChanged(servers),
		Outdated: l.outdatedCert,
	}, nil
}

// outdatedCert says why the lb's certificate must be got again although it is current:
// it is from before lb names were bound (CN haagent-lb, whose etcd user no longer
// takes part in the VIP's election), or names another lb (--name changed). The lb
// then joins with its token, the lb token.
func (l *LB) outdatedCert() string {
	c, err := tls.LoadX509KeyPair(filepath.Join(l.cfg.Root, pki.EtcdClientCert), filepath.Join(l.cfg.Root, pki.EtcdClientKey))
	if err != nil || c.Leaf == nil {
		return ""
	}
	if role, name := join.CertIdentity(c.Leaf); role != "lb" || name != l.cfg.Name {
		return fmt.Sprintf("the lb's certificate is %q, not this lb's own (%s%s)", c.Leaf.Subject.CommonName, pki.LBNamePrefix, l.cfg.Name)
	}
	return ""
}

// checkTLS makes the health checks trust the cluster CAs, check that each master's
// certificate names the master dialled, and present the lb's etcd client certificate
// to etcd. It returns that etcd client identity.
func (l *LB) checkTLS(bc *loadbalancer.Config) (*node.ClientTLS, error) {
	etcd, err := node.ClusterTLS(l.cfg.Root, pki.EtcdClientCert, pki.EtcdClientKey)
	if err != nil {
		return nil, err
	}
	trust, err := node.ClusterTrust(l.cfg.Root)
	if err != nil {
		return nil, err
	}
	bc.APIServerTLS, bc.EtcdTLS = trust.For, etcd.For
	return etcd, nil
}

// ready is /readyz of the builtin balancer: a healthy master on every port.
func (l *LB) ready() error {
	bal := l.bal.Load()
	if bal == nil {
		return errors.New("balancer not started yet")
	}
	return bal.Ready()
}

// startNginx hands the nginx config and nginx.service to the node's reconciler, as the
// other roles hand it theirs: it writes the file now, and once the lb is ready it
// enables and starts nginx, restarts it when the config changes, and starts it again
// when it stops. Without systemd only the file is kept.
func (l *LB) startNginx(ctx context.Context) error {
	if ok, err := nginxIncludes(l.cfg.Root); err != nil || !ok {
		l.lg.Warn("[files] nginx.conf must include the haagent stream config at its top level, outside http{}",
			"add", "include "+NginxConfPath+";", "err", err)
	}
	conf := NginxFile(l.cfg)
	_, err := l.node.StartReconciler(ctx, reconcile.Config{
		Render:  func() ([]files.File, error) { return []files.File{conf}, nil },
		Units:   []reconcile.Unit{{Name: NginxUnit, Reads: []string{conf.Path}}},
		Manager: l.Units,
	})
	if err != nil {
		return fmt.Errorf("[files] nginx config: %w", err)
	}
	l.lg.Info("[files] nginx config in place; nginx is started or restarted with it once the lb is ready", "path", filepath.Join(l.cfg.Root, NginxConfPath))
	return nil
}

// nginxReady checks that something accepts connections on every balanced port.
func (l *LB) nginxReady() error {
	host := l.cfg.ListenAddress
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	var errs []error
	for _, p := range l.cfg.Ports {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(p)), time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("port %d: nginx does not accept connections: %w", p, err))
			continue
		}
		c.Close()
	}
	return errors.Join(errs...)
}

func (l *LB) status(context.Context) (any, error) {
	doc := StatusDoc{Role: "lb", Name: l.cfg.Name, Version: release.Version, Impl: l.cfg.Impl, Policy: l.cfg.Policy,
		CertWarnings: l.node.CertWarnings()}
	if v := l.vipStatus(); v != nil {
		doc.VIP = v
	}
	if bal := l.bal.Load(); bal != nil {
		doc.Backends = bal.Backends()
		return doc, nil
	}
	for _, p := range l.cfg.Ports {
		for _, m := range l.cfg.Masters {
			doc.Backends = append(doc.Backends, loadbalancer.BackendStatus{
				Port: p, Address: net.JoinHostPort(m, strconv.Itoa(p)), State: loadbalancer.StateUnknown,
			})
		}
	}
	return doc, nil
}

// vipStatus is the VIP part of /status; nil without --vip.
func (l *LB) vipStatus() *vip.Status {
	if l.cfg.VIP == "" {
		return nil
	}
	if v := l.elect.Load(); v != nil {
		st := v.Status()
		return &st
	}
	return &vip.Status{Address: l.cfg.VIP, Interface: l.cfg.VIPInterface}
}
