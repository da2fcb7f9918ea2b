// Package netns builds throwaway network namespaces for tests: a "switch" namespace
// holding a Linux bridge, and hosts wired to it by veth pairs, with faults (kill,
// blackhole) and a teardown that removes everything it made. It needs root and
// iproute2's ip; nothing is added to the machine's own network namespace.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package makes:
// Prefix<pid>-<n>-<label>, where pid owns it and n counts the nets of that process.
const Prefix = "hat-"

// nsDir is where ip netns keeps its named namespaces.
const nsDir = "/run/netns"

// lockDir holds one lock file per live net; its owner holds a flock on it, so that
// Cleanup never touches a net whose owner lives, even in another PID namespace.
const lockDir = "/run/haagent-test-netns"

// killWait bounds how long Kill waits for killed processes to vanish.
const killWait = 10 * time.Second

var counter atomic.Int64

// Net is one switch namespace with its bridge and the hosts wired to it.
type Net struct {
	// Name is the run prefix of every namespace of this net: hat-<pid>-<n>.
	Name string
	// Switch is the namespace that holds the bridge br0 and the hosts' veth ends.
	Switch string

	lock *os.File

	mu     sync.Mutex // guards the fields below
	hosts  []*Host
	closed bool
}

// Host is a network namespace with eth0 on the switch and lo up.
type Host struct {
	// Name is the namespace's name, usable with ip netns exec and ip -n.
	Name string
	// IP is eth0's IPv4 address (a /24).
	IP string
	// Link is the switch-side end of the host's veth pair, in the Switch namespace.
	Link string

	net *Net
}

// Reason says why this process can't build namespaces, or is "" when it can.
func Reason() string {
	if os.Geteuid() != 0 {
		return "network namespaces need root (ip netns add, veth, bridge); run the tests as root, as CI does"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "iproute2's ip is not installed (Debian package iproute2)"
	}
	return ""
}

// SkipUnlessAble skips t with the reason when namespaces can't be built here.
func SkipUnlessAble(t testing.TB) {
	t.Helper()
	if r := Reason(); r != "" {
		t.Skip(r)
	}
}

// NewT is New for a test: it skips the test when not root, removes stale leftovers
// first, and tears the net down when the test ends, failed or not.
func NewT(t testing.TB) *Net {
	t.Helper()
	SkipUnlessAble(t)
	if err := Cleanup(); err != nil {
		t.Logf("netns: removing stale namespaces: %v", err)
	}
	n, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("netns teardown: %v", err)
		}
	})
	return n
}

// New makes the switch namespace with its bridge. Close removes it.
func New() (_ *Net, err error) {
	if r := Reason(); r != "" {
		return nil, errors.New(r)
	}
	name := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), counter.Add(1))
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(lockDir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	n := &Net{Name: name, Switch: name + "-sw", lock: lock}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	if err := ip("netns", "add", n.Switch); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"link", "set", "br0", "up"},
	} {
		if err := ip(append([]string{"-n", n.Switch}, args...)...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// AddHost makes the namespace <Name>-<label> with eth0 at ip/24 on the switch, and
// lo up. Labels are short words such as m1, lb, client.
func (n *Net) AddHost(label, addr string) (*Host, error) {
	if net.ParseIP(addr).To4() == nil {
		return nil, fmt.Errorf("host %s: %q is not an IPv4 address", label, addr)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, fmt.Errorf("net %s is closed", n.Name)
	}
	h := &Host{Name: n.Name + "-" + label, IP: addr, Link: fmt.Sprintf("v%d", len(n.hosts)+1), net: n}
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()

	if err := ip("netns", "add", h.Name); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"-n", n.Switch, "link", "add", h.Link, "type", "veth", "peer", "name", "eth0", "netns", h.Name},
		{"-n", n.Switch, "link", "set", h.Link, "master", "br0", "up"},
		{"-n", h.Name, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", h.Name, "link", "set", "eth0", "up"},
		{"-n", h.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return nil, fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return h, nil
}

// AddHosts adds one host per label=ip pair, e.g. AddHosts("m1=10.77.0.21", "lb=10.77.0.10").
func (n *Net) AddHosts(pairs ...string) ([]*Host, error) {
	var hs []*Host
	for _, p := range pairs {
		label, addr, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not label=ip", p)
		}
		h, err := n.AddHost(label, addr)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// Hosts lists the hosts in the order they were added.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// Close kills every process in the net's namespaces and deletes them. It is safe to
// call twice.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	hosts := n.hosts
	n.mu.Unlock()
	var errs []error
	names := []string{}
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	names = append(names, n.Switch)
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(nsDir, name)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := killNS(name); err != nil {
			errs = append(errs, err)
		}
		if err := ip("netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	if n.lock != nil {
		os.Remove(n.lock.Name())
		n.lock.Close()
	}
	return errors.Join(errs...)
}

// Cleanup deletes the namespaces with our Prefix that a dead process left behind
// (its lock is free, or it has no lock file and its pid is gone), killing what still
// runs in them. Namespaces of live owners are left alone.
func Cleanup() error {
	entries, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	staleRuns := map[string]bool{}
	for _, e := range entries {
		run, ok := runOf(e.Name())
		if !ok {
			continue
		}
		stale, seen := staleRuns[run]
		if !seen {
			stale = isStale(run)
			staleRuns[run] = stale
		}
		if !stale {
			continue
		}
		if err := killNS(e.Name()); err != nil {
			errs = append(errs, err)
		}
		if err := ip("netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	for run, stale := range staleRuns {
		if stale {
			os.Remove(filepath.Join(lockDir, run+".lock"))
		}
	}
	return errors.Join(errs...)
}

// runOf returns the hat-<pid>-<n> part of a namespace name of ours.
func runOf(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return "", false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) < 3 {
		return "", false
	}
	for _, p := range parts[:2] {
		if _, err := strconv.Atoi(p); err != nil {
			return "", false
		}
	}
	return Prefix + parts[0] + "-" + parts[1], true
}

func isStale(run string) bool {
	f, err := os.OpenFile(filepath.Join(lockDir, run+".lock"), os.O_RDWR, 0)
	if err == nil {
		defer f.Close()
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			return false // the owner holds it
		}
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return true
	}
	pid, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(run, Prefix), "-", 2)[0])
	if pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// Wrap is the command prefix that runs a command inside the host.
func (h *Host) Wrap() []string { return []string{"ip", "netns", "exec", h.Name} }

// Command is exec.Command run inside the host with ip netns exec (which execs in
// place, so the Cmd's pid is the command's). The process gets SIGKILL if the thread
// that started it, or this process, dies.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return h.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command with a context that kills the process when done.
func (h *Host) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	w := h.Wrap()
	cmd := exec.CommandContext(ctx, w[0], append(append(w[1:], name), args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Pids lists the processes whose network namespace is the host's.
func (h *Host) Pids() ([]int, error) { return pidsIn(h.Name) }

// Kill sends SIGKILL to every process in the host (kill -9: no clean shutdown) and
// waits until they are gone. Their parents still have to reap them.
func (h *Host) Kill() error { return killNS(h.Name) }

// Blackhole takes the switch-side link of the host down: packets to and from it
// vanish, with no RST and no ICMP, as with a pulled cable or a powered-off host.
func (h *Host) Blackhole() error {
	return ip("-n", h.net.Switch, "link", "set", h.Link, "down")
}

// Heal brings the switch-side link back up.
func (h *Host) Heal() error {
	return ip("-n", h.net.Switch, "link", "set", h.Link, "up")
}

// Do runs f on a locked OS thread that is inside the host's network namespace:
// sockets that f creates belong to the host for their whole life. f must not start
// goroutines that create sockets. The thread goes back to its namespace afterwards.
func (h *Host) Do(f func() error) error {
	target, err := os.Open(filepath.Join(nsDir, h.Name))
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", h.Name, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine.
		return errors.Join(ferr, fmt.Errorf("setns back from %s: %w", h.Name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// DialContext connects from inside the host; it fits net/http's Transport.DialContext
// and grpc.WithContextDialer (wrapped). addr must be an IP literal with a port.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens from inside the host.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// nsID identifies a network namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// pidsIn lists the processes in the named namespace, as ip netns pids does; this
// process is never listed (its threads visit namespaces in Do).
func pidsIn(name string) ([]int, error) {
	want, err := statNS(filepath.Join(nsDir, name))
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		id, err := statNS(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err == nil && id == want {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNS SIGKILLs every process in the namespace until none is left.
func killNS(name string) error {
	deadline := time.Now().Add(killWait)
	for {
		pids, err := pidsIn(name)
		if err != nil {
			return fmt.Errorf("list processes in %s: %w", name, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in %s survive SIGKILL", pids, name)
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ip runs iproute2's ip and returns its stderr in the error.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
