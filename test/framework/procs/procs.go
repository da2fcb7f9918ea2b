// Package procs runs the processes of the tests: haagent in each role (master, lb,
// minion) and, as a baseline, Debian's etcd, each on loopback or in a node of a test
// lab (test/framework/hosts, test/framework/netlab), all behind one type, Proc: Start, Stop, Kill, Wait,
// Logs and WaitReady. It owns how each role is started as a process; test/framework/hosts owns
// the namespaces they run in.
package procs

import (
	"context"
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
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/netlab"
)

const (
	// ReadyTimeout bounds WaitReady's wait where a caller has no bound of its own.
	ReadyTimeout = 30 * time.Second
	// StopTimeout bounds Stop's wait for a clean exit after SIGTERM.
	StopTimeout = 30 * time.Second
	// KillTimeout bounds Kill's wait for the exit after SIGKILL.
	KillTimeout = 10 * time.Second
)

// Binary returns the haagent binary to test: $HAAGENT_BIN, or one built into dir.
func Binary(dir string) (string, error) {
	if b := os.Getenv("HAAGENT_BIN"); b != "" {
		return filepath.Abs(b) // ip netns exec must find it from any dir
	}
	return Build(filepath.Join(dir, "haagent"), "")
}

// Build builds haagent from this tree into out, with the linker flags given (the
// -X stamps of a release, or of a test's other build) and build tags (rollfault: a
// roll test's broken build).
func Build(out, ldflags string, tags ...string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	cmd := exec.Command("go", "build", "-tags="+strings.Join(tags, ","), "-ldflags="+ldflags, "-o", out, "./cmd/haagent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build haagent (ldflags %q): %v\n%s", ldflags, err, b)
	}
	return out, nil
}

// Main is a TestMain for packages that run haagent: it sets *bin (see Binary),
// requires Debian's etcdctl, the outside client the tests check with, runs the tests
// and exits with their code.
func Main(m *testing.M, bin *string) {
	if _, err := exec.LookPath("etcdctl"); err != nil {
		fmt.Fprintln(os.Stderr, "etcdctl (Debian package etcd-client) is required: run 'make test', which installs it")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "haagent-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin, err = Binary(dir)
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Spec says how to run one process.
type Spec struct {
	// Name names the process in errors, e.g. m1 or lb.
	Name string
	// Log is the file that its stdout and stderr are appended to.
	Log string
	// Node is the lab node it runs in; nil runs it in this process's network namespace.
	Node *netlab.Node
	// Env is added to this process's environment.
	Env []string
	// Argv is called at every Start, so that a role's flags may change between runs.
	Argv func() []string
	// Ready checks once whether the process is ready, dialing with dial (from inside
	// Node). Nil: a running process is ready.
	Ready func(ctx context.Context, dial DialFunc) error
}

// DialFunc opens a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Proc is one process of a test: a haagent role or a baseline etcd.
type Proc struct {
	Spec

	mu   sync.Mutex // guards the fields below
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// New describes a process; it starts nothing.
func New(s Spec) *Proc { return &Proc{Spec: s} }

// Dial connects from where the process runs, so that the test reaches its addresses.
func (p *Proc) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.Node != nil {
		return p.Node.DialContext(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Start launches the process; its output is appended to Log. It gets SIGKILL if this
// process dies, so that a killed test leaves none behind.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	if err := os.MkdirAll(filepath.Dir(p.Log), 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	argv := p.Argv()
	var cmd *exec.Cmd
	if p.Node != nil {
		cmd = p.Node.CommandContext(context.Background(), argv[0], argv[1:]...)
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		log.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
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

// Pid is the process ID, or 0 when it was not started.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Wait waits up to timeout for the process to exit and returns its exit code, or minus
// the signal that killed it. The process can then be started again.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return 0, fmt.Errorf("%s was not started", p.Name)
	}
	select {
	case <-done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still runs after %s", p.Name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.err
	p.cmd, p.done = nil, nil
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
func (p *Proc) Signal(sig syscall.Signal) error {
	pid := p.Pid()
	if pid == 0 {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return syscall.Kill(pid, sig)
}

// Kill is kill -9, then waits for the exit.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_, err := p.Wait(KillTimeout)
	return err
}

// Stop sends SIGTERM and returns the exit code.
func (p *Proc) Stop() (int, error) {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	return p.Wait(StopTimeout)
}

// StopOrKill stops the process if it runs, and kills it if it does not stop.
func (p *Proc) StopOrKill() {
	if p.Running() {
		if _, err := p.Stop(); err != nil {
			_ = p.Kill()
		}
	}
}

// Logs returns everything the process wrote, over all its runs.
func (p *Proc) Logs() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// LogTail returns the last n lines of Logs.
func (p *Proc) LogTail(n int) string { return Tail(p.Logs(), n) }

// Ready checks once whether the process is ready.
func (p *Proc) Ready(ctx context.Context) error {
	if !p.Running() {
		return fmt.Errorf("%s is not running", p.Name)
	}
	if p.Spec.Ready == nil {
		return nil
	}
	return p.Spec.Ready(ctx, p.Dial)
}

// WaitReady waits up to timeout for Ready; it gives up at once if the process exits,
// with the tail of its log.
func (p *Proc) WaitReady(timeout time.Duration) error {
	return await.Until(context.Background(), p.Name+" to be ready", timeout, func() error {
		if !p.Running() {
			return await.Stop(fmt.Errorf("%s exited; log tail:\n%s", p.Name, p.LogTail(20)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return p.Ready(ctx)
	}, await.Every(20*time.Millisecond))
}

// HTTPReady is a Ready that wants 200 from GET url: /readyz of a role's status
// address, or /health of etcd.
func HTTPReady(url string) func(ctx context.Context, dial DialFunc) error {
	return func(ctx context.Context, dial DialFunc) error {
		c := http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
