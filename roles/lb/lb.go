// Package lb is the lb role: it fronts the masters' ports with the health-checked
// balancer of package loadbalancer (or writes an nginx stream config), serves the
// status endpoints and tells systemd when it is ready.
package lb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/files"
	"github.com/haagent/haagent/join"
	"github.com/haagent/haagent/loadbalancer"
	"github.com/haagent/haagent/pki"
	"github.com/haagent/haagent/release"
	"github.com/haagent/haagent/status"
)

// UnitManager restarts systemd units.
type UnitManager interface {
	Enable(ctx context.Context, units ...string) error
	Start(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
}

// LB is a running lb role.
type LB struct {
	cfg *Config
	lg  *slog.Logger
	reg prometheus.Gatherer
	met *loadbalancer.Metrics
	bal *loadbalancer.Balancer // set by Run; nil with --lb-impl=nginx

	// Units restarts nginx after its config changed (--lb-impl=nginx). Nil leaves
	// that to the operator. Set it before Run.
	Units UnitManager
}

// New prepares the lb from a validated config; it starts nothing. Its metrics go to
// registerer, if not nil; gatherer serves /metrics.
func New(cfg *Config, lg *slog.Logger, gatherer prometheus.Gatherer, registerer prometheus.Registerer) (*LB, error) {
	l := &LB{cfg: cfg, lg: lg, reg: gatherer}
	if cfg.Impl == ImplNginx {
		return l, nil
	}
	l.met = loadbalancer.NewMetrics()
	if registerer != nil {
		if err := l.met.Register(registerer); err != nil {
			return nil, fmt.Errorf("lb metrics: %w", err)
		}
	}
	return l, nil
}

// newBalancer builds the balancer; in secure mode it first joins for the etcd client
// certificate and the CA that the health checks use.
func (l *LB) newBalancer(ctx context.Context) (*loadbalancer.Balancer, error) {
	bc := l.cfg.BalancerConfig()
	bc.Logger = l.lg
	bc.Metrics = l.met
	if !l.cfg.Insecure {
		token, err := pki.ParseToken(l.cfg.Token)
		if err != nil {
			return nil, err
		}
		var servers []string
		for _, m := range l.cfg.Masters {
			servers = append(servers, net.JoinHostPort(m, strconv.Itoa(l.cfg.JoinPort)))
		}
		if err := l.ensureCerts(ctx, servers, token, time.Now()); err != nil {
			return nil, err
		}
		caPEM, err := os.ReadFile(filepath.Join(l.cfg.Root, pki.CACert))
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		bc.APIServerCA = pool
		certFile, keyFile := filepath.Join(l.cfg.Root, pki.EtcdClientCert), filepath.Join(l.cfg.Root, pki.EtcdClientKey)
		bc.EtcdTLS = &tls.Config{
			RootCAs: pool,
			// Read per handshake, so that a renewed certificate applies without a restart.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(certFile, keyFile)
				return &c, err
			},
		}
	}
	return loadbalancer.New(bc)
}

// renewLoop rejoins for a new certificate once the current one is at 2/3 of its life;
// the health checks read it per handshake, so no restart is needed.
func (l *LB) renewLoop(ctx context.Context) {
	token, err := pki.ParseToken(l.cfg.Token)
	if err != nil {
		return
	}
	var servers []string
	for _, m := range l.cfg.Masters {
		servers = append(servers, net.JoinHostPort(m, strconv.Itoa(l.cfg.JoinPort)))
	}
	t := time.NewTicker(renewCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := l.ensureCerts(ctx, servers, token, time.Now()); err != nil && ctx.Err() == nil {
				l.lg.Error("certificate renewal failed; retrying in an hour", "err", err)
			}
		}
	}
}

// renewCheckEvery is how often the certificate is checked against its renewal time.
const renewCheckEvery = time.Hour

// ensureCerts joins when the lb's certificate is missing or due for renewal.
func (l *LB) ensureCerts(ctx context.Context, servers []string, token pki.Token, now time.Time) error {
	if _, err := os.Stat(filepath.Join(l.cfg.Root, pki.EtcdClientCert)); err == nil {
		if due, err := pki.DueForRenewal(l.cfg.Root, now); err == nil && len(due) == 0 {
			return nil
		}
	}
	return join.Obtain(ctx, l.lg, l.cfg.Root, servers, token, join.Request{Role: "lb", Name: l.cfg.Name})
}

// Run blocks until ctx ends (returning nil after a clean stop) or the balancer fails.
func (l *LB) Run(ctx context.Context) error {
	if l.cfg.Impl == ImplNginx {
		return l.runNginx(ctx)
	}
	bal, err := l.newBalancer(ctx)
	if err != nil {
		return err
	}
	l.bal = bal
	srv, err := status.Listen(status.Config{
		Address:  l.cfg.StatusAddress,
		Ready:    l.bal.Ready,
		Status:   l.status,
		Gatherer: l.reg,
		Logger:   l.lg,
	})
	if err != nil {
		return err
	}
	// The first part to fail stops the others; Run returns once all have.
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx) })
	g.Go(func() error { return l.bal.Run(ctx) })
	if !l.cfg.Insecure {
		g.Go(func() error { l.renewLoop(ctx); return nil })
	}
	select {
	case <-l.bal.Serving():
		notifyReady(l.lg)
		l.lg.Info("lb ready", "name", l.cfg.Name, "ports", l.cfg.Ports, "masters", l.cfg.Masters,
			"policy", l.cfg.Policy, "status", srv.Addr().String())
		if err := l.bal.Ready(); err != nil {
			l.lg.Warn("lb serving without a healthy master on every port", "err", err)
		}
	case <-ctx.Done():
	}
	err = g.Wait()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	return err
}

// runNginx writes the nginx config, restarts nginx if it changed and Units is set,
// then serves the status endpoints until ctx ends.
func (l *LB) runNginx(ctx context.Context) error {
	path := filepath.Join(l.cfg.Root, NginxConfPath)
	changed, err := files.Write(l.cfg.Root, NginxFile(l.cfg))
	if err != nil {
		return fmt.Errorf("nginx config: %w", err)
	}
	if ok, err := nginxIncludes(l.cfg.Root); err != nil || !ok {
		l.lg.Warn("nginx.conf must include the haagent stream config at its top level, outside http{}",
			"add", "include "+NginxConfPath+";", "err", err)
	}
	switch {
	case l.Units == nil:
		l.lg.Info("nginx config in place; systemd is not running here, so start or reload nginx yourself", "path", path, "changed", changed)
	default:
		if err := l.Units.Enable(ctx, NginxUnit); err != nil {
			return fmt.Errorf("enable %s: %w", NginxUnit, err)
		}
		act, verb := l.Units.Start, "started"
		if changed {
			act, verb = l.Units.Restart, "restarted"
		}
		if err := act(ctx, NginxUnit); err != nil {
			return fmt.Errorf("%s after writing %s: %w", NginxUnit, path, err)
		}
		l.lg.Info("nginx config in place; nginx "+verb, "path", path, "changed", changed)
	}
	srv, err := status.Listen(status.Config{
		Address:  l.cfg.StatusAddress,
		Ready:    l.nginxReady,
		Status:   l.status,
		Gatherer: l.reg,
		Logger:   l.lg,
	})
	if err != nil {
		return err
	}
	notifyReady(l.lg)
	err = srv.Serve(ctx)
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	return err
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
	doc := StatusDoc{Role: "lb", Name: l.cfg.Name, Version: release.Version, Impl: l.cfg.Impl, Policy: l.cfg.Policy}
	if l.bal != nil {
		doc.Backends = l.bal.Backends()
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

func notifyReady(lg *slog.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		lg.Warn("could not notify systemd", "err", err)
	}
}
