package nodeconf

import (
	"slices"
	"strings"
	"testing"
)

func TestCheckArg(t *testing.T) {
	for _, tt := range []struct {
		c    Component
		arg  string
		want string // "" for accepted
	}{
		{ComponentAPIServer, "audit-log-maxage=30", ""},
		{ComponentAPIServer, "--feature-gates=A=true,B=false", ""},
		{ComponentAPIServer, "authorization-mode=Node,RBAC,ABAC", ""},
		{ComponentAPIServer, "v=4", ""},
		{ComponentKubelet, "max-pods=200", ""},
		{ComponentKubelet, "node-labels=zone=a,disk=ssd", ""},
		{ComponentFlanneld, "iface=eth1", ""},
		{ComponentAPIServer, "etcd-servers=http://10.0.0.9:2379", "haagent sets --etcd-servers"},
		{ComponentAPIServer, "--etcd_cafile=/x", "haagent sets --etcd-cafile"},
		{ComponentAPIServer, "secure-port=443", "haagent sets --secure-port"},
		{ComponentAPIServer, "etcd-compaction-interval=5m", "compacts its own history"},
		{ComponentAPIServer, "service-cluster-ip-range=10.0.0.0/16", "--service-cluster-ip-range instead"},
		{ComponentControllerManager, "cluster-signing-key-file=/x", "haagent sets --cluster-signing-key-file"},
		{ComponentScheduler, "kubeconfig=/x", "haagent sets --kubeconfig"},
		{ComponentKubelet, "config=/x", "haagent sets --config"},
		{ComponentKubelet, "hostname-override=n9", "--name instead"},
		{ComponentKubelet, "cgroup-driver=systemd", "--cgroup-driver instead"},
		{ComponentProxy, "kubeconfig=/x", "haagent sets --kubeconfig"},
		{ComponentFlanneld, "etcd-endpoints=http://x", "haagent sets --etcd-endpoints"},
		{ComponentFlanneld, "etcd-prefix=/x", "--flannel-prefix instead"},
		{ComponentFlanneld, "kube-subnet-mgr=true", "haagent sets --kube-subnet-mgr"},
		{ComponentKubelet, "max-pods", "not key=value"},
		{ComponentKubelet, "=200", "not key=value"},
		{ComponentKubelet, "node-labels=a b", "blank"},
		{ComponentKubelet, `node-labels="a"`, "quote"},
	} {
		t.Run(string(tt.c)+" "+tt.arg, func(t *testing.T) {
			err := CheckArg(tt.c, tt.arg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v; want one saying %q", err, tt.want)
			}
		})
	}
}

// TestGuardedCoversTheCertificates checks that every flag haagent renders that names a
// certificate, key, CA or kubeconfig, or an etcd endpoint, is refused from an operator.
func TestGuardedCoversTheCertificates(t *testing.T) {
	for _, role := range []string{"master", "minion"} {
		c := Config{Role: role, Name: "n1", AdvertiseAddress: "10.0.0.21", LB: "10.0.0.10",
			EtcdEndpoints: []string{"https://10.0.0.21:2379"}, ServiceClusterIPRange: "10.254.0.0/16",
			FlannelPrefix: "/p", Root: "/", ContainerRuntime: "containerd"}
		cfs, err := componentFiles(c, func(rel string) string { return "/" + rel })
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range cfs {
			for _, v := range f.vars {
				for _, fl := range v.flags {
					key, value, _ := splitArg(fl)
					if strings.Contains(value, "/etc/kubernetes/") || strings.Contains(value, "://") {
						if _, ok := guarded[f.component][key]; !ok {
							t.Errorf("%s: haagent renders %s, which an operator's flag could replace", f.component, fl)
						}
					}
				}
			}
		}
	}
}

func TestExtraArgs(t *testing.T) {
	c := Config{Role: "master", Name: "m1", AdvertiseAddress: "10.0.0.21", EtcdEndpoints: []string{"https://10.0.0.21:2379"},
		ServiceClusterIPRange: "10.254.0.0/16", FlannelPrefix: "/p", Root: "/",
		ExtraArgs: map[Component][]string{
			ComponentAPIServer: {"authorization-mode=Node,RBAC,ABAC", "audit-log-maxage=7", "profiling=false", "v=4"},
			ComponentScheduler: {"--profiling=false"},
			ComponentFlanneld:  {"iface=eth9", "ip-masq=false"},
		}}
	vars := map[string]string{}
	for _, f := range render(t, c) {
		for _, line := range strings.Split(string(f.Data), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				vars[k] = v
			}
		}
	}
	for name, want := range map[string]string{
		"KUBE_API_ARGS":       "--audit-log-maxage=7 --profiling=false --v=4\"",
		"KUBE_SCHEDULER_ARGS": "--leader-elect=true --profiling=false\"",
		"FLANNEL_OPTIONS":     "--ip-masq=false --iface=eth9\"",
		"KUBE_LOG_LEVEL":      "\"--v=0\"",
	} {
		if !strings.HasSuffix(vars[name], want) {
			t.Errorf("%s=%s; want it to end %s", name, vars[name], want)
		}
	}
	for name, gone := range map[string]string{"KUBE_API_ARGS": "--authorization-mode=Node,RBAC ", "FLANNEL_OPTIONS": "--iface=10.0.0.21"} {
		if strings.Contains(vars[name], gone) {
			t.Errorf("%s keeps haagent's %s beside the operator's", name, gone)
		}
	}
	got := Overrides(c)
	want := []Override{
		{Component: ComponentFlanneld, Flag: "iface", Haagent: "10.0.0.21", Operator: "eth9"},
		{Component: ComponentFlanneld, Flag: "ip-masq", Haagent: "", Operator: "false"},
		{Component: ComponentAPIServer, Flag: "authorization-mode", Haagent: "Node,RBAC", Operator: "Node,RBAC,ABAC"},
		{Component: ComponentAPIServer, Flag: "audit-log-maxage", Haagent: "30", Operator: "7"},
		{Component: ComponentAPIServer, Flag: "v", Haagent: "0", Operator: "4", File: "/" + KubeConfig},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Overrides = %+v\nwant %+v", got, want)
	}
	// Without extra flags the files are what they always were (the golden files say so)
	// and nothing is overridden.
	c.ExtraArgs = nil
	if ovs := Overrides(c); len(ovs) != 0 {
		t.Errorf("Overrides without extra flags = %+v", ovs)
	}
}
