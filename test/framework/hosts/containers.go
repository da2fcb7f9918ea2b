package hosts

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// containerdDir is containerd's state dir inside a host. Its overlayfs snapshotter
// can't use the host's overlay root as an upper dir (overlay on overlay), so a host
// that runs containers gets a plain dir of its run dir bound there.
const containerdDir = "/var/lib/containerd"

// kubeletSysctls are the kernel tunables that the kubelet sets at start when they differ
// (k8s pkg/kubelet/cm, setupKernelTunables). They are machine-wide, so a host shows
// files holding these values in their place: the kubelet finds them set and writes
// nothing.
var kubeletSysctls = []struct{ key, value string }{
	{"vm.overcommit_memory", "1"},
	{"vm.panic_on_oom", "0"},
	{"kernel.panic", "10"},
	{"kernel.panic_on_oops", "1"},
	{"kernel.keys.root_maxkeys", "1000000"},
	{"kernel.keys.root_maxbytes", "25000000"},
}

// Paths inside a host that runs containers, on its overlay.
const (
	sysctlDir  = "/usr/local/lib/hah-sysctl"
	setupPath  = "/usr/local/libexec/hah-container-host"
	setupUnit  = "hah-container-host.service"
	unitDir    = "/etc/systemd/system"
	setupWants = unitDir + "/sysinit.target.wants/" + setupUnit
)

// setupUnitText runs the setup script early in boot, before anything that reads the
// tunables or the cgroup tree starts.
const setupUnitText = `# Made by the test-host harness (test/framework/hosts) for a host that runs containers.
[Unit]
Description=Kernel tunables and cgroup links for containers, for this host only
DefaultDependencies=no
Before=sysinit.target containerd.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=` + setupPath + `

[Install]
WantedBy=sysinit.target
`

// setupScript binds each value file over its /proc/sys file, read-only: /proc/sys stays
// read-only (making it writable would let the kubelet set panic_on_oops on the whole
// machine), and a write to one of these files fails as it would without them.
func setupScript(links map[string]string) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# Made by the test-host harness (test/framework/hosts) for a host that runs containers.
set -eu
for f in ` + sysctlDir + `/*; do
	p=/proc/sys/$(basename "$f" | tr . /)
	mount --bind "$f" "$p"
	mount -o remount,bind,ro "$p"
done
`)
	// nspawn binds the machine's combined mounts (cpu,cpuacct) under their own names;
	// the links to them are the machine's, for tools that look for cpu or cpuacct.
	names := make([]string, 0, len(links))
	for n := range links {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "[ -e /sys/fs/cgroup/%s ] || ln -s %s /sys/fs/cgroup/%s\n", n, links[n], n)
	}
	return b.String()
}

// prepareContainers writes the setup unit of a host that runs containers into its
// overlay, enabled, and makes the dir that becomes its /var/lib/containerd.
func (h *Host) prepareContainers() error {
	if err := os.MkdirAll(h.ContainerdDir(), 0o711); err != nil {
		return err
	}
	for _, s := range kubeletSysctls {
		if err := h.WriteFile(sysctlDir+"/"+s.key, []byte(s.value+"\n"), 0o444); err != nil {
			return err
		}
	}
	if err := h.WriteFile(setupPath, []byte(setupScript(cgroupLinks())), 0o755); err != nil {
		return err
	}
	if err := h.WriteFile(unitDir+"/"+setupUnit, []byte(setupUnitText), 0o644); err != nil {
		return err
	}
	wants, err := h.hostPath(setupWants)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(wants), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(unitDir+"/"+setupUnit, wants); err != nil && !os.IsExist(err) {
		return fmt.Errorf("enable %s: %w", setupUnit, err)
	}
	return nil
}

// containerArgs are the nspawn arguments and environment of a host that runs
// containers (pods-on-minions.md, "A pod ran here").
func (h *Host) containerArgs() (args, env []string, err error) {
	ms, err := cgroupMounts()
	if err != nil {
		return nil, nil, err
	}
	args = []string{
		"--capability=CAP_NET_ADMIN,CAP_SYSLOG",
		// nspawn's seccomp filter refuses keyctl, and runc then fails to join a
		// session keyring.
		"--system-call-filter=@keyring",
		// the kubelet's OOM watcher reads the kernel log
		"--bind-ro=/dev/kmsg",
		// nspawn mounts v1 controllers read-only, but skips a path that is already a
		// mount point: the host's own cgroup of each controller, bound writable.
		"--tmpfs=/sys/fs/cgroup:mode=755",
	}
	for _, m := range ms {
		if m.V1 {
			args = append(args, fmt.Sprintf("--bind=%s:%s", filepath.Join(m.Dir, h.Machine), m.Dir))
		}
	}
	args = append(args, "--bind="+h.ContainerdDir()+":"+containerdDir)
	// /proc/sys/net is per netns, so it can be writable (the portmap plugin sets
	// route_localnet); the rest of /proc/sys stays read-only.
	env = []string{"SYSTEMD_NSPAWN_API_VFS_WRITABLE=network"}
	return args, env, nil
}

// ContainerdDir is where a containers host's /var/lib/containerd lives on the machine,
// a plain dir of its run dir, or "" for a plain host. Host.ReadFile and WriteFile
// refuse paths below /var/lib/containerd: they would reach the overlay under the mount.
func (h *Host) ContainerdDir() string {
	if !h.Containers {
		return ""
	}
	return filepath.Join(h.dir, "containerd")
}
