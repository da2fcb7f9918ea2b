// Package nodeconf renders the files a master or minion owns in the classic
// CentOS/Fedora layout: /etc/kubernetes/{config,apiserver,controller-manager,scheduler,
// kubelet,proxy}, /etc/sysconfig/flanneld, and the unit files of the components, with
// flags that Kubernetes 1.37 and flannel 0.28 accept. Rendering is pure.
package nodeconf

import (
	"cmp"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/pki"
)

// DefaultClusterDomain is the cluster's DNS domain unless --cluster-domain says otherwise.
const DefaultClusterDomain = "cluster.local"

// Header is the first line of every file haagent renders.
const Header = "# Managed by haagent: hand edits are backed up to <file>.haagent-bak and replaced."

// File paths, relative to --root.
const (
	KubeConfig        = "etc/kubernetes/config"
	APIServer         = "etc/kubernetes/apiserver"
	ControllerManager = "etc/kubernetes/controller-manager"
	Scheduler         = "etc/kubernetes/scheduler"
	Kubelet           = "etc/kubernetes/kubelet"
	KubeletConfig     = "etc/kubernetes/kubelet-config.yaml"
	Proxy             = "etc/kubernetes/proxy"
	ProxyConfig       = "etc/kubernetes/proxy-config.yaml"
	Flanneld          = "etc/sysconfig/flanneld"
	// UnitDir is where haagent installs a unit that no package provides.
	UnitDir = "etc/systemd/system"
)

// Config is what the files are rendered from.
type Config struct {
	// Role is master or minion.
	Role string
	Name string
	// AdvertiseAddress is this node's IP.
	AdvertiseAddress string
	// LB is the lb's address; minions reach the apiserver and etcd through it.
	LB string
	// EtcdEndpoints are the etcd client URLs the apiserver (masters) and flanneld use.
	EtcdEndpoints []string
	// ServiceClusterIPRange is the Service CIDR.
	ServiceClusterIPRange string
	// ClusterDNS is the kubelet's cluster DNS IP, and ClusterDomain the cluster's DNS
	// domain (minions; no clusterDNS without ClusterDNS).
	ClusterDNS    string
	ClusterDomain string
	FlannelPrefix string
	// FlannelIface is flanneld's --iface (optional; AdvertiseAddress otherwise).
	FlannelIface string
	// ContainerRuntime is docker or containerd (minions).
	ContainerRuntime string
	// Root is the root the certificate paths live under (--root), for paths inside the files.
	Root string
	// Insecure renders etcd access without TLS, for --insecure lab clusters.
	Insecure bool
	// LogLevel is the components' --v.
	LogLevel int

	// The minion's runtime and pod network (ignored on masters).

	// CgroupDriver is systemd or cgroupfs, the same for the kubelet and the runtime.
	CgroupDriver string
	// CgroupV1 says the host has v1 controllers; FailCgroupV1 then decides whether the
	// kubelet refuses to run (upstream's default since 1.35) or runs on them.
	CgroupV1     bool
	FailCgroupV1 bool
	// ContainerdMajor picks containerd's config format: 1 (config version 2) or 2 (version 3).
	ContainerdMajor int
	// CNIBinDir is where the standard CNI plugins are installed.
	CNIBinDir string
	// RestrictOOMScoreAdj tells the runtime it may not lower oom_score_adj (no CAP_SYS_RESOURCE).
	RestrictOOMScoreAdj bool
	// SandboxImage is the pause image the runtime pins.
	SandboxImage string
	// Mirrors are the registry mirrors written into the runtime's registry hosts.
	Mirrors []Mirror
	// Subnet is flanneld's lease for this node; nil until flanneld has one, and then the
	// pod network's CNI config is not written yet.
	Subnet *FlannelSubnet

	// EncryptionKeys are the apiserver's keys for Secrets at rest, the write key first
	// (masters). Without them the apiserver is rendered without encryption at rest:
	// --insecure clusters have no token to seal them with, and 'haagent render' no etcd.
	EncryptionKeys []pki.EncryptionKey

	// ExtraArgs are the operator's flags per component, key=value each, checked with
	// CheckArg: one that haagent also sets replaces haagent's, the rest are added.
	ExtraArgs map[Component][]string
}

// Units lists the role's units in start order (on minions flanneld precedes the runtime).
func Units(c Config) []reconcile.Unit {
	switch c.Role {
	case "master":
		// A unit restarts when a file it reads changes: its certificates, and ca.crt, which
		// an etcd client reads only at start (a CA rotation changes it).
		return []reconcile.Unit{
			{Name: "flanneld.service", Reads: []string{Flanneld, pki.CACert, pki.FlannelEtcdCert}},
			{Name: "kube-apiserver.service", Reads: []string{KubeConfig, APIServer, pki.CACert, pki.APIServerCert, pki.SAKey, pki.FrontProxyTrustCert, pki.FrontProxyClientCert, EncryptionConfig, AuditPolicy, AuthenticationConfig}},
			// ca.crt is its --root-ca-file, which it copies into every namespace's
			// kube-root-ca.crt for pods: after a CA rotation's trust phase, pods must get
			// both CAs before the apiservers serve with the new one.
			{Name: "kube-controller-manager.service", Reads: []string{KubeConfig, ControllerManager, pki.ControllerManagerKubeconfig, pki.CASignerCert, pki.KubeletSignerCert, pki.CACert}},
			{Name: "kube-scheduler.service", Reads: []string{KubeConfig, Scheduler, pki.SchedulerKubeconfig}},
		}
	case "minion":
		return []reconcile.Unit{
			{Name: "flanneld.service", Reads: []string{Flanneld, pki.CACert, pki.FlannelEtcdCert}},
			{Name: c.ContainerRuntime + ".service", Reads: runtimeReads(c)},
			{Name: "kubelet.service", Reads: []string{KubeConfig, Kubelet, KubeletConfig, pki.KubeletKubeconfig, pki.KubeletServingCert}},
			{Name: "kube-proxy.service", Reads: []string{KubeConfig, Proxy, ProxyConfig, pki.ProxyKubeconfig}},
		}
	}
	return nil
}

// Render returns the role's EnvironmentFiles, each starting with Header, with the
// operator's ExtraArgs laid over haagent's flags (see Overrides).
func Render(c Config) ([]files.File, error) {
	var out []files.File
	env := func(path string, vars ...envVar) {
		var b strings.Builder
		b.WriteString(Header + "\n")
		for _, v := range vars {
			fmt.Fprintf(&b, "%s=%q\n", v.name, v.String())
		}
		out = append(out, files.File{Path: path, Mode: 0o644, Data: []byte(b.String())})
	}
	p := func(rel string) string { return "/" + strings.TrimPrefix(joinRoot(c.Root, rel), "/") }
	shared := sharedVars(c)
	env(KubeConfig, shared...)
	cfs, err := componentFiles(c, p)
	if err != nil {
		return nil, err
	}
	for _, f := range cfs {
		f, _ = f.withArgs(c.ExtraArgs[f.component], shared)
		env(f.path, f.vars...)
	}
	if c.Role == "master" {
		out = append(out, files.File{Path: AuditPolicy, Mode: 0o644, Data: []byte(Header + "\n" + auditPolicy)})
		out = append(out, files.File{Path: AuthenticationConfig, Mode: 0o644, Data: []byte(Header + "\n" + authenticationConfig)})
		if len(c.EncryptionKeys) > 0 {
			out = append(out, files.File{Path: EncryptionConfig, Mode: 0o600, Data: encryptionConfig(c.EncryptionKeys)})
		}
	}
	if c.Role == "minion" {
		out = append(out, files.File{Path: KubeletConfig, Mode: 0o644, Data: kubeletConfig(c, p)})
		out = append(out, files.File{Path: ProxyConfig, Mode: 0o644, Data: proxyConfig(c, p)})
		if c.ContainerRuntime == "containerd" {
			out = append(out, files.File{Path: ContainerdConfig, Mode: 0o644, Data: containerdConfig(c)})
			for _, m := range c.Mirrors {
				out = append(out, registryHosts(m))
			}
		}
		if c.Subnet != nil {
			b, err := cniConfList(c.Subnet)
			if err != nil {
				return nil, err
			}
			out = append(out, files.File{Path: CNIConfList, Mode: 0o644, Data: b})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Overrides lists the operator's ExtraArgs that replace a flag haagent sets; the role
// logs them once at start.
func Overrides(c Config) []Override {
	p := func(rel string) string { return "/" + strings.TrimPrefix(joinRoot(c.Root, rel), "/") }
	cfs, err := componentFiles(c, p)
	if err != nil {
		return nil
	}
	var out []Override
	for _, f := range cfs {
		_, ovs := f.withArgs(c.ExtraArgs[f.component], sharedVars(c))
		out = append(out, ovs...)
	}
	return out
}

// sharedVars are /etc/kubernetes/config's, which every kube component's unit reads
// before its own file.
func sharedVars(c Config) []envVar {
	apiURL := "https://" + net.JoinHostPort(c.AdvertiseAddress, "6443")
	if c.Role == "minion" {
		apiURL = "https://" + net.JoinHostPort(c.LB, "6443")
	}
	// --logtostderr was removed from every component in 1.26; logs go to stderr (the journal) anyway.
	return []envVar{
		{name: "KUBE_LOGTOSTDERR"},
		{name: "KUBE_LOG_LEVEL", flags: []string{fmt.Sprintf("--v=%d", c.LogLevel)}},
		{name: "KUBE_MASTER", flags: []string{"--master=" + apiURL}},
	}
}

// componentFiles are the role's components' EnvironmentFiles with haagent's flags.
func componentFiles(c Config, p func(string) string) ([]componentFile, error) {
	var etcdTLS, flannelTLS []string
	if !c.Insecure {
		etcdTLS = []string{"--etcd-cafile=" + p(pki.CACert), "--etcd-certfile=" + p(pki.APIServerEtcdCert), "--etcd-keyfile=" + p(pki.APIServerEtcdKey)}
		flannelTLS = []string{"--etcd-cafile=" + p(pki.CACert), "--etcd-certfile=" + p(pki.FlannelEtcdCert), "--etcd-keyfile=" + p(pki.FlannelEtcdKey)}
	}
	flannelOpts := append(flannelTLS, "--ip-masq")
	// flanneld picks the default route's interface unless told; the address this node
	// announces is the right one on multi-homed hosts and works with no default route.
	if iface := cmp.Or(c.FlannelIface, c.AdvertiseAddress); iface != "" {
		flannelOpts = append(flannelOpts, "--iface="+iface)
	}
	out := []componentFile{{component: ComponentFlanneld, path: Flanneld, extraVar: "FLANNEL_OPTIONS", vars: []envVar{
		{name: "FLANNEL_ETCD_ENDPOINTS", value: strings.Join(c.EtcdEndpoints, ",")},
		{name: "FLANNEL_ETCD_PREFIX", value: c.FlannelPrefix},
		{name: "FLANNEL_OPTIONS", flags: flannelOpts},
	}}}
	switch c.Role {
	case "master":
		out = append(out, componentFile{component: ComponentAPIServer, path: APIServer, extraVar: "KUBE_API_ARGS", vars: []envVar{
			{name: "KUBE_API_ADDRESS", flags: []string{"--bind-address=0.0.0.0", "--advertise-address=" + c.AdvertiseAddress}},
			{name: "KUBE_API_PORT", flags: []string{"--secure-port=6443"}},
			{name: "KUBE_ETCD_SERVERS", flags: append([]string{"--etcd-servers=" + strings.Join(c.EtcdEndpoints, ",")}, etcdTLS...)},
			{name: "KUBE_SERVICE_ADDRESSES", flags: []string{"--service-cluster-ip-range=" + c.ServiceClusterIPRange}},
			{name: "KUBE_ADMISSION_CONTROL", flags: []string{"--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,NodeRestriction"}},
			{name: "KUBE_API_ARGS", flags: append([]string{
				"--tls-cert-file=" + p(pki.APIServerCert),
				"--tls-private-key-file=" + p(pki.APIServerKey),
				"--client-ca-file=" + p(pki.CACert),
				"--kubelet-client-certificate=" + p(pki.APIServerKubeletCrt),
				"--kubelet-client-key=" + p(pki.APIServerKubeletKey),
				// Kubelets serve with certificates from the kubelet-serving CA, for their
				// node name and IP (the cluster CA too, for those issued before it).
				"--kubelet-certificate-authority=" + p(pki.KubeletCABundle),
				"--kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP",
				"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
				"--service-account-key-file=" + p(pki.SAPub),
				"--service-account-signing-key-file=" + p(pki.SAKey),
				"--authorization-mode=Node,RBAC",
				"--allow-privileged=true",
				// Without it the apiserver's HTTP shutdown waits out its 60 s timeout for
				// the open watches (kubelets' and controllers', through the lb) before it
				// ends them, and every restart haagent makes (a key rotation makes three)
				// takes a minute. With it the watches are ended at once and their clients
				// re-watch on another master; measured here: 61 s -> 1-4 s.
				"--shutdown-watch-termination-grace-period=5s",
				// A restart (a CA rotation or a key rotation makes several) must fail no
				// request through the lb: /readyz fails at once, the lbs see it within two
				// check rounds (about 0.5 s) and send new connections elsewhere, while this
				// apiserver goes on serving for 2 s; a request that still comes on a kept
				// connection after that gets a 429 with Retry-After, which clients retry.
				"--shutdown-delay-duration=2s",
				"--shutdown-send-retry-after=true",
				// Webhooks, CRD conversion and aggregated APIs are reached at their
				// Service's endpoints (pod IPs), not at the ClusterIP: the masters run no
				// kube-proxy, but their flanneld routes the pod network.
				"--enable-aggregator-routing=true",
				// etcd compacts its own history (etcdmember.DefaultCompactionRetention):
				// the apiserver's compactor would fail every round, since etcd 3.7 allows
				// Compact to root only.
				"--etcd-compaction-interval=0",
				// Without its own compactor the apiserver never learns how far etcd is
				// compacted (it watches compact_rev_key only from that compactor), so
				// its watch cache would serve a list's continue token from a snapshot
				// forever, long after etcd compacted it away. Such lists go to etcd,
				// which answers 410 Gone once they are compacted, as before 1.34.
				"--feature-gates=ListFromCacheSnapshot=false",
				// The aggregator's requests to extension API servers carry the user in
				// these headers, from a client certificate of the front-proxy CA, which
				// nothing but the aggregator holds (pki.FrontProxyCAName).
				"--requestheader-client-ca-file=" + p(pki.FrontProxyTrustCert),
				"--requestheader-allowed-names=" + pki.FrontProxyClientName,
				"--requestheader-username-headers=X-Remote-User",
				"--requestheader-group-headers=X-Remote-Group",
				"--requestheader-extra-headers-prefix=X-Remote-Extra-",
				"--proxy-client-cert-file=" + p(pki.FrontProxyClientCert),
				"--proxy-client-key-file=" + p(pki.FrontProxyClientKey),
			}, securityFlags(c, p)...)},
		}}, componentFile{component: ComponentControllerManager, path: ControllerManager, extraVar: "KUBE_CONTROLLER_MANAGER_ARGS", vars: []envVar{
			{name: "KUBE_CONTROLLER_MANAGER_ARGS", flags: []string{
				"--kubeconfig=" + p(pki.ControllerManagerKubeconfig),
				"--authentication-kubeconfig=" + p(pki.ControllerManagerKubeconfig),
				"--authorization-kubeconfig=" + p(pki.ControllerManagerKubeconfig),
				"--bind-address=127.0.0.1",
				"--leader-elect=true",
				"--use-service-account-credentials=true",
				"--service-account-private-key-file=" + p(pki.SAKey),
				"--root-ca-file=" + p(pki.CACert),
				// One signer per kind of certificate, as the CAs are split: client
				// certificates from the cluster CA, kubelet serving certificates from the
				// kubelet-serving CA. kubernetes.io/legacy-unknown is left without one.
				"--cluster-signing-kubelet-client-cert-file=" + p(pki.CASignerCert),
				"--cluster-signing-kubelet-client-key-file=" + p(pki.CAKey),
				"--cluster-signing-kube-apiserver-client-cert-file=" + p(pki.CASignerCert),
				"--cluster-signing-kube-apiserver-client-key-file=" + p(pki.CAKey),
				"--cluster-signing-kubelet-serving-cert-file=" + p(pki.KubeletSignerCert),
				"--cluster-signing-kubelet-serving-key-file=" + p(pki.KubeletSignerKey),
				"--service-cluster-ip-range=" + c.ServiceClusterIPRange,
			}},
		}}, componentFile{component: ComponentScheduler, path: Scheduler, extraVar: "KUBE_SCHEDULER_ARGS", vars: []envVar{
			{name: "KUBE_SCHEDULER_ARGS", flags: []string{
				"--kubeconfig=" + p(pki.SchedulerKubeconfig),
				"--authentication-kubeconfig=" + p(pki.SchedulerKubeconfig),
				"--authorization-kubeconfig=" + p(pki.SchedulerKubeconfig),
				"--bind-address=127.0.0.1",
				"--leader-elect=true",
			}},
		}})
	case "minion":
		out = append(out, componentFile{component: ComponentKubelet, path: Kubelet, extraVar: "KUBELET_ARGS", vars: []envVar{
			{name: "KUBELET_ADDRESS", flags: []string{"--node-ip=" + c.AdvertiseAddress}},
			{name: "KUBELET_HOSTNAME", flags: []string{"--hostname-override=" + c.Name}},
			{name: "KUBELET_ARGS", flags: []string{"--kubeconfig=" + p(pki.KubeletKubeconfig), "--config=" + p(KubeletConfig)}},
		}},
			// Everything kube-proxy is told is in its config file: with --config, 1.37
			// ignores most of its other flags.
			componentFile{component: ComponentProxy, path: Proxy, extraVar: "KUBE_PROXY_ARGS", vars: []envVar{
				{name: "KUBE_PROXY_ARGS", flags: []string{"--config=" + p(ProxyConfig)}},
			}})
	default:
		return nil, fmt.Errorf("no node files for role %q", c.Role)
	}
	return out, nil
}

// kubeletConfig is the KubeletConfiguration file: 1.37 takes most settings only here.
func kubeletConfig(c Config, p func(string) string) []byte {
	endpoint := "unix:///run/containerd/containerd.sock"
	if c.ContainerRuntime == "docker" {
		// The kubelet has no dockershim since 1.24: docker hosts talk CRI through cri-dockerd.
		endpoint = "unix:///run/cri-dockerd.sock"
	}
	cgroupV1 := ""
	if c.CgroupV1 {
		cgroupV1 = "# This host has cgroup v1 controllers, deprecated upstream (KEP-5573).\nfailCgroupV1: " + strconv.FormatBool(c.FailCgroupV1) + "\n"
	}
	dns := ""
	if c.ClusterDNS != "" {
		dns = "clusterDNS:\n- " + c.ClusterDNS + "\nclusterDomain: " + cmp.Or(c.ClusterDomain, DefaultClusterDomain) + "\n"
	}
	return []byte(Header + "\n" + `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: ` + p(pki.CACert) + `
authorization:
  mode: Webhook
cgroupDriver: ` + cmp.Or(c.CgroupDriver, "systemd") + `
` + cgroupV1 + `containerRuntimeEndpoint: ` + endpoint + `
# Swap on a VM is the hypervisor's business; pods get none of it (swapBehavior NoSwap).
failSwapOn: false
tlsCertFile: ` + p(pki.KubeletServingCert) + `
tlsPrivateKeyFile: ` + p(pki.KubeletServingKey) + `
` + dns)
}

// proxyConfig is kube-proxy's KubeProxyConfiguration.
func proxyConfig(c Config, p func(string) string) []byte {
	cidr := ""
	if c.Subnet != nil {
		cidr = "clusterCIDR: " + c.Subnet.Network.String() + "\n"
	}
	return []byte(Header + "\n" + `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ` + p(pki.ProxyKubeconfig) + `
hostnameOverride: ` + c.Name + `
bindAddress: 0.0.0.0
mode: iptables
` + cidr + `# 0 leaves the kernel's conntrack table size as the host has it: kube-proxy may not
# write it from a network namespace, and a host's own tuning wins.
conntrack:
  maxPerCore: 0
`)
}

// runtimeReads are the files whose change restarts the container runtime.
func runtimeReads(c Config) []string {
	if c.ContainerRuntime == "containerd" {
		return []string{ContainerdConfig}
	}
	return nil
}

func joinRoot(root, rel string) string {
	if root == "" || root == "/" {
		return "/" + rel
	}
	return strings.TrimSuffix(root, "/") + "/" + rel
}
