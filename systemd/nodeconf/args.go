package nodeconf

import (
	"fmt"
	"slices"
	"strings"
)

// Component is a program whose flags haagent renders into its EnvironmentFile, and to
// which an operator can add flags (--kube-apiserver-arg and friends).
type Component string

// The components, by their program's name.
const (
	ComponentAPIServer         Component = "kube-apiserver"
	ComponentControllerManager Component = "kube-controller-manager"
	ComponentScheduler         Component = "kube-scheduler"
	ComponentKubelet           Component = "kubelet"
	ComponentProxy             Component = "kube-proxy"
	ComponentFlanneld          Component = "flanneld"
)

// Reasons a flag is haagent's alone.
const (
	byEtcd       = "haagent points it at this cluster's etcd, with the certificates it issues"
	byCerts      = "it names a certificate, key or CA that haagent issues and renews"
	byKubeconfig = "it names a kubeconfig that haagent issues and renews"
	byMaster     = "haagent points every component at the apiserver"
	byPort       = "the lb, the other masters and the health checks reach the apiserver there"
	byAnonymous  = "haagent's authentication config allows anonymous requests on the health endpoints only"
)

// guarded are the flags that would break what haagent guarantees, by component, each
// with the reason an operator's value is refused.
var guarded = map[Component]map[string]string{
	ComponentAPIServer: {
		"etcd-servers": byEtcd, "etcd-cafile": byEtcd, "etcd-certfile": byEtcd, "etcd-keyfile": byEtcd,
		"etcd-compaction-interval": "haagent's etcd compacts its own history (--etcd-compaction-retention on the master); the apiserver's etcd user may not (etcd 3.7 allows Compact to root only)",
		"tls-cert-file":            byCerts, "tls-private-key-file": byCerts, "client-ca-file": byCerts,
		"kubelet-client-certificate": byCerts, "kubelet-client-key": byCerts, "kubelet-certificate-authority": byCerts,
		"requestheader-client-ca-file": byCerts, "proxy-client-cert-file": byCerts, "proxy-client-key-file": byCerts,
		"requestheader-allowed-names": "only the aggregator's certificate may say which user a request is for",
		"service-account-key-file":    byCerts, "service-account-signing-key-file": byCerts,
		"service-account-issuer": "every master must sign ServiceAccount tokens with the same issuer",
		"secure-port":            byPort, "bind-address": byPort,
		"advertise-address":          "set --advertise-address instead: the certificates are for it",
		"service-cluster-ip-range":   "set --service-cluster-ip-range instead: its first IP is in the certificates",
		"master":                     byMaster,
		"encryption-provider-config": "every master must hold the same keys: haagent shares them, and 'haagent secrets rotate-key' changes them",
		"audit-policy-file":          "haagent's policy keeps the bodies of Secrets out of the audit log",
		"authentication-config":      byAnonymous,
		"anonymous-auth":             byAnonymous,
	},
	ComponentControllerManager: {
		"kubeconfig": byKubeconfig, "authentication-kubeconfig": byKubeconfig, "authorization-kubeconfig": byKubeconfig,
		"service-account-private-key-file": byCerts, "root-ca-file": byCerts,
		"cluster-signing-cert-file": byCerts, "cluster-signing-key-file": byCerts,
		"cluster-signing-kubelet-client-cert-file": byCerts, "cluster-signing-kubelet-client-key-file": byCerts,
		"cluster-signing-kube-apiserver-client-cert-file": byCerts, "cluster-signing-kube-apiserver-client-key-file": byCerts,
		"cluster-signing-kubelet-serving-cert-file": byCerts, "cluster-signing-kubelet-serving-key-file": byCerts,
		"cluster-signing-legacy-unknown-cert-file": byCerts, "cluster-signing-legacy-unknown-key-file": byCerts,
		"service-cluster-ip-range": "set --service-cluster-ip-range instead",
		"master":                   byMaster,
	},
	ComponentScheduler: {
		"kubeconfig": byKubeconfig, "authentication-kubeconfig": byKubeconfig, "authorization-kubeconfig": byKubeconfig,
		"master": byMaster,
	},
	ComponentKubelet: {
		"kubeconfig": byKubeconfig, "bootstrap-kubeconfig": byKubeconfig,
		"config":        "haagent writes the kubelet's config file; a flag for one of its settings overrides it",
		"tls-cert-file": byCerts, "tls-private-key-file": byCerts, "client-ca-file": byCerts,
		"node-ip":           "set --advertise-address instead: the kubelet's serving certificate is for it",
		"hostname-override": "set --name instead: the node's certificates are for it",
		"cgroup-driver":     "set --cgroup-driver instead: the runtime must use the same driver",
		"fail-cgroupv1":     "set --fail-cgroup-v1 instead",
		"master":            byMaster,
	},
	ComponentProxy: {
		"kubeconfig":        byKubeconfig,
		"config":            "haagent writes kube-proxy's config file",
		"hostname-override": "set --name instead",
		"master":            byMaster,
	},
	ComponentFlanneld: {
		"etcd-endpoints": byEtcd, "etcd-prefix": "set --flannel-prefix instead",
		"etcd-cafile": byEtcd, "etcd-certfile": byEtcd, "etcd-keyfile": byEtcd,
		"kube-subnet-mgr": "haagent runs flannel on etcd, where the masters seed its network config",
		"subnet-file":     "the minion's CNI config follows flanneld's lease there",
	},
}

// CheckArg checks one operator flag for c, given as key=value (a leading -- is
// allowed): it must be well formed and not one of the flags haagent guarantees. The
// error names the flag and why.
func CheckArg(c Component, s string) error {
	key, _, ok := splitArg(s)
	switch {
	case !ok || key == "":
		return fmt.Errorf("%q is not key=value, e.g. %s", s, example(c))
	case strings.ContainsAny(s, " \t\n\"'\\$"):
		// The unit passes the variable unquoted: systemd splits it on blanks and would
		// mangle quotes, backslashes and $.
		return fmt.Errorf("%q holds a blank, quote, backslash or $, which the unit's command line can't carry", s)
	}
	if why, ok := guarded[c][key]; ok {
		return fmt.Errorf("%s=...: haagent sets --%s of %s: %s", key, key, c, why)
	}
	return nil
}

func example(c Component) string {
	switch c {
	case ComponentKubelet:
		return "max-pods=200"
	case ComponentFlanneld:
		return "iptables-resync=10"
	}
	return "v=2"
}

// splitArg parses key=value, with the key as the program's flag parser sees it: no
// leading dashes, underscores as dashes.
func splitArg(s string) (key, value string, ok bool) {
	key, value, ok = strings.Cut(s, "=")
	key = strings.ReplaceAll(strings.TrimLeft(key, "-"), "_", "-")
	return key, value, ok
}

// envVar is one variable of an EnvironmentFile: a list of flags, or a plain value.
type envVar struct {
	name  string
	flags []string
	value string
}

func (v envVar) String() string {
	if v.flags != nil {
		return strings.Join(v.flags, " ")
	}
	return v.value
}

// componentFile is one component's EnvironmentFile, with the variable that an
// operator's added flags go into (the last one its unit passes).
type componentFile struct {
	component Component
	path      string
	vars      []envVar
	extraVar  string
}

// Override is an operator's flag that replaces one haagent sets.
type Override struct {
	Component Component
	Flag      string
	Haagent   string
	Operator  string
	// File is where haagent's value stays when it is shared with other components
	// (/etc/kubernetes/config's --v); the operator's comes later on the command line
	// and wins.
	File string
}

// withArgs lays the operator's flags over f: one that haagent also sets replaces
// haagent's in place, so that the file holds one value; the rest are added to
// f.extraVar in the order given. shared are the flags of /etc/kubernetes/config that
// every component reads.
func (f componentFile) withArgs(args []string, shared []envVar) (componentFile, []Override) {
	f.vars = slices.Clone(f.vars)
	for i := range f.vars {
		f.vars[i].flags = slices.Clone(f.vars[i].flags)
	}
	if f.component == ComponentFlanneld {
		shared = nil // its unit reads no /etc/kubernetes/config
	}
	var ovs []Override
	replaced := map[string]bool{}
	for _, a := range args {
		key, value, _ := splitArg(a)
		flag := "--" + key + "=" + value
		if !replaced[key] {
			if old, ok := replaceFlag(f.vars, key, flag); ok {
				replaced[key] = true
				ovs = append(ovs, Override{Component: f.component, Flag: key, Haagent: old, Operator: value})
				continue
			}
			if old, ok := findFlag(shared, key); ok {
				replaced[key] = true
				ovs = append(ovs, Override{Component: f.component, Flag: key, Haagent: old, Operator: value, File: "/" + KubeConfig})
			}
		}
		for i := range f.vars {
			if f.vars[i].name == f.extraVar {
				f.vars[i].flags = append(f.vars[i].flags, flag)
			}
		}
	}
	return f, ovs
}

// replaceFlag replaces haagent's --key in vars with flag and returns haagent's value.
func replaceFlag(vars []envVar, key, flag string) (string, bool) {
	for i := range vars {
		for j, fl := range vars[i].flags {
			if k, v, _ := splitArg(fl); k == key {
				vars[i].flags[j] = flag
				return v, true
			}
		}
	}
	return "", false
}

func findFlag(vars []envVar, key string) (string, bool) {
	for _, v := range vars {
		for _, fl := range v.flags {
			if k, val, _ := splitArg(fl); k == key {
				return val, true
			}
		}
	}
	return "", false
}
