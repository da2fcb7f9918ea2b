package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/images"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/test/framework/sixhost"
)

// containerd2Bin holds containerd 2.x and its ctr, built by scripts/build-kube.sh.
var containerd2Bin = sixhost.DefaultConfig().ContainerdBin

// TestMinionRuntimeOnOneHost runs a minion's haagent on one host that can run
// containers, with no cluster behind it (--insecure, nothing at the lb): the runtime's
// config, the pod network's, the kernel settings and the airgap images, each checked
// against the real component, with Debian's containerd 1.6 and with containerd 2.x.
func TestMinionRuntimeOnOneHost(t *testing.T) {
	t.Run("Debian's containerd 1.6", func(t *testing.T) {
		testMinionRuntime(t, "", []string{`sandbox_image = "registry.k8s.io/pause:3.10"`, "restrict_oom_score_adj = true",
			`config_path = "/etc/containerd/certs.d"`, `bin_dir = "/usr/lib/cni"`, "SystemdCgroup = false"})
	})
	t.Run("containerd 2.4", func(t *testing.T) {
		for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
			if _, err := os.Stat(filepath.Join(containerd2Bin, b)); err != nil {
				t.Fatalf("containerd 2.x missing: %v (scripts/build-kube.sh builds it; make test runs it)", err)
			}
		}
		testMinionRuntime(t, containerd2Bin, []string{"sandbox = 'registry.k8s.io/pause:3.10'", "restrict_oom_score_adj = true",
			"config_path = '/etc/containerd/certs.d'", "bin_dirs = ['/usr/lib/cni']", "SystemdCgroup = false"})
	})
}

// testMinionRuntime runs the checks with the containerd in bin, or Debian's when empty;
// effective are lines that `containerd config dump` must show.
func testMinionRuntime(t *testing.T, bin string, effective []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hl := hosts.New(t)
	hs, err := hl.BootWith(ctx, hosts.HostSpec{Name: "minion1", HostOptions: hosts.HostOptions{Containers: true}})
	must(t, err)
	h := hs[0]
	work := t.TempDir()
	haagent, err := procs.Binary(work)
	must(t, err)
	must(t, h.CopyIn(haagent, "/usr/bin/haagent"))
	if bin != "" {
		// In place of Debian's, so that its unit runs it.
		_, err := h.Shell(ctx, "systemctl stop containerd")
		must(t, err)
		for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
			must(t, h.CopyIn(filepath.Join(bin, b), "/usr/bin/"+b))
		}
	}
	set, err := images.Build(ctx, filepath.Join(work, "img"))
	must(t, err)
	img, err := set.Nginx()
	must(t, err)
	must(t, images.WriteTarball(img, airgapImage, filepath.Join(work, "a.tar")))
	must(t, h.CopyIn(filepath.Join(work, "a.tar"), "/var/lib/haagent/images/a.tar"))
	must(t, h.WriteFile("/var/lib/haagent/images/corrupt.tar", []byte("this is not a tarball"), 0o644))

	lease := func(n int) string {
		return fmt.Sprintf("mkdir -p /run/flannel && printf 'FLANNEL_NETWORK=172.30.0.0/16\\nFLANNEL_SUBNET=172.30.%d.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=true\\n' > /run/flannel/subnet.env.tmp && mv /run/flannel/subnet.env.tmp /run/flannel/subnet.env", n)
	}
	_, err = h.Shell(ctx, lease(5)+" && systemd-run --unit=haagent /usr/bin/haagent --role=minion --insecure --lb=127.0.0.1 --systemd=on --registry-mirror=docker.io=http://lb1:5000")
	must(t, err)
	journal := func(unit string) string {
		out, _ := h.Exec(ctx, "journalctl", "-u", unit, "--no-pager", "-o", "cat")
		return out
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haagent:\n%s\ncontainerd:\n%s", journal("haagent"), journal("containerd"))
		}
	})

	waitFor(t, ctx, "both airgap tarballs handled", 2*time.Minute, func() error {
		if !strings.Contains(journal("haagent"), "corrupt.tar") {
			return fmt.Errorf("corrupt.tar not reported yet")
		}
		return nil
	})
	t.Run("the airgap image is in the kubelet's namespace; the corrupt tarball is logged", func(t *testing.T) {
		out, err := h.Exec(ctx, "ctr", "-n", "k8s.io", "images", "ls", "-q")
		must(t, err)
		if !strings.Contains(out, airgapImage) {
			t.Errorf("k8s.io images: %q, want %s", out, airgapImage)
		}
		if log := journal("haagent"); !strings.Contains(log, "airgap image tarball not imported") {
			t.Errorf("no error for corrupt.tar in:\n%s", log)
		}
		st, err := h.Exec(ctx, "haagent", "status")
		must(t, err)
		if !strings.Contains(st, "airgap images: 1 imported; corrupt.tar failed") {
			t.Errorf("haagent status:\n%s", st)
		}
	})

	t.Run("containerd runs the CRI plugin with haagent's config", func(t *testing.T) {
		out, err := h.Exec(ctx, "ctr", "plugins", "ls")
		must(t, err)
		if !regexp.MustCompile(`(?m)^io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok\s*$`).MatchString(out) {
			t.Fatalf("CRI plugin not ok:\n%s", out)
		}
		// What containerd itself makes of the file haagent wrote for its version.
		dump, err := h.Exec(ctx, "containerd", "config", "dump")
		must(t, err)
		for _, want := range effective {
			if !strings.Contains(dump, want) {
				t.Errorf("containerd does not run with %s", want)
			}
		}
		hosts, err := h.ReadFile("/etc/containerd/certs.d/docker.io/hosts.toml")
		must(t, err)
		if !strings.Contains(string(hosts), `[host."http://lb1:5000"]`) {
			t.Errorf("docker.io hosts.toml:\n%s", hosts)
		}
	})

	t.Run("the CNI config follows flanneld's lease", func(t *testing.T) {
		conf, err := h.ReadFile("/etc/cni/net.d/10-haagent.conflist")
		must(t, err)
		if !strings.Contains(string(conf), `"subnet": "172.30.5.0/24"`) {
			t.Fatalf("conflist:\n%s", conf)
		}
		_, err = h.Shell(ctx, lease(6))
		must(t, err)
		waitFor(t, ctx, "the conflist rewritten for 172.30.6.0/24", time.Minute, func() error {
			conf, err := h.ReadFile("/etc/cni/net.d/10-haagent.conflist")
			if err != nil || !strings.Contains(string(conf), `"subnet": "172.30.6.0/24"`) {
				return fmt.Errorf("not yet: %v", err)
			}
			return nil
		})
	})

	t.Run("kernel settings for pods are set in the host's namespace", func(t *testing.T) {
		out, err := h.Exec(ctx, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/bridge/bridge-nf-call-iptables")
		must(t, err)
		if strings.Fields(out)[0] != "1" || strings.Fields(out)[1] != "1" {
			t.Errorf("ip_forward, bridge-nf-call-iptables = %q", out)
		}
		st, err := h.Exec(ctx, "haagent", "status")
		must(t, err)
		if !strings.Contains(st, "cgroups: hybrid") || !strings.Contains(st, "driver: cgroupfs") || !strings.Contains(st, "pod subnet: 172.30.") {
			t.Errorf("haagent status:\n%s", st)
		}
	})
}
