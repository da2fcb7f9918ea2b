package minion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/netsetup/masterlist"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/trust/pki"
)

// LBLocal is the --lb value that runs the lb on the minion itself, as k3s and RKE2
// agents do: no lb host and no VIP between the minion and the masters.
const LBLocal = "local"

// localAddress is where the node-local lb listens, and what the minion's kubelet,
// kube-proxy and flanneld are pointed at. The masters' apiserver and etcd serving
// certificates name 127.0.0.1 (pki.Issue), so TLS verifies through it.
const localAddress = "127.0.0.1"

// LocalLB reports whether the minion runs its own lb (--lb=local).
func (c *Config) LocalLB() bool { return c.LB == LBLocal }

// lbAddress is where the minion reaches the control plane: the lb, or 127.0.0.1.
func (c *Config) lbAddress() string {
	if c.LocalLB() {
		return localAddress
	}
	return c.LB
}

// localPorts are the ports the node-local lb forwards, each to the same port of every
// master: the apiserver, etcd's client port and the join service.
func (c *Config) localPorts() []int {
	return []int{loadbalancer.PortAPIServer, c.EtcdClientPort, c.JoinPort}
}

// validateLocalLB reports the problems of --masters and --masters-refresh. It does no
// I/O: Complete has read the saved list.
func (c *Config) validateLocalLB() []error {
	var errs []error
	if !c.LocalLB() {
		if len(c.Masters) > 0 {
			errs = append(errs, fmt.Errorf("--masters: only with --lb=%s (a minion behind an lb host reaches the masters through it); drop --masters, or set --lb=%s", LBLocal, LBLocal))
		}
		return errs
	}
	if len(c.Masters) == 0 && len(c.saved.Masters) == 0 {
		why := "no list saved in /" + masterlist.File + " either"
		if c.savedErr != nil && !errors.Is(c.savedErr, os.ErrNotExist) {
			why = "the saved list is unusable: " + c.savedErr.Error()
		}
		errs = append(errs, fmt.Errorf("--masters: required with --lb=%s (%s); list the masters, e.g. --masters=10.0.0.21,10.0.0.22,10.0.0.23", LBLocal, why))
	}
	errs = append(errs, node.ValidateMasters(c.Masters)...)
	if c.MastersRefresh < time.Second || c.MastersRefresh > time.Hour {
		errs = append(errs, fmt.Errorf("--masters-refresh: %s is outside 1s-1h; the default is %s", c.MastersRefresh, masterlist.DefaultInterval))
	}
	if _, port, err := net.SplitHostPort(c.StatusAddress); err == nil {
		if p, err := strconv.Atoi(port); err == nil && slices.Contains(c.localPorts(), p) {
			errs = append(errs, fmt.Errorf("--status-address: port %d is a port of the node-local lb; choose another port", p))
		}
	}
	return errs
}

// localLB is the node-local lb: the balancer on 127.0.0.1 and the list of masters
// behind it.
type localLB struct {
	cfg    *Config
	lg     *slog.Logger
	met    *loadbalancer.Metrics
	keeper *masterlist.Keeper
	bal    atomic.Pointer[loadbalancer.Balancer]
}

func newLocalLB(cfg *Config, lg *slog.Logger, registerer prometheus.Registerer) (*localLB, error) {
	l := &localLB{cfg: cfg, lg: lg, met: loadbalancer.NewMetrics()}
	if registerer != nil {
		if err := l.met.Register(registerer); err != nil {
			return nil, fmt.Errorf("lb metrics: %w", err)
		}
	}
	k, err := masterlist.New(masterlist.Config{
		Root: cfg.Root, Seed: cfg.Masters, Saved: cfg.saved, Interval: cfg.MastersRefresh,
		Apply:  l.setBackends,
		Logger: lg,
	})
	if err != nil {
		return nil, fmt.Errorf("--masters: %w", err)
	}
	l.keeper = k
	return l, nil
}

func (l *localLB) setBackends(hosts []string) error {
	if bal := l.bal.Load(); bal != nil {
		return bal.SetBackends(hosts)
	}
	return nil
}

// start binds the lb's ports on 127.0.0.1 and waits for its first round of checks.
// It says where its list came from, since a stale one is the known pain of this
// design.
func (l *localLB) start(ctx context.Context, g *errgroup.Group) error {
	masters := l.keeper.Masters()
	from := "--masters"
	switch {
	case len(l.cfg.saved.Masters) > 0 && len(l.cfg.Masters) > 0:
		from = "the saved list and --masters"
	case len(l.cfg.saved.Masters) > 0:
		from = "the saved list"
	}
	if len(l.cfg.saved.Masters) > 0 {
		l.lg.Info("[lb] starting from the list of masters the cluster gave before", "file", filepath.Join(l.cfg.Root, masterlist.File),
			"saved", strings.Join(l.cfg.saved.Masters, ","), "saved-at", l.cfg.saved.Updated)
	}
	bc := loadbalancer.Config{
		ListenAddress: localAddress,
		Ports:         l.cfg.localPorts(),
		Backends:      masters,
		Checks: map[int]loadbalancer.CheckKind{
			loadbalancer.PortAPIServer: loadbalancer.CheckAPIServer,
			l.cfg.EtcdClientPort:       loadbalancer.CheckEtcd,
			l.cfg.JoinPort:             loadbalancer.CheckTCP,
		},
		Logger:  l.lg.With("component", "lb"),
		Metrics: l.met,
	}
	if !l.cfg.Insecure {
		// The checks of 6443 and 2379 verify the masters against the cluster CAs and show
		// etcd flanneld's certificate, which the join through this very lb brings.
		bc.Checkers = map[int]loadbalancer.Checker{
			loadbalancer.PortAPIServer: &afterJoin{build: func() (loadbalancer.Checker, error) {
				tc, err := node.ClusterTrust(l.cfg.Root)
				if err != nil {
					return nil, err
				}
				return loadbalancer.NewAPIServerChecker(nil, tc.For), nil
			}},
			l.cfg.EtcdClientPort: &afterJoin{build: func() (loadbalancer.Checker, error) {
				tc, err := node.ClusterTLS(l.cfg.Root, pki.FlannelEtcdCert, pki.FlannelEtcdKey)
				if err != nil {
					return nil, err
				}
				return loadbalancer.NewEtcdChecker(nil, tc.For), nil
			}},
		}
	}
	bal, err := loadbalancer.New(bc)
	if err != nil {
		return err
	}
	l.bal.Store(bal)
	// A list that changed between New and now (it can't yet: the keeper asks only
	// after the join) would be applied here.
	if cur := l.keeper.Masters(); !slices.Equal(cur, masters) {
		if err := bal.SetBackends(cur); err != nil {
			return err
		}
	}
	g.Go(func() error { return bal.Run(ctx) })
	select {
	case <-bal.Serving():
	case <-ctx.Done():
		return nil
	}
	l.lg.Info("[lb] node-local lb serving", "address", localAddress, "ports", l.cfg.localPorts(),
		"masters", strings.Join(masters, ","), "from", from)
	return nil
}

// keepMasters asks etcd for its members through the local lb, now and every
// --masters-refresh, applies a changed list to the lb and saves it. flanneld's
// certificate can list the members (etcd checks no permission there) and is on every
// minion; --insecure clusters need none.
func (l *localLB) keepMasters(ctx context.Context, g *errgroup.Group) error {
	cfg := clientv3.Config{
		Endpoints:   []string{l.cfg.Scheme() + "://" + net.JoinHostPort(localAddress, strconv.Itoa(l.cfg.EtcdClientPort))},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if !l.cfg.Insecure {
		tc, err := node.ClusterTLS(l.cfg.Root, pki.FlannelEtcdCert, pki.FlannelEtcdKey)
		if err != nil {
			return err
		}
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(tc.GRPC())}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return fmt.Errorf("etcd client through the local lb: %w", err)
	}
	l.keeper.SetSource(masterlist.EtcdMembers(cli))
	g.Go(func() error {
		defer cli.Close()
		return l.keeper.Run(ctx)
	})
	return nil
}

// LocalLBStatus is the node-local lb in /status.
type LocalLBStatus struct {
	// Address is where it listens; Ports are the ports it forwards.
	Address  string                       `json:"address"`
	Ports    []int                        `json:"ports"`
	Masters  masterlist.Status            `json:"masters"`
	Backends []loadbalancer.BackendStatus `json:"backends"`
}

func (l *localLB) status() *LocalLBStatus {
	st := &LocalLBStatus{Address: localAddress, Ports: l.cfg.localPorts(), Masters: l.keeper.Status()}
	if bal := l.bal.Load(); bal != nil {
		st.Backends = bal.Backends()
	}
	return st
}

// printLocalLB writes the node-local lb's part of `haagent status`: where the list of
// masters came from, and each backend's state.
func printLocalLB(w io.Writer, st LocalLBStatus) {
	ms := st.Masters
	from := "from the cluster at " + ms.Updated.Local().Format(time.DateTime)
	if ms.Source != masterlist.SourceCluster {
		from = "from the saved list and --masters; the cluster has not answered yet"
	}
	ports := make([]string, len(st.Ports))
	for i, p := range st.Ports {
		ports[i] = strconv.Itoa(p)
	}
	fmt.Fprintf(w, "node-local lb: %s, ports %s\n", st.Address, strings.Join(ports, ", "))
	fmt.Fprintf(w, "masters: %s (%s; saved in %s)\n", strings.Join(ms.Masters, ", "), from, ms.Saved)
	if ms.LastError != "" {
		fmt.Fprintf(w, "masters: last question to the cluster failed: %s\n", ms.LastError)
	}
	loadbalancer.PrintBackends(w, st.Backends)
}

// afterJoin is a health check that needs the cluster CA and this minion's
// certificate, which the join through this very lb brings. Until they are on disk it
// has no result, so the backends stay unknown (and are still tried); then it is the
// real check.
type afterJoin struct {
	build func() (loadbalancer.Checker, error)

	mu sync.Mutex // guards c
	c  loadbalancer.Checker
}

func (a *afterJoin) Check(ctx context.Context, addr string) (loadbalancer.Health, error) {
	a.mu.Lock()
	if a.c == nil {
		if c, err := a.build(); err == nil {
			a.c = c
		}
	}
	c := a.c
	a.mu.Unlock()
	if c == nil {
		return loadbalancer.HealthUnknown, nil
	}
	return c.Check(ctx, addr)
}

// viaLocalLB points the kubeconfigs a join service issues at the node-local lb: the
// master that issued them names its own lb, or itself.
func viaLocalLB(get func(context.Context) ([]files.File, error)) func(context.Context) ([]files.File, error) {
	return func(ctx context.Context) ([]files.File, error) {
		fs, err := get(ctx)
		if err != nil {
			return nil, err
		}
		for i, f := range fs {
			if !slices.Contains(apiKubeconfigs, f.Path) {
				continue
			}
			if fs[i].Data, err = pki.WithServer(f.Data, localAPIServer); err != nil {
				return nil, fmt.Errorf("%s: %w", f.Path, err)
			}
		}
		return fs, nil
	}
}

// apiKubeconfigs are the minion's kubeconfigs, which reach the apiserver through its lb.
var apiKubeconfigs = []string{pki.KubeletKubeconfig, pki.ProxyKubeconfig, pki.NetworkPolicyKubeconfig}

// localAPIServer is the apiserver URL of a minion with --lb=local.
var localAPIServer = "https://" + net.JoinHostPort(localAddress, strconv.Itoa(loadbalancer.PortAPIServer))

// pointKubeconfigsAtLocalLB rewrites kubeconfigs joined before --lb=local (through
// an lb host) to the local lb; the kubelet and kube-proxy restart on the change.
func (m *Minion) pointKubeconfigsAtLocalLB() error {
	var changed []string
	for _, p := range apiKubeconfigs {
		b, err := os.ReadFile(filepath.Join(m.cfg.Root, p))
		if err != nil {
			return err
		}
		nb, err := pki.WithServer(b, localAPIServer)
		if err != nil {
			return fmt.Errorf("/%s: %w", p, err)
		}
		did, err := files.Write(m.cfg.Root, files.File{Path: p, Mode: 0o600, Data: nb})
		if err != nil {
			return err
		}
		if did {
			changed = append(changed, p)
		}
	}
	if len(changed) > 0 {
		m.lg.Info("[certificates] kubeconfigs now point at the node-local lb", "server", localAPIServer, "files", changed)
		m.node.FilesChanged(changed)
	}
	return nil
}

// masters is the node-local lb's list for the log, or nil without one.
func (m *Minion) masters() []string {
	if m.local == nil {
		return nil
	}
	return m.local.keeper.Masters()
}
