package hosts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haagent/haagent/test/framework/await"
)

// cgroupRoot is where the machine mounts its cgroup hierarchies.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupRoots are the hierarchies a plain host's processes are tracked in: the hybrid
// layout's unified and name=systemd trees, or a pure cgroup2 mount.
func cgroupRoots() []string {
	var roots []string
	for _, d := range []string{cgroupRoot + "/unified", cgroupRoot + "/systemd"} {
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			roots = append(roots, d)
		}
	}
	if len(roots) == 0 {
		if _, err := os.Stat(cgroupRoot + "/cgroup.controllers"); err == nil {
			roots = append(roots, cgroupRoot)
		}
	}
	return roots
}

// cgroupMount is one hierarchy mounted at /sys/fs/cgroup/NAME.
type cgroupMount struct {
	Dir string // the mount point, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup/cpu,cpuacct
	// V1 is set for v1 resource controllers; name=systemd and the cgroup2 tree are
	// mounted into a host by nspawn itself.
	V1 bool
}

// cgroupMounts lists the hierarchies mounted directly below /sys/fs/cgroup, from
// /proc/self/mountinfo: a combined mount (cpu,cpuacct) is one entry. A host that runs
// containers needs the hybrid layout's v1 controllers, so their absence is an error.
func cgroupMounts() ([]cgroupMount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var ms []cgroupMount
	hasMemory := false
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		mp := unescapeMount(f[4])
		if filepath.Dir(mp) != cgroupRoot {
			continue
		}
		switch g[0] {
		case "cgroup2":
			ms = append(ms, cgroupMount{Dir: mp})
		case "cgroup":
			opts := strings.Split(g[2], ",")
			v1 := !slices.ContainsFunc(opts, func(o string) bool { return strings.HasPrefix(o, "name=") })
			hasMemory = hasMemory || slices.Contains(opts, "memory")
			ms = append(ms, cgroupMount{Dir: mp, V1: v1})
		}
	}
	if !hasMemory {
		return nil, errors.New("hosts that run containers need cgroup v1 controllers mounted below /sys/fs/cgroup (the hybrid layout of these machines); found no memory controller")
	}
	return ms, nil
}

// cgroupLinks are the symlinks below /sys/fs/cgroup that name a combined mount, e.g.
// cpu -> cpu,cpuacct, as name -> target.
func cgroupLinks() map[string]string {
	entries, _ := os.ReadDir(cgroupRoot)
	links := map[string]string{}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		if t, err := os.Readlink(filepath.Join(cgroupRoot, e.Name())); err == nil && !strings.Contains(t, "/") {
			links[e.Name()] = t
		}
	}
	return links
}

// allCgroupDirs is every dir a host named machine may have a cgroup in.
func allCgroupDirs(machine string) []string {
	var dirs []string
	for _, r := range cgroupRoots() {
		dirs = append(dirs, filepath.Join(r, machine))
	}
	ms, _ := cgroupMounts()
	for _, m := range ms {
		if d := filepath.Join(m.Dir, machine); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// makeCgroups makes a host's cgroups. A new cpuset has no CPUs and no memory nodes,
// and a process can't join it until it has, so those are copied from the parent.
func makeCgroups(dirs []string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			own := filepath.Join(d, f)
			cur, err := os.ReadFile(own)
			if err != nil || strings.TrimSpace(string(cur)) != "" {
				continue // not a cpuset, or already set
			}
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				return fmt.Errorf("read the parent's %s for %s: %w", f, d, err)
			}
			if err := os.WriteFile(own, parent, 0o644); err != nil {
				return fmt.Errorf("set %s: %w", own, err)
			}
		}
	}
	return nil
}

// killCgroups sends SIGKILL to every process in these cgroup trees until they are empty.
// Frozen cgroups (a paused container) are thawed first: a frozen process never dies.
func killCgroups(dirs []string) error {
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.Name() == "freezer.state" {
				os.WriteFile(p, []byte("THAWED"), 0o644)
			}
			return nil
		})
	}
	return await.Until(context.Background(), fmt.Sprintf("the processes in %v to die of SIGKILL", dirs), 10*time.Second, func() error {
		var pids []int
		for _, d := range dirs {
			pids = append(pids, cgroupPIDs(d)...)
		}
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		return fmt.Errorf("processes %v are left", pids)
	})
}

// cgroupPIDs lists the processes in a cgroup and all cgroups below it.
func cgroupPIDs(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil && n > 0 {
				pids = append(pids, n)
			}
		}
		return nil
	})
	return pids
}

// removeCgroup removes a cgroup and the cgroups below it, deepest first.
func removeCgroup(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for _, d := range slices.Backward(dirs) {
		if err := rmdirCgroup(d); err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// rmdirCgroup removes one empty cgroup. A cgroup whose last process was just killed
// can stay busy for a moment while the kernel frees it.
func rmdirCgroup(d string) error {
	return await.Until(context.Background(), "the kernel to free cgroup "+d, time.Second, func() error {
		err := syscall.Rmdir(d)
		switch {
		case err == nil || errors.Is(err, syscall.ENOENT):
			return nil
		case errors.Is(err, syscall.EBUSY):
			return err
		}
		return await.Stop(err)
	}, await.Every(20*time.Millisecond))
}
