package integration

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haagent/haagent/test/cluster"
)

// TestFullBootstrapThroughTheLB: three secure masters, an lb in front of them on
// 127.0.0.10, and a minion that knows only the lb's address and the token.
func TestFullBootstrapThroughTheLB(t *testing.T) {
	c := newCluster(t)
	for _, m := range c.Masters {
		m.Extra = []string{"--lb=127.0.0.10", "--systemd=off"}
	}
	startReady(t, c)

	lbRoot := t.TempDir()
	var lbLog bytes.Buffer
	lb := exec.Command(bin, "--role=lb", "--name=lb1", "--masters=127.0.0.21,127.0.0.22,127.0.0.23",
		"--listen-address=127.0.0.10", "--status-address=127.0.0.10:9110", "--token="+testToken, "--root="+lbRoot)
	lb.Stdout, lb.Stderr = &lbLog, &lbLog
	lb.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = lb.Process.Signal(syscall.SIGTERM)
		_ = lb.Wait()
		if t.Failed() {
			t.Logf("--- lb log ---\n%s", lbLog.String())
		}
	}()
	// The etcd and join ports turn healthy; 6443 stays down, as no apiserver runs here.
	err := cluster.Await(30*time.Second, 100*time.Millisecond, func() error {
		body, err := httpGet("http://127.0.0.10:9110/status")
		if err != nil {
			return err
		}
		var doc struct {
			Backends []struct {
				Port  int    `json:"port"`
				State string `json:"state"`
			} `json:"backends"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			return err
		}
		healthy := map[int]int{}
		for _, b := range doc.Backends {
			if b.State == "healthy" {
				healthy[b.Port]++
			}
		}
		if healthy[2379] != 3 || healthy[9345] != 3 {
			return &retryable{body}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// etcd through the lb, with the lb's own client certificate.
	pki := filepath.Join(lbRoot, "etc/kubernetes/pki")
	out, err := exec.Command("etcdctl", "--endpoints=https://127.0.0.10:2379", "--dial-timeout=2s", "--command-timeout=3s",
		"--cacert="+filepath.Join(pki, "ca.crt"), "--cert="+filepath.Join(pki, "etcd-client.crt"), "--key="+filepath.Join(pki, "etcd-client.key"),
		"get", "--print-value-only", "/kube-centos/network/config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "vxlan") {
		t.Fatalf("etcd through the lb: %v\n%s", err, out)
	}

	root := t.TempDir()
	code, log := runMinion(t, root, "127.0.0.10", testToken)
	if code != 0 {
		t.Fatalf("minion joining through the lb: exit %d\n%s", code, log)
	}
	flannel := readFile(t, filepath.Join(root, "etc/sysconfig/flanneld"))
	if !strings.Contains(flannel, `FLANNEL_ETCD_ENDPOINTS="https://127.0.0.10:2379"`) {
		t.Fatalf("the minion's flanneld does not point at the lb:\n%s", flannel)
	}
	// The minion's flannel certificate reaches etcd through the lb.
	mp := filepath.Join(root, "etc/kubernetes/pki")
	out, err = exec.Command("etcdctl", "--endpoints=https://127.0.0.10:2379", "--dial-timeout=2s", "--command-timeout=3s",
		"--cacert="+filepath.Join(mp, "ca.crt"), "--cert="+filepath.Join(mp, "flannel-etcd-client.crt"), "--key="+filepath.Join(mp, "flannel-etcd-client.key"),
		"get", "--print-value-only", "/kube-centos/network/config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "172.30.0.0/16") {
		t.Fatalf("minion's flannel cert through the lb: %v\n%s", err, out)
	}
}

type retryable struct{ body string }

func (r *retryable) Error() string { return "lb backends not healthy yet: " + r.body }
