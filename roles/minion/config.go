package minion

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/cluster/airgap"
	"github.com/haagent/haagent/netsetup/flannel"
	"github.com/haagent/haagent/netsetup/masterlist"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/trust/join"
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
