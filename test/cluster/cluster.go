// Package cluster runs real haagent masters as processes on loopback addresses
// (127.0.0.21-23 by default), for the integration tests, the benchmarks and the demo.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binary returns the haagent binary to test: $HAAGENT_BIN, or one built into dir.
func Binary(dir string) (string, error) {
	if b := os.Getenv("HAAGENT_BIN"); b != "" {
		return b, nil
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(dir, "haagent")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/haagent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build haagent: %v\n%s", err, b)
	}
	return out, nil
}

// Master is one haagent master process.
type Master struct {
	Name    string
	IP      string
	DataDir string
	Root    string
	LogPath string
	// Extra flags, added after the standard ones.
	Extra []string
	// Wrap prefixes the command line, e.g. ip netns exec NAME to run the master in a
	// network namespace. It must exec the binary in place, so that the pid is haagent's.
	Wrap []string
	// Dial reaches the master's status address; nil dials from this process's network
	// namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	bin    string
	peers  string
	secure bool
	token  string

	mu   sync.Mutex // guards the fields below
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Cluster is a set of masters sharing one --peers list.
type Cluster struct {
	Bin     string
	Dir     string
	Masters []*Master
	// Token, when set, runs the masters in secure mode (mTLS etcd); else --insecure.
	Token string
}

// Secure switches every master to secure mode with token; call before starting.
func (c *Cluster) Secure(token string) {
	c.Token = token
	for _, m := range c.Masters {
		m.secure, m.token = true, token
	}
}

func (m *Master) scheme() string {
	if m.secure {
		return "https"
	}
	return "http"
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

// New describes n masters at 127.0.0.21.. under dir; it starts nothing.
func New(bin, dir string, n int) *Cluster { return NewWith(bin, dir, n, Options{}) }

// Options say where masters run; the zero value is New's loopback layout.
type Options struct {
	// IPs are the masters' addresses, m1 first; default 127.0.0.21, .22, ...
	IPs []string
	// Wrap returns master i's (0-based) command prefix, see Master.Wrap; nil runs
	// the binary directly.
	Wrap func(i int) []string
	// Dial returns how to reach master i's status address, see Master.Dial.
	Dial func(i int) func(ctx context.Context, network, addr string) (net.Conn, error)
}

// NewWith describes n masters under dir as o says; it starts nothing. For masters in
// network namespaces (see test/netns), give their IPs, Wrap as the host's ip netns
// exec prefix and Dial as the host's DialContext.
func NewWith(bin, dir string, n int, o Options) *Cluster {
	c := &Cluster{Bin: bin, Dir: dir}
	var peers []string
	for i := range n {
		name := fmt.Sprintf("m%d", i+1)
		ip := fmt.Sprintf("127.0.0.%d", 21+i)
		if i < len(o.IPs) {
			ip = o.IPs[i]
		}
		peers = append(peers, fmt.Sprintf("%s=http://%s:2380", name, ip))
		m := &Master{
			Name: name, IP: ip, bin: bin,
			DataDir: filepath.Join(dir, name, "etcd"),
			Root:    filepath.Join(dir, name, "root"),
			LogPath: filepath.Join(dir, name+".log"),
		}
		if o.Wrap != nil {
			m.Wrap = o.Wrap(i)
		}
		if o.Dial != nil {
			m.Dial = o.Dial(i)
		}
		c.Masters = append(c.Masters, m)
	}
	for _, m := range c.Masters {
		m.peers = strings.Join(peers, ",")
	}
	return c
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

// ClientURL is the master's etcd client URL.
func (m *Master) ClientURL() string { return m.scheme() + "://" + m.IP + ":2379" }

// StatusAddress is the master's --status-address.
func (m *Master) StatusAddress() string { return m.IP + ":9110" }

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

// Start launches the process; its output is appended to LogPath.
func (m *Master) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("%s already running", m.Name)
	}
	if err := os.MkdirAll(filepath.Dir(m.LogPath), 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	argv := append(append(append([]string{}, m.Wrap...), m.bin), m.Args()...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", m.Name, err)
	}
	done := make(chan struct{})
	m.cmd, m.done = cmd, done
	go func() {
		err := cmd.Wait()
		log.Close()
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process is alive.
func (m *Master) Running() bool {
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Pid is the process ID, or 0.
func (m *Master) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Wait waits up to timeout for the process to exit and returns its exit code.
func (m *Master) Wait(timeout time.Duration) (int, error) {
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	if done == nil {
		return 0, fmt.Errorf("%s was not started", m.Name)
	}
	select {
	case <-done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %s", m.Name, timeout)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.err
	m.cmd, m.done = nil, nil
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

// Signal sends sig to the process.
func (m *Master) Signal(sig syscall.Signal) error {
	pid := m.Pid()
	if pid == 0 {
		return fmt.Errorf("%s is not running", m.Name)
	}
	return syscall.Kill(pid, sig)
}

// Kill is kill -9, then waits for the exit.
func (m *Master) Kill() error {
	if err := m.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_, err := m.Wait(10 * time.Second)
	return err
}

// Stop sends SIGTERM and returns the exit code.
func (m *Master) Stop() (int, error) {
	if err := m.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	return m.Wait(30 * time.Second)
}

// Ready reports whether /readyz answers 200.
func (m *Master) Ready(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.StatusAddress()+"/readyz", nil)
	c := http.Client{Timeout: 500 * time.Millisecond}
	if m.Dial != nil {
		c.Transport = &http.Transport{DialContext: m.Dial, DisableKeepAlives: true}
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady polls /readyz until it answers 200 or timeout passes.
func (m *Master) WaitReady(timeout time.Duration) error {
	return Await(timeout, 20*time.Millisecond, func() error {
		if !m.Running() {
			return errExited(m)
		}
		if !m.Ready(context.Background()) {
			return fmt.Errorf("%s not ready on %s", m.Name, m.StatusAddress())
		}
		return nil
	})
}

func errExited(m *Master) error {
	return &Permanent{fmt.Errorf("%s exited; log tail:\n%s", m.Name, m.LogTail(20))}
}

// LogTail returns the last n lines of the master's log.
func (m *Master) LogTail(n int) string {
	b, _ := os.ReadFile(m.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns the whole log.
func (m *Master) Log() string {
	b, _ := os.ReadFile(m.LogPath)
	return string(b)
}

// StartAll starts the given masters at the same moment.
func (c *Cluster) StartAll(ms ...*Master) error {
	if len(ms) == 0 {
		ms = c.Masters
	}
	errs := make(chan error, len(ms))
	var start sync.WaitGroup
	start.Add(1)
	for _, m := range ms {
		go func() { start.Wait(); errs <- m.Start() }()
	}
	start.Done()
	var all []error
	for range ms {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
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
		if m.Running() {
			if _, err := m.Stop(); err != nil {
				_ = m.Kill()
			}
		}
	}
}

// Permanent marks an Await condition error that will not get better by waiting.
type Permanent struct{ Err error }

func (p *Permanent) Error() string { return p.Err.Error() }

// Await polls cond every interval until it returns nil, returns a *Permanent, or
// timeout passes; the error then says what was awaited.
func Await(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var p *Permanent
		if errors.As(err, &p) {
			return p.Err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// Etcdctl runs Debian's etcdctl (v3 API) against endpoints and returns its stdout.
func (c *Cluster) Etcdctl(endpoints string, args ...string) (string, error) {
	flags := append([]string{"--endpoints=" + endpoints, "--command-timeout=3s", "--dial-timeout=2s"}, c.Masters[0].TLSFlags()...)
	cmd := exec.Command("etcdctl", append(flags, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
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

// Leader returns the master that the given masters agree leads, or an error.
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
