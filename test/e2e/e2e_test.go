// Package e2e proves haagent on real hosts: systemd-nspawn containers with systemd as
// PID 1, each in its own network namespace, running the real Kubernetes 1.37.2 control
// plane and flannel 0.28.10 that haagent configures and starts.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haagent/haagent/test/cluster"
	"github.com/haagent/haagent/test/hosts"
)

const token = "e2e-cluster-token-0123456789abcdef"

// binaries returns the paths of the real components, built by scripts/build-kube.sh.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	kube := envOr("HAAGENT_KUBE_BIN", "/var/cache/haagent/kube/v1.37.2/bin")
	flannel := envOr("HAAGENT_FLANNEL_BIN", "/var/cache/haagent/kube/flannel-v0.28.10/bin")
	bins := map[string]string{"flanneld": filepath.Join(flannel, "flanneld"), "etcdctl": "/usr/bin/etcdctl"}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy"} {
		bins[b] = filepath.Join(kube, b)
	}
	for name, p := range bins {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s missing at %s: run scripts/build-kube.sh (make e2e does), and apt-get install etcd-client", name, p)
		}
	}
	return bins
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func haagentBinary(t *testing.T) string {
	t.Helper()
	b, err := cluster.Binary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func repoFile(t *testing.T, rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", rel)
}

// install puts haagent, its unit, its config and the given components into a host, and
// starts haagent without waiting (a master's start waits for a quorum of its peers).
func install(t *testing.T, ctx context.Context, h *hosts.Host, haagent string, bins map[string]string, comps []string, env string) {
	t.Helper()
	must(t, h.CopyIn(haagent, "/usr/bin/haagent"))
	for _, c := range comps {
		must(t, h.CopyIn(bins[c], "/usr/bin/"+c))
	}
	unit, err := os.ReadFile(repoFile(t, "packaging/haagent.service"))
	must(t, err)
	must(t, h.WriteFile("/usr/lib/systemd/system/haagent.service", unit, 0o644))
	must(t, h.WriteFile("/etc/sysconfig/haagent", []byte(env), 0o600))
	_, err = h.Shell(ctx, "mkdir -p /var/lib/haagent /etc/kubernetes /etc/sysconfig && systemctl daemon-reload && systemctl enable haagent && systemctl start --no-block haagent")
	must(t, err)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// await polls cond inside the test's deadline, saying what it waits for.
func await(t *testing.T, what string, timeout time.Duration, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := cluster.Await(timeout, 250*time.Millisecond, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return time.Since(start)
}

func TestControlPlaneOnRealHosts(t *testing.T) {
	bins := binaries(t)
	haagent := haagentBinary(t)
	lab := hosts.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	hs, err := lab.Boot(ctx, "m1", "m2", "m3", "lb", "minion1")
	must(t, err)
	m1, m2, m3, lb, minion := hs[0], hs[1], hs[2], hs[3], hs[4]
	masters := []*hosts.Host{m1, m2, m3}
	peers := fmt.Sprintf("m1=http://%s:2380,m2=http://%s:2380,m3=http://%s:2380", m1.IP, m2.IP, m3.IP)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range hs {
				out, _ := h.Shell(context.Background(), "journalctl -u haagent --no-pager | tail -25; systemctl --no-pager list-units 'kube*' 'flanneld*'; "+
					"for u in flanneld kube-apiserver kube-proxy kubelet; do echo \"== $u\"; journalctl -u $u --no-pager | grep -v ' I[0-9]' | tail -8; done")
				t.Logf("--- %s ---\n%s", h.Name, out)
			}
		}
	})

	var wg sync.WaitGroup
	for _, m := range masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			install(t, ctx, m, haagent, bins, []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "flanneld", "etcdctl"},
				fmt.Sprintf("HAAGENT_ROLE=master\nHAAGENT_NAME=%s\nHAAGENT_PEERS=%s\nHAAGENT_TOKEN=%s\nHAAGENT_LB=%s\n", m.Name, peers, token, lb.IP))
		}()
	}
	wg.Wait()
	install(t, ctx, lb, haagent, bins, []string{"kubectl", "etcdctl"},
		fmt.Sprintf("HAAGENT_ROLE=lb\nHAAGENT_MASTERS=%s,%s,%s\nHAAGENT_TOKEN=%s\nHAAGENT_STATUS_ADDRESS=127.0.0.1:9110\n", m1.IP, m2.IP, m3.IP, token))

	units := []string{"flanneld", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	took := await(t, "all four kube and flannel units active on every master", 6*time.Minute, func() error {
		for _, m := range masters {
			out, err := m.Exec(ctx, append([]string{"systemctl", "is-active"}, units...)...)
			if err != nil {
				return fmt.Errorf("%s: %s", m.Name, strings.Join(strings.Fields(out), " "))
			}
		}
		return nil
	})
	t.Logf("control plane active on all masters %s after haagent started", took.Round(time.Second))

	// Every apiserver answers /readyz, checked with the cluster CA, through the lb and directly.
	caPEM, err := m1.ReadFile("/etc/kubernetes/pki/ca.crt")
	must(t, err)
	must(t, lb.WriteFile("/root/ca.crt", caPEM, 0o644))
	admin, err := m1.ReadFile("/etc/kubernetes/admin.kubeconfig")
	must(t, err)
	if !strings.Contains(string(admin), "server: https://"+lb.IP.String()+":6443") {
		t.Fatalf("admin.kubeconfig does not point at the lb:\n%s", admin)
	}
	must(t, lb.WriteFile("/root/.kube/config", admin, 0o600))
	await(t, "/readyz of every apiserver", 2*time.Minute, func() error {
		for _, ip := range []string{lb.IP.String(), m1.IP.String(), m2.IP.String(), m3.IP.String()} {
			out, err := lb.Exec(ctx, "curl", "-sS", "--max-time", "3", "--cacert", "/root/ca.crt", "https://"+ip+":6443/readyz")
			if err != nil || strings.TrimSpace(out) != "ok" {
				return fmt.Errorf("%s: %q %v", ip, out, err)
			}
		}
		return nil
	})

	kubectl := func(args ...string) (string, error) {
		return lb.Exec(ctx, append([]string{"kubectl", "--kubeconfig=/root/.kube/config", "--request-timeout=5s"}, args...)...)
	}
	pod := func(name string) string {
		return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + name + `","namespace":"e2e"},"spec":{"containers":[{"name":"c","image":"registry.k8s.io/pause:3.10"}]}}`
	}
	createPod := func(name string) error {
		must(t, lb.WriteFile("/root/"+name+".json", []byte(pod(name)), 0o644))
		_, err := kubectl("create", "-f", "/root/"+name+".json")
		return err
	}
	await(t, "kubectl through the lb to create a Namespace", time.Minute, func() error {
		_, err := kubectl("create", "namespace", "e2e")
		if err != nil && strings.Contains(err.Error(), "AlreadyExists") {
			return nil
		}
		return err
	})
	// The ServiceAccount "default" must exist (the controller-manager makes it) before a pod.
	await(t, "a Pod object through the lb", 2*time.Minute, func() error { return createPod("pod1") })
	out, err := kubectl("get", "pods", "-n", "e2e", "-o", "name")
	if err != nil || !strings.Contains(out, "pod/pod1") {
		t.Fatalf("kubectl get pods: %q, %v", out, err)
	}

	etcdctl := func(h *hosts.Host, args ...string) (string, error) {
		p := "/etc/kubernetes/pki/"
		return h.Exec(ctx, append([]string{"env", "ETCDCTL_API=3", "etcdctl", "--endpoints=https://" + h.IP.String() + ":2379",
			"--cacert=" + p + "ca.crt", "--cert=" + p + "etcd-client.crt", "--key=" + p + "etcd-client.key"}, args...)...)
	}
	await(t, "a flannel lease per master", time.Minute, func() error {
		out, err := etcdctl(m1, "get", "--prefix", "--keys-only", "/kube-centos/network/subnets/")
		if err != nil {
			return err
		}
		if n := len(strings.Fields(out)); n < 3 {
			return fmt.Errorf("%d leases: %s", n, out)
		}
		return nil
	})
	for _, m := range masters {
		if out, err := m.Exec(ctx, "ip", "-br", "link", "show", "flannel.1"); err != nil {
			t.Errorf("%s has no flannel.1 vxlan: %s", m.Name, out)
		}
	}

	t.Run("a stopped unit is brought back", func(t *testing.T) {
		_, err := m2.Exec(ctx, "systemctl", "stop", "kube-scheduler")
		must(t, err)
		d := await(t, "haagent to restart kube-scheduler", time.Minute, func() error {
			out, err := m2.Exec(ctx, "systemctl", "is-active", "kube-scheduler")
			if err != nil {
				return fmt.Errorf("%s", strings.TrimSpace(out))
			}
			return nil
		})
		t.Logf("kube-scheduler back %s after systemctl stop", d.Round(100*time.Millisecond))
	})

	t.Run("a hand edit is reverted with a backup", func(t *testing.T) {
		_, err := m3.Shell(ctx, `echo 'KUBE_API_ARGS="--hand-edit"' >> /etc/kubernetes/apiserver`)
		must(t, err)
		await(t, "haagent to revert /etc/kubernetes/apiserver", time.Minute, func() error {
			cur, err := m3.ReadFile("/etc/kubernetes/apiserver")
			if err != nil || strings.Contains(string(cur), "--hand-edit") {
				return fmt.Errorf("not reverted yet")
			}
			bak, err := m3.ReadFile("/etc/kubernetes/apiserver.haagent-bak")
			if err != nil || !strings.Contains(string(bak), "--hand-edit") {
				return fmt.Errorf("no backup with the edit: %v", err)
			}
			return nil
		})
		d := await(t, "kube-apiserver on m3 back after the revert", 3*time.Minute, func() error {
			out, err := m3.Exec(ctx, "systemctl", "is-active", "kube-apiserver")
			if err != nil {
				return fmt.Errorf("%s", strings.TrimSpace(out))
			}
			return nil
		})
		t.Logf("kube-apiserver on m3 active again %s after the revert", d.Round(100*time.Millisecond))
	})

	t.Run("minion joins through the lb and flanneld gets a lease", func(t *testing.T) {
		install(t, ctx, minion, haagent, bins, []string{"flanneld", "kubelet", "kube-proxy", "kubectl"},
			fmt.Sprintf("HAAGENT_ROLE=minion\nHAAGENT_LB=%s\nHAAGENT_TOKEN=%s\nHAAGENT_ADVERTISE_ADDRESS=%s\n", lb.IP, token, minion.IP))
		await(t, "flanneld active on the minion", 3*time.Minute, func() error {
			out, err := minion.Exec(ctx, "systemctl", "is-active", "flanneld")
			if err != nil {
				return fmt.Errorf("%s", strings.TrimSpace(out))
			}
			return nil
		})
		await(t, "the minion's lease under the flannel prefix", time.Minute, func() error {
			out, err := etcdctl(m1, "get", "--prefix", "/kube-centos/network/subnets/")
			if err != nil || !strings.Contains(out, minion.IP.String()) {
				return fmt.Errorf("no lease for %s yet", minion.IP)
			}
			return nil
		})
		for _, u := range []string{"kubelet", "kube-proxy", "flanneld", "containerd"} {
			if out, err := minion.Exec(ctx, "systemctl", "is-enabled", u); err != nil {
				t.Errorf("%s not enabled: %s", u, out)
			}
		}
		kc, err := minion.ReadFile("/etc/kubernetes/kubelet.kubeconfig")
		if err != nil || !strings.Contains(string(kc), "server: https://"+lb.IP.String()+":6443") {
			t.Errorf("kubelet kubeconfig: %v", err)
		}
		// kube-proxy reaches the apiserver through the lb with its own certificate.
		await(t, "kube-proxy active on the minion", 2*time.Minute, func() error {
			out, err := minion.Exec(ctx, "systemctl", "is-active", "kube-proxy")
			if err != nil {
				return fmt.Errorf("%s", strings.TrimSpace(out))
			}
			return nil
		})
		// The kubelet's identity works: the apiserver knows it as system:node:minion1.
		out, err := minion.Exec(ctx, "kubectl", "--kubeconfig=/etc/kubernetes/kubelet.kubeconfig", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		if err != nil || strings.TrimSpace(out) != "system:node:minion1" {
			t.Errorf("kubelet identity: %q, %v", out, err)
		}
		await(t, "containerd active on the minion", time.Minute, func() error {
			out, err := minion.Exec(ctx, "systemctl", "is-active", "containerd")
			if err != nil {
				return fmt.Errorf("%s", strings.TrimSpace(out))
			}
			return nil
		})
		// The kubelet reads its flags, its kubeconfig and its KubeletConfiguration, then stops
		// at the host check: nspawn test hosts have cgroup v1 controllers, which kubelet 1.37
		// refuses. Getting that far proves the files haagent wrote are valid.
		var log string
		await(t, "the kubelet to reach its host checks", time.Minute, func() error {
			log, _ = minion.Shell(ctx, "journalctl -u kubelet --no-pager | grep -v ' I[0-9]'")
			if !strings.Contains(log, "cgroup v1") {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		for _, bad := range []string{"unknown flag", "failed to load Kubelet config file", "invalid configuration", "failed to construct kubelet dependencies"} {
			if strings.Contains(log, bad) {
				t.Errorf("the kubelet refused haagent's files (%q):\n%s", bad, log)
			}
		}
		nodes, _ := kubectl("get", "nodes", "-o", "wide")
		t.Logf("nodes: %s", nodes)
	})

	t.Run("the control plane survives the loss of m1", func(t *testing.T) {
		must(t, m1.Kill())
		start := time.Now()
		await(t, "a pod created through the lb after m1 died", 2*time.Minute, func() error { return createPod("after-m1") })
		t.Logf("pod created through the lb %s after m1 was killed", time.Since(start).Round(100*time.Millisecond))
		out, err := kubectl("get", "pods", "-n", "e2e", "-o", "name")
		if err != nil || !strings.Contains(out, "pod/after-m1") {
			t.Fatalf("after m1 died: %q, %v", out, err)
		}
	})

}
