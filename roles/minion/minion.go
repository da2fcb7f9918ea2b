// Package minion is the minion role: it joins the cluster through the lb with the
// token, keeps its certificates and kubeconfigs current, keeps the kubelet's,
// kube-proxy's, flanneld's and the runtime's files and units, and imports airgap images.
// With --lb=local it runs that lb itself, on 127.0.0.1 (locallb.go).
package minion

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/cluster/airgap"
	"github.com/haagent/haagent/netsetup/netpol"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// Minion is a running minion role.
type Minion struct {
	cfg  *Config
	lg   *slog.Logger
	node *node.Node
	reg  prometheus.Gatherer
	// local is the node-local lb (--lb=local); nil otherwise.
	local *localLB
	// netpol is the NetworkPolicy controller once made, netpolErr (a string) why the
	// last one failed.
	netpol    atomic.Pointer[netpol.Controller]
	netpolErr atomic.Value

	mu     sync.Mutex // guards the fields below
	images *airgap.Result
}

// New prepares the role; it starts nothing.
func New(cfg *Config, deps node.Deps) (*Minion, error) {
	lg := deps.Logger
	m := &Minion{cfg: cfg, lg: lg, node: node.New(&cfg.Config, lg), reg: deps.Gatherer}
	if cfg.LocalLB() {
		l, err := newLocalLB(cfg, lg, deps.Registerer)
		if err != nil {
			return nil, err
		}
		m.local = l
	}
	return m, nil
}

// Run blocks until ctx ends (returning nil after a clean stop) or a part fails; the
// node's run skeleton runs start, then tells systemd READY=1.
func (m *Minion) Run(ctx context.Context) error {
	return m.node.Run(ctx, node.Endpoints{Ready: m.ready, Status: m.status, Gatherer: m.reg}, m.start)
}

// start is what a minion does on start, top to bottom; each step's log lines carry its
// tag, and the parts that keep running go into g.
func (m *Minion) start(ctx context.Context, g *errgroup.Group) error {
	// [preflight] Say what the kubelet will do on this host's cgroups; set the kernel
	// settings that pods need.
	m.warnAboutCgroups()
	if m.cfg.Root == "/" {
		m.setSysctls()
	}

	// [lb] With --lb=local, run the lb on 127.0.0.1 in front of the masters'
	// apiserver, etcd and join ports, over the saved list and --masters.
	if m.local != nil {
		if err := m.local.start(ctx, g); err != nil {
			return fmt.Errorf("[lb] %w", err)
		}
	}

	// [certificates] Join through the lb, unless this minion holds current
	// certificates; renew them at 2/3 of their lifetime.
	if !m.cfg.Insecure {
		creds, err := m.credentials()
		if err == nil {
			err = m.node.KeepCredentials(ctx, g, creds)
		}
		if err == nil && m.local != nil {
			err = m.pointKubeconfigsAtLocalLB()
		}
		if err != nil {
			return fmt.Errorf("[certificates] %w", err)
		}
	}

	// [masters] With --lb=local, keep the list of masters from etcd's member list,
	// asked through the local lb with flanneld's certificate, and save it.
	if m.local != nil {
		if err := m.local.keepMasters(ctx, g); err != nil {
			return fmt.Errorf("[masters] %w", err)
		}
	}

	// [files] Write the kubelet's, kube-proxy's, flanneld's and the runtime's files,
	// rendered afresh on every pass (flanneld's lease can change); the units follow
	// after READY=1.
	m.node.LogOverrides(nodeconf.Overrides(m.cfg.NodeConfig()))
	rec, err := m.node.StartReconciler(ctx, reconcile.Config{
		Render: m.cfg.Render,
		Units:  nodeconf.Units(m.cfg.NodeConfig()),
	})
	if err != nil {
		return fmt.Errorf("[files] %w", err)
	}

	// [images] Import the airgap images once containerd runs with haagent's config,
	// which the reconciler's first pass (re)starts it with.
	if m.cfg.ContainerRuntime == "containerd" {
		g.Go(func() error {
			select {
			case <-rec.FirstPass():
			case <-ctx.Done():
				return nil
			}
			return m.importImages(ctx)
		})
	}
	// [netpol] Enforce the NetworkPolicies of this node's pods, in nftables; or, with
	// --network-policy=false, remove what an earlier start left.
	m.networkPolicy(ctx, g)
	m.lg.Info("[ready] minion ready", "lb", m.cfg.LB, "masters", m.masters(), "cgroup-mode", m.cfg.Host.CgroupMode, "cgroup-driver", m.cfg.cgroupDriver(),
		"containerd", m.cfg.Host.ContainerdVersion, "status", m.node.StatusAddr())
	return nil
}

// warnAboutCgroups says once what the kubelet will do on a cgroup v1 host.
func (m *Minion) warnAboutCgroups() {
	mode := m.cfg.Host.CgroupMode
	switch {
	case !mode.IsV1():
	case m.cfg.FailCgroupV1:
		m.lg.Error("this host has cgroup v1 controllers and --fail-cgroup-v1 is set: the kubelet will refuse to run; boot the host with the unified hierarchy (systemd.unified_cgroup_hierarchy=1)",
			"cgroup-mode", mode)
	default:
		m.lg.Warn("this host has cgroup v1 controllers: the kubelet runs on them (failCgroupV1: false), but Kubernetes deprecates v1 and plans to remove it after 1.37; move to cgroup v2 (systemd.unified_cgroup_hierarchy=1), or set --fail-cgroup-v1 to refuse v1 now",
			"cgroup-mode", mode)
	}
}

// kernelSettings are what the kubelet, kube-proxy and the bridge need, as kubeadm's
// preflight and k3s's agent set them: routed pods, and bridged pod traffic seen by
// kube-proxy's iptables rules.
var kernelSettings = map[string]string{
	"net/ipv4/ip_forward":                 "1",
	"net/bridge/bridge-nf-call-iptables":  "1",
	"net/bridge/bridge-nf-call-ip6tables": "1",
}

func (m *Minion) setSysctls() {
	for k, v := range kernelSettings {
		p := "/proc/sys/" + k
		if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			m.lg.Warn("could not set a kernel setting that pods need", "sysctl", strings.ReplaceAll(k, "/", "."), "want", v, "err", err)
			continue
		}
		m.lg.Info("set kernel setting", "sysctl", strings.ReplaceAll(k, "/", "."), "value", v)
	}
}

// importImages imports the airgap tarballs once containerd answers. A failure is
// logged and shown in /status; it never stops the minion.
func (m *Minion) importImages(ctx context.Context) error {
	res, err := airgap.Import(ctx, airgap.Config{
		Dir: filepath.Join(m.cfg.Root, m.cfg.ImagesDir), Logger: m.lg.With("component", "airgap"),
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		m.lg.Error("airgap images not imported", "err", err)
		res.Failed["*"] = err.Error()
	}
	m.mu.Lock()
	m.images = &res
	m.mu.Unlock()
	return nil
}

// joinFiles are the files a joined minion holds; one missing (a minion joined by an
// older haagent has no serving certificate) means joining again.
var joinFiles = []string{pki.KubeletKubeconfig, pki.ProxyKubeconfig, pki.KubeletServingCert, pki.FlannelEtcdCert, pki.NetworkPolicyKubeconfig}

// credentials is how a minion gets its certificates: from the join service behind the lb.
func (m *Minion) credentials() (node.Credentials, error) {
	token, err := m.cfg.JoinToken()
	if err != nil {
		return node.Credentials{}, err
	}
	var hosts []string
	if m.cfg.AdvertiseAddress != "" {
		hosts = []string{m.cfg.AdvertiseAddress}
	}
	server := net.JoinHostPort(m.cfg.lbAddress(), strconv.Itoa(m.cfg.JoinPort))
	get := m.node.JoinVia([]string{server}, token, join.Request{Role: "minion", Name: m.cfg.Name, Hosts: hosts},
		&node.Renewal{Cert: pki.KubeletClientCert, Key: pki.KubeletClientKey})
	if m.cfg.LocalLB() {
		get = viaLocalLB(get)
	}
	return node.Credentials{Need: joinFiles, Get: get, Stale: m.node.TrustChanged([]string{server})}, nil
}
