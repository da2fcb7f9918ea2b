package procs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/haagent/haagent/test/framework/netlab"
)

// Cluster is a set of masters sharing one --peers list.
type Cluster struct {
	Bin     string
	Dir     string
	Masters []*Master
	// Token, when set, runs the masters in secure mode (mTLS etcd); else --insecure.
	Token string
}

// Options say where masters run; the zero value is New's loopback layout.
type Options struct {
	// Nodes run master i in Nodes[i], at its IP; nil runs them on 127.0.0.21, .22, ...
	Nodes []*netlab.Node
}

// NewCluster describes n masters on 127.0.0.21.. under dir; it starts nothing.
func NewCluster(bin, dir string, n int) *Cluster { return NewClusterWith(bin, dir, n, Options{}) }

// NewClusterWith describes n masters under dir as o says; it starts nothing.
func NewClusterWith(bin, dir string, n int, o Options) *Cluster {
	c := &Cluster{Bin: bin, Dir: dir}
	var peers []string
	for i := range n {
		name := fmt.Sprintf("m%d", i+1)
		ip := fmt.Sprintf("127.0.0.%d", 21+i)
		var node *netlab.Node
		if i < len(o.Nodes) {
			node = o.Nodes[i]
			ip = node.IP.String()
		}
		peers = append(peers, fmt.Sprintf("%s=http://%s:2380", name, ip))
		m := &Master{IP: ip, DataDir: filepath.Join(dir, name, "etcd"), Root: filepath.Join(dir, name, "root")}
		m.Proc = newRole(bin, name, filepath.Join(dir, name+".log"), node, m.Args, m.StatusAddress())
		c.Masters = append(c.Masters, m)
	}
	for _, m := range c.Masters {
		m.peers = strings.Join(peers, ",")
	}
	return c
}

// Secure switches every master to secure mode with token; call before starting.
func (c *Cluster) Secure(token string) {
	c.Token = token
	for _, m := range c.Masters {
		m.secure, m.token = true, token
	}
}

// Peers is the --peers value every master gets.
func (c *Cluster) Peers() string { return c.Masters[0].peers }

// Endpoints lists the client URLs of the given masters (all when none given).
func (c *Cluster) Endpoints(ms ...*Master) string {
	if len(ms) == 0 {
		ms = c.Masters
	}
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.ClientURL())
	}
	return strings.Join(eps, ",")
}

// StartAll starts the given masters (all when none given) at the same moment.
func (c *Cluster) StartAll(ms ...*Master) error {
	if len(ms) == 0 {
		ms = c.Masters
	}
	errs := make([]error, len(ms))
	var start, wg sync.WaitGroup
	start.Add(1)
	for i, m := range ms {
		wg.Go(func() { start.Wait(); errs[i] = m.Start() })
	}
	start.Done()
	wg.Wait()
	return errors.Join(errs...)
}

// WaitReady waits for every given master (all when none given).
func (c *Cluster) WaitReady(timeout time.Duration, ms ...*Master) error {
	if len(ms) == 0 {
		ms = c.Masters
	}
	for _, m := range ms {
		if err := m.WaitReady(timeout); err != nil {
			return err
		}
	}
	return nil
}

// StopAll stops every running master with SIGTERM, and kills what is left.
func (c *Cluster) StopAll() {
	for _, m := range c.Masters {
		m.StopOrKill()
	}
}

// Etcdctl runs Debian's etcdctl (v3 API) against endpoints from this process's network
// namespace and returns its stdout.
func (c *Cluster) Etcdctl(endpoints string, args ...string) (string, error) {
	flags := append([]string{"--endpoints=" + endpoints, "--command-timeout=3s", "--dial-timeout=2s"}, c.Masters[0].TLSFlags()...)
	return RunEtcdctl(exec.Command("etcdctl", append(flags, args...)...))
}

// RunEtcdctl runs an etcdctl command, made by exec.Command or by a test host's
// CommandContext (to run it in the host's network namespace), with the v3 API, and
// returns its stdout. The error names the command's arguments (not its flags) and
// carries what etcdctl printed on stderr.
func RunEtcdctl(cmd *exec.Cmd) (string, error) {
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var args []string
		for _, a := range cmd.Args[1:] {
			if !strings.HasPrefix(a, "--") {
				args = append(args, a)
			}
		}
		return out.String(), fmt.Errorf("etcdctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// EtcdMember is a member as `etcdctl member list -w json` prints it.
type EtcdMember struct {
	ID         uint64   `json:"ID"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner"`
}

// MemberList asks etcdctl for the member list through endpoints.
func (c *Cluster) MemberList(endpoints string) ([]EtcdMember, uint64, error) {
	out, err := c.Etcdctl(endpoints, "member", "list", "-w", "json")
	if err != nil {
		return nil, 0, err
	}
	var resp struct {
		Header struct {
			ClusterID uint64 `json:"cluster_id"`
		} `json:"header"`
		Members []EtcdMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, 0, fmt.Errorf("member list json: %w: %s", err, out)
	}
	return resp.Members, resp.Header.ClusterID, nil
}

// EndpointStatus is one row of `etcdctl endpoint status -w json`.
type EndpointStatus struct {
	Endpoint string `json:"Endpoint"`
	Status   struct {
		Header struct {
			ClusterID uint64 `json:"cluster_id"`
			MemberID  uint64 `json:"member_id"`
		} `json:"header"`
		Leader    uint64 `json:"leader"`
		IsLearner bool   `json:"isLearner"`
	} `json:"Status"`
}

// Statuses asks each endpoint for its status.
func (c *Cluster) Statuses(endpoints string) ([]EndpointStatus, error) {
	out, err := c.Etcdctl(endpoints, "endpoint", "status", "-w", "json")
	if err != nil {
		return nil, err
	}
	var st []EndpointStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("endpoint status json: %w: %s", err, out)
	}
	return st, nil
}

// Leader returns the master that the given masters (all when none given) agree leads.
func (c *Cluster) Leader(ms ...*Master) (*Master, error) {
	if len(ms) == 0 {
		ms = c.Masters
	}
	st, err := c.Statuses(c.Endpoints(ms...))
	if err != nil {
		return nil, err
	}
	var lead uint64
	for _, s := range st {
		if s.Status.Leader == 0 || (lead != 0 && s.Status.Leader != lead) {
			return nil, fmt.Errorf("no agreed leader: %+v", st)
		}
		lead = s.Status.Leader
	}
	for _, s := range st {
		if s.Status.Header.MemberID == lead {
			for _, m := range ms {
				if s.Endpoint == m.ClientURL() || s.Endpoint == m.IP+":2379" {
					return m, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("leader %x is not among the asked masters", lead)
}

// HealthyCount runs `etcdctl endpoint health` and counts the healthy endpoints.
func (c *Cluster) HealthyCount(endpoints string) (int, error) {
	out, err := c.Etcdctl(endpoints, "endpoint", "health", "-w", "json")
	var hs []struct {
		Endpoint string `json:"endpoint"`
		Health   bool   `json:"health"`
	}
	if jerr := json.Unmarshal([]byte(out), &hs); jerr != nil {
		return 0, errors.Join(err, fmt.Errorf("endpoint health json: %w: %s", jerr, out))
	}
	n := 0
	for _, h := range hs {
		if h.Health {
			n++
		}
	}
	return n, nil
}
