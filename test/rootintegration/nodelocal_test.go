package rootintegration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/netsetup/masterlist"
	"github.com/haagent/haagent/roles/minion"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/procs"
)

// The node-local test's layout, in a lab of its own (10.82.0.0/24): three masters and
// a minion that runs its own lb (--lb=local), given only m1 to start with.
var (
	nlSubnet    = netip.MustParsePrefix("10.82.0.0/24")
	nlMasterIPs = []string{"10.82.0.21", "10.82.0.22", "10.82.0.23"}
)

const nlMinionIP = "10.82.0.31"

// TestNodeLocalLB runs haagent --role=minion --lb=local --masters=m1 (no systemd)
// beside three real secure masters, and checks that:
//   - it joins through its own lb on 127.0.0.1 (the join port), and its flanneld,
//     kubelet and kube-proxy are pointed at 127.0.0.1;
//   - etcd answers through 127.0.0.1:2379 inside the minion's namespace, with the
//     minion's flannel certificate (Debian's etcdctl);
//   - it learns m2 and m3 from etcd's member list, and saves the list;
//   - restarted while m1, the only master it was given, is dead, it starts from the
//     saved list and etcd answers through it again;
//   - a master removed from the cluster drops out of the list, the file and the lb.
func TestNodeLocalLB(t *testing.T) {
	ctx := context.Background()
	lab := hosts.NewWith(t, hosts.LabOptions{NetworkOnly: true, Subnet: nlSubnet})
	pairs := []string{"hanw1=" + nlMinionIP}
	for i, ip := range nlMasterIPs {
		pairs = append(pairs, fmt.Sprintf("hanm%d=%s", i+1, ip))
	}
	ns, err := lab.AddNodes(ctx, pairs...)
	if err != nil {
		t.Fatal(err)
	}
	wNode, mNodes := ns[0], ns[1:]
	dir := t.TempDir()
	c := procs.NewClusterWith(bin, dir, 3, procs.Options{Nodes: mNodes})
	c.Secure(testToken)
	startReady(t, c)

	root := filepath.Join(dir, "w1")
	w := procs.NewMinion(bin, procs.MinionConfig{Name: "w1", IP: nlMinionIP, LB: minion.LBLocal, Token: testToken,
		Root: root, Node: wNode, Extra: []string{"--masters=" + nlMasterIPs[0], "--masters-refresh=1s"}})
	start := func() {
		t.Helper()
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		if err := w.WaitReady(procs.ReadyTimeout); err != nil {
			t.Fatalf("%v\n%s", err, w.LogTail(30))
		}
	}
	t.Cleanup(func() {
		w.StopOrKill()
		if t.Failed() {
			t.Logf("--- log of w1 ---\n%s", w.LogTail(60))
		}
	})
	start()

	// It joined through 127.0.0.1:9345, and points its components at 127.0.0.1.
	for file, want := range map[string]string{
		"etc/sysconfig/flanneld":                     `FLANNEL_ETCD_ENDPOINTS="https://127.0.0.1:2379"`,
		"etc/kubernetes/kubelet.kubeconfig":          "server: https://127.0.0.1:6443",
		"etc/kubernetes/proxy.kubeconfig":            "server: https://127.0.0.1:6443",
		"etc/kubernetes/config":                      "--master=https://127.0.0.1:6443",
		"etc/kubernetes/pki/flannel-etcd-client.crt": "BEGIN CERTIFICATE",
	} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("/%s lacks %q (%v):\n%s", file, want, err, b)
		}
	}

	// etcd through the local lb, from inside the minion, with its flannel certificate.
	etcdViaLocalLB := func() error {
		pki := filepath.Join(root, "etc/kubernetes/pki")
		cmd := wNode.CommandContext(ctx, "etcdctl", "--endpoints=https://127.0.0.1:2379", "--dial-timeout=2s", "--command-timeout=3s",
			"--cacert="+filepath.Join(pki, "ca.crt"), "--cert="+filepath.Join(pki, "flannel-etcd-client.crt"),
			"--key="+filepath.Join(pki, "flannel-etcd-client.key"), "get", "--print-value-only", "/kube-centos/network/config")
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "172.30.0.0/16") {
			return fmt.Errorf("etcdctl through 127.0.0.1:2379 in w1: %v: %s", err, out)
		}
		return nil
	}
	if err := await.Until(ctx, "etcd to answer through the node-local lb", 10*time.Second, func() error { return etcdViaLocalLB() }); err != nil {
		t.Fatal(err)
	}

	// The list is learned from the cluster and saved; /status and haagent status say so.
	awaitList := func(want []string) {
		t.Helper()
		err := await.Until(ctx, fmt.Sprintf("the minion's list of masters to be %v, saved and in its lb", want), 20*time.Second, func() error {
			if !w.Running() {
				return await.Stop(fmt.Errorf("w1 exited:\n%s", w.LogTail(20)))
			}
			saved, err := masterlist.Load(root)
			if err != nil {
				return err
			}
			if !slices.Equal(saved.Masters, want) || saved.Source != masterlist.SourceCluster {
				return fmt.Errorf("saved list %+v", saved)
			}
			st, err := nlStatus(w)
			if err != nil {
				return err
			}
			if st.LocalLB == nil || !slices.Equal(st.LocalLB.Masters.Masters, want) || st.LocalLB.Masters.Source != masterlist.SourceCluster {
				return fmt.Errorf("/status: %+v", st.LocalLB)
			}
			var backends []string
			for _, b := range st.LocalLB.Backends {
				if b.Port == 2379 {
					backends = append(backends, strings.TrimSuffix(b.Address, ":2379"))
				}
			}
			if !slices.Equal(backends, want) {
				return fmt.Errorf("the lb's etcd backends are %v", backends)
			}
			return nil
		}, await.Every(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
	}
	awaitList(nlMasterIPs)
	out, err := wNode.CommandContext(ctx, bin, "status", "--status-address="+w.StatusAddress()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "node-local lb: 127.0.0.1, ports 6443, 2379, 9345") ||
		!strings.Contains(string(out), "masters: "+strings.Join(nlMasterIPs, ", ")+" (from the cluster") ||
		!strings.Contains(string(out), nlMasterIPs[2]+":2379") {
		t.Fatalf("haagent status on w1: %v\n%s", err, out)
	}

	// Restart the minion while m1, the only master in its --masters, is dead.
	if _, err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Masters[0].Kill(); err != nil {
		t.Fatal(err)
	}
	start()
	if err := await.Until(ctx, "etcd to answer through the node-local lb after a restart without m1", 15*time.Second,
		func() error { return etcdViaLocalLB() }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.Logs(), "starting from the list of masters the cluster gave before") {
		t.Error("the restarted minion does not say it started from the saved list")
	}

	// m1 back, then m3 removed from the cluster: it drops out of the list.
	if err := c.Masters[0].Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(procs.ReadyTimeout, c.Masters[0]); err != nil {
		t.Fatal(err)
	}
	if err := nlRemoveMember(ctx, c, mNodes[1], "m3"); err != nil {
		t.Fatal(err)
	}
	if code, err := c.Masters[2].Wait(30 * time.Second); err != nil || code != 3 {
		t.Fatalf("removed m3 exited with %d, %v; want 3", code, err)
	}
	awaitList(nlMasterIPs[:2])
	if err := etcdViaLocalLB(); err != nil {
		t.Fatal(err)
	}
}

// nlStatus reads the minion's /status from inside its namespace.
func nlStatus(w *procs.Minion) (minion.Status, error) {
	var st minion.Status
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: w.Dial, DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + w.StatusAddress() + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("/status: %w: %s", err, b)
	}
	return st, nil
}

// nlRemoveMember removes the member named name with Debian's etcdctl, run in node with
// m1's haagent certificate (etcd's root role).
func nlRemoveMember(ctx context.Context, c *procs.Cluster, node *netlab.Node, name string) error {
	etcdctl := func(args ...string) ([]byte, error) {
		cmd := node.CommandContext(ctx, "etcdctl", append(append([]string{"--endpoints=" + c.Endpoints(c.Masters[1]),
			"--dial-timeout=2s", "--command-timeout=5s"}, c.Masters[0].TLSFlags()...), args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		return cmd.CombinedOutput()
	}
	return await.Until(ctx, "etcd to remove member "+name, 20*time.Second, func() error {
		out, err := etcdctl("member", "list", "-w", "json")
		if err != nil {
			return fmt.Errorf("member list: %v: %s", err, out)
		}
		var resp struct {
			Members []procs.EtcdMember `json:"members"`
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			return fmt.Errorf("member list: %w: %s", err, out)
		}
		for _, m := range resp.Members {
			if m.Name == name {
				// etcd refuses while the cluster is settling ("unhealthy cluster"): retried.
				if out, err := etcdctl("member", "remove", fmt.Sprintf("%x", m.ID)); err != nil {
					return fmt.Errorf("member remove: %v: %s", err, out)
				}
				return nil
			}
		}
		return await.Stop(fmt.Errorf("no member %s in %s", name, out))
	}, await.Every(500*time.Millisecond))
}
