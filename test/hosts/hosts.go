// Package hosts boots real test hosts on one machine: a Debian rootfs under
// systemd-nspawn with systemd as PID 1, each host in its own network namespace, all on
// one bridge that lives in a "switch" namespace. The facts it builds on are in the
// shared notes (test-hosts.md); everything it makes is named with the lab's ID
// ("hah-" + random) and torn down by Teardown, or by the next lab if a run was killed.
package hosts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// Prefix starts the name of everything a lab makes: netns, cgroups, machine names
	// and its run dir. Another harness (test/netns) uses "hat-".
	Prefix = "hah-"
	// DefaultRunDir holds each lab's overlays and console logs. Not /tmp: the upper
	// dirs must survive as long as the lab, and may grow.
	DefaultRunDir = "/var/tmp/haagent-hosts"
	// BootTimeout bounds Boot's wait for a host to reach running.
	BootTimeout = 60 * time.Second
	// firstHostIP is the first host's address; the next hosts count up from it.
	firstHostIP = "10.77.0.10"
	// SubnetBits is the prefix length of the hosts' addresses.
	SubnetBits = 24
)

// nspawnRun is where systemd-nspawn keeps its locks and propagation dirs.
const nspawnRun = "/run/systemd/nspawn"

// hostEnv is the environment of every command run inside a host: nothing of the test
// process leaks in.
var hostEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}

// ErrNotRunning is returned by Exec and friends when the host's systemd is not up.
var ErrNotRunning = errors.New("host is not running")

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,11}$`)

// Lab is one run's hosts and the switch that connects them.
type Lab struct {
	// ID names everything this lab makes: "hah-" and 6 hex digits.
	ID string
	// Switch is the netns holding the bridge br0 that every host's link is attached to.
	Switch string

	base string // read-only rootfs, the overlays' lower dir
	dir  string // DefaultRunDir/ID
	logf func(string, ...any)
	// madeRun lists the nspawn and systemd run dirs that did not exist before this lab.
	madeRun []string

	mu     sync.Mutex // guards the fields below
	hosts  []*Host
	closed bool
}

// New makes a lab for a test, skipping the test when not run as root, and tears the lab
// down when the test ends, failed or not.
func New(t testing.TB) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("test hosts need root (netns, overlayfs, systemd-nspawn): run as root, e.g. via 'make test' in CI")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := NewLab(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			hs := slices.Clone(l.hosts)
			l.mu.Unlock()
			for _, h := range hs {
				t.Logf("--- console of %s (%s) ---\n%s", h.Name, h.Machine, tail(h.Console(), 40))
			}
		}
		if err := l.Teardown(); err != nil {
			t.Errorf("teardown of lab %s: %v", l.ID, err)
		}
	})
	return l
}

// NewLab checks the machine, builds or reuses the rootfs, removes what killed runs left
// behind, and makes the switch. logf reports slow steps (the first rootfs build).
func NewLab(ctx context.Context, logf func(string, ...any)) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("test hosts need root")
	}
	var missing []string
	for _, tool := range []string{"systemd-nspawn", "nsenter", "ip", "tar", "zstd", "debootstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("test hosts need %s: run scripts/deps.sh (make test does)", strings.Join(missing, ", "))
	}
	if len(cgroupRoots()) == 0 {
		return nil, errors.New("test hosts need a cgroup hierarchy at /sys/fs/cgroup/unified, /sys/fs/cgroup/systemd or /sys/fs/cgroup")
	}
	if err := sweep(logf); err != nil {
		return nil, fmt.Errorf("remove leftovers of killed runs: %w", err)
	}
	base, err := Rootfs(ctx, logf)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 3)
	rand.Read(id)
	l := &Lab{ID: Prefix + hex.EncodeToString(id), base: base, logf: logf}
	l.Switch = l.ID + "-sw"
	l.dir = filepath.Join(DefaultRunDir, l.ID)
	for _, d := range []string{"/run/systemd", nspawnRun} {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			l.madeRun = append(l.madeRun, d)
		}
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return nil, err
	}
	// The owner file lets a later lab tell that this run died and clean up after it;
	// made-run tells it which of nspawn's run dirs this run made.
	if err := os.WriteFile(filepath.Join(l.dir, "owner"), []byte(selfOwner()), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.dir, "made-run"), []byte(strings.Join(l.madeRun, "\n")), 0o644); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"netns", "add", l.Switch},
		{"-n", l.Switch, "link", "set", "lo", "up"},
		{"-n", l.Switch, "link", "add", "br0", "type", "bridge"},
		{"-n", l.Switch, "link", "set", "br0", "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return nil, errors.Join(err, l.Teardown())
		}
	}
	return l, nil
}

// Hosts returns the lab's hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hosts)
}

// Boot adds hosts with these names and boots them in parallel, returning once every one
// of them is running (or degraded), or with the errors of those that are not.
func (l *Lab) Boot(ctx context.Context, names ...string) ([]*Host, error) {
	ctx, cancel := context.WithTimeout(ctx, BootTimeout)
	defer cancel()
	hs := make([]*Host, len(names))
	for i, name := range names {
		h, err := l.Add(name)
		if err != nil {
			return nil, err
		}
		hs[i] = h
	}
	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Go(func() {
			if err := h.Start(ctx); err != nil {
				errs[i] = err
				return
			}
			errs[i] = h.WaitRunning(ctx)
		})
	}
	wg.Wait()
	return hs, errors.Join(errs...)
}

// Add creates a host without starting it: its overlay over the base rootfs (with its
// own hostname, machine-id and an /etc/hosts naming every host of the lab), its netns
// and its link to the switch, with the next address of 10.77.0.0/24.
func (l *Lab) Add(name string) (*Host, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("host name %q: want 1-12 of [a-z0-9-], starting with a letter", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab is torn down")
	}
	for _, o := range l.hosts {
		if o.Name == name {
			return nil, fmt.Errorf("host %s exists", name)
		}
	}
	first := netip.MustParseAddr(firstHostIP)
	ip := first
	for range len(l.hosts) {
		ip = ip.Next()
	}
	h := &Host{
		Name:    name,
		Machine: l.ID + "-" + name,
		IP:      ip,
		lab:     l,
		dir:     filepath.Join(l.dir, name),
		veth:    "vh-" + name,
	}
	h.NetNS = h.Machine
	h.Root = filepath.Join(h.dir, "merged")
	for _, r := range cgroupRoots() {
		h.cgroups = append(h.cgroups, filepath.Join(r, h.Machine))
	}
	// Registered before anything is made, so that Teardown removes a half-made host.
	l.hosts = append(l.hosts, h)
	if err := h.create(); err != nil {
		return nil, errors.Join(fmt.Errorf("add host %s: %w", name, err), h.Teardown())
	}
	if err := l.writeHostsFilesLocked(); err != nil {
		return nil, err
	}
	return h, nil
}

// writeHostsFilesLocked gives every host an /etc/hosts naming all hosts of the lab.
func (l *Lab) writeHostsFilesLocked() error {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, h := range l.hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.IP, h.Name)
	}
	var errs []error
	for _, h := range l.hosts {
		if !h.isTornDown() {
			errs = append(errs, h.WriteFile("/etc/hosts", []byte(b.String()), 0o644))
		}
	}
	return errors.Join(errs...)
}

// Teardown kills and removes every host, then the switch and the lab's run dir. It is
// safe to call twice; later calls do nothing.
func (l *Lab) Teardown() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	hs := slices.Clone(l.hosts)
	l.mu.Unlock()

	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Go(func() { errs[i] = h.Teardown() })
	}
	wg.Wait()
	if netnsExists(l.Switch) {
		errs = append(errs, run(context.Background(), "ip", "netns", "del", l.Switch))
	}
	errs = append(errs, removeTree(l.dir))
	removeRunDirs(l.madeRun)
	return errors.Join(errs...)
}

// removeRunDirs removes nspawn's run dirs that a lab made. They are shared with any other
// lab, so only empty ones go (os.Remove refuses a non-empty dir).
func removeRunDirs(made []string) {
	for _, d := range []string{nspawnRun + "/propagate", nspawnRun + "/locks", nspawnRun, "/run/systemd"} {
		if slices.ContainsFunc(made, func(m string) bool { return d == m || strings.HasPrefix(d, m+"/") }) {
			os.Remove(d)
		}
	}
}

// removeNspawnLock removes the image lock that a killed nspawn leaves for the overlay
// mounted at root; nspawn names it after the root dir's device and inode.
func removeNspawnLock(root string) {
	var st syscall.Stat_t
	if err := syscall.Stat(root, &st); err == nil {
		os.Remove(filepath.Join(nspawnRun, "locks", fmt.Sprintf("inode-%d:%d", st.Dev, st.Ino)))
	}
}

// Host is one test host: an nspawn container with systemd as PID 1 in its own netns.
type Host struct {
	// Name is the host's hostname and its name in every host's /etc/hosts.
	Name string
	// Machine is the nspawn machine name and the name of its cgroups: the lab ID and Name.
	Machine string
	// NetNS is the named network namespace (/run/netns/NetNS) holding the host's eth0.
	NetNS string
	// IP is eth0's address, in 10.77.0.0/24.
	IP netip.Addr
	// Root is the host's file system as seen from the machine (its overlay). /tmp and
	// /run inside the host are tmpfs and not visible here.
	Root string

	lab     *Lab
	dir     string
	veth    string   // the host's link, on the switch side
	cgroups []string // one per cgroup hierarchy

	mu       sync.Mutex // guards the fields below
	nspawn   *exec.Cmd
	done     chan struct{} // closed when nspawn has exited
	leader   int           // PID of the host's systemd, seen from the machine
	mounted  bool
	tornDown bool
}

// create makes the overlay, the identity files and the network of a new host.
func (h *Host) create() error {
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", h.lab.base, filepath.Join(h.dir, "upper"), filepath.Join(h.dir, "work"))
	if err := syscall.Mount("overlay", h.Root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", h.Root, err)
	}
	h.mu.Lock()
	h.mounted = true
	h.mu.Unlock()
	id := make([]byte, 16)
	rand.Read(id)
	if err := h.WriteFile("/etc/hostname", []byte(h.Name+"\n"), 0o644); err != nil {
		return err
	}
	if err := h.WriteFile("/etc/machine-id", []byte(hex.EncodeToString(id)+"\n"), 0o444); err != nil {
		return err
	}
	for _, d := range h.cgroups {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
	}
	ctx := context.Background()
	addr := netip.PrefixFrom(h.IP, SubnetBits).String()
	for _, args := range [][]string{
		{"netns", "add", h.NetNS},
		// The pair is made in the switch netns, so its names only need to be unique there.
		{"-n", h.lab.Switch, "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.NetNS},
		{"-n", h.lab.Switch, "link", "set", h.veth, "master", "br0", "up"},
		{"-n", h.NetNS, "addr", "add", addr, "dev", "eth0"},
		{"-n", h.NetNS, "link", "set", "eth0", "up"},
		{"-n", h.NetNS, "link", "set", "lo", "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// launcher moves itself into the host's own cgroups, then becomes systemd-nspawn. With no
// systemd on the machine, nspawn would otherwise put every payload into the root cgroup.
const launcher = `for d in $HAH_CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec systemd-nspawn "$@"`

// Start boots the host: systemd-nspawn on its overlay, in its netns. It returns once the
// host's PID 1 exists; WaitRunning waits for systemd to finish booting. A host that was
// killed can be started again, with its disk as it was; its link comes back up.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tornDown {
		return errors.New("host is torn down")
	}
	if h.nspawn != nil {
		return fmt.Errorf("host %s is already started", h.Name)
	}
	if err := run(ctx, "ip", "-n", h.lab.Switch, "link", "set", h.veth, "up"); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(h.dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	args := []string{"-c", launcher, "launcher",
		"-D", h.Root, "-M", h.Machine, "-b", "--register=no", "--keep-unit",
		"--network-namespace-path=/run/netns/" + h.NetNS, "--capability=CAP_NET_ADMIN"}
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = append(slices.Clone(hostEnv), "HAH_CGROUPS="+strings.Join(h.cgroups, " "))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-nspawn for %s: %w", h.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	h.nspawn, h.done = cmd, done

	// The host's PID 1 is nspawn's child once it has exec'd systemd.
	for {
		if pid := systemdChild(cmd.Process.Pid); pid > 0 {
			h.leader = pid
			return nil
		}
		select {
		case <-done:
			h.nspawn, h.leader = nil, 0
			return fmt.Errorf("systemd-nspawn for %s exited at start:\n%s", h.Name, tail(h.consoleLocked(), 20))
		case <-ctx.Done():
			return fmt.Errorf("host %s: no PID 1 yet: %w", h.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
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
	return h.leader
}

// WaitRunning polls `systemctl is-system-running` until it says running or degraded.
func (h *Host) WaitRunning(ctx context.Context) error {
	for {
		out, err := h.Exec(ctx, "systemctl", "is-system-running")
		last := strings.TrimSpace(out)
		if errors.Is(err, ErrNotRunning) {
			return fmt.Errorf("host %s: %w:\n%s", h.Name, err, tail(h.Console(), 20))
		}
		if last == "running" || last == "degraded" {
			return nil
		}
		select {
		case <-ctx.Done():
			jctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			jobs, _ := h.Exec(jctx, "systemctl", "list-jobs", "--no-legend")
			cancel()
			return fmt.Errorf("host %s: not running (last state %q): %w; jobs:\n%s", h.Name, last, ctx.Err(), jobs)
		case <-time.After(50 * time.Millisecond):
		}
	}
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
	h.mu.Lock()
	leader, done := h.leader, h.done
	h.mu.Unlock()
	if leader == 0 {
		return "", ErrNotRunning
	}
	select {
	case <-done:
		return "", ErrNotRunning
	default:
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
	for _, hidden := range []string{"/tmp", "/run", "/dev", "/proc", "/sys"} {
		if p == hidden || strings.HasPrefix(p, hidden+"/") {
			return "", fmt.Errorf("%s: %s is not on the host's disk (tmpfs or an API file system inside the host); use /var/tmp or /usr/local", p, hidden)
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
	tmp, err := os.CreateTemp(filepath.Dir(p), ".hah-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
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

// Console returns what the host printed on its console (nspawn's output) so far.
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
	defer h.mu.Unlock()
	return errors.Join(h.Blackhole(), h.stopLocked())
}

// stopLocked kills the host's processes and waits for nspawn to exit.
func (h *Host) stopLocked() error {
	if h.nspawn == nil {
		return nil
	}
	if h.leader > 0 {
		syscall.Kill(h.leader, syscall.SIGKILL)
	}
	var errs []error
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.nspawn.Process.Kill()
		<-h.done
		errs = append(errs, fmt.Errorf("host %s: systemd-nspawn did not exit after its PID 1 died; killed it", h.Name))
	}
	h.nspawn, h.leader = nil, 0
	// Anything left in the host's cgroups (nothing, normally) goes too.
	errs = append(errs, killCgroups(h.cgroups))
	return errors.Join(errs...)
}

// Blackhole takes the host's link down on the switch side: its packets vanish and
// nobody gets a reset.
func (h *Host) Blackhole() error {
	return run(context.Background(), "ip", "-n", h.lab.Switch, "link", "set", h.veth, "down")
}

// Heal brings the host's link back up.
func (h *Host) Heal() error {
	return run(context.Background(), "ip", "-n", h.lab.Switch, "link", "set", h.veth, "up")
}

func (h *Host) isTornDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tornDown
}

// Teardown kills every process of the host, unmounts its overlay, deletes its netns
// and its cgroups and removes its dir. Safe to call twice.
func (h *Host) Teardown() error {
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
	if h.mounted {
		removeNspawnLock(h.Root)
		errs = append(errs, unmount(h.Root))
		h.mounted = false
	}
	if netnsExists(h.NetNS) {
		errs = append(errs, run(context.Background(), "ip", "netns", "del", h.NetNS))
	}
	// nspawn removes its propagation dir when the container dies; this is for a
	// nspawn that was itself killed.
	os.RemoveAll(filepath.Join(nspawnRun, "propagate", h.Machine))
	errs = append(errs, removeTree(h.dir))
	return errors.Join(errs...)
}

// unmount unmounts mp, lazily if it stays busy.
func unmount(mp string) error {
	var err error
	for range 20 {
		if err = syscall.Unmount(mp, 0); err == nil || errors.Is(err, syscall.EINVAL) {
			return nil // EINVAL: not mounted
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err2 := syscall.Unmount(mp, syscall.MNT_DETACH); err2 != nil {
		return fmt.Errorf("unmount %s: %w", mp, err)
	}
	return nil
}

func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// cgroupRoots are the hierarchies a host's processes are tracked in: the hybrid
// layout's unified and name=systemd trees, or a pure cgroup2 mount.
func cgroupRoots() []string {
	var roots []string
	for _, d := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			roots = append(roots, d)
		}
	}
	if len(roots) == 0 {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
			roots = append(roots, "/sys/fs/cgroup")
		}
	}
	return roots
}

// killCgroups sends SIGKILL to every process in these cgroup trees until they are empty.
func killCgroups(dirs []string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pids []int
		for _, d := range dirs {
			pids = append(pids, cgroupPIDs(d)...)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive in %v", pids, dirs)
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// selfOwner identifies this process across PID reuse: its PID and start time.
func selfOwner() string {
	return fmt.Sprintf("%d %s\n", os.Getpid(), startTime(os.Getpid()))
}

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

// sweep removes what labs of dead processes left: their cgroups (and so their hosts'
// processes), overlays, netns and run dirs. A lab whose owner still runs is left alone.
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
		if !e.IsDir() || !strings.HasPrefix(id, Prefix) {
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
		var cgs []string
		for _, r := range cgroupRoots() {
			m, _ := filepath.Glob(filepath.Join(r, id+"-*"))
			cgs = append(cgs, m...)
		}
		errs = append(errs, killCgroups(cgs))
		for _, cg := range cgs {
			errs = append(errs, removeCgroup(cg))
		}
		for _, mp := range mountsUnder(dir) {
			removeNspawnLock(mp)
			errs = append(errs, unmount(mp))
		}
		nss, _ := filepath.Glob(filepath.Join("/run/netns", id+"-*"))
		for _, ns := range nss {
			errs = append(errs, run(context.Background(), "ip", "netns", "del", filepath.Base(ns)))
		}
		props, _ := filepath.Glob(filepath.Join(nspawnRun, "propagate", id+"-*"))
		for _, p := range props {
			os.RemoveAll(p)
		}
		made, _ := os.ReadFile(filepath.Join(dir, "made-run"))
		errs = append(errs, removeTree(dir))
		removeRunDirs(strings.Fields(string(made)))
	}
	return errors.Join(errs...)
}
