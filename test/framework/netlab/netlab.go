// Package netlab builds a test lab's network: a switch (a network namespace holding the
// bridge br0) and nodes (network namespaces, each with eth0 on the switch), the faults a
// cable can have (blackhole, heal), and sockets and commands inside a node. It needs
// root and iproute2's ip, and adds nothing to the machine's own network namespace. It
// owns no names and keeps no records: test/framework/hosts names every namespace after its lab,
// and removes what a killed run left.
package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/haagent/haagent/test/framework/await"
)

// Dir is where ip netns keeps its named namespaces.
const Dir = "/run/netns"

// KillTimeout bounds how long KillAll waits for killed processes to vanish.
const KillTimeout = 10 * time.Second

// Switch is the namespace that holds the bridge br0, to which every node's link is
// attached; the switch-side ends of the links live there too, so taking one down
// cuts a node off without touching the node.
type Switch struct {
	// NetNS names the switch's namespace.
	NetNS string
}

// NewSwitch makes the namespace netns with lo and br0 up.
func NewSwitch(ctx context.Context, netns string) (*Switch, error) {
	s := &Switch{NetNS: netns}
	for _, args := range [][]string{
		{"netns", "add", netns},
		{"-n", netns, "link", "set", "lo", "up"},
		{"-n", netns, "link", "add", "br0", "type", "bridge"},
		{"-n", netns, "link", "set", "br0", "up"},
	} {
		if err := IP(ctx, args...); err != nil {
			return s, fmt.Errorf("make switch %s: %w", netns, err)
		}
	}
	return s, nil
}

// Delete removes the switch's namespace, and with it the switch-side ends of every
// node's link. A missing namespace is no error.
func (s *Switch) Delete() error { return DeleteNetNS(s.NetNS) }

// Node is a network namespace with eth0 on the switch and lo up.
type Node struct {
	// Name is the node's short name in its lab, e.g. m1.
	Name string
	// NetNS names the node's namespace (usable with ip netns exec and ip -n).
	NetNS string
	// IP is eth0's address.
	IP netip.Addr
	// Bits is the prefix length of eth0's network.
	Bits int
	// Link is the switch-side end of the node's veth pair, in the switch's namespace.
	Link string

	sw *Switch
}

// Node describes a node of this switch without making anything: Create makes it, and a
// lab reopened by another process describes the nodes it already has. Link names are
// only unique within the switch, and at most 15 bytes.
func (s *Switch) Node(name, netns, link string, addr netip.Prefix) *Node {
	return &Node{Name: name, NetNS: netns, IP: addr.Addr(), Bits: addr.Bits(), Link: link, sw: s}
}

// Create makes the node's namespace and its link to the switch, with eth0 at its address.
func (n *Node) Create(ctx context.Context) error {
	addr := netip.PrefixFrom(n.IP, n.Bits).String()
	for _, args := range [][]string{
		{"netns", "add", n.NetNS},
		{"-n", n.sw.NetNS, "link", "add", n.Link, "type", "veth", "peer", "name", "eth0", "netns", n.NetNS},
		{"-n", n.sw.NetNS, "link", "set", n.Link, "master", "br0", "up"},
		{"-n", n.NetNS, "addr", "add", addr, "dev", "eth0"},
		{"-n", n.NetNS, "link", "set", "eth0", "up"},
		{"-n", n.NetNS, "link", "set", "lo", "up"},
	} {
		if err := IP(ctx, args...); err != nil {
			return fmt.Errorf("make node %s: %w", n.Name, err)
		}
	}
	return nil
}

// Delete kills every process in the node's namespace and removes the namespace, and so
// its link. A missing namespace is no error.
func (n *Node) Delete() error { return DeleteNetNS(n.NetNS) }

// Blackhole takes the switch-side end of the node's link down: packets to and from it
// vanish, with no RST and no ICMP, as with a pulled cable or a powered-off host.
func (n *Node) Blackhole() error {
	return IP(context.Background(), "-n", n.sw.NetNS, "link", "set", n.Link, "down")
}

// Heal brings the switch-side end of the node's link back up.
func (n *Node) Heal() error {
	return IP(context.Background(), "-n", n.sw.NetNS, "link", "set", n.Link, "up")
}

// LinkUp reports whether the switch-side end of the link exists, as Healthy checks.
func (n *Node) LinkUp(ctx context.Context) error {
	return IP(ctx, "-n", n.sw.NetNS, "link", "show", "dev", n.Link)
}

// CommandContext is exec.CommandContext run inside the node with ip netns exec, which
// execs in place, so that the Cmd's pid is the command's. The process gets SIGKILL if
// the thread that started it dies, so that a killed test leaves no process behind.
func (n *Node) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NetNS, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Pids lists the processes in the node's namespace.
func (n *Node) Pids() ([]int, error) { return Pids(n.NetNS) }

// KillAll sends SIGKILL to every process in the node (kill -9: no clean shutdown) and
// waits until they are gone; their parents still have to reap them.
func (n *Node) KillAll() error { return KillAll(n.NetNS) }

// Do runs f on a locked OS thread that is inside the node's network namespace, so that
// the sockets f creates belong to the node for their whole life. f must not start
// goroutines that create sockets. The thread goes back to its namespace afterwards.
func (n *Node) Do(f func() error) error {
	target, err := os.Open(filepath.Join(Dir, n.NetNS))
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
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
		return fmt.Errorf("enter the namespace of node %s: %w", n.Name, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked: the runtime ends it with this goroutine, so that no
		// other goroutine runs in the node's namespace by mistake.
		return errors.Join(ferr, fmt.Errorf("leave the namespace of node %s: %w", n.Name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// DialContext connects from inside the node; it fits net/http's Transport.DialContext
// and, wrapped, grpc.WithContextDialer. addr must be an IP literal with a port: names
// would be resolved in the machine's namespace.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the node.
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// HasAddr reports whether the node's eth0 carries ip, as netlink sees it inside the
// node: the check of who holds a virtual IP.
func (n *Node) HasAddr(ip netip.Addr) (bool, error) {
	var has bool
	err := n.Do(func() error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IP.Equal(ip.AsSlice()) {
				has = true
			}
		}
		return err
	})
	return has, err
}

// Exists reports whether the named namespace exists.
func Exists(netns string) bool {
	_, err := os.Stat(filepath.Join(Dir, netns))
	return err == nil
}

// List returns the names of the namespaces that start with prefix.
func List(prefix string) ([]string, error) {
	entries, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// DeleteNetNS kills every process in the named namespace and deletes it; a missing
// namespace is no error.
func DeleteNetNS(netns string) error {
	if !Exists(netns) {
		return nil
	}
	if err := KillAll(netns); err != nil {
		return err
	}
	if err := IP(context.Background(), "netns", "del", netns); err != nil && Exists(netns) {
		return err
	}
	// Gone either way: two labs starting at once may both sweep the same dead lab.
	return nil
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

// Pids lists the processes in the named namespace, as ip netns pids does. This process
// is never listed: its threads visit namespaces in Do.
func Pids(netns string) ([]int, error) {
	want, err := statNS(filepath.Join(Dir, netns))
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
		if id, err := statNS(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && id == want {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// KillAll SIGKILLs every process in the named namespace until none is left.
func KillAll(netns string) error {
	return await.Until(context.Background(), "the processes in "+netns+" to die of SIGKILL", KillTimeout, func() error {
		pids, err := Pids(netns)
		if err != nil {
			return await.Stop(fmt.Errorf("list the processes in %s: %w", netns, err))
		}
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		return fmt.Errorf("processes %v are left", pids)
	}, await.Every(10*time.Millisecond))
}

// IP runs iproute2's ip; the error carries its arguments and output.
func IP(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
