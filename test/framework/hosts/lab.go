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
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
