// Package sixhost is the walkthrough's lab on one machine, with no single point of
// failure in front of the masters: lb1 and lb2 sharing a VIP, master1-3, minion1 (which
// reaches the masters through the VIP) and minion2 (which runs its own node-local lb),
// as systemd test hosts (test/framework/hosts) on their own private network, with haagent
// installed from the project's .deb, the real Kubernetes 1.37.2 and flannel binaries,
// and a real registry on lb1 serving nginx and pause images built from the project's
// own programs. `go run ./test/tools/lab` drives a persistent one; the e2e test and the
// benchmark make their own.
package sixhost

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/haagent/haagent/cluster/addons"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/images"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/trust/pki"
)

// ID is the persistent lab's ID, for `go run ./test/tools/lab`.
const ID = "hal-lab"

// Subnet is the lab's own network, inside its namespaces only.
var Subnet = netip.MustParsePrefix("10.78.0.0/24")

// Host roles.
const (
	RoleLB     = "lb"
	RoleMaster = "master"
	RoleMinion = "minion"
)

// Spec is one host of the lab.
type Spec struct {
	Name string
	Role string
	IP   netip.Addr
}

// Specs are the walkthrough's table, plus lb2: lbs .11-.12, masters .21-.23, minions
// .31-.32.
var Specs = []Spec{
	{"lb1", RoleLB, addr(11)},
	{"lb2", RoleLB, addr(12)},
	{"master1", RoleMaster, addr(21)},
	{"master2", RoleMaster, addr(22)},
	{"master3", RoleMaster, addr(23)},
	{"minion1", RoleMinion, addr(31)},
	{"minion2", RoleMinion, addr(32)},
}

func addr(last byte) netip.Addr {
	a := Subnet.Addr().As4()
	a[3] = last
	return netip.AddrFrom4(a)
}

// LB is lb1's own address: the lab's gateway, and its registry's.
var LB = addr(11)

// VIP is the address lb1 and lb2 share (haagent --role=lb --vip): the masters'
// certificates name it, and minion1 and the admin kubeconfig reach the masters through it.
var VIP = netip.PrefixFrom(addr(10), Subnet.Bits())

// NodeLocal is the minion that runs its own lb (--lb=local) instead of using the VIP.
const NodeLocal = "minion2"

// Client is where Kubectl runs, as an operator's workstation would: a host that none of
// the e2e test's faults takes down. Its kubeconfig reaches the masters through the VIP.
const Client = "master3"

// RegistryPort is where lb1's registry listens (Debian's docker-registry default).
const RegistryPort = 5000

// Mirrors are what the minions are told: both registries that pods and the sandbox
// name are served by lb1.
const Mirrors = "docker.io=http://lb1:5000,registry.k8s.io=http://lb1:5000"

// components are the binaries each role needs besides haagent, from the kube cache.
var components = map[string][]string{
	RoleLB:     {"kubectl", "etcdctl"},
	RoleMaster: {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "flanneld", "kubectl", "etcdctl"},
	// containerd 2.x replaces Debian's 1.6: Kubernetes 1.37's image volumes, which
	// the conformance suite runs, need containerd 2.1 or later.
	RoleMinion: {"kubelet", "kube-proxy", "flanneld", "kubectl", "containerd", "ctr", "containerd-shim-runc-v2"},
}

// Config says where the lab's parts come from.
type Config struct {
	// Deb is the haagent .deb to install on every host.
	Deb string
	// KubeBin and FlannelBin are the dirs of the real binaries (scripts/build-kube.sh),
	// CoreDNSBin the CoreDNS binary its image is made from, ContainerdBin the dir of
	// containerd 2.x and its ctr.
	KubeBin, FlannelBin, CoreDNSBin, ContainerdBin string
	// WorkDir is scratch space for the images.
	WorkDir string
	Logf    func(string, ...any)
}

// DefaultConfig reads HAAGENT_KUBE_BIN and HAAGENT_FLANNEL_BIN, else the cache dirs of
// scripts/build-kube.sh.
func DefaultConfig() Config {
	return Config{
		KubeBin:       envOr("HAAGENT_KUBE_BIN", "/var/cache/haagent/kube/v1.37.2/bin"),
		FlannelBin:    envOr("HAAGENT_FLANNEL_BIN", "/var/cache/haagent/kube/flannel-v0.28.10/bin"),
		CoreDNSBin:    envOr("HAAGENT_COREDNS_BIN", "/var/cache/haagent/kube/coredns-"+addons.CoreDNSVersion+"/bin/coredns"),
		ContainerdBin: envOr("HAAGENT_CONTAINERD2_BIN", "/var/cache/haagent/kube/containerd-v2.4.2/bin"),
		Logf:          func(string, ...any) {},
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func (c Config) binary(name string) string {
	switch name {
	case "flanneld":
		return filepath.Join(c.FlannelBin, name)
	case "containerd", "ctr", "containerd-shim-runc-v2":
		return filepath.Join(c.ContainerdBin, name)
	case "etcdctl":
		return "/usr/bin/etcdctl"
	}
	return filepath.Join(c.KubeBin, name)
}

// Check reports every missing part at once, saying how to get it.
func (c Config) Check() error {
	var errs []error
	if _, err := os.Stat(c.Deb); err != nil {
		errs = append(errs, fmt.Errorf("haagent .deb: %w (make package builds it)", err))
	}
	if _, err := os.Stat(c.CoreDNSBin); err != nil {
		errs = append(errs, fmt.Errorf("coredns missing at %s: run scripts/build-kube.sh (make kube)", c.CoreDNSBin))
	}
	seen := map[string]bool{}
	for _, bins := range components {
		for _, b := range bins {
			if seen[b] {
				continue
			}
			seen[b] = true
			if _, err := os.Stat(c.binary(b)); err != nil {
				errs = append(errs, fmt.Errorf("%s missing at %s: run scripts/build-kube.sh (make kube), and apt-get install etcd-client", b, c.binary(b)))
			}
		}
	}
	return errors.Join(errs...)
}

// RepoRoot is the repository's top dir.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// BuildDeb runs `make package` into dir and returns the .deb's path.
func BuildDeb(ctx context.Context, dir string) (string, error) {
	root := RepoRoot()
	vb, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(vb))
	cmd := exec.CommandContext(ctx, "make", "-C", root, "-f", "Makefile", "package", "BIN="+filepath.Join(dir, "haagent"), "DIST="+dir)
	// Not the jobserver of a `make test` that may run us.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "MAKEFLAGS=") || strings.HasPrefix(e, "MFLAGS=") || strings.HasPrefix(e, "MAKELEVEL=")
	})
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make package: %w\n%s", err, out)
	}
	deb := filepath.Join(dir, "haagent_"+v+"-1_amd64.deb")
	if _, err := os.Stat(deb); err != nil {
		return "", fmt.Errorf("make package made no %s: %w", deb, err)
	}
	return deb, nil
}

// HostSpecs are the specs test/framework/hosts boots: the minions can run containers.
func HostSpecs() []hosts.HostSpec {
	var out []hosts.HostSpec
	for _, s := range Specs {
		out = append(out, hosts.HostSpec{Name: s.Name, HostOptions: hosts.HostOptions{IP: s.IP, Containers: s.Role == RoleMinion}})
	}
	return out
}

// Lab is a booted six-host lab.
type Lab struct {
	Hosts *hosts.Lab
	// Token is the server token, which the masters get; AgentToken the one the minions
	// get and LBToken the lbs' ("" in a lab made before there were two, or three: they
	// get Token, or AgentToken).
	Token      string
	AgentToken string
	LBToken    string
}

// Host returns the named host.
func (l *Lab) Host(name string) *hosts.Host { return l.Hosts.Host(name) }

// Masters are master1-3.
func (l *Lab) Masters() []*hosts.Host {
	return []*hosts.Host{l.Host("master1"), l.Host("master2"), l.Host("master3")}
}

// Minions are minion1-2.
func (l *Lab) Minions() []*hosts.Host { return []*hosts.Host{l.Host("minion1"), l.Host("minion2")} }

// Boot adds and boots the six hosts on a fresh hosts lab.
func Boot(ctx context.Context, hl *hosts.Lab) (*Lab, error) {
	if _, err := hl.BootWith(ctx, HostSpecs()...); err != nil {
		return nil, fmt.Errorf("boot the six hosts: %w", err)
	}
	return &Lab{Hosts: hl}, nil
}

// tokenFile keeps the lab's tokens on lb1, server, agent then lb, so that a reopened lab
// knows them.
const tokenFile = "/var/lib/haagent-lab/token"

// upMarker on lb1 says that Install finished.
const upMarker = "/var/lib/haagent-lab/up"

// Reopen wraps a reopened hosts lab.
func Reopen(hl *hosts.Lab) (*Lab, error) {
	l := &Lab{Hosts: hl}
	for _, s := range Specs {
		if hl.Host(s.Name) == nil {
			return nil, fmt.Errorf("lab %s has no host %s", hl.ID, s.Name)
		}
	}
	b, err := l.Host("lb1").ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("lab %s: no token: %w", hl.ID, err)
	}
	toks := strings.Fields(string(b))
	if len(toks) == 0 {
		return nil, fmt.Errorf("lab %s: %s is empty", hl.ID, tokenFile)
	}
	l.Token = toks[0]
	if len(toks) > 1 {
		l.AgentToken = toks[1]
	}
	if len(toks) > 2 {
		l.LBToken = toks[2]
	}
	return l, nil
}

// Complete reports whether Install finished on this lab.
func (l *Lab) Complete() bool {
	_, err := l.Host("lb1").ReadFile(upMarker)
	return err == nil
}

// env is /etc/sysconfig/haagent for a host, as cloud-init would write it.
func (l *Lab) env(s Spec) string {
	var peers, masters []string
	for _, o := range Specs {
		if o.Role == RoleMaster {
			peers = append(peers, fmt.Sprintf("%s=http://%s:2380", o.Name, o.IP))
			masters = append(masters, o.IP.String())
		}
	}
	// Masters get the server token, the minions the agent token and the lbs the lb token.
	token := l.AgentToken
	if s.Role == RoleLB && l.LBToken != "" {
		token = l.LBToken
	}
	if s.Role == RoleMaster || token == "" {
		token = l.Token
	}
	lines := []string{"HAAGENT_ROLE=" + s.Role, "HAAGENT_TOKEN=" + token}
	switch s.Role {
	case RoleMaster:
		lines = append(lines, "HAAGENT_PEERS="+strings.Join(peers, ","), "HAAGENT_LB="+VIP.Addr().String())
		if l.AgentToken != "" {
			lines = append(lines, "HAAGENT_AGENT_TOKEN="+l.AgentToken)
		}
		if l.LBToken != "" {
			lines = append(lines, "HAAGENT_LB_TOKEN="+l.LBToken)
		}
	case RoleLB:
		lines = append(lines, "HAAGENT_MASTERS="+strings.Join(masters, ","), "HAAGENT_VIP="+VIP.String(), "HAAGENT_VIP_IFACE=eth0")
	case RoleMinion:
		if s.Name == NodeLocal {
			lines = append(lines, "HAAGENT_LB=local", "HAAGENT_MASTERS="+strings.Join(masters, ","))
		} else {
			lines = append(lines, "HAAGENT_LB="+VIP.Addr().String())
		}
		lines = append(lines, "HAAGENT_IFACE=eth0", "HAAGENT_REGISTRY_MIRROR="+Mirrors)
	}
	return strings.Join(lines, "\n") + "\n"
}

// Install puts haagent (from the .deb) and the kube binaries on every host, writes only
// /etc/sysconfig/haagent, starts haagent everywhere, fills lb1's registry, and returns
// once both minions are Ready.
func (l *Lab) Install(ctx context.Context, cfg Config) error {
	if err := cfg.Check(); err != nil {
		return err
	}
	if l.Token == "" {
		server, err := pki.GenerateToken(pki.KindServer)
		if err != nil {
			return err
		}
		agent, err := pki.GenerateToken(pki.KindAgent)
		if err != nil {
			return err
		}
		lb, err := pki.GenerateToken(pki.KindLB)
		if err != nil {
			return err
		}
		l.Token, l.AgentToken, l.LBToken = server.String(), agent.String(), lb.String()
	}
	if err := l.Host("lb1").WriteFile(tokenFile, []byte(strings.TrimSpace(l.Token+"\n"+l.AgentToken+"\n"+l.LBToken)+"\n"), 0o600); err != nil {
		return err
	}
	imgDir := filepath.Join(cfg.WorkDir, "images")
	var set images.Set
	var imgErr error
	var wg sync.WaitGroup
	wg.Go(func() { set, imgErr = images.Build(ctx, imgDir) })
	start := time.Now()
	errs := make([]error, len(Specs))
	for i, s := range Specs {
		wg.Go(func() { errs[i] = l.installHost(ctx, cfg, s) })
	}
	wg.Wait()
	if err := errors.Join(append(errs, imgErr)...); err != nil {
		return err
	}
	cfg.Logf("lab: haagent and the kube binaries installed on %d hosts in %s", len(Specs), time.Since(start).Round(100*time.Millisecond))
	if err := l.fillRegistry(ctx, set, cfg.CoreDNSBin); err != nil {
		return err
	}
	// Masters first, all at once (they wait for each other), then the lb and the minions.
	for _, role := range []string{RoleMaster, RoleLB, RoleMinion} {
		for _, s := range Specs {
			if s.Role == role {
				if _, err := l.Host(s.Name).Shell(ctx, "systemctl enable haagent && systemctl start --no-block haagent"); err != nil {
					return err
				}
			}
		}
	}
	if err := l.waitAdminKubeconfig(ctx); err != nil {
		return err
	}
	if err := l.WaitNodesReady(ctx, 10*time.Minute); err != nil {
		return err
	}
	// Pods can be created once the controller-manager has made the default ServiceAccount.
	if err := await.Until(ctx, "the default ServiceAccount (made by the controller-manager)", 5*time.Minute, func() error {
		_, err := l.Kubectl(ctx, "get", "serviceaccount", "default")
		return err
	}, every); err != nil {
		return err
	}
	cfg.Logf("lab: both minions Ready %s after install began", time.Since(start).Round(time.Second))
	return l.Host("lb1").WriteFile(upMarker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

func (l *Lab) installHost(ctx context.Context, cfg Config, s Spec) error {
	h := l.Host(s.Name)
	if err := h.CopyIn(cfg.Deb, "/var/tmp/haagent.deb"); err != nil {
		return err
	}
	if s.Role == RoleMinion {
		// Debian's containerd runs from boot; haagent starts the new one with a config
		// in its format.
		if out, err := h.Shell(ctx, "systemctl stop containerd"); err != nil {
			return fmt.Errorf("%s: %w\n%s", s.Name, err, out)
		}
	}
	for _, b := range components[s.Role] {
		if err := h.CopyIn(cfg.binary(b), "/usr/bin/"+b); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	if err := h.WriteFile("/etc/sysconfig/haagent", []byte(l.env(s)), 0o600); err != nil {
		return err
	}
	// The rootfs holds the machine's resolv.conf. CoreDNS forwards what is not the
	// cluster's to the nameserver there: lb1, inside the lab, which serves no DNS, so
	// that no query leaves the lab.
	if err := h.WriteFile("/etc/resolv.conf", []byte("nameserver "+LB.String()+"\n"), 0o644); err != nil {
		return err
	}
	// Every host shares one rootfs with containerd and the registry; only minions run
	// the one and lb1 the other.
	var off []string
	if s.Role != RoleMinion {
		off = append(off, "containerd")
	}
	if s.Role != RoleLB {
		off = append(off, "docker-registry")
	}
	// cloud-init writes its files before it installs packages: keep ours, as
	// --force-confold does for a conffile that is already there.
	script := "DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold /var/tmp/haagent.deb >/var/tmp/dpkg.log 2>&1 </dev/null || { cat /var/tmp/dpkg.log; exit 1; }"
	if len(off) > 0 {
		script += " && systemctl disable --now " + strings.Join(off, " ") + " 2>/dev/null"
	}
	if s.Role == RoleLB {
		script += " && systemctl enable --now docker-registry"
	} else {
		// lb1 is the lab's gateway. A real host has a default route; without any route,
		// a ClusterIP connect from a minion itself fails before kube-proxy's DNAT runs.
		script += " && ip route replace default via " + LB.String()
	}
	if out, err := h.Shell(ctx, script); err != nil {
		return fmt.Errorf("install on %s: %w\n%s", s.Name, err, out)
	}
	return nil
}

// fillRegistry pushes nginx, pause, the webhook and CoreDNS into lb1's registry, from
// lb1's own netns.
func (l *Lab) fillRegistry(ctx context.Context, set images.Set, corednsBin string) error {
	lb := l.Host("lb1")
	reg := fmt.Sprintf("%s:%d", LB, RegistryPort)
	dial := lb.DialContext
	if err := await.Until(ctx, "lb1's registry to answer on "+reg, time.Minute, func() error {
		c, err := dial(ctx, "tcp", reg)
		if err != nil {
			return err
		}
		return c.Close()
	}, every); err != nil {
		return err
	}
	nginx, err := set.Nginx()
	if err != nil {
		return err
	}
	pause, err := set.Pause()
	if err != nil {
		return err
	}
	webhook, err := set.Webhook()
	if err != nil {
		return err
	}
	coredns, err := images.CoreDNSFrom(corednsBin)
	if err != nil {
		return err
	}
	for ref, img := range map[string]v1.Image{images.Nginx: nginx, images.Pause: pause, images.Webhook: webhook, images.CoreDNS: coredns} {
		if err := l.Push(ctx, ref, img); err != nil {
			return err
		}
	}
	return nil
}

// Push uploads img into lb1's registry as ref (a path such as images.Nginx), from lb1's
// own netns.
func (l *Lab) Push(ctx context.Context, ref string, img v1.Image) error {
	reg := fmt.Sprintf("%s:%d", LB, RegistryPort)
	return images.Push(ctx, img, reg+"/"+ref, images.WithDialContext(l.Host("lb1").DialContext))
}

// every is how often the lab's waits poll: each poll runs kubectl or nsenter.
var every = await.Every(250 * time.Millisecond)

// AdminKubeconfig is where the Client keeps the admin kubeconfig that Kubectl uses.
const AdminKubeconfig = "/root/.kube/config"

// waitAdminKubeconfig copies master1's admin kubeconfig (which points at the VIP) to the
// Client.
func (l *Lab) waitAdminKubeconfig(ctx context.Context) error {
	var admin []byte
	err := await.Until(ctx, "master1 to write /etc/kubernetes/admin.kubeconfig", 6*time.Minute, func() error {
		var err error
		admin, err = l.Host("master1").ReadFile("/etc/kubernetes/admin.kubeconfig")
		return err
	}, every)
	if err != nil {
		return err
	}
	return l.Host(Client).WriteFile(AdminKubeconfig, admin, 0o600)
}

// Kubectl runs the real kubectl on the Client with the admin kubeconfig, through the VIP.
func (l *Lab) Kubectl(ctx context.Context, args ...string) (string, error) {
	return l.Host(Client).Exec(ctx, append([]string{"kubectl", "--kubeconfig=" + AdminKubeconfig, "--request-timeout=10s"}, args...)...)
}

// KubectlDirect is Kubectl straight to one master's apiserver, past every lb.
func (l *Lab) KubectlDirect(ctx context.Context, master string, args ...string) (string, error) {
	return l.Kubectl(ctx, append([]string{"--server=https://" + l.Host(master).IP.String() + ":6443"}, args...)...)
}

// KubectlCommand is Kubectl as a command, for streaming its output to a terminal.
func (l *Lab) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	return l.Host(Client).Command(ctx, append([]string{"kubectl", "--kubeconfig=" + AdminKubeconfig}, args...)...)
}

// WaitNodesReady waits until both minions are Ready nodes.
func (l *Lab) WaitNodesReady(ctx context.Context, timeout time.Duration) error {
	return await.Until(ctx, "minion1 and minion2 to be Ready nodes", timeout, func() error {
		out, err := l.Kubectl(ctx, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for _, n := range []string{"minion1", "minion2"} {
			if !strings.Contains(out, n+"=True") {
				return fmt.Errorf("nodes: %s", strings.Join(strings.Fields(out), " "))
			}
		}
		return nil
	}, every)
}

// VIPHolders are the running lbs whose eth0 carries the VIP, read from their kernels:
// exactly one, when the VIP works.
func (l *Lab) VIPHolders(ctx context.Context) ([]string, error) {
	var out []string
	for _, s := range Specs {
		h := l.Host(s.Name)
		if s.Role != RoleLB || !h.Running() {
			continue
		}
		addrs, err := h.Exec(ctx, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", s.Name, err)
		}
		if strings.Contains(addrs, " "+VIP.String()+" ") {
			out = append(out, s.Name)
		}
	}
	return out, nil
}

// Etcd is an etcd client's way in from the Client host, with the Client's haagent etcd
// identity, and the masters' etcd endpoints, for tests that place or watch the leader.
func (l *Lab) Etcd() (probe.Dialer, []string, error) {
	c := l.Host(Client)
	var pems [3][]byte
	for i, p := range []string{pki.CACert, pki.EtcdClientCert, pki.EtcdClientKey} {
		b, err := c.ReadFile("/" + p)
		if err != nil {
			return probe.Dialer{}, nil, err
		}
		pems[i] = b
	}
	tc, err := probe.ClientTLSFromPEM(pems[0], pems[1], pems[2])
	if err != nil {
		return probe.Dialer{}, nil, fmt.Errorf("%s's etcd identity: %w", Client, err)
	}
	var eps []string
	for _, m := range l.Masters() {
		eps = append(eps, "https://"+m.IP.String()+":2379")
	}
	return probe.Dialer{Dial: c.DialContext, TLS: tc}, eps, nil
}

// MoveLeader makes master (master1-3) the etcd leader, and returns once a linearizable
// read works, so that the move's own election is over.
func (l *Lab) MoveLeader(ctx context.Context, master string) error {
	d, eps, err := l.Etcd()
	if err != nil {
		return err
	}
	target := "https://" + l.Host(master).IP.String() + ":2379"
	if err := probe.MoveLeader(ctx, d, eps, target, 30*time.Second); err != nil {
		return err
	}
	cli, err := d.Client(eps...)
	if err != nil {
		return err
	}
	defer cli.Close()
	return await.Until(ctx, "a linearizable read after the etcd leader's move to "+master, 20*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Get(rctx, "/haagent/lab")
		return err
	}, await.Every(50*time.Millisecond))
}

// RotateCA runs 'haagent certs rotate-ca' on master1 to its end (each phase waits up to
// timeout) and returns its output. Every master, minion and lb1 must be up. The Client's
// copy of the admin kubeconfig trusts the old CA alone: RotateCA refreshes it from
// master1 once the rotation is done, as an operator would. A caller that runs kubectl
// from the Client during the rotation refreshes it with RefreshAdminKubeconfig after the
// trust phase (master1's holds both CAs from then on).
func (l *Lab) RotateCA(ctx context.Context, timeout time.Duration) (string, error) {
	out, err := l.Host("master1").Exec(ctx, "haagent", "certs", "rotate-ca", "--timeout="+timeout.String())
	if err != nil {
		return out, fmt.Errorf("certs rotate-ca on master1: %w", err)
	}
	return out, l.RefreshAdminKubeconfig(ctx)
}

// RefreshAdminKubeconfig copies master1's admin kubeconfig to the Client again.
func (l *Lab) RefreshAdminKubeconfig(ctx context.Context) error {
	return l.waitAdminKubeconfig(ctx)
}
