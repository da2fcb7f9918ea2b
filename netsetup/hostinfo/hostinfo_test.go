package hostinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseContainerdVersion(t *testing.T) {
	for out, want := range map[string][2]int{
		"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n": {1, 6},
		"containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-3\n":    {1, 7},
		"containerd containerd.io v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376": {2, 1},
		"containerd github.com/containerd/containerd/v2 v2.4.0 abcdef":             {2, 4},
	} {
		major, minor, err := ParseContainerdVersion(out)
		if err != nil || major != want[0] || minor != want[1] {
			t.Errorf("ParseContainerdVersion(%q) = %d.%d, %v; want %d.%d", out, major, minor, err, want[0], want[1])
		}
	}
	for _, bad := range []string{"", "containerd", "containerd github.com/containerd/containerd dev"} {
		if _, _, err := ParseContainerdVersion(bad); err == nil {
			t.Errorf("ParseContainerdVersion(%q): want an error", bad)
		}
	}
}

func TestDetectCgroupMode(t *testing.T) {
	// This machine's mode, read the way runc does, must be one of the known ones.
	if m := DetectCgroupMode("/"); m == CgroupUnknown {
		t.Fatalf("cgroup mode of / unknown")
	}
	// A root with no cgroup file system at all.
	// Not t.TempDir(): /tmp may be a tmpfs, which is what v1's /sys/fs/cgroup is.
	empty, err := os.MkdirTemp(".", "root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(empty) })
	if err := os.MkdirAll(filepath.Join(empty, "sys/fs/cgroup"), 0o755); err != nil {
		t.Fatal(err)
	}
	if m := DetectCgroupMode(empty); m != CgroupUnknown {
		t.Fatalf("a plain dir reads as %s", m)
	}
	if DetectCgroupMode(filepath.Join(t.TempDir(), "missing")) != CgroupUnknown {
		t.Fatalf("a missing root is not unknown")
	}
}

func TestCNIBinDir(t *testing.T) {
	root := t.TempDir()
	if got := CNIBinDir(root); got != "/opt/cni/bin" {
		t.Fatalf("no plugins: %s, want /opt/cni/bin", got)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/cni"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/cni/bridge"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := CNIBinDir(root); got != "/usr/lib/cni" {
		t.Fatalf("Debian's plugins: %s, want /usr/lib/cni", got)
	}
}
