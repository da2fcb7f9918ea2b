package hosts_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
)

// containerdConfig is containerd 1.6's config as a minion's kubelet wants it
// (pods-on-minions.md): restrict_oom_score_adj because a host lacks CAP_SYS_RESOURCE,
// cgroupfs (not systemd) cgroups, the overlayfs snapshotter.
const containerdConfig = `version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "hah.test/busybox:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`

// The kubelet's kernel tunables and the values it wants.
var tunables = map[string]string{
	"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1",
	"kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000",
}

// TestContainersHost boots a host that can run containers next to a plain one, on a
// lab subnet of its own with an explicit address, and runs containers in it with the
// real containerd and runc: an image imported onto the overlayfs snapshotter, its
// output, a memory limit that is applied and enforced. The kubelet's tunables read as
// it wants inside the host and stay unchanged on the machine. The plain host serves
// images with Debian's registry, as the lab's lb does.
func TestContainersHost(t *testing.T) {
	subnet := netip.MustParsePrefix("10.78.0.0/24")
	lab := hosts.NewWith(t, hosts.LabOptions{Subnet: subnet})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	machine := readTunables(t, "/proc/sys")

	start := time.Now()
	hs, err := lab.BootWith(ctx,
		hosts.HostSpec{Name: "minion1", HostOptions: hosts.HostOptions{IP: netip.MustParseAddr("10.78.0.31"), Containers: true}},
		hosts.HostSpec{Name: "plain"},
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a containers host and a plain host booted in parallel to running in %v", time.Since(start).Round(time.Millisecond))
	c, p := hs[0], hs[1]
	if c.IP.String() != "10.78.0.31" || p.IP.String() != "10.78.0.10" {
		t.Errorf("addresses: %s %s, want 10.78.0.31 (explicit) and 10.78.0.10 (first automatic)", c.IP, p.IP)
	}
	if _, err := p.Exec(ctx, "ping", "-c", "1", "-W", "2", "minion1"); err != nil {
		t.Errorf("ping plain -> minion1: %v", err)
	}
	if out, _ := c.Exec(ctx, "systemctl", "is-system-running"); strings.TrimSpace(out) != "running" {
		failed, _ := c.Exec(ctx, "systemctl", "--failed", "--no-legend")
		t.Logf("containers host is %s: %s", strings.TrimSpace(out), failed)
	}

	// The tunables: the kubelet's values in the containers host, the machine's in the
	// plain one, and nothing written: /proc/sys stays read-only, /proc/sys/net is not.
	for k, want := range tunables {
		if got, _ := c.Exec(ctx, "cat", "/proc/sys/"+k); strings.TrimSpace(got) != want {
			t.Errorf("containers host: %s = %q, want %s", k, strings.TrimSpace(got), want)
		}
		if got, _ := p.Exec(ctx, "cat", "/proc/sys/"+k); strings.TrimSpace(got) != machine[k] {
			t.Errorf("plain host: %s = %q, want the machine's %s", k, strings.TrimSpace(got), machine[k])
		}
	}
	if _, err := c.Shell(ctx, "echo 0 > /proc/sys/kernel/panic_on_oops"); err == nil {
		t.Error("a write to kernel/panic_on_oops was not refused")
	}
	if _, err := c.Shell(ctx, "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet"); err != nil {
		t.Errorf("/proc/sys/net is not writable: %v", err)
	}
	// Writable v1 controllers, the kernel log, and containerd's dir on a plain file system.
	if _, err := c.Shell(ctx, "mkdir /sys/fs/cgroup/memory/probe && echo 8388608 > /sys/fs/cgroup/memory/probe/memory.limit_in_bytes && rmdir /sys/fs/cgroup/memory/probe"); err != nil {
		t.Errorf("memory controller not writable: %v", err)
	}
	if _, err := c.Exec(ctx, "dd", "if=/dev/kmsg", "of=/dev/null", "bs=8192", "count=1", "status=none"); err != nil {
		t.Errorf("read /dev/kmsg: %v", err)
	}
	if out, err := c.Exec(ctx, "stat", "-f", "-c", "%T", "/var/lib/containerd"); err != nil || strings.TrimSpace(out) == "overlayfs" {
		t.Errorf("/var/lib/containerd is on %q (%v), want a plain file system", strings.TrimSpace(out), err)
	}

	if err := c.WriteFile("/etc/containerd/config.toml", []byte(containerdConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "systemctl", "restart", "containerd"); err != nil {
		t.Fatal(err)
	}
	if err := await.Until(ctx, "containerd to answer ctr version", time.Minute, func() error { _, err := c.Exec(ctx, "ctr", "version"); return err }, await.Every(100*time.Millisecond)); err != nil {
		t.Fatalf("containerd answering: %v", err)
	}
	if err := c.WriteFile("/var/tmp/busybox.tar", busyboxImage(t, "hah.test/busybox:1"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctr := func(args ...string) (string, error) {
		return c.Exec(ctx, append([]string{"ctr", "-n", "k8s.io"}, args...)...)
	}
	if _, err := ctr("images", "import", "/var/tmp/busybox.tar"); err != nil {
		t.Fatal(err)
	}

	// A container with a memory limit: it answers from its own cgroup, below the host's,
	// and the limit is set there. (ctr's spec, unlike the CRI's, mounts no cgroupfs in
	// the container, so the limit is read on the machine.)
	const limit = 64 << 20
	start = time.Now()
	if _, err := ctr("run", "-d", "--memory-limit", fmt.Sprint(limit), "hah.test/busybox:1", "sleeper", "/bin/busybox", "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	out, err := ctr("tasks", "exec", "--exec-id", "probe", "sleeper", "/bin/busybox", "sh", "-c", "echo hello from a container; cat /proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("container started and answered in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "hello from a container") || !strings.Contains(out, "memory:/k8s.io/sleeper") {
		t.Errorf("container output %q: want the greeting and the memory cgroup /k8s.io/sleeper", out)
	}
	onMachine, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", c.Machine, "*", "sleeper", "memory.limit_in_bytes"))
	if len(onMachine) != 1 {
		t.Errorf("the container's memory cgroup below the host's own on the machine: found %v", onMachine)
	} else if b, _ := os.ReadFile(onMachine[0]); strings.TrimSpace(string(b)) != fmt.Sprint(limit) {
		t.Errorf("%s = %q, want %d", onMachine[0], b, limit)
	}
	if out, _ := ctr("snapshots", "--snapshotter", "overlayfs", "ls"); !strings.Contains(out, "sleeper") {
		t.Errorf("the container's snapshot is not an overlayfs one:\n%s", out)
	}
	// The limit is enforced: tail keeps /dev/zero (no newline) in memory until the
	// OOM killer ends it. The killer may pick the shell instead (then the whole task
	// exits 137); either way, 64 MiB did not fit under 16 MiB.
	out, err = ctr("run", "--rm", "--memory-limit", fmt.Sprint(16<<20), "hah.test/busybox:1", "hog", "/bin/busybox", "sh", "-c", "head -c 67108864 /dev/zero | tail; echo tail exit $?")
	var ee *exec.ExitError
	shellKilled := errors.As(err, &ee) && ee.ExitCode() == 137
	if !strings.Contains(out, "tail exit 137") && !shellKilled {
		t.Errorf("a container kept 64 MiB under a 16 MiB limit, want it OOM-killed (137): %q, %v", out, err)
	}

	// The plain host serves images with Debian's registry, which no host starts at boot
	// and which needs no auth, and the containers host pushes to it and pulls from it.
	if out, _ := p.Exec(ctx, "systemctl", "is-enabled", "docker-registry"); strings.TrimSpace(out) != "disabled" {
		t.Errorf("docker-registry is %q at boot, want disabled", strings.TrimSpace(out))
	}
	if _, err := p.Exec(ctx, "systemctl", "start", "docker-registry"); err != nil {
		t.Fatal(err)
	}
	if err := await.Until(ctx, "the registry to answer on the plain host", time.Minute, func() error { _, err := p.Exec(ctx, "curl", "-fsS", "http://127.0.0.1:5000/v2/"); return err }, await.Every(100*time.Millisecond)); err != nil {
		t.Fatalf("registry answering on the plain host: %v", err)
	}
	remote := p.IP.String() + ":5000/busybox:1"
	for _, args := range [][]string{
		{"images", "tag", "hah.test/busybox:1", remote},
		{"images", "push", "--plain-http", remote},
		{"images", "rm", remote},
		{"images", "pull", "--plain-http", remote},
	} {
		if _, err := ctr(args...); err != nil {
			t.Fatalf("image through the registry: %v", err)
		}
	}

	// The machine's own tunables never changed.
	for k, v := range readTunables(t, "/proc/sys") {
		if v != machine[k] {
			t.Errorf("the machine's %s changed: %s -> %s", k, machine[k], v)
		}
	}
	leaders := []int{c.Leader(), p.Leader()}
	if err := lab.Teardown(); err != nil {
		t.Fatal(err)
	}
	requireGone(t, lab.ID, leaders)
}

func readTunables(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for k := range tunables {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil {
			t.Fatal(err)
		}
		m[k] = strings.TrimSpace(string(b))
	}
	return m
}

// busyboxImage is a docker-archive image of the machine's static busybox, as
// `ctr images import` reads it.
func busyboxImage(t *testing.T, ref string) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("read a static busybox (busybox-static, scripts/deps.sh): %v", err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	tw.WriteHeader(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/bin/busybox"}, "Cmd": []string{"sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum[:])}},
	})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{ref}, "Layers": []string{"layer.tar"}}})
	var out bytes.Buffer
	ow := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{"config.json", config}, {"layer.tar", layer.Bytes()}, {"manifest.json", manifest}} {
		ow.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.data))})
		ow.Write(f.data)
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
