// Package hosts owns the tests' labs on one machine: a switch (test/framework/netlab) and, on it,
// hosts and nodes. A host is a Debian rootfs under systemd-nspawn with systemd as PID 1
// in its own network namespace; one made with Containers can run a kubelet, containerd
// and runc. A node is a bare network namespace, for processes that a test runs itself
// (test/framework/procs). The facts it builds on are in the shared notes (test-hosts.md,
// pods-on-minions.md). Everything a lab makes is named with the lab's ID and torn down
// by Teardown. A test's lab ("hah-" + random) is also removed by the next lab if its run
// was killed; a persistent lab ("hal-" + a name the caller picks) outlives its process,
// is reopened with Open, and goes only with Teardown or Remove. This is the tests' one
// owner of namespaces, and its sweep their one cleanup after killed runs.
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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/rootonly"
)

const (
	// Prefix starts the name of everything a test's lab makes: netns, cgroups, machine
	// names and its run dir.
	Prefix = "hah-"
	// PersistentPrefix starts the ID of a persistent lab (see Create). sweep leaves these
	// labs alone: they go only with Teardown or Remove.
	PersistentPrefix = "hal-"
	// DefaultRunDir holds each lab's overlays, state and console logs. Not /tmp: the
	// upper dirs must survive as long as the lab, and may grow.
	DefaultRunDir = "/var/tmp/haagent-hosts"
	// BootTimeout bounds Boot's wait for a host to reach running.
	BootTimeout = 60 * time.Second
	// SubnetBits is the prefix length of DefaultSubnet.
	SubnetBits = 24
	// firstHostOffset is where automatic addresses start in a lab's subnet: .10.
	firstHostOffset = 10
)

// DefaultSubnet is the hosts' network when LabOptions leaves it unset. It exists only
// inside the lab's namespaces, so two labs may use the same one.
var DefaultSubnet = netip.MustParsePrefix("10.77.0.0/24")

// nspawnRun is where systemd-nspawn keeps its locks and propagation dirs.
const nspawnRun = "/run/systemd/nspawn"

// hostEnv is the environment of every command run inside a host: nothing of the test
// process leaks in.
var hostEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}

// ErrNotRunning is returned by Exec and friends when the host's systemd is not up.
var ErrNotRunning = errors.New("host is not running")

var (
	nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,11}$`)
	// A persistent lab's ID names its netns and cgroups together with a host name, so
	// it stays short.
	persistentRE = regexp.MustCompile(`^` + PersistentPrefix + `[a-z0-9][a-z0-9-]{0,15}$`)
)

// LabOptions shape a lab. The zero value is what New and NewLab use.
type LabOptions struct {
	// Subnet is the hosts' network, e.g. 10.78.0.0/24: a private IPv4 prefix of 16 to 29
	// bits. Zero means DefaultSubnet. Hosts without an explicit IP get addresses from .10
	// of it upward.
	Subnet netip.Prefix
	// Logf reports slow steps (the first rootfs build) and the removal of leftovers.
	// Nil discards them.
	Logf func(string, ...any)
	// NetworkOnly makes a lab of nodes only (AddNode), for processes that the test runs
	// itself: it needs neither the rootfs nor systemd-nspawn, and Add refuses.
	NetworkOnly bool
}

func (o LabOptions) withDefaults() (LabOptions, error) {
	if !o.Subnet.IsValid() {
		o.Subnet = DefaultSubnet
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if !o.Subnet.Addr().Is4() || !o.Subnet.Addr().IsPrivate() || o.Subnet.Bits() < 16 || o.Subnet.Bits() > 29 || o.Subnet.Masked() != o.Subnet {
		return o, fmt.Errorf("lab subnet %s: want a private IPv4 network of /16 to /29, e.g. 10.78.0.0/24", o.Subnet)
	}
	return o, nil
}

// HostOptions shape one host. The zero value is what Add uses.
type HostOptions struct {
	// IP is the host's address in the lab's subnet; zero picks the lowest free address
	// from .10 upward.
	IP netip.Addr
	// Containers makes a host that can run containers with containerd and runc, and a
	// kubelet: its own writable cgroup in every v1 controller, /dev/kmsg, a writable
	// /proc/sys/net, the keyring syscalls, /var/lib/containerd on a plain dir (not the
	// overlay) and the kernel tunables the kubelet wants, set for this host only.
	Containers bool
}

// HostSpec names a host to add and its options, for BootWith.
type HostSpec struct {
	Name string
	HostOptions
}

// Lab is one run's hosts and the switch that connects them.
type Lab struct {
	// ID names everything this lab makes: Prefix and 6 hex digits, or, for a persistent
	// lab, the ID its caller chose (PersistentPrefix and a name).
	ID string
	// Switch is the netns holding the bridge br0 that every host's link is attached to.
	Switch string
	// Subnet is the hosts' network.
	Subnet netip.Prefix
	// Persistent is set for a lab made by Create (and so for it reopened by Open): it
	// outlives the process that made it.
	Persistent bool

	sw   *netlab.Switch
	base string // read-only rootfs, the overlays' lower dir; "" in a NetworkOnly lab
	dir  string // DefaultRunDir/ID
	logf func(string, ...any)
	// madeRun lists the nspawn and systemd run dirs that did not exist before this lab.
	madeRun []string

	// saveMu serializes writes of the state file. Take it before mu, and never while
	// holding a host's mu: saving reads every host.
	saveMu sync.Mutex

	mu     sync.Mutex // guards the fields below
	hosts  []*Host
	nodes  []*netlab.Node
	closed bool
}

// New makes a lab for a test, and tears it down when the test ends, failed or not.
// Where the test can't run as root, it skips, or fails under make test (test/framework/rootonly).
func New(t testing.TB) *Lab {
	t.Helper()
	return NewWith(t, LabOptions{})
}

// NewWith is New with options; Logf defaults to t.Logf.
func NewWith(t testing.TB, o LabOptions) *Lab {
	t.Helper()
	what := "a test lab (network namespaces, overlayfs, systemd-nspawn)"
	if o.NetworkOnly {
		what = "a test lab of network namespaces"
	}
	rootonly.Require(t, what)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	l, err := NewLabWith(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range l.Hosts() {
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
	return NewLabWith(ctx, LabOptions{Logf: logf})
}

// NewLabWith is NewLab with options. The lab belongs to this process: the next lab
// made after this process died removes it.
func NewLabWith(ctx context.Context, o LabOptions) (*Lab, error) {
	id := make([]byte, 3)
	rand.Read(id)
	return newLab(ctx, Prefix+hex.EncodeToString(id), o, false)
}

// Create makes a persistent lab with the ID the caller chose: PersistentPrefix and up
// to 16 of [a-z0-9-], e.g. "hal-lab". Its hosts keep running after this process exits,
// Open reopens it from another process, and only Teardown or Remove removes it. It
// fails if a lab with this ID exists: Open it, or Remove it first.
func Create(ctx context.Context, id string, o LabOptions) (*Lab, error) {
	if !persistentRE.MatchString(id) {
		return nil, fmt.Errorf("persistent lab ID %q: want %q and 1-16 of [a-z0-9-]", id, PersistentPrefix)
	}
	if _, err := os.Lstat(filepath.Join(DefaultRunDir, id)); err == nil {
		return nil, fmt.Errorf("lab %s exists in %s: Open it, or Remove it first", id, DefaultRunDir)
	}
	return newLab(ctx, id, o, true)
}

func newLab(ctx context.Context, id string, o LabOptions, persistent bool) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("test hosts need root")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	tools := []string{"systemd-nspawn", "nsenter", "ip", "tar", "zstd", "debootstrap"}
	if o.NetworkOnly {
		tools = []string{"ip"}
	}
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("test hosts need %s: run scripts/deps.sh (make test does)", strings.Join(missing, ", "))
	}
	if !o.NetworkOnly && len(cgroupRoots()) == 0 {
		return nil, errors.New("test hosts need a cgroup hierarchy at /sys/fs/cgroup/unified, /sys/fs/cgroup/systemd or /sys/fs/cgroup")
	}
	if err := sweep(o.Logf); err != nil {
		return nil, fmt.Errorf("remove leftovers of killed runs: %w", err)
	}
	var base string
	if !o.NetworkOnly {
		if base, err = Rootfs(ctx, o.Logf); err != nil {
			return nil, err
		}
	}
	l := &Lab{ID: id, Switch: id + "-sw", Subnet: o.Subnet, Persistent: persistent, base: base, logf: o.Logf}
	l.sw = &netlab.Switch{NetNS: l.Switch}
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
	// made-run tells it which of nspawn's run dirs this run made. A persistent lab has
	// no owner: it outlives its process on purpose.
	if !persistent {
		if err := os.WriteFile(filepath.Join(l.dir, "owner"), []byte(selfOwner()), 0o644); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(l.dir, "made-run"), []byte(strings.Join(l.madeRun, "\n")), 0o644); err != nil {
		return nil, err
	}
	if err := l.save(); err != nil {
		return nil, errors.Join(err, l.Teardown())
	}
	if _, err := netlab.NewSwitch(ctx, l.Switch); err != nil {
		return nil, errors.Join(err, l.Teardown())
	}
	return l, nil
}

// Hosts returns the lab's hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hosts)
}

// Host returns the host with this name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Boot adds hosts with these names and boots them in parallel, returning once every one
// of them is running (or degraded), or with the errors of those that are not.
func (l *Lab) Boot(ctx context.Context, names ...string) ([]*Host, error) {
	specs := make([]HostSpec, len(names))
	for i, n := range names {
		specs[i].Name = n
	}
	return l.BootWith(ctx, specs...)
}

// BootWith is Boot with options per host.
func (l *Lab) BootWith(ctx context.Context, specs ...HostSpec) ([]*Host, error) {
	ctx, cancel := context.WithTimeout(ctx, BootTimeout)
	defer cancel()
	hs := make([]*Host, len(specs))
	for i, s := range specs {
		h, err := l.AddWith(s.Name, s.HostOptions)
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
// and its link to the switch, with the next free address of the lab's subnet.
func (l *Lab) Add(name string) (*Host, error) {
	return l.AddWith(name, HostOptions{})
}

// AddWith is Add with options.
func (l *Lab) AddWith(name string, o HostOptions) (*Host, error) {
	h, err := l.add(name, o)
	if err != nil {
		return nil, err
	}
	return h, l.save()
}

func (l *Lab) add(name string, o HostOptions) (*Host, error) {
	if l.base == "" {
		return nil, fmt.Errorf("host %s: lab %s is NetworkOnly: it has nodes, not hosts", name, l.ID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkNewNameLocked(name); err != nil {
		return nil, err
	}
	ip, err := l.pickIPLocked(o.IP)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	h := l.newHost(name, ip, o.Containers)
	if o.Containers {
		ms, err := cgroupMounts()
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
		h.cgroups = nil
		for _, m := range ms {
			h.cgroups = append(h.cgroups, filepath.Join(m.Dir, h.Machine))
		}
	}
	// Registered before anything is made, so that Teardown removes a half-made host.
	l.hosts = append(l.hosts, h)
	if err := h.create(); err != nil {
		return nil, errors.Join(fmt.Errorf("add host %s: %w", name, err), h.teardown())
	}
	if err := l.writeHostsFilesLocked(); err != nil {
		return nil, err
	}
	return h, nil
}

// checkNewNameLocked refuses a bad name, or one that a host or node of the lab has.
func (l *Lab) checkNewNameLocked(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("host name %q: want 1-12 of [a-z0-9-], starting with a letter", name)
	}
	if l.closed {
		return errors.New("lab is torn down")
	}
	for _, o := range l.hosts {
		if o.Name == name {
			return fmt.Errorf("host %s exists", name)
		}
	}
	for _, n := range l.nodes {
		if n.Name == name {
			return fmt.Errorf("node %s exists", name)
		}
	}
	return nil
}

// newNode describes a host's or a node's place on the switch; it makes nothing. The
// link's name is unique in the switch's namespace and, at most 15 bytes, fits Linux's.
func (l *Lab) newNode(name string, ip netip.Addr) *netlab.Node {
	return l.sw.Node(name, l.ID+"-"+name, "vh-"+name, netip.PrefixFrom(ip, l.Subnet.Bits()))
}

// AddNode makes a node: a network namespace on the switch with eth0 at ip (zero picks
// the next free address of the lab's subnet), for processes that the test runs itself
// (test/framework/procs). Teardown kills them and removes it.
func (l *Lab) AddNode(ctx context.Context, name string, ip netip.Addr) (*netlab.Node, error) {
	n, err := l.addNode(ctx, name, ip)
	if err != nil {
		return nil, err
	}
	return n, l.save()
}

func (l *Lab) addNode(ctx context.Context, name string, ip netip.Addr) (*netlab.Node, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkNewNameLocked(name); err != nil {
		return nil, err
	}
	ip, err := l.pickIPLocked(ip)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	n := l.newNode(name, ip)
	// Registered before anything is made, so that Teardown removes a half-made node.
	l.nodes = append(l.nodes, n)
	// The dir records the node in the run dir, where a sweep after a killed run finds
	// what to remove.
	if err := os.MkdirAll(filepath.Join(l.dir, name), 0o755); err != nil {
		return nil, err
	}
	if err := n.Create(ctx); err != nil {
		return nil, errors.Join(err, n.Delete())
	}
	return n, nil
}

// AddNodes adds a node per name=ip pair, e.g. AddNodes(ctx, "m1=10.77.0.21", "lb=10.77.0.10").
func (l *Lab) AddNodes(ctx context.Context, pairs ...string) ([]*netlab.Node, error) {
	var ns []*netlab.Node
	for _, p := range pairs {
		name, addr, ok := strings.Cut(p, "=")
		ip, err := netip.ParseAddr(addr)
		if !ok || err != nil {
			return nil, fmt.Errorf("node %q: want name=IPv4 address", p)
		}
		n, err := l.AddNode(ctx, name, ip)
		if err != nil {
			return nil, err
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// Nodes returns the lab's nodes in the order they were added.
func (l *Lab) Nodes() []*netlab.Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.nodes)
}

// newHost fills in a host's names and paths; it makes nothing.
func (l *Lab) newHost(name string, ip netip.Addr, containers bool) *Host {
	h := &Host{
		Name:       name,
		Machine:    l.ID + "-" + name,
		IP:         ip,
		Containers: containers,
		lab:        l,
		dir:        filepath.Join(l.dir, name),
		node:       l.newNode(name, ip),
	}
	h.NetNS = h.node.NetNS
	h.Root = filepath.Join(h.dir, "merged")
	for _, r := range cgroupRoots() {
		h.cgroups = append(h.cgroups, filepath.Join(r, h.Machine))
	}
	return h
}

// pickIPLocked checks an explicit address, or picks the lowest free one from .10 up.
func (l *Lab) pickIPLocked(want netip.Addr) (netip.Addr, error) {
	used := map[netip.Addr]bool{}
	for _, h := range l.hosts {
		used[h.IP] = true
	}
	for _, n := range l.nodes {
		used[n.IP] = true
	}
	if want.IsValid() {
		if !l.Subnet.Contains(want) || want == l.Subnet.Addr() || want == lastAddr(l.Subnet) {
			return netip.Addr{}, fmt.Errorf("address %s is not a host address of the lab's subnet %s", want, l.Subnet)
		}
		if used[want] {
			return netip.Addr{}, fmt.Errorf("address %s is taken", want)
		}
		return want, nil
	}
	ip := l.Subnet.Addr()
	for range firstHostOffset {
		ip = ip.Next()
	}
	for ; l.Subnet.Contains(ip) && ip != lastAddr(l.Subnet); ip = ip.Next() {
		if !used[ip] {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %s", l.Subnet)
}

// lastAddr is a prefix's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(b)
}

// writeHostsFilesLocked gives every host an /etc/hosts naming all hosts of the lab.
func (l *Lab) writeHostsFilesLocked() error {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, h := range l.hosts {
		if !h.isTornDown() {
			fmt.Fprintf(&b, "%s\t%s\n", h.IP, h.Name)
		}
	}
	var errs []error
	for _, h := range l.hosts {
		if !h.isTornDown() {
			errs = append(errs, h.WriteFile("/etc/hosts", []byte(b.String()), 0o644))
		}
	}
	return errors.Join(errs...)
}

// Healthy reports what is broken in a lab: a missing switch, a host whose netns, link or
// overlay is gone, or a host whose systemd-nspawn died without Kill. A killed host (Kill,
// not yet started again) is healthy. A caller that reopens a lab with Open checks this
// and, on an error, tears the lab down and makes it again.
func (l *Lab) Healthy() error {
	l.mu.Lock()
	closed := l.closed
	hs := slices.Clone(l.hosts)
	l.mu.Unlock()
	if closed {
		return fmt.Errorf("lab %s is torn down", l.ID)
	}
	var errs []error
	if !netlab.Exists(l.Switch) {
		errs = append(errs, fmt.Errorf("lab %s: switch netns %s is missing", l.ID, l.Switch))
	}
	mounts := mountPoints()
	for _, h := range hs {
		errs = append(errs, h.healthy(mounts))
	}
	for _, n := range l.Nodes() {
		if !netlab.Exists(n.NetNS) {
			errs = append(errs, fmt.Errorf("node %s: netns %s is missing", n.Name, n.NetNS))
		}
	}
	return errors.Join(errs...)
}

// Teardown kills and removes every host, then the switch and the lab's run dir. It is
// safe to call twice; later calls do nothing.
func (l *Lab) Teardown() error {
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	hs := slices.Clone(l.hosts)
	ns := slices.Clone(l.nodes)
	l.mu.Unlock()

	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Go(func() { errs[i] = h.teardown() })
	}
	wg.Wait()
	for _, n := range ns {
		errs = append(errs, n.Delete())
	}
	errs = append(errs, l.sw.Delete())
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
