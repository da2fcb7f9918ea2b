package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haagent/haagent/test/framework/procs"
)

func TestResetForGoldenImages(t *testing.T) {
	c := newCluster(t)
	m1 := c.Masters[0]
	single := "m1=http://" + m1.IP + ":2380"
	m1.Extra = []string{"--peers=" + single, "--systemd=off"}
	startReady(t, c, m1)
	for _, p := range []string{"etc/kubernetes/apiserver", "etc/sysconfig/flanneld", "etc/kubernetes/pki/ca.key", "etc/systemd/system/kube-apiserver.service"} {
		if _, err := os.Stat(filepath.Join(m1.Root, p)); err != nil {
			t.Fatalf("the master did not write %s: %v", p, err)
		}
	}
	if code, err := m1.Stop(); err != nil || code != 0 {
		t.Fatalf("stop: %d %v", code, err)
	}

	out, err := exec.Command(bin, "reset", "--root="+m1.Root, "--data-dir="+m1.DataDir, "--systemd=off").CombinedOutput()
	if exitOf(err) != 2 || !strings.Contains(string(out), "--yes") {
		t.Fatalf("reset without --yes: exit %d\n%s", exitOf(err), out)
	}
	if _, err := os.Stat(filepath.Join(m1.DataDir, "member")); err != nil {
		t.Fatal("reset without --yes deleted the data dir")
	}
	out, err = exec.Command(bin, "reset", "--yes", "--root="+m1.Root, "--data-dir="+m1.DataDir, "--systemd=off").CombinedOutput()
	if err != nil {
		t.Fatalf("reset --yes: %v\n%s", err, out)
	}
	for _, p := range []string{m1.DataDir, filepath.Join(m1.Root, "etc/kubernetes/pki"), filepath.Join(m1.Root, "etc/kubernetes/apiserver"),
		filepath.Join(m1.Root, "etc/systemd/system/kube-apiserver.service"), filepath.Join(m1.Root, "var/lib/haagent/token")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived reset --yes", p)
		}
	}
	// The baked host boots into a role given by the environment alone and forms a cluster.
	baked := procs.New(procs.Spec{Name: "m1 configured by HAAGENT_*", Log: m1.Log + ".env",
		Argv: func() []string { return []string{bin} },
		Env: []string{"HAAGENT_ROLE=master", "HAAGENT_NAME=m1", "HAAGENT_PEERS=" + single,
			"HAAGENT_LISTEN_ADDRESS=" + m1.IP, "HAAGENT_DATA_DIR=" + m1.DataDir, "HAAGENT_ROOT=" + m1.Root,
			"HAAGENT_STATUS_ADDRESS=" + m1.StatusAddress(), "HAAGENT_SYSTEMD=off"},
		Ready: procs.HTTPReady("http://" + m1.StatusAddress() + "/readyz")})
	if err := baked.Start(); err != nil {
		t.Fatal(err)
	}
	defer baked.StopOrKill()
	if err := baked.WaitReady(procs.ReadyTimeout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(readFile(t, filepath.Join(m1.Root, "etc/kubernetes/apiserver")), "--advertise-address="+m1.IP) {
		t.Fatal("the rebooted master did not render its files")
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
