// Package minion is the minion role: it joins the cluster through the lb with the
// token, keeps its certificates and kubeconfigs current, keeps the kubelet's,
// kube-proxy's, flanneld's and the runtime's files and units, and imports airgap images.
// With --lb=local it runs that lb itself, on 127.0.0.1 (locallb.go).
package minion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/base/release"
	"github.com/haagent/haagent/cluster/airgap"
	"github.com/haagent/haagent/netsetup/flannel"
	"github.com/haagent/haagent/netsetup/hostinfo"
	"github.com/haagent/haagent/netsetup/masterlist"
	"github.com/haagent/haagent/netsetup/netpol"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// DefaultRoot is --root's default.
const DefaultRoot = node.DefaultRoot

// Config is the minion's configuration.
type Config struct {
	// Config holds the flags every role shares: name, token, insecure, root, status
	// address, join port (the one behind the lb) and systemd.
	node.Config
	// Address is the node IP, and flannel's interface.
	node.Address
	// LB is the lb's address: the minion joins and reaches the control plane through it.
	// LBLocal runs the lb on this minion instead, on 127.0.0.1 (see locallb.go).
	LB string
	// Masters are the masters' hosts, primary first, that a node-local lb starts with
	// (--lb=local only); the cluster's own list replaces them once it answers.
	Masters []string
	// MastersRefresh is how often a node-local lb asks the cluster for its masters.
	MastersRefresh time.Duration
	// ContainerRuntime is docker or containerd.
	ContainerRuntime string
	FlannelPrefix    string
	EtcdClientPort   int
	// CgroupDriver is auto, systemd or cgroupfs, for the kubelet and the runtime alike.
	CgroupDriver string
	// FailCgroupV1 makes the kubelet refuse a cgroup v1 host, as upstream does by default.
	FailCgroupV1 bool
	// RegistryMirrors are REGISTRY=URL pairs written into containerd's registry hosts.
	RegistryMirrors []string
	// SandboxImage is the pause image containerd pins.
	SandboxImage string
	// ImagesDir holds airgap image tarballs imported at start, relative to Root.
	ImagesDir string
	// NetworkPolicy makes the minion enforce NetworkPolicy for its pods.
	NetworkPolicy bool
	// ClusterDNS is the kubelet's DNS server for pods, CoreDNS's Service IP, and
	// ClusterDomain the cluster's domain; both as the masters have them.
	ClusterDNS    string
	ClusterDomain string
	// Args are the operator's flags for the kubelet, kube-proxy and flanneld.
	Args node.ComponentArgs

	// Host holds what Complete read off this host.
	Host HostFacts
	// saved is the master list a node-local lb saved, as Complete read it; savedErr
	// says why there is none (nil when there is one).
	saved    masterlist.Saved
	savedErr error
}

// HostFacts are the facts of the host that the minion's files depend on.
type HostFacts struct {
	CgroupMode hostinfo.CgroupMode `json:"cgroupMode"`
	// ContainerdVersion is "major.minor", empty when containerd is not installed.
	ContainerdVersion string `json:"containerdVersion,omitempty"`
	containerdMajor   int
	CNIBinDir         string `json:"cniBinDir"`
	// RestrictOOMScoreAdj is set where haagent lacks CAP_SYS_RESOURCE (inside a container).
	RestrictOOMScoreAdj bool `json:"restrictOOMScoreAdj,omitempty"`
}

// Cgroup drivers.
const (
	CgroupDriverAuto     = "auto"
	CgroupDriverSystemd  = "systemd"
	CgroupDriverCgroupfs = "cgroupfs"
)

// DefaultContainerRuntime is containerd: Kubernetes 1.37 has no dockershim, so docker
// needs cri-dockerd in between.
const DefaultContainerRuntime = "containerd"

// DefaultClusterDNS is CoreDNS's Service IP with the masters' default service range
// (the tenth address of 10.254.0.0/16).
const DefaultClusterDNS = "10.254.0.10"

// NewConfig returns the defaults.
func NewConfig() *Config {
	return &Config{Config: node.NewConfig(),
		ContainerRuntime: DefaultContainerRuntime, FlannelPrefix: flannel.DefaultPrefix,
		EtcdClientPort: 2379, CgroupDriver: CgroupDriverAuto, MastersRefresh: masterlist.DefaultInterval,
		SandboxImage: nodeconf.DefaultSandboxImage, ImagesDir: "/" + airgap.DefaultDir,
		ClusterDNS: DefaultClusterDNS, ClusterDomain: nodeconf.DefaultClusterDomain, NetworkPolicy: true}
}

// AddFlags binds the minion's flags.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.LB, "lb", c.LB, "the lb's address: the minion joins and reaches the control plane through it; "+
		LBLocal+" runs an lb on this minion, on 127.0.0.1, in front of --masters")
	node.AddMastersFlag(fs, &c.Masters, "with --lb="+LBLocal+": the masters' IPs or hostnames, comma-separated, primary first; "+
		"only the start: the list is then kept from the cluster and saved in /"+masterlist.File)
	fs.DurationVar(&c.MastersRefresh, "masters-refresh", c.MastersRefresh, "with --lb="+LBLocal+": how often the list of masters is asked of the cluster (etcd's member list)")
	c.Address.AddFlags(fs)
	fs.StringVar(&c.ContainerRuntime, "container-runtime", c.ContainerRuntime, "containerd or docker (docker needs cri-dockerd)")
	fs.StringVar(&c.FlannelPrefix, "flannel-prefix", c.FlannelPrefix, "etcd prefix of flannel's network config")
	fs.IntVar(&c.EtcdClientPort, "etcd-client-port", c.EtcdClientPort, "etcd client port the lb forwards")
	fs.StringVar(&c.CgroupDriver, "cgroup-driver", c.CgroupDriver, "cgroup driver of the kubelet and the runtime: auto (cgroupfs on cgroup v1, systemd on v2), systemd or cgroupfs")
	fs.BoolVar(&c.FailCgroupV1, "fail-cgroup-v1", c.FailCgroupV1, "make the kubelet refuse to run on a cgroup v1 host (upstream's default); haagent otherwise lets it run there")
	fs.StringSliceVar(&c.RegistryMirrors, "registry-mirror", c.RegistryMirrors, "REGISTRY=URL: pull REGISTRY's images from URL first, e.g. docker.io=http://10.0.0.11:5000 (repeatable, or comma-separated)")
	fs.StringVar(&c.SandboxImage, "sandbox-image", c.SandboxImage, "the pause image the runtime pins for pod sandboxes")
	fs.BoolVar(&c.NetworkPolicy, "network-policy", c.NetworkPolicy, "enforce NetworkPolicy for this node's pods, in an nftables table of its own (false removes it)")
	fs.StringVar(&c.ClusterDNS, "cluster-dns", c.ClusterDNS, "the pods' DNS server: CoreDNS's Service IP, the tenth address of the masters' --service-cluster-ip-range")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "the cluster's DNS domain, as the masters' --cluster-domain")
	fs.StringVar(&c.ImagesDir, "images-dir", c.ImagesDir, "image tarballs (*.tar, *.tar.gz) here are imported into containerd at start, for sites with no registry")
	c.Args.AddFlags(fs, nodeconf.ComponentKubelet, nodeconf.ComponentProxy, nodeconf.ComponentFlanneld)
	c.Config.AddFlags(fs)
}

// Complete fills the hostname default and reads the host's facts, and with
// --lb=local the saved list of masters.
func (c *Config) Complete() error {
	if err := errors.Join(c.Config.Complete(), c.Address.Complete()); err != nil {
		return err
	}
	c.Host = ReadHostFacts(c.Root)
	node.TrimMasters(c.Masters)
	if c.LocalLB() {
		c.saved, c.savedErr = masterlist.Load(c.Root)
	}
	return nil
}

// ReadHostFacts reads the cgroup mode, the containerd version, the CNI plugin dir and
// whether runc may lower oom_score_adj.
func ReadHostFacts(root string) HostFacts {
	h := HostFacts{CgroupMode: hostinfo.DetectCgroupMode(root), CNIBinDir: hostinfo.CNIBinDir(root)}
	// A containerd that isn't installed yet gets the config version 2 format, which
	// containerd 2.x also reads (it migrates it in memory).
	if bin, err := exec.LookPath("containerd"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if major, minor, err := hostinfo.ContainerdVersion(ctx, bin); err == nil {
			h.containerdMajor, h.ContainerdVersion = major, fmt.Sprintf("%d.%d", major, minor)
		}
	}
	if ok, err := hostinfo.CanRaiseOOMPriority(); err == nil && !ok {
		h.RestrictOOMScoreAdj = true
	}
	return h
}

// cgroupDriver resolves auto: cgroupfs on a v1 host, where the systemd driver needs
// systemd to own every controller (containers rarely delegate them), systemd on v2.
func (c *Config) cgroupDriver() string {
	if c.CgroupDriver != CgroupDriverAuto {
		return c.CgroupDriver
	}
	if c.Host.CgroupMode.IsV1() {
		return CgroupDriverCgroupfs
	}
	return CgroupDriverSystemd
}

func (c *Config) mirrors() []nodeconf.Mirror {
	var out []nodeconf.Mirror
	for _, s := range c.RegistryMirrors {
		if m, err := nodeconf.ParseMirror(s); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// Validate reports every problem at once. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	if c.LB == "" {
		errs = append(errs, errors.New("--lb: required; give the lb's address, e.g. --lb=10.0.0.10, or --lb=local --masters=... to run an lb on this minion"))
	}
	errs = append(errs, c.validateLocalLB()...)
	if c.ContainerRuntime != "containerd" && c.ContainerRuntime != "docker" {
		errs = append(errs, fmt.Errorf("--container-runtime: %q is not containerd or docker", c.ContainerRuntime))
	}
	if !slices.Contains([]string{CgroupDriverAuto, CgroupDriverSystemd, CgroupDriverCgroupfs}, c.CgroupDriver) {
		errs = append(errs, fmt.Errorf("--cgroup-driver: %q is not auto, systemd or cgroupfs", c.CgroupDriver))
	}
	seen := map[string]bool{}
	for _, s := range c.RegistryMirrors {
		m, err := nodeconf.ParseMirror(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--registry-mirror: %v", err))
			continue
		}
		if seen[m.Registry] {
			errs = append(errs, fmt.Errorf("--registry-mirror: %s is mirrored twice; give one mirror per registry", m.Registry))
		}
		seen[m.Registry] = true
	}
	if c.SandboxImage == "" || strings.ContainsAny(c.SandboxImage, " \t") {
		errs = append(errs, fmt.Errorf("--sandbox-image: %q is not an image reference; e.g. %s", c.SandboxImage, nodeconf.DefaultSandboxImage))
	}
	if !filepath.IsAbs(c.ImagesDir) {
		errs = append(errs, fmt.Errorf("--images-dir: %q must be an absolute path", c.ImagesDir))
	}
	if a, err := netip.ParseAddr(c.ClusterDNS); err != nil || !a.Is4() && !a.Is6() {
		errs = append(errs, fmt.Errorf("--cluster-dns: %q is not an IP address; give CoreDNS's Service IP, e.g. %s", c.ClusterDNS, DefaultClusterDNS))
	}
	if !join.ValidDNSName(c.ClusterDomain) {
		errs = append(errs, fmt.Errorf("--cluster-domain: %q is not a DNS domain such as %s", c.ClusterDomain, nodeconf.DefaultClusterDomain))
	}
	errs = append(errs, c.Args.Validate()...)
	errs = append(errs, c.Config.Validate("minion", "to join; run 'haagent token show' on a master and pass it here")...)
	return errors.Join(errs...)
}

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

// Status is the document behind /status on a minion.
type Status struct {
	Role    string    `json:"role"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	LB      string    `json:"lb"`
	Host    HostFacts `json:"host"`
	Driver  string    `json:"cgroupDriver"`
	Subnet  string    `json:"podSubnet,omitempty"`
	// LocalLB is the node-local lb (--lb=local): its masters and backends.
	LocalLB *LocalLBStatus `json:"localLB,omitempty"`
	Images  *airgap.Result `json:"airgapImages,omitempty"`
	Certs   []pki.CertInfo `json:"certs,omitempty"`
	// CertWarnings are the certificates among Certs that expire within 120 days.
	CertWarnings []node.CertWarning `json:"certWarnings,omitempty"`
	Node         *reconcile.Status  `json:"node,omitempty"`
	// NetworkPolicy is the NetworkPolicy controller's state; nil with --network-policy=false.
	NetworkPolicy *netpol.Status `json:"networkPolicy,omitempty"`
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

func (m *Minion) ready() error {
	if err := m.node.FilesWritten(); err != nil {
		return err
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
	st := Status{Role: "minion", Name: m.cfg.Name, Version: release.Version, LB: m.cfg.LB, Certs: certs,
		Host: m.cfg.Host, Driver: m.cfg.cgroupDriver()}
	if s := m.cfg.subnet(); s != nil {
		st.Subnet = s.Subnet.Masked().String()
	}
	st.Node = m.node.FilesStatus()
	st.CertWarnings = m.node.CertWarnings()
	if m.local != nil {
		st.LocalLB = m.local.status()
	}
	m.mu.Lock()
	st.Images = m.images
	m.mu.Unlock()
	st.NetworkPolicy = m.networkPolicyStatus()
	return st, nil
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

// subnet is flanneld's lease for this node, or nil while it has none.
func (c *Config) subnet() *nodeconf.FlannelSubnet {
	b, err := os.ReadFile(filepath.Join(c.Root, nodeconf.FlannelSubnetEnv))
	if err != nil {
		return nil
	}
	s, err := nodeconf.ParseSubnetEnv(b)
	if err != nil {
		return nil
	}
	return s
}

// NodeConfig is what the minion's files are rendered from: everything points at the lb
// (127.0.0.1 with --lb=local),
// and the pod network follows flanneld's current lease.
func (c *Config) NodeConfig() nodeconf.Config {
	return nodeconf.Config{
		Role: "minion", Name: c.Name, AdvertiseAddress: c.AdvertiseAddress, LB: c.lbAddress(),
		EtcdEndpoints: []string{c.Scheme() + "://" + net.JoinHostPort(c.lbAddress(), strconv.Itoa(c.EtcdClientPort))},
		FlannelPrefix: c.FlannelPrefix, FlannelIface: c.Iface,
		ContainerRuntime: c.ContainerRuntime, Root: c.Root, Insecure: c.Insecure,
		CgroupDriver: c.cgroupDriver(), CgroupV1: c.Host.CgroupMode.IsV1(), FailCgroupV1: c.FailCgroupV1,
		ContainerdMajor: c.Host.containerdMajor, CNIBinDir: c.Host.CNIBinDir,
		RestrictOOMScoreAdj: c.Host.RestrictOOMScoreAdj, SandboxImage: c.SandboxImage,
		Mirrors: c.mirrors(), Subnet: c.subnet(), ExtraArgs: c.Args,
		ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain,
	}
}

// Render returns every file the minion owns besides its certificates.
func (c *Config) Render() ([]files.File, error) {
	return nodeconf.Files(c.NodeConfig())
}

// PrintStatus writes the minion's part of `haagent status`.
func PrintStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "role: %s   name: %s   version: %s   lb: %s\n", st.Role, st.Name, st.Version, st.LB)
	cg := string(st.Host.CgroupMode)
	if st.Host.CgroupMode.IsV1() {
		cg += " (deprecated upstream; the kubelet runs with failCgroupV1: false unless --fail-cgroup-v1)"
	}
	fmt.Fprintf(w, "cgroups: %s   driver: %s\n", cg, st.Driver)
	rt := "containerd " + st.Host.ContainerdVersion
	if st.Host.ContainerdVersion == "" {
		rt = "containerd: not found on PATH"
	}
	subnet := st.Subnet
	if subnet == "" {
		subnet = "none yet (waiting for flanneld's lease)"
	}
	fmt.Fprintf(w, "runtime: %s   CNI plugins: %s   pod subnet: %s\n", rt, st.Host.CNIBinDir, subnet)
	if im := st.Images; im != nil && (len(im.Imported) > 0 || len(im.Failed) > 0) {
		fmt.Fprintf(w, "airgap images: %d imported", len(im.Imported))
		for f, e := range im.Failed {
			fmt.Fprintf(w, "; %s failed: %s", f, e)
		}
		fmt.Fprintln(w)
	}
	if st.LocalLB != nil {
		printLocalLB(w, *st.LocalLB)
	}
	node.PrintCertWarnings(w, st.CertWarnings)
}
