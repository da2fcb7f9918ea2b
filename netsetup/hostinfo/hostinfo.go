// Package hostinfo reads the facts about this host that a node's config depends on:
// its short hostname and an interface's IPv4 address (a node's default name and
// address), the cgroup mode, the installed containerd's version, where the CNI plugins
// live, and whether this process may lower oom_score_adj. It only reads.
package hostinfo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CgroupMode is how the host mounts its cgroups.
type CgroupMode string

// The cgroup modes, as systemd names them.
const (
	// CgroupV2 is the unified hierarchy only (cgroup2 at /sys/fs/cgroup).
	CgroupV2 CgroupMode = "v2"
	// CgroupHybrid is v1 controllers with a cgroup2 tree beside them at /sys/fs/cgroup/unified.
	CgroupHybrid CgroupMode = "hybrid"
	// CgroupV1 is v1 controllers only.
	CgroupV1 CgroupMode = "v1"
	// CgroupUnknown means /sys/fs/cgroup could not be read.
	CgroupUnknown CgroupMode = "unknown"
)

// IsV1 reports whether the kubelet would use the v1 cgroup manager here.
func (m CgroupMode) IsV1() bool { return m == CgroupV1 || m == CgroupHybrid }

// DetectCgroupMode tells the mode from the file system types under root's /sys/fs/cgroup,
// as the kubelet and runc do (statfs magic, not /proc/mounts).
func DetectCgroupMode(root string) CgroupMode {
	dir := filepath.Join(root, "sys/fs/cgroup")
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return CgroupUnknown
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return CgroupV2
	}
	if st.Type != unix.TMPFS_MAGIC {
		return CgroupUnknown // v1 controllers are mounted under a tmpfs at /sys/fs/cgroup
	}
	if err := unix.Statfs(filepath.Join(dir, "unified"), &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return CgroupHybrid
	}
	return CgroupV1
}

// DefaultCNIBinDirs are where distributions put the standard CNI plugins: upstream's
// tarball and most packages use /opt/cni/bin, Debian and Ubuntu /usr/lib/cni.
var DefaultCNIBinDirs = []string{"/opt/cni/bin", "/usr/lib/cni"}

// CNIBinDir is the first of DefaultCNIBinDirs under root that holds the bridge plugin,
// or the first of them when none does (the runtime then reports the missing plugin).
func CNIBinDir(root string) string {
	for _, d := range DefaultCNIBinDirs {
		if fi, err := os.Stat(filepath.Join(root, d, "bridge")); err == nil && !fi.IsDir() {
			return d
		}
	}
	return DefaultCNIBinDirs[0]
}

var versionRE = regexp.MustCompile(`\bv?(\d+)\.(\d+)\.(\d+)`)

// ContainerdVersion runs `containerd --version` and returns its major and minor version.
func ContainerdVersion(ctx context.Context, binary string) (major, minor int, err error) {
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("%s --version: %w: %s", binary, err, strings.TrimSpace(string(out)))
	}
	return ParseContainerdVersion(string(out))
}

// ParseContainerdVersion reads the version from `containerd --version`, e.g.
// "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1" or
// "containerd containerd.io v2.1.4 75cb2b7...".
func ParseContainerdVersion(out string) (major, minor int, err error) {
	fields := strings.Fields(out)
	// The first field is the program and the second the module path; a version is after them.
	for i, f := range fields {
		if i < 2 {
			continue
		}
		if m := versionRE.FindStringSubmatch(f); m != nil && strings.Index(f, m[0]) == 0 {
			major, _ = strconv.Atoi(m[1])
			minor, _ = strconv.Atoi(m[2])
			return major, minor, nil
		}
	}
	return 0, 0, fmt.Errorf("no version in %q", strings.TrimSpace(out))
}

// errNoStatus means /proc/self/status had no CapEff line.
var errNoStatus = errors.New("no CapEff in /proc/self/status")

// CanRaiseOOMPriority reports whether this process holds CAP_SYS_RESOURCE, which runc
// needs to give a container a negative oom_score_adj (the pause container asks for -998).
// In a container without it (an nspawn host, a rootless setup) the runtime must be told
// to restrict oom_score_adj, as containerd does under a user namespace.
func CanRaiseOOMPriority() (bool, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false, fmt.Errorf("CapEff %q: %w", v, err)
		}
		return caps&(1<<unix.CAP_SYS_RESOURCE) != 0, nil
	}
	return false, errNoStatus
}
