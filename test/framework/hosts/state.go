package hosts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/haagent/haagent/test/framework/netlab"
)

// stateFile, in a lab's run dir, holds what Open needs to rebuild the lab in another
// process. It is rewritten, atomically, whenever a host is added, started, killed or
// torn down.
const stateFile = "state.json"

type labState struct {
	ID         string       `json:"id"`
	Switch     string       `json:"switch"`
	Subnet     netip.Prefix `json:"subnet"`
	Base       string       `json:"base"`
	Persistent bool         `json:"persistent"`
	MadeRun    []string     `json:"made_run,omitempty"`
	Hosts      []hostState  `json:"hosts"`
	Nodes      []nodeState  `json:"nodes,omitempty"`
}

type nodeState struct {
	Name string     `json:"name"`
	IP   netip.Addr `json:"ip"`
}

type hostState struct {
	Name       string     `json:"name"`
	IP         netip.Addr `json:"ip"`
	Containers bool       `json:"containers,omitempty"`
	Cgroups    []string   `json:"cgroups"`
	// The host's nspawn and systemd, each with its start time so that a later process
	// with the same PID is not taken for them; zero when the host is not started.
	NspawnPID   int    `json:"nspawn_pid,omitempty"`
	NspawnStart string `json:"nspawn_start,omitempty"`
	LeaderPID   int    `json:"leader_pid,omitempty"`
	LeaderStart string `json:"leader_start,omitempty"`
}

// save writes the lab's state file. It must not be called with the lab's or a host's
// mu held.
func (l *Lab) save() error {
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	st := labState{ID: l.ID, Switch: l.Switch, Subnet: l.Subnet, Base: l.base, Persistent: l.Persistent, MadeRun: l.madeRun, Hosts: []hostState{}}
	hs := l.hosts
	for _, n := range l.nodes {
		st.Nodes = append(st.Nodes, nodeState{Name: n.Name, IP: n.IP})
	}
	l.mu.Unlock()
	for _, h := range hs {
		h.mu.Lock()
		if !h.tornDown {
			s := hostState{Name: h.Name, IP: h.IP, Containers: h.Containers, Cgroups: h.cgroups}
			if h.proc != nil {
				s.NspawnPID, s.NspawnStart = h.proc.pid, h.proc.start
				s.LeaderPID, s.LeaderStart = h.leader, h.leaderStart
			}
			st.Hosts = append(st.Hosts, s)
		}
		h.mu.Unlock()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(l.dir, stateFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save the state of lab %s: %w", l.ID, err)
	}
	return nil
}

// Open rebuilds a lab, made by Create in this or an earlier process, from its state on
// disk: its hosts with their names, addresses and options, and the nspawn of each
// started host. Exec, Kill, Start, Blackhole, Heal and Teardown then work as in the
// process that made it. Open succeeds on a broken lab too, so that it can be torn
// down: call Healthy before using it. Only one process at a time should change a lab.
func Open(ctx context.Context, id string) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("test hosts need root")
	}
	if err := checkID(id); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := filepath.Join(DefaultRunDir, id)
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("open lab %s: %w (Remove clears a lab without state)", id, err)
	}
	var st labState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("open lab %s: %s: %w (Remove clears it)", id, stateFile, err)
	}
	if st.ID != id {
		return nil, fmt.Errorf("open lab %s: its state names lab %q", id, st.ID)
	}
	l := &Lab{ID: id, Switch: st.Switch, Subnet: st.Subnet, Persistent: st.Persistent,
		sw: &netlab.Switch{NetNS: st.Switch}, base: st.Base, dir: dir, logf: func(string, ...any) {}, madeRun: st.MadeRun}
	for _, s := range st.Nodes {
		l.nodes = append(l.nodes, l.newNode(s.Name, s.IP))
	}
	mounts := mountPoints()
	for _, s := range st.Hosts {
		h := l.newHost(s.Name, s.IP, s.Containers)
		h.cgroups = s.Cgroups
		h.mounted = mounts[h.Root]
		if s.NspawnPID > 0 {
			h.proc = &nspawnProc{pid: s.NspawnPID, start: s.NspawnStart}
			h.leader, h.leaderStart = s.LeaderPID, s.LeaderStart
		}
		l.hosts = append(l.hosts, h)
	}
	return l, nil
}

// Remove tears down the lab with this ID whatever shape it is in: with its state file
// it is opened and torn down; without one, what is named after it goes (the hosts found
// in its run dir, with their processes, cgroups, overlays and netns, and its switch).
func Remove(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	var errs []error
	if l, err := Open(ctx, id); err == nil {
		errs = append(errs, l.Teardown())
	}
	return errors.Join(append(errs, removeLeftovers(id))...)
}

var testIDRE = regexp.MustCompile(`^` + Prefix + `[0-9a-f]{6}$`)

// checkID refuses what is not a lab's ID, so that Open and Remove never touch names
// that some other program made.
func checkID(id string) error {
	if !testIDRE.MatchString(id) && !persistentRE.MatchString(id) {
		return fmt.Errorf("lab ID %q: want %q and 6 hex digits, or %q and 1-16 of [a-z0-9-]", id, Prefix, PersistentPrefix)
	}
	return nil
}

// removeLeftovers removes what a lab whose state is lost left: its hosts and nodes are
// the dirs in its run dir, and everything of one is named lab ID + "-" + its name.
// Names are matched whole: the ID "hal-a" is a prefix of the lab "hal-a-b"'s names.
func removeLeftovers(id string) error {
	dir := filepath.Join(DefaultRunDir, id)
	entries, _ := os.ReadDir(dir)
	var machines []string
	for _, e := range entries {
		if e.IsDir() {
			machines = append(machines, id+"-"+e.Name())
		}
	}
	var cgs []string
	for _, m := range machines {
		for _, d := range allCgroupDirs(m) {
			if _, err := os.Stat(d); err == nil {
				cgs = append(cgs, d)
			}
		}
	}
	var all []error
	all = append(all, killCgroups(cgs))
	for _, cg := range cgs {
		all = append(all, removeCgroup(cg))
	}
	for _, mp := range mountsUnder(dir) {
		removeNspawnLock(mp)
		all = append(all, unmount(mp))
	}
	for _, ns := range append(machines, id+"-sw") {
		all = append(all, netlab.DeleteNetNS(ns))
		os.RemoveAll(filepath.Join(nspawnRun, "propagate", ns))
	}
	made, _ := os.ReadFile(filepath.Join(dir, "made-run"))
	all = append(all, removeTree(dir))
	removeRunDirs(strings.Fields(string(made)))
	return errors.Join(all...)
}

// sweep removes what test labs of dead processes left: their cgroups (and so their
// hosts' processes), overlays, netns and run dirs. A lab whose owner still runs is left
// alone, and so is every persistent lab.
func sweep(logf func(string, ...any)) error {
	entries, err := os.ReadDir(DefaultRunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || !testIDRE.MatchString(id) {
			continue
		}
		dir := filepath.Join(DefaultRunDir, id)
		if b, err := os.ReadFile(filepath.Join(dir, "owner")); err == nil {
			var pid int
			var start string
			fmt.Sscan(string(b), &pid, &start)
			if pid > 0 && startTime(pid) == start {
				continue // still running
			}
		} else if info, err := e.Info(); err == nil && time.Since(info.ModTime()) < time.Minute {
			continue // being made right now
		}
		logf("hosts: removing leftovers of killed run %s", id)
		errs = append(errs, removeLeftovers(id))
	}
	return errors.Join(errs...)
}

// selfOwner identifies this process across PID reuse: its PID and start time.
func selfOwner() string {
	return fmt.Sprintf("%d %s\n", os.Getpid(), startTime(os.Getpid()))
}

// startTime is a process's start time from /proc, or "" if it is gone or a zombie.
func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name may hold spaces; the fields after its closing paren are fixed.
	s := string(b)
	s = s[strings.LastIndexByte(s, ')')+1:]
	f := strings.Fields(s)
	if len(f) < 20 || f[0] == "Z" {
		return "" // a zombie is as dead as a missing process
	}
	return f[19] // field 22 of stat: starttime
}

// writeFileAtomic replaces path with data: a reader sees the old file or the new one,
// never a part, and the new one survives a crash once this returns.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".hah-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err2 := tmp.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// mountPoints is the set of the machine's mount points.
func mountPoints() map[string]bool {
	mps := map[string]bool{}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 5 {
			mps[unescapeMount(f[4])] = true
		}
	}
	return mps
}
