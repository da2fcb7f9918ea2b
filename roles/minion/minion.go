// Package minion is the minion role: it joins the cluster through the lb with the
// token, keeps its certificates and kubeconfigs current, and serves its status.
package minion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/haagent/haagent/files"
	"github.com/haagent/haagent/flannel"
	"github.com/haagent/haagent/join"
	"github.com/haagent/haagent/netsetup"
	"github.com/haagent/haagent/nodeconf"
	"github.com/haagent/haagent/pki"
	"github.com/haagent/haagent/reconcile"
	"github.com/haagent/haagent/status"
	"github.com/haagent/haagent/version"
)

// Defaults for the minion's flags.
const (
	DefaultRoot = "/"
	renewEvery  = time.Hour
)

// Config is the minion's configuration.
type Config struct {
	Name             string
	LB               string
	Token            string
	Insecure         bool
	JoinPort         int
	AdvertiseAddress string
	Iface            string
	// ContainerRuntime is docker or containerd.
	ContainerRuntime string
	FlannelPrefix    string
	EtcdClientPort   int
	Root             string
	StatusAddress    string
	// Systemd is auto, on or off: whether haagent manages the units.
	Systemd string
}

// DefaultContainerRuntime is containerd: Kubernetes 1.37 has no dockershim, so docker
// needs cri-dockerd in between.
const DefaultContainerRuntime = "containerd"

// NewConfig returns the defaults.
func NewConfig() *Config {
	return &Config{JoinPort: join.DefaultPort, Root: DefaultRoot, StatusAddress: status.DefaultAddress,
		ContainerRuntime: DefaultContainerRuntime, FlannelPrefix: flannel.DefaultPrefix,
		EtcdClientPort: 2379, Systemd: reconcile.SystemdAuto}
}

// AddFlags binds the minion's flags.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Name, "name", c.Name, "this node's name (default: the short hostname)")
	fs.StringVar(&c.LB, "lb", c.LB, "the lb's address: the minion joins and reaches the control plane through it")
	fs.StringVar(&c.Token, "token", c.Token, "cluster token from 'haagent token show' on a master")
	fs.BoolVar(&c.Insecure, "insecure", c.Insecure, "join a --insecure lab cluster: no certificates")
	fs.IntVar(&c.JoinPort, "join-port", c.JoinPort, "port of the join service behind the lb")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", c.AdvertiseAddress, "this node's IP (default: the IPv4 of --iface)")
	fs.StringVar(&c.Iface, "iface", c.Iface, "network interface for flannel and the node IP")
	fs.StringVar(&c.ContainerRuntime, "container-runtime", c.ContainerRuntime, "containerd or docker (docker needs cri-dockerd)")
	fs.StringVar(&c.FlannelPrefix, "flannel-prefix", c.FlannelPrefix, "etcd prefix of flannel's network config")
	fs.IntVar(&c.EtcdClientPort, "etcd-client-port", c.EtcdClientPort, "etcd client port the lb forwards")
	fs.StringVar(&c.Systemd, "systemd", c.Systemd, "manage the units: auto (where systemd runs), on or off")
	fs.StringVar(&c.Root, "root", c.Root, "prefix for every file haagent writes")
	fs.StringVar(&c.StatusAddress, "status-address", c.StatusAddress, "host:port for /healthz, /readyz, /metrics and /status")
}

// Complete fills the hostname default.
func (c *Config) Complete() error {
	if err := netsetup.NodeIdentity(&c.Name, c.Iface, &c.AdvertiseAddress); err != nil {
		return err
	}
	return nil
}

// Validate reports every problem at once. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	if c.LB == "" {
		errs = append(errs, errors.New("--lb: required; give the lb's address, e.g. --lb=10.0.0.10"))
	}
	if !c.Insecure {
		if c.Token == "" {
			errs = append(errs, errors.New("--token: required; run 'haagent token show' on a master and pass it here"))
		} else if _, err := pki.ParseToken(c.Token); err != nil {
			errs = append(errs, fmt.Errorf("--token: malformed: %v; run 'haagent token show' on a master for the right one", err))
		}
	}
	if c.JoinPort < 1 || c.JoinPort > 65535 {
		errs = append(errs, fmt.Errorf("--join-port: %d is not a port in 1-65535", c.JoinPort))
	}
	if c.ContainerRuntime != "containerd" && c.ContainerRuntime != "docker" {
		errs = append(errs, fmt.Errorf("--container-runtime: %q is not containerd or docker", c.ContainerRuntime))
	}
	if !slices.Contains([]string{reconcile.SystemdAuto, reconcile.SystemdOn, reconcile.SystemdOff}, c.Systemd) {
		errs = append(errs, fmt.Errorf("--systemd: %q is not auto, on or off", c.Systemd))
	}
	if !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("--root: %q must be an absolute path", c.Root))
	}
	return errors.Join(errs...)
}

// Minion is a running minion role.
type Minion struct {
	cfg *Config
	lg  *slog.Logger
	reg prometheus.Gatherer

	mu  sync.Mutex // guards the fields below
	rec *reconcile.Reconciler
}

// New prepares the role; it starts nothing.
func New(cfg *Config, lg *slog.Logger, gatherer prometheus.Gatherer) *Minion {
	return &Minion{cfg: cfg, lg: lg, reg: gatherer}
}

// Status is the document behind /status on a minion.
type Status struct {
	Role    string            `json:"role"`
	Name    string            `json:"name"`
	Version string            `json:"version"`
	LB      string            `json:"lb"`
	Certs   []pki.CertInfo    `json:"certs,omitempty"`
	Node    *reconcile.Status `json:"node,omitempty"`
}

// Run joins (unless it holds current certificates), then keeps them renewed until ctx ends.
func (m *Minion) Run(ctx context.Context) error {
	srv, err := status.Listen(status.Config{
		Address: m.cfg.StatusAddress, Ready: m.ready, Status: m.status, Gatherer: m.reg, Logger: m.lg,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	if !m.cfg.Insecure {
		if err := m.joinIfNeeded(ctx, time.Now()); err != nil {
			cancel()
			<-served
			return err
		}
	}
	rec, err := m.startReconciler(ctx)
	if err != nil {
		cancel()
		<-served
		return err
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	// Units start only now: they are ordered after haagent.service, which is active from READY=1.
	go func() { _ = rec.Run(ctx) }()
	m.lg.Info("minion ready", "lb", m.cfg.LB)
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
			return <-served
		case err := <-served:
			return err
		case <-t.C:
			if !m.cfg.Insecure {
				if err := m.joinIfNeeded(ctx, time.Now()); err != nil {
					m.lg.Error("certificate renewal failed; retrying in an hour", "err", err)
				}
			}
		}
	}
}

func (m *Minion) ready() error {
	m.mu.Lock()
	rec := m.rec
	m.mu.Unlock()
	if rec == nil {
		return errors.New("node files not written yet")
	}
	if m.cfg.Insecure {
		return nil
	}
	if _, err := os.Stat(filepath.Join(m.cfg.Root, pki.KubeletKubeconfig)); err != nil {
		return errors.New("not joined yet")
	}
	return nil
}

func (m *Minion) status(ctx context.Context) (any, error) {
	certs, _ := pki.Inspect(m.cfg.Root)
	st := Status{Role: "minion", Name: m.cfg.Name, Version: version.Version, LB: m.cfg.LB, Certs: certs}
	m.mu.Lock()
	if m.rec != nil {
		ns := m.rec.Status()
		st.Node = &ns
	}
	m.mu.Unlock()
	return st, nil
}

// joinIfNeeded fetches certificates through the lb when they are missing or due.
func (m *Minion) joinIfNeeded(ctx context.Context, now time.Time) error {
	if _, err := os.Stat(filepath.Join(m.cfg.Root, pki.KubeletKubeconfig)); err == nil {
		due, err := pki.DueForRenewal(m.cfg.Root, now)
		if err == nil && len(due) == 0 {
			return nil
		}
		m.lg.Info("certificates due for renewal: rejoining", "due", due)
	}
	token, err := pki.ParseToken(m.cfg.Token)
	if err != nil {
		return err
	}
	server := net.JoinHostPort(m.cfg.LB, strconv.Itoa(m.cfg.JoinPort))
	var hosts []string
	if m.cfg.AdvertiseAddress != "" {
		hosts = []string{m.cfg.AdvertiseAddress}
	}
	return join.Obtain(ctx, m.lg, m.cfg.Root, []string{server}, token, join.Request{Role: "minion", Name: m.cfg.Name, Hosts: hosts})
}

// NodeConfig is what the minion's files are rendered from: everything points at the lb.
func (c *Config) NodeConfig() nodeconf.Config {
	scheme := "https"
	if c.Insecure {
		scheme = "http"
	}
	return nodeconf.Config{
		Role: "minion", Name: c.Name, AdvertiseAddress: c.AdvertiseAddress, LB: c.LB,
		EtcdEndpoints: []string{scheme + "://" + net.JoinHostPort(c.LB, strconv.Itoa(c.EtcdClientPort))},
		FlannelPrefix: c.FlannelPrefix, FlannelIface: c.Iface,
		ContainerRuntime: c.ContainerRuntime, Root: c.Root, Insecure: c.Insecure,
	}
}

// Render returns every file the minion owns besides its certificates.
func (c *Config) Render() ([]files.File, error) {
	return nodeconf.Files(c.NodeConfig())
}

func (m *Minion) startReconciler(ctx context.Context) (*reconcile.Reconciler, error) {
	rec, err := reconcile.ForNode(ctx, m.cfg.Systemd, m.cfg.NodeConfig(), m.lg)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.rec = rec
	m.mu.Unlock()
	return rec, nil
}
