package packaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/hosts"
)

// goldenStatus is the part of a master's `haagent status -o json` this test reads.
type goldenStatus struct {
	Role string `json:"role"`
	Name string `json:"name"`
	Etcd struct {
		ClusterID string `json:"clusterID"`
		LocalID   string `json:"localID"`
		Mode      string `json:"startMode"`
		Members   []struct {
			ID       string   `json:"id"`
			Name     string   `json:"name"`
			PeerURLs []string `json:"peerURLs"`
			Started  bool     `json:"started"`
			Learner  bool     `json:"learner"`
			Leader   bool     `json:"leader"`
			Healthy  bool     `json:"healthy"`
			Error    string   `json:"error"`
		} `json:"members"`
	} `json:"etcd"`
	Flannel struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"flannel"`
}

// TestGoldenImage bakes an image the way packaging/README.md says: a host installs the
// deb and runs once as a master (as happens while an image is baked and tried), then
// `systemctl disable --now haagent`, `haagent reset --yes` and the package's pristine
// /etc/sysconfig/haagent. Two hosts boot from copies of that disk, get the role only
// through /etc/sysconfig/haagent at first boot (as cloud-init writes it), and form one
// fresh two-member cluster: nothing of the baked member, CA or token survives.
func TestGoldenImage(t *testing.T) {
	requireRoot(t)
	began := time.Now()
	p := getPackages(t)
	t.Logf("packages ready after %v", time.Since(began).Round(time.Millisecond))
	lab := hosts.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	phase := time.Now()
	lap := func(what string) {
		t.Logf("%s took %v", what, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}

	hs, err := lab.Boot(ctx, "bake")
	if err != nil {
		t.Fatal(err)
	}
	bake := hs[0]
	lap("booting the bake host")
	deb := "/var/tmp/" + filepath.Base(p.Old.DEB)
	if err := bake.CopyIn(p.Old.DEB, deb); err != nil {
		t.Fatal(err)
	}
	hostSh(t, ctx, bake, "dpkg -i "+deb)
	template := mustRead(t, filepath.Join(repoRoot, "packaging", "sysconfig-haagent"))
	if got := hostSh(t, ctx, bake, "cat /etc/sysconfig/haagent"); got != strings.TrimSpace(template) {
		t.Fatalf("the installed /etc/sysconfig/haagent is not packaging/sysconfig-haagent:\n%s", got)
	}

	// 1. Used once, as while baking: a single master, configured in the template.
	cfg := fmt.Sprintf("HAAGENT_ROLE=master\nHAAGENT_PEERS=%s=http://%s:2380\n", bake.Name, bake.IP)
	hostSh(t, ctx, bake, "printf '"+cfg+"' >> /etc/sysconfig/haagent")
	enableNow(t, ctx, bake)
	lap("install and first start on the bake host")
	baked := waitStatus(t, ctx, bake, 1)
	t.Logf("bake: cluster %s, member %s (%s)", baked.Etcd.ClusterID, baked.Etcd.LocalID, baked.Etcd.Mode)
	bakedCA := hostSh(t, ctx, bake, "sha256sum < /etc/kubernetes/pki/ca.crt")
	// Everything the run left that the image must not carry.
	state := []string{
		"/var/lib/haagent/etcd/member", "/var/lib/haagent/token", "/var/lib/haagent/files.json",
		"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key", "/etc/kubernetes/admin.kubeconfig",
		"/etc/kubernetes/apiserver", "/etc/kubernetes/config", "/etc/sysconfig/flanneld",
		"/etc/systemd/system/kube-apiserver.service",
	}
	for _, f := range state {
		if !hostExists(ctx, bake, f) {
			t.Errorf("after the first run: %s is missing; the test expects the master to have made it", f)
		}
	}
	// What reset says it deletes (without --yes: a list, exit 2).
	dry, err := bake.Exec(ctx, "haagent", "reset")
	if err == nil {
		t.Errorf("haagent reset without --yes succeeded; want exit 2:\n%s", dry)
	}
	var doomed []string
	for _, l := range lines(dry) {
		if strings.HasPrefix(l, "/") {
			doomed = append(doomed, strings.Fields(l)[0])
		}
	}
	t.Logf("haagent reset (dry run) lists %d paths", len(doomed))
	for _, f := range state {
		if !slices.Contains(doomed, f) && !strings.HasPrefix(f, "/var/lib/haagent/etcd/") && !strings.HasPrefix(f, "/etc/kubernetes/pki/") {
			t.Errorf("haagent reset (dry run) does not list %s:\n%s", f, dry)
		}
	}

	// 2. Bake: stop and disable the agent, reset, put the pristine template back.
	hostSh(t, ctx, bake, "systemctl disable --now haagent.service")
	t.Log(hostSh(t, ctx, bake, "haagent reset --yes 2>&1"))
	for _, f := range append(state, doomed...) {
		if hostExists(ctx, bake, f) {
			t.Errorf("after reset: %s is still there", f)
		}
	}
	if left := hostSh(t, ctx, bake, "find /var/lib/haagent /etc/kubernetes -mindepth 1"); left != "" {
		t.Errorf("after reset, left in /var/lib/haagent and /etc/kubernetes:\n%s", left)
	}
	if left := hostSh(t, ctx, bake, "ls /etc/systemd/system/*.wants/ | grep -E 'kube|flannel|haagent' || :"); left != "" {
		t.Errorf("after reset, still enabled: %s", left)
	}
	for _, q := range []string{"is-enabled", "is-active"} {
		if got := hostAnswer(ctx, bake, "systemctl "+q+" haagent.service"); got != map[string]string{"is-enabled": "disabled", "is-active": "inactive"}[q] {
			t.Errorf("after reset: systemctl %s haagent: %q", q, got)
		}
	}
	if ps := hostAnswer(ctx, bake, "ps -C haagent,etcd,flanneld,kube-apiserver -o comm="); ps != "" {
		t.Errorf("after reset, still running: %s", ps)
	}
	// reset leaves /etc/sysconfig/haagent alone: it is the operator's input, not state.
	if got := hostSh(t, ctx, bake, "grep -c '^HAAGENT_ROLE=' /etc/sysconfig/haagent || :"); got != "1" {
		t.Errorf("reset changed /etc/sysconfig/haagent (HAAGENT_ROLE lines: %s)", got)
	}
	// The recipe's last step: the conffile back as the package ships it.
	hostSh(t, ctx, bake, "rm -f /etc/sysconfig/haagent && dpkg -i --force-confmiss "+deb)
	if got := hostSh(t, ctx, bake, "cat /etc/sysconfig/haagent"); got != strings.TrimSpace(template) {
		t.Errorf("after the reinstall, /etc/sysconfig/haagent is not the template:\n%s", got)
	}
	if got := hostSh(t, ctx, bake, "stat -c '%a %U:%G' /etc/sysconfig/haagent"); got != "600 root:root" {
		t.Errorf("/etc/sysconfig/haagent: %s, want 600 root:root", got)
	}
	if got := hostAnswer(ctx, bake, "dpkg --verify haagent"); got != "" {
		t.Errorf("dpkg --verify haagent after baking:\n%s", got)
	}
	if got := hostAnswer(ctx, bake, "systemctl is-enabled haagent.service"); got != "disabled" {
		t.Errorf("after the reinstall: is-enabled %q", got)
	}
	// Power off, as a builder does before it snapshots the disk.
	bake.Exec(ctx, "systemctl", "poweroff", "--no-block")
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, err := bake.Exec(ctx, "true"); errors.Is(err, hosts.ErrNotRunning) {
			break
		}
		if time.Now().After(deadline) {
			t.Log("the bake host did not power off within 20s; killing it")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := bake.Kill(); err != nil {
		t.Fatal(err)
	}
	lap("reset and power-off of the bake host")

	// 3. The image: the baked disk, without the identity every clone gets anew.
	image := filepath.Join(t.TempDir(), "golden.tar")
	if out, err := runErr(nil, "", "tar", "-C", bake.Root, "--xattrs", "--xattrs-include=*", "--numeric-owner",
		"--exclude=./etc/hostname", "--exclude=./etc/machine-id", "--exclude=./etc/hosts",
		"-cf", image, "."); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if st, err := os.Stat(image); err == nil {
		t.Logf("image: %d MiB", st.Size()>>20)
	}
	var copies []*hosts.Host
	for _, name := range []string{"gold1", "gold2"} {
		h, err := lab.Add(name)
		if err != nil {
			t.Fatal(err)
		}
		copies = append(copies, h)
	}
	// The first line is the server token, the one masters take.
	token := strings.Fields(run(t, filepath.Join(bake.Root, "usr/bin/haagent"), "token", "generate"))[0]
	var peers []string
	for _, h := range copies {
		peers = append(peers, fmt.Sprintf("%s=http://%s:2380", h.Name, h.IP))
	}
	// What cloud-init's write_files puts there, replacing the template.
	userData := fmt.Sprintf("HAAGENT_ROLE=master\nHAAGENT_PEERS=%s\nHAAGENT_TOKEN=%s\n", strings.Join(peers, ","), token)
	for _, h := range copies {
		if out, err := runErr(nil, "", "tar", "-C", h.Root, "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", image); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if err := h.WriteFile("/etc/sysconfig/haagent", []byte(userData), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lap("copying the image to two hosts")
	bootErrs := make([]error, len(copies))
	var wg sync.WaitGroup
	for i, h := range copies {
		wg.Go(func() {
			bctx, cancel := context.WithTimeout(ctx, hosts.BootTimeout)
			defer cancel()
			if bootErrs[i] = h.Start(bctx); bootErrs[i] == nil {
				bootErrs[i] = h.WaitRunning(bctx)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(bootErrs...); err != nil {
		t.Fatal(err)
	}
	lap("booting the copies")
	for _, h := range copies {
		for _, f := range state {
			if hostExists(ctx, h, f) {
				t.Errorf("%s: the image carries %s", h.Name, f)
			}
		}
		if got := hostAnswer(ctx, h, "systemctl is-enabled haagent.service"); got != "disabled" {
			t.Errorf("%s: haagent is %s at first boot, before cloud-init enables it", h.Name, got)
		}
	}
	// cloud-init's runcmd: the name from the instance, then enable --now, on both at once
	// (with two members neither is ready without the other).
	for _, h := range copies {
		hostSh(t, ctx, h, `echo "HAAGENT_NAME=$(hostname -s)" >> /etc/sysconfig/haagent`)
	}
	for _, h := range copies {
		wg.Go(func() { enableNow(t, ctx, h) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	lap("enable --now on both copies")

	var sts []goldenStatus
	for _, h := range copies {
		st := waitStatus(t, ctx, h, 2)
		sts = append(sts, st)
		t.Logf("%s: cluster %s, member %s (%s), flannel %s = %s", h.Name, st.Etcd.ClusterID, st.Etcd.LocalID, st.Etcd.Mode, st.Flannel.Key, st.Flannel.Value)
		if st.Name != h.Name {
			t.Errorf("%s: status names the member %q", h.Name, st.Name)
		}
		if st.Etcd.Mode != "bootstrap" {
			t.Errorf("%s: started as %q, want bootstrap (a fresh data dir)", h.Name, st.Etcd.Mode)
		}
		if st.Flannel.Key != "/kube-centos/network/config" || !strings.Contains(st.Flannel.Value, `"172.30.0.0/16"`) {
			t.Errorf("%s: flannel config %s = %s", h.Name, st.Flannel.Key, st.Flannel.Value)
		}
		if ca := hostSh(t, ctx, h, "sha256sum < /etc/kubernetes/pki/ca.crt"); ca == bakedCA {
			t.Errorf("%s: the cluster CA is the baked host's", h.Name)
		}
	}
	if sts[0].Etcd.ClusterID != sts[1].Etcd.ClusterID {
		t.Errorf("two clusters: %s and %s", sts[0].Etcd.ClusterID, sts[1].Etcd.ClusterID)
	}
	if sts[0].Etcd.LocalID == sts[1].Etcd.LocalID {
		t.Errorf("both copies are member %s", sts[0].Etcd.LocalID)
	}
	if sts[0].Etcd.ClusterID == baked.Etcd.ClusterID {
		t.Errorf("the copies' cluster %s is the baked one", sts[0].Etcd.ClusterID)
	}
	var leaders int
	for _, m := range sts[0].Etcd.Members {
		if m.Leader {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders in %+v", leaders, sts[0].Etcd.Members)
	}
	if ca0, ca1 := hostSh(t, ctx, copies[0], "sha256sum < /etc/kubernetes/pki/ca.crt"), hostSh(t, ctx, copies[1], "sha256sum < /etc/kubernetes/pki/ca.crt"); ca0 != ca1 {
		t.Errorf("the copies hold different CAs")
	}
	lap("checking the cluster")
	t.Logf("TestGoldenImage: %v in all", time.Since(began).Round(time.Millisecond))
}

// hostSh runs a script in a host and returns its trimmed output, failing the test on error.
func hostSh(t *testing.T, ctx context.Context, h *hosts.Host, script string) string {
	t.Helper()
	out, err := h.Shell(ctx, script)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// hostAnswer runs a script whose non-zero exit is an answer (systemctl is-active ...).
func hostAnswer(ctx context.Context, h *hosts.Host, script string) string {
	out, _ := h.Shell(ctx, script)
	return strings.TrimSpace(out)
}

// hostExists tells whether a path exists inside the host.
func hostExists(ctx context.Context, h *hosts.Host, path string) bool {
	_, err := h.Exec(ctx, "test", "-e", path)
	return err == nil
}

// enableNow runs `systemctl enable --now haagent`, which returns after READY=1, and
// checks that the unit is active. Safe to call from several goroutines.
func enableNow(t *testing.T, ctx context.Context, h *hosts.Host) {
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := h.Exec(sctx, "systemctl", "enable", "--now", "haagent.service"); err != nil {
		t.Errorf("%s: %v\n%s\n%s", h.Name, err, hostAnswer(ctx, h, "systemctl status --no-pager haagent"),
			hostAnswer(ctx, h, "journalctl -u haagent --no-pager -n 60"))
		return
	}
	t.Logf("%s: systemctl enable --now haagent took %v", h.Name, time.Since(start).Round(time.Millisecond))
	if got := hostAnswer(ctx, h, "systemctl is-active haagent.service"); got != "active" {
		t.Errorf("%s: is-active %q after enable --now\n%s", h.Name, got, hostAnswer(ctx, h, "journalctl -u haagent --no-pager -n 50"))
	}
}

// waitStatus polls `haagent status -o json` until the master lists n members, every one
// started, healthy and a voter, for up to 30s.
func waitStatus(t *testing.T, ctx context.Context, h *hosts.Host, n int) goldenStatus {
	t.Helper()
	var st goldenStatus
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		out, err := h.Exec(ctx, "haagent", "status", "-o", "json")
		last = out
		if err != nil {
			continue
		}
		st = goldenStatus{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%s: haagent status -o json: %v\n%s", h.Name, err, out)
		}
		ok := st.Role == "master" && len(st.Etcd.Members) == n && st.Etcd.ClusterID != ""
		for _, m := range st.Etcd.Members {
			ok = ok && m.Started && m.Healthy && !m.Learner
		}
		if ok {
			return st
		}
	}
	t.Fatalf("%s: want %d started, healthy members; haagent status -o json:\n%s", h.Name, n, last)
	return st
}
