package hosts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/netlab"
)

// Host is one test host: an nspawn container with systemd as PID 1 in its own netns.
type Host struct {
	// Name is the host's hostname and its name in every host's /etc/hosts.
	Name string
	// Machine is the nspawn machine name and the name of its cgroups: the lab ID and Name.
	Machine string
	// NetNS is the named network namespace (/run/netns/NetNS) holding the host's eth0.
	NetNS string
	// IP is eth0's address, in the lab's subnet.
	IP netip.Addr
	// Root is the host's file system as seen from the machine (its overlay). /tmp and
	// /run inside the host are tmpfs and not visible here.
	Root string
	// Containers is set for a host that can run containers (HostOptions.Containers).
	Containers bool

	lab     *Lab
	dir     string
	node    *netlab.Node // the host's netns and link
	cgroups []string     // the host's own cgroup in each hierarchy it is tracked in

	mu          sync.Mutex  // guards the fields below
	proc        *nspawnProc // nil when not started or killed
	leader      int         // PID of the host's systemd, seen from the machine
	leaderStart string      // its start time, which tells it from a later process with its PID
	mounted     bool
	tornDown    bool
}

// nspawnProc is a host's systemd-nspawn: a child of this process, or, in a lab that
// Open reopened, a process that some earlier process started.
type nspawnProc struct {
	pid   int
	start string        // its start time, which tells it from a later process with its PID
	done  chan struct{} // closed when it has exited; nil when it is not our child
}

// exited reports whether the process is gone (or a zombie).
func (p *nspawnProc) exited() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	return startTime(p.pid) != p.start
}

// wait waits up to d for the process to exit and reports whether it did. Another
// process's child can't be waited for, so /proc is polled.
func (p *nspawnProc) wait(d time.Duration) bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(d):
			return false
		}
	}
	return await.Until(context.Background(), fmt.Sprintf("systemd-nspawn (PID %d) to exit", p.pid), d, func() error {
		if !p.exited() {
			return errors.New("it runs")
		}
		return nil
	}, await.Every(20*time.Millisecond)) == nil
}

// kill sends SIGKILL, unless the PID now belongs to another process.
func (p *nspawnProc) kill() {
	if !p.exited() {
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
}

// create makes the overlay, the identity files, the cgroups and the network of a new host.
func (h *Host) create() error {
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := h.mountOverlay(); err != nil {
		return err
	}
	id := make([]byte, 16)
	rand.Read(id)
	if err := h.WriteFile("/etc/hostname", []byte(h.Name+"\n"), 0o644); err != nil {
		return err
	}
	if err := h.WriteFile("/etc/machine-id", []byte(hex.EncodeToString(id)+"\n"), 0o444); err != nil {
		return err
	}
	if err := makeCgroups(h.cgroups); err != nil {
		return err
	}
	if h.Containers {
		if err := h.prepareContainers(); err != nil {
			return err
		}
	}
	return h.node.Create(context.Background())
}

// mountOverlay mounts the host's overlay at Root over the lab's base rootfs.
func (h *Host) mountOverlay() error {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", h.lab.base, filepath.Join(h.dir, "upper"), filepath.Join(h.dir, "work"))
	if err := syscall.Mount("overlay", h.Root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", h.Root, err)
	}
	h.mu.Lock()
	h.mounted = true
	h.mu.Unlock()
	return nil
}

// launcher moves itself into the host's own cgroups, then becomes systemd-nspawn. With no
// systemd on the machine, nspawn would otherwise put every payload into the root cgroup.
const launcher = `for d in $HAH_CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec systemd-nspawn "$@"`

// Start boots the host: systemd-nspawn on its overlay, in its netns. It returns once the
// host's PID 1 exists; WaitRunning waits for systemd to finish booting. A host that was
// killed, or whose nspawn died, can be started again, with its disk as it was; its link
// comes back up. nspawn runs in its own session and outlives this process.
func (h *Host) Start(ctx context.Context) error {
	err := h.start(ctx)
	return errors.Join(err, h.lab.save())
}

func (h *Host) start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tornDown {
		return errors.New("host is torn down")
	}
	if h.proc != nil {
		if !h.proc.exited() {
			return fmt.Errorf("host %s is already started", h.Name)
		}
		// Its nspawn died without Kill: clear what it left before booting again.
		if err := h.stopLocked(); err != nil {
			return err
		}
	}
	if !h.mounted {
		h.mu.Unlock()
		err := h.mountOverlay()
		h.mu.Lock()
		if err != nil {
			return err
		}
	}
	if err := h.node.Heal(); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(h.dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	args := []string{"-c", launcher, "launcher",
		"-D", h.Root, "-M", h.Machine, "-b", "--register=no", "--keep-unit",
		"--network-namespace-path=/run/netns/" + h.NetNS}
	env := append(slices.Clone(hostEnv), "HAH_CGROUPS="+strings.Join(h.cgroups, " "))
	if h.Containers {
		cargs, cenv, err := h.containerArgs()
		if err != nil {
			return err
		}
		args, env = append(args, cargs...), append(env, cenv...)
	} else {
		args = append(args, "--capability=CAP_NET_ADMIN")
	}
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-nspawn for %s: %w", h.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	pid := cmd.Process.Pid
	h.proc = &nspawnProc{pid: pid, start: startTime(pid), done: done}

	// The host's PID 1 is nspawn's child once it has exec'd systemd.
	err = await.Until(ctx, "the PID 1 (systemd) of host "+h.Name, BootTimeout, func() error {
		select {
		case <-done:
			return await.Stop(fmt.Errorf("systemd-nspawn exited at start:\n%s", tail(h.consoleLocked(), 20)))
		default:
		}
		c := systemdChild(pid)
		if c == 0 {
			return errors.New("systemd-nspawn has no systemd child yet")
		}
		h.leader, h.leaderStart = c, startTime(c)
		return nil
	}, await.Every(20*time.Millisecond))
	if err != nil && h.leader == 0 {
		select {
		case <-done:
			h.proc = nil
		default:
		}
	}
	return err
}

// systemdChild is the PID of the child of pid that runs systemd, or 0.
func systemdChild(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	for _, f := range strings.Fields(string(b)) {
		c, _ := strconv.Atoi(f)
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c))
		if strings.TrimSpace(string(comm)) == "systemd" {
			return c
		}
	}
	return 0
}

// Leader is the PID of the host's systemd as seen from the machine, or 0 when the host
// is not running.
func (h *Host) Leader() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.runningLocked() {
		return 0
	}
	return h.leader
}

// Running reports whether the host's nspawn and its systemd are alive. Unlike
// WaitRunning it does not ask systemd whether booting has finished.
func (h *Host) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runningLocked()
}

func (h *Host) runningLocked() bool {
	return h.proc != nil && !h.proc.exited() && h.leader > 0 && startTime(h.leader) == h.leaderStart
}

// healthy reports what is broken in a host; mounts are the machine's mount points.
func (h *Host) healthy(mounts map[string]bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tornDown {
		return nil
	}
	var errs []error
	if !netlab.Exists(h.NetNS) {
		errs = append(errs, fmt.Errorf("host %s: netns %s is missing", h.Name, h.NetNS))
	}
	if !mounts[h.Root] {
		errs = append(errs, fmt.Errorf("host %s: overlay %s is not mounted", h.Name, h.Root))
	}
	if err := h.node.LinkUp(context.Background()); err != nil {
		errs = append(errs, fmt.Errorf("host %s: link %s on the switch: %w", h.Name, h.node.Link, err))
	}
	if h.proc != nil && !h.runningLocked() {
		errs = append(errs, fmt.Errorf("host %s: systemd-nspawn (PID %d) or its systemd died without Kill:\n%s", h.Name, h.proc.pid, tail(h.consoleLocked(), 10)))
	}
	return errors.Join(errs...)
}

// WaitRunning polls `systemctl is-system-running` until it says running or degraded.
// It gives up after BootTimeout, or when ctx ends.
func (h *Host) WaitRunning(ctx context.Context) error {
	err := await.Until(ctx, "host "+h.Name+" to finish booting", BootTimeout, func() error {
		out, err := h.Exec(ctx, "systemctl", "is-system-running")
		if errors.Is(err, ErrNotRunning) {
			return await.Stop(fmt.Errorf("%w:\n%s", err, tail(h.Console(), 20)))
		}
		if st := strings.TrimSpace(out); st != "running" && st != "degraded" {
			return fmt.Errorf("systemctl is-system-running says %q", st)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotRunning) {
		jctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		jobs, _ := h.Exec(jctx, "systemctl", "list-jobs", "--no-legend")
		cancel()
		return fmt.Errorf("%w; jobs:\n%s", err, jobs)
	}
	return err
}

// Command returns a command that runs inside the host, in all of its namespaces, with a
// clean environment. It fails to start if the host is not running.
func (h *Host) Command(ctx context.Context, args ...string) *exec.Cmd {
	leader := h.Leader()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(leader), "-a"}, args...)...)
	cmd.Env = slices.Clone(hostEnv)
	return cmd
}

// Exec runs a command inside the host and returns its combined output. The error names
// the command and carries the output.
func (h *Host) Exec(ctx context.Context, args ...string) (string, error) {
	if h.Leader() == 0 {
		return "", ErrNotRunning
	}
	b, err := h.Command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("%s: %s: %w\n%s", h.Name, strings.Join(args, " "), err, tail(string(b), 30))
	}
	return string(b), nil
}

// Shell runs script with sh -c inside the host.
func (h *Host) Shell(ctx context.Context, script string) (string, error) {
	return h.Exec(ctx, "/bin/sh", "-c", script)
}

// hostPath maps an absolute path inside the host to the machine, refusing the file
// systems that the host mounts over its overlay.
func (h *Host) hostPath(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s: want an absolute path inside the host", p)
	}
	p = filepath.Clean(p)
	hidden := []string{"/tmp", "/run", "/dev", "/proc", "/sys"}
	if h.Containers {
		hidden = append(hidden, containerdDir)
	}
	for _, d := range hidden {
		if p == d || strings.HasPrefix(p, d+"/") {
			return "", fmt.Errorf("%s: %s is not on the host's disk (tmpfs, a bind mount or an API file system inside the host); use /var/tmp or /usr/local", p, d)
		}
	}
	return filepath.Join(h.Root, p), nil
}

// WriteFile writes a file into the host's disk, atomically, making its parent dirs.
func (h *Host) WriteFile(dest string, data []byte, mode os.FileMode) error {
	p, err := h.hostPath(dest)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(p, data, mode)
}

// CopyIn copies a file of the machine into the host at dest, keeping its mode. dest must
// be on the host's disk: not /tmp, which is a tmpfs inside the host.
func (h *Host) CopyIn(src, dest string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return h.WriteFile(dest, b, st.Mode().Perm())
}

// ReadFile reads a file from the host's disk.
func (h *Host) ReadFile(p string) ([]byte, error) {
	hp, err := h.hostPath(p)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(hp)
}

// Console returns what the host printed on its console (nspawn's output) so far, over
// all its boots.
func (h *Host) Console() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.consoleLocked()
}

func (h *Host) consoleLocked() string {
	b, _ := os.ReadFile(filepath.Join(h.dir, "console.log"))
	return string(b)
}

// Kill crashes the host like pulling its power: kill -9 of its PID 1 takes down every
// process in its PID namespace, and its link goes down so that peers get silence, not
// resets. Start boots it again.
func (h *Host) Kill() error {
	h.mu.Lock()
	err := errors.Join(h.Blackhole(), h.stopLocked())
	h.mu.Unlock()
	return errors.Join(err, h.lab.save())
}

// Halt shuts the host down as `vagrant halt` does (an ACPI shutdown, not --force): its
// systemd stops every unit in order (the kube units before haagent, which they are
// After=), then it powers off, and its link goes down as a powered-off VM's would. A
// host still up after timeout is killed. Start boots it again.
func (h *Host) Halt(ctx context.Context, timeout time.Duration) error {
	if _, err := h.Exec(ctx, "systemctl", "poweroff", "--no-block"); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	if h.proc != nil && !h.proc.wait(timeout) {
		errs = append(errs, fmt.Errorf("host %s: not down %s after systemctl poweroff; killing it", h.Name, timeout))
	}
	errs = append(errs, h.Blackhole(), h.stopLocked())
	return errors.Join(append(errs, h.lab.save())...)
}

// stopLocked kills the host's processes and waits for nspawn to exit.
func (h *Host) stopLocked() error {
	if h.proc == nil {
		return nil
	}
	if h.leader > 0 && startTime(h.leader) == h.leaderStart {
		syscall.Kill(h.leader, syscall.SIGKILL)
	}
	var errs []error
	if !h.proc.wait(10 * time.Second) {
		h.proc.kill()
		if !h.proc.wait(10 * time.Second) {
			errs = append(errs, fmt.Errorf("host %s: systemd-nspawn (PID %d) survives SIGKILL", h.Name, h.proc.pid))
		} else {
			errs = append(errs, fmt.Errorf("host %s: systemd-nspawn did not exit after its PID 1 died; killed it", h.Name))
		}
	}
	h.proc, h.leader, h.leaderStart = nil, 0, ""
	// Anything left in the host's cgroups (nothing, normally) goes too.
	errs = append(errs, killCgroups(h.cgroups))
	return errors.Join(errs...)
}

// Blackhole takes the host's link down on the switch side: its packets vanish and
// nobody gets a reset.
func (h *Host) Blackhole() error { return h.node.Blackhole() }

// Heal brings the host's link back up.
func (h *Host) Heal() error { return h.node.Heal() }

// DialContext connects from inside the host's network namespace, so that the test
// reaches the lab without any route from the machine's own; it fits net/http's
// Transport.DialContext. addr must be an IP literal with a port.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return h.node.DialContext(ctx, network, addr)
}

func (h *Host) isTornDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tornDown
}

// Teardown kills every process of the host, unmounts its overlay, deletes its netns
// and its cgroups and removes its dir. Safe to call twice. The lab's state file drops
// it, so Open does not bring it back.
func (h *Host) Teardown() error {
	err := h.teardown()
	return errors.Join(err, h.lab.save())
}

func (h *Host) teardown() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tornDown {
		return nil
	}
	h.tornDown = true
	errs := []error{h.stopLocked(), killCgroups(h.cgroups)}
	for _, d := range h.cgroups {
		errs = append(errs, removeCgroup(d))
	}
	if h.mounted || mountPoints()[h.Root] {
		removeNspawnLock(h.Root)
		errs = append(errs, unmount(h.Root))
		h.mounted = false
	}
	errs = append(errs, h.node.Delete())
	// nspawn removes its propagation dir when the container dies; this is for a
	// nspawn that was itself killed.
	os.RemoveAll(filepath.Join(nspawnRun, "propagate", h.Machine))
	errs = append(errs, removeTree(h.dir))
	return errors.Join(errs...)
}

// unmount unmounts mp, lazily if it stays busy.
func unmount(mp string) error {
	err := await.Until(context.Background(), "the unmount of "+mp, time.Second, func() error {
		if err := syscall.Unmount(mp, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			return err
		}
		return nil // EINVAL: not mounted
	})
	if err != nil {
		if err2 := syscall.Unmount(mp, syscall.MNT_DETACH); err2 != nil {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return nil
}
