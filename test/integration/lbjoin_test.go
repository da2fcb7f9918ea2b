package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haagent/haagent/test/framework/procs"
)

// TestFullBootstrapThroughTheLB: three secure masters, an lb in front of them on
// 127.0.0.10, and a minion that knows only the lb's address and the token.
func TestFullBootstrapThroughTheLB(t *testing.T) {
	c := newCluster(t)
	for _, m := range c.Masters {
		m.Extra = []string{"--lb=127.0.0.10", "--systemd=off"}
	}
	startReady(t, c)

	lb := procs.NewLB(bin, procs.LBConfig{Name: "lb1", IP: "127.0.0.10", Masters: []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"},
		Token: testToken, Dir: t.TempDir()})
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		lb.StopOrKill()
		if t.Failed() {
			t.Logf("--- lb log ---\n%s", lb.Logs())
		}
	}()
	// The etcd and join ports turn healthy; 6443 stays down, as no apiserver runs here.
	if err := awaitLBHealthy(lb, map[int]int{2379: 3, 9345: 3}); err != nil {
		t.Fatal(err)
	}

	// etcd through the lb: flannel's certificate reads its config end to end; the lb's
	// own certificate, whose etcd user may use only the VIP election's prefix, can't read it.
	etcdctlVia := func(dir, cert string) (string, error) {
		pki := filepath.Join(dir, "etc/kubernetes/pki")
		out, err := exec.Command("etcdctl", "--endpoints=https://127.0.0.10:2379", "--dial-timeout=2s", "--command-timeout=3s",
			"--cacert="+filepath.Join(pki, "ca.crt"), "--cert="+filepath.Join(pki, cert+".crt"), "--key="+filepath.Join(pki, cert+".key"),
			"get", "--print-value-only", "/kube-centos/network/config").CombinedOutput()
		return string(out), err
	}
	if out, err := etcdctlVia(c.Masters[0].Root, "flannel-etcd-client"); err != nil || !strings.Contains(out, "vxlan") {
		t.Fatalf("etcd through the lb with flannel's certificate: %v\n%s", err, out)
	}
	if out, err := etcdctlVia(lb.Root(), "etcd-client"); err == nil || !strings.Contains(out, "permission denied") {
		t.Fatalf("etcd through the lb with the lb's certificate: want permission denied, got %v\n%s", err, out)
	}

	// The lock-out attempt (issue 18): behind the lb every request comes from the lb's
	// address. Bad tokens until each master throttles that address, and more while the
	// minion joins: its join, with the right token, must still go through.
	// Every role reports its certificates' expiry in /metrics; fresh ones warn of nothing.
	for addr, cert := range map[string]string{lb.StatusAddress(): "etcd-client.crt", c.Masters[0].StatusAddress(): "ca.crt"} {
		body, err := httpGet("http://" + addr + "/metrics")
		want := `haagent_certificate_expiry_warning{path="/etc/kubernetes/pki/` + cert + `"} 0`
		if err != nil || !strings.Contains(body, want) || !strings.Contains(body, "haagent_certificate_expires_in_seconds{") {
			t.Fatalf("%s/metrics: %v; want %s and the seconds until expiry", addr, err, want)
		}
	}
	requireSlowBodyCutOff(t, "127.0.0.10:9345")
	before := joinRefusals(t, c.Masters)
	attack := startLockOutAttempt("127.0.0.10:9345", 40)
	if refused, throttled, other := attack.counts(); other != nil || refused != 40 || throttled == 0 {
		attack.stop()
		t.Fatalf("40 bad tokens through the lb: %d refused, %d of them throttled (%v); want all refused, some throttled", refused, throttled, other)
	}
	root := t.TempDir()
	code, log := runMinion(t, root, "127.0.0.10", testToken)
	refused, throttled, other := attack.stop()
	if code != 0 {
		t.Fatalf("minion joining through the lb during a lock-out attempt: exit %d\n%s", code, log)
	}
	if other != nil {
		t.Fatal(other)
	}
	after := joinRefusals(t, c.Masters)
	if got := after["wrong-token"] + after["throttled"] - before["wrong-token"] - before["throttled"]; got != float64(refused) {
		t.Errorf("the masters counted %v wrong-token and throttled refusals, the attacker saw %d", got, refused)
	}
	if got := after["throttled"] - before["throttled"]; got != float64(throttled) {
		t.Errorf("the masters counted %v throttled refusals, the attacker saw %d", got, throttled)
	}
	flannel := readFile(t, filepath.Join(root, "etc/sysconfig/flanneld"))
	if !strings.Contains(flannel, `FLANNEL_ETCD_ENDPOINTS="https://127.0.0.10:2379"`) {
		t.Fatalf("the minion's flanneld does not point at the lb:\n%s", flannel)
	}
	// The minion's flannel certificate reaches etcd through the lb.
	if out, err := etcdctlVia(root, "flannel-etcd-client"); err != nil || !strings.Contains(out, "172.30.0.0/16") {
		t.Fatalf("minion's flannel cert through the lb: %v\n%s", err, out)
	}
}
