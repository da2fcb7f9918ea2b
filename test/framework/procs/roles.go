package procs

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haagent/haagent/test/framework/netlab"
)

// newRole describes haagent in a role: bin with args() as they are at each Start,
// ready once /readyz on its status address answers 200.
func newRole(bin, name, log string, node *netlab.Node, args func() []string, status string) *Proc {
	return New(Spec{Name: name, Log: log, Node: node,
		Argv:  func() []string { return append([]string{bin}, args()...) },
		Ready: HTTPReady("http://" + status + "/readyz")})
}

// Master is one haagent master process.
type Master struct {
	*Proc
	// IP is its --listen-address.
	IP      string
	DataDir string
	Root    string
	// Extra flags, added after the standard ones (a later flag wins), read at Start.
	Extra []string

	peers  string
	secure bool
	token  string
}

// ClientURL is the master's etcd client URL.
func (m *Master) ClientURL() string { return m.scheme() + "://" + m.IP + ":2379" }

// StatusAddress is the master's --status-address.
func (m *Master) StatusAddress() string { return m.IP + ":9110" }

func (m *Master) scheme() string {
	if m.secure {
		return "https"
	}
	return "http"
}

// Args are the master's command-line arguments.
func (m *Master) Args() []string {
	args := []string{"--role=master", "--name=" + m.Name, "--peers=" + m.peers,
		"--listen-address=" + m.IP, "--data-dir=" + m.DataDir, "--root=" + m.Root,
		"--status-address=" + m.StatusAddress(), "--log-level=info"}
	if m.secure {
		args = append(args, "--token="+m.token)
	} else {
		args = append(args, "--insecure")
	}
	return append(args, m.Extra...)
}

// TLSFlags are etcdctl's flags for talking to a secure cluster, from m's certificates.
func (m *Master) TLSFlags() []string {
	if !m.secure {
		return nil
	}
	pki := filepath.Join(m.Root, "etc/kubernetes/pki")
	return []string{"--cacert=" + filepath.Join(pki, "ca.crt"), "--cert=" + filepath.Join(pki, "etcd-client.crt"),
		"--key=" + filepath.Join(pki, "etcd-client.key")}
}

// LB is haagent --role=lb.
type LB struct {
	*Proc
	Config LBConfig
}

// LBConfig says how to run an lb.
type LBConfig struct {
	// Name is its --name (default lb).
	Name string
	// IP is its --listen-address, and its status address's host.
	IP string
	// Masters are the masters' addresses, the primary first.
	Masters []string
	// Ports is --lb-ports; empty keeps haagent's default.
	Ports string
	// Token runs it secure (it joins for its certificates); empty runs it --insecure.
	Token string
	// Dir holds its --root and its log.
	Dir string
	// Node runs it in a lab node; nil on loopback.
	Node *netlab.Node
	// Extra flags, added after the standard ones.
	Extra []string
}

// NewLB describes an lb; it starts nothing.
func NewLB(bin string, c LBConfig) *LB {
	if c.Name == "" {
		c.Name = "lb"
	}
	l := &LB{Config: c}
	l.Proc = newRole(bin, c.Name, filepath.Join(c.Dir, c.Name+".log"), c.Node, l.Args, l.StatusAddress())
	return l
}

// Root is the lb's --root.
func (l *LB) Root() string { return filepath.Join(l.Config.Dir, l.Config.Name+"-root") }

// StatusAddress is the lb's --status-address.
func (l *LB) StatusAddress() string { return l.Config.IP + ":9110" }

// Args are the lb's command-line arguments.
func (l *LB) Args() []string {
	c := l.Config
	args := []string{"--role=lb", "--name=" + c.Name, "--masters=" + strings.Join(c.Masters, ","),
		"--listen-address=" + c.IP, "--status-address=" + l.StatusAddress(), "--root=" + l.Root()}
	if c.Ports != "" {
		args = append(args, "--lb-ports="+c.Ports)
	}
	if c.Token != "" {
		args = append(args, "--token="+c.Token)
	} else {
		args = append(args, "--insecure")
	}
	return append(args, c.Extra...)
}

// Minion is haagent --role=minion.
type Minion struct {
	*Proc
	Config MinionConfig
}

// MinionConfig says how to run a minion.
type MinionConfig struct {
	// Name is its --name (default minion1).
	Name string
	// IP is its --advertise-address, and its status address's host.
	IP string
	// LB is the address it joins through (--lb).
	LB string
	// Token is the cluster's token.
	Token string
	// Root is its --root; its log goes next to it.
	Root string
	// Node runs it in a lab node; nil on loopback.
	Node *netlab.Node
	// Extra flags, added after the standard ones.
	Extra []string
}

// NewMinion describes a minion that writes its files under Root and leaves systemd
// alone (--systemd=off); it starts nothing.
func NewMinion(bin string, c MinionConfig) *Minion {
	if c.Name == "" {
		c.Name = "minion1"
	}
	m := &Minion{Config: c}
	m.Proc = newRole(bin, c.Name, c.Root+".log", c.Node, m.Args, m.StatusAddress())
	return m
}

// RunOnce runs the minion until it is ready, then stops it with SIGINT, or until it
// exits on its own (a refused join), and returns its exit code. The error says it did
// not stop within 20 s; it is killed then.
func (m *Minion) RunOnce() (int, error) {
	if err := m.Start(); err != nil {
		return -1, err
	}
	if m.WaitReady(ReadyTimeout) == nil {
		_ = m.Signal(syscall.SIGINT)
	}
	code, err := m.Wait(20 * time.Second)
	if err != nil {
		_ = m.Kill()
		return code, fmt.Errorf("minion %s did not stop: %w", m.Config.Name, err)
	}
	return code, nil
}

// StatusAddress is the minion's --status-address.
func (m *Minion) StatusAddress() string { return m.Config.IP + ":9110" }

// Args are the minion's command-line arguments.
func (m *Minion) Args() []string {
	c := m.Config
	args := []string{"--role=minion", "--name=" + c.Name, "--lb=" + c.LB, "--token=" + c.Token,
		"--root=" + c.Root, "--status-address=" + m.StatusAddress(), "--advertise-address=" + c.IP, "--systemd=off"}
	return append(args, c.Extra...)
}

// NewEtcd describes Debian's etcd as a member of a static cluster (--initial-cluster
// peers), the baseline that haagent's masters are measured against; it starts nothing.
func NewEtcd(name, ip, dir, peers string) *Proc {
	client := "http://" + ip + ":2379"
	return New(Spec{Name: name, Log: filepath.Join(dir, name+".log"),
		Argv: func() []string {
			return []string{"etcd", "--name", name, "--data-dir", filepath.Join(dir, name),
				"--listen-peer-urls", "http://" + ip + ":2380", "--initial-advertise-peer-urls", "http://" + ip + ":2380",
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--initial-cluster", peers, "--initial-cluster-token", "etcd-cluster", "--initial-cluster-state", "new",
				"--log-level", "error"}
		},
		Ready: HTTPReady(client + "/health")})
}
