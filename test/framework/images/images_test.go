package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
)

var shared struct {
	once sync.Once
	set  Set
	err  error
	dir  string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// built compiles the programs once for all tests.
func built(t *testing.T) Set {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "haagent-images-")
		if shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		shared.set, shared.err = Build(ctx, shared.dir)
		t.Logf("built nginx and pause in %v", time.Since(start).Round(time.Millisecond))
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.set
}

// proc is a program under test (run by test/framework/procs) and how far waitLine has read its
// output.
type proc struct {
	*procs.Proc
	seen int // lines of output that waitLine has read
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{Proc: procs.New(procs.Spec{Name: filepath.Base(name), Log: filepath.Join(t.TempDir(), "output"),
		Argv: func() []string { return append([]string{name}, args...) }})}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.Running() {
			_ = p.Kill()
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.Logs())
		}
	})
	return p
}

// waitLine returns the first submatch of re in the first output line after those read
// so far that matches it; the lines before it count as read too.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	var m []string
	err := await.Until(context.Background(), fmt.Sprintf("a line from %s matching %q", p.Name, re), timeout, func() error {
		exited := !p.Running()
		lines := strings.Split(p.Logs(), "\n")
		lines = lines[:len(lines)-1] // the last piece is a line still being written
		for ; p.seen < len(lines); p.seen++ {
			if m = re.FindStringSubmatch(lines[p.seen]); m != nil {
				p.seen++
				return nil
			}
		}
		if exited {
			return await.Stop(fmt.Errorf("%s exited", p.Name))
		}
		return errors.New("no such line yet")
	}, await.Every(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return m[1]
}

// stop sends sig and returns an error unless the process exits 0 within timeout.
func (p *proc) stop(t *testing.T, sig syscall.Signal, timeout time.Duration) error {
	t.Helper()
	if err := p.Signal(sig); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(timeout)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		return fmt.Errorf("%s exited %d after %v", p.Name, code, sig)
	}
	return nil
}

// waitFor polls cond until it holds, failing with what after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := await.Until(context.Background(), what, timeout, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	}, await.Every(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
}

var listening = regexp.MustCompile(`listening on ([^\s"]+)`)

func TestNginx(t *testing.T) {
	set := built(t)
	p := start(t, set.NginxBin, "-addr", "127.0.0.1:0")
	addr := p.waitLine(t, listening, 10*time.Second)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		name   string
		path   string
		status int
		want   []string
	}{
		{"root", "/", 200, []string{"<title>Welcome to nginx!</title>", "Served by pod " + host + "."}},
		{"healthz", "/healthz", 200, []string{"ok"}},
		{"missing", "/missing", 404, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Get("http://" + addr + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("GET %s: status %d, want %d", tc.path, resp.StatusCode, tc.status)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("GET %s: body lacks %q:\n%s", tc.path, w, body)
				}
			}
			// The access-log line is what `kubectl logs` shows.
			p.waitLine(t, regexp.MustCompile(`(`+regexp.QuoteMeta(`"GET `+tc.path+` HTTP/1.1" `+strconv.Itoa(tc.status))+`)`), 5*time.Second)
		})
	}
	if err := p.stop(t, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Errorf("nginx after SIGTERM: %v, want exit 0", err)
	}
}

func TestNginxAddrFromEnv(t *testing.T) {
	set := built(t)
	t.Setenv("NGINX_ADDR", "127.0.0.1:0")
	p := start(t, set.NginxBin)
	addr := p.waitLine(t, listening, 10*time.Second)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("listening on %s, want 127.0.0.1 from NGINX_ADDR", addr)
	}
	if err := p.stop(t, syscall.SIGINT, 10*time.Second); err != nil {
		t.Errorf("nginx after SIGINT: %v, want exit 0", err)
	}
}

// procStat returns the state and parent pid of pid from /proc, and false once it is gone.
func procStat(t *testing.T, pid int) (state string, ppid int, ok bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return "", 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces and parentheses; the fields after its last ) don't.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("parse /proc/%d/stat: %v", pid, err)
	}
	return f[0], ppid, true
}

// TestPause gives pause a child the way PID 1 of a pod inherits one: a shell starts the
// child and then execs pause in its own place, so the child's parent is pause.
func TestPause(t *testing.T) {
	set := built(t)
	p := start(t, "/bin/sh", "-c", `sleep 300 & echo "child $!"; exec "$0"`, set.PauseBin)
	child, err := strconv.Atoi(p.waitLine(t, regexp.MustCompile(`^child (\d+)$`), 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	waitFor(t, 10*time.Second, "the shell to exec pause", func() bool {
		exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		return err == nil && exe == set.PauseBin
	})
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	if _, ppid, ok := procStat(t, child); !ok || ppid != pid {
		t.Fatalf("child %d: parent %d (exists %v), want pause %d", child, ppid, ok, pid)
	}

	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// An unreaped child stays in /proc as a zombie (state Z); a reaped one is gone.
	waitFor(t, 10*time.Second, "pause to reap its killed child", func() bool {
		_, _, ok := procStat(t, child)
		return !ok
	})

	if err := p.stop(t, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Errorf("pause after SIGTERM: %v, want exit 0", err)
	}
}

// checkImage checks what a pod runtime reads from img: platform, entrypoint, ports, and
// the one layer holding the binary bin at entrypoint[0].
func checkImage(t *testing.T, img v1.Image, bin string, entrypoint []string, ports ...string) {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cfg.OS, cfg.Architecture)
	}
	if !slices.Equal(cfg.Config.Entrypoint, entrypoint) {
		t.Errorf("entrypoint %q, want %q", cfg.Config.Entrypoint, entrypoint)
	}
	var got []string
	for p := range cfg.Config.ExposedPorts {
		got = append(got, p)
	}
	slices.Sort(got)
	if !slices.Equal(got, ports) {
		t.Errorf("exposed ports %q, want %q", got, ports)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if "/"+h.Name != entrypoint[0] {
			continue
		}
		found = true
		if h.Mode&0o111 == 0 || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: type %c mode %o, want an executable file", h.Name, h.Typeflag, h.Mode)
		}
		gotSum := sha256.New()
		if _, err := io.Copy(gotSum, tr); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gotSum.Sum(nil), sha256Of(want)) {
			t.Errorf("%s in the layer differs from %s", h.Name, bin)
		}
	}
	if !found {
		t.Errorf("layer has no %s", entrypoint[0])
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func TestFromBinary(t *testing.T) {
	set := built(t)
	a, err := set.Nginx()
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, a, set.NginxBin, []string{NginxPath}, NginxPort)
	b, err := set.Nginx()
	if err != nil {
		t.Fatal(err)
	}
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Errorf("two images of one binary: digests %s and %s, want equal", da, db)
	}

	nested, err := FromBinary(set.PauseBin, []string{"/usr/local/bin/pause", "-v"})
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, nested, set.PauseBin, []string{"/usr/local/bin/pause", "-v"})

	for _, ep := range [][]string{nil, {"pause"}} {
		if _, err := FromBinary(set.PauseBin, ep); err == nil {
			t.Errorf("entrypoint %q: no error, want one for a non-absolute path", ep)
		}
	}
}

// startRegistry runs Debian's docker-registry on 127.0.0.1 and returns its address.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry (Debian package docker-registry) is missing: run scripts/deps.sh (make test does)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(RegistryConfig("127.0.0.1:0", filepath.Join(dir, "data"))), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, bin, "serve", cfg)
	addr := p.waitLine(t, listening, 20*time.Second)
	t.Cleanup(func() {
		if p.Running() {
			p.stop(t, syscall.SIGTERM, 10*time.Second)
		}
	})
	return addr
}

func TestPushPull(t *testing.T) {
	set := built(t)
	reg := startRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var dials atomic.Int64
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	for _, tc := range []struct {
		name       string
		image      func() (v1.Image, error)
		bin        string
		entrypoint []string
		ports      []string
	}{
		{Nginx, set.Nginx, set.NginxBin, []string{NginxPath}, []string{NginxPort}},
		{Pause, set.Pause, set.PauseBin, []string{PausePath}, nil},
	} {
		t.Run(strings.Split(tc.name, ":")[0], func(t *testing.T) {
			img, err := tc.image()
			if err != nil {
				t.Fatal(err)
			}
			ref := reg + "/" + tc.name
			before := dials.Load()
			start := time.Now()
			if err := Push(ctx, img, ref, WithDialContext(dial)); err != nil {
				t.Fatal(err)
			}
			t.Logf("pushed %s in %v", ref, time.Since(start).Round(time.Millisecond))
			if dials.Load() == before {
				t.Error("Push did not dial through WithDialContext")
			}

			r, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			pulled, err := remote.Image(r, remote.WithContext(ctx))
			if err != nil {
				t.Fatalf("pull %s: %v", ref, err)
			}
			want, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			got, err := pulled.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("pulled %s: digest %s, pushed %s", ref, got, want)
			}
			checkImage(t, pulled, tc.bin, tc.entrypoint, tc.ports...)

			// A second push of the same image finds every blob present and must succeed.
			if err := Push(ctx, img, ref); err != nil {
				t.Errorf("push again: %v", err)
			}
		})
	}
}

func TestWriteTarball(t *testing.T) {
	set := built(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		ref        string
		image      func() (v1.Image, error)
		bin        string
		entrypoint []string
		ports      []string
		repoTag    string
	}{
		{NginxImage, set.Nginx, set.NginxBin, []string{NginxPath}, []string{NginxPort}, NginxImage},
		{SandboxImage, set.Pause, set.PauseBin, []string{PausePath}, nil, SandboxImage},
	} {
		t.Run(strings.Split(tc.ref, "/")[0], func(t *testing.T) {
			img, err := tc.image()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(tc.ref)+".tar")
			if err := WriteTarball(img, tc.ref, path); err != nil {
				t.Fatal(err)
			}
			m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
			if err != nil {
				t.Fatal(err)
			}
			if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{tc.repoTag}) {
				t.Errorf("manifest.json: %+v, want one image tagged %s", m, tc.repoTag)
			}
			tag, err := name.NewTag(tc.ref)
			if err != nil {
				t.Fatal(err)
			}
			back, err := tarball.ImageFromPath(path, &tag)
			if err != nil {
				t.Fatalf("read %s: %v", path, err)
			}
			want, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			got, err := back.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s: digest %s, want %s", path, got, want)
			}
			checkImage(t, back, tc.bin, tc.entrypoint, tc.ports...)
		})
	}
}
