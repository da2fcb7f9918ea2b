// Package packaging tests the rpm and the deb that `make package` builds from nfpm.yaml:
// their metadata and contents, rpmlint, scriptlets, installs into scratch roots and from
// a dnf repository, and a real install, upgrade and removal under systemd in a test
// host. The parts that install need root and skip without it.
package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/haagent/haagent/test/framework/rootonly"
)

// repoRoot is the repository's top dir.
var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// shared holds what the tests of this package share: a scratch dir, the binary and the
// packages, each made once on first use.
var shared struct {
	dir string

	binOnce sync.Once
	bin     string
	binErr  error

	pkgOnce sync.Once
	pkgs    *packages
	pkgErr  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "haagent-packaging-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared.dir = dir
	code := m.Run()
	if shared.pkgs != nil {
		shared.pkgs.close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// haagentBin is the binary under test: HAAGENT_BIN (make test sets it), else a build of
// the working tree.
func haagentBin(t *testing.T) string {
	t.Helper()
	shared.binOnce.Do(func() {
		if b := os.Getenv("HAAGENT_BIN"); b != "" {
			shared.bin = b
			return
		}
		out := filepath.Join(shared.dir, "haagent")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/haagent")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			shared.binErr = fmt.Errorf("build haagent: %v\n%s", err, b)
		}
		shared.bin = out
	})
	if shared.binErr != nil {
		t.Fatal(shared.binErr)
	}
	return shared.bin
}

// build is one `make package` of one version.
type build struct {
	Version string // VERSION given to make: the binary's and the packages' version
	Release string // the package release
	RPM     string
	DEB     string
}

// packages are two builds, the second one newer, both signed with a throwaway key, and
// the dnf repository that holds both rpms.
type packages struct {
	Old, New build
	Repo     string
	// PubKey is the armored public key that signed the rpms.
	PubKey string
	// NFPM is the nfpm that `make package` installed.
	NFPM string

	gnupg string
}

func (p *packages) close() {
	// gpg starts an agent for its home dir; stop it.
	cmd := exec.Command("gpgconf", "--kill", "all")
	cmd.Env = append(os.Environ(), "GNUPGHOME="+p.gnupg)
	cmd.Run()
}

// getPackages runs `make repo` (which runs `make package`, which runs `make build`) for
// the VERSION of the tree and for VERSION.1, into a scratch dist dir.
func getPackages(t *testing.T) *packages {
	t.Helper()
	shared.pkgOnce.Do(func() { shared.pkgs, shared.pkgErr = makePackages() })
	if shared.pkgErr != nil {
		t.Fatal(shared.pkgErr)
	}
	return shared.pkgs
}

func makePackages() (*packages, error) {
	for _, tool := range []string{"make", "gpg", "gpgconf", "createrepo_c"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is missing: run scripts/deps.sh (make test does)", tool)
		}
	}
	vb, err := os.ReadFile(filepath.Join(repoRoot, "VERSION"))
	if err != nil {
		return nil, err
	}
	base := strings.TrimSpace(string(vb))
	dir := filepath.Join(shared.dir, "pkg")
	p := &packages{gnupg: filepath.Join(dir, "gnupg")}
	if err := os.MkdirAll(p.gnupg, 0o700); err != nil {
		return nil, err
	}

	// A throwaway signing key, so that the rpms are signed as a release would be.
	key := filepath.Join(dir, "signing-key.asc")
	p.PubKey = filepath.Join(dir, "RPM-GPG-KEY-haagent-test")
	gpg := func(args ...string) ([]byte, error) {
		cmd := exec.Command("gpg", append([]string{"--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		cmd.Env = append(os.Environ(), "GNUPGHOME="+p.gnupg)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out, nil
	}
	if _, err := gpg("--quick-gen-key", "haagent test signing key <test@haagent.invalid>", "rsa2048", "sign", "never"); err != nil {
		return p, err
	}
	for path, args := range map[string][]string{key: {"--armor", "--export-secret-keys"}, p.PubKey: {"--armor", "--export"}} {
		out, err := gpg(args...)
		if err != nil {
			return p, err
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return p, err
		}
	}

	dist := filepath.Join(dir, "dist")
	p.Repo = filepath.Join(dist, "repo")
	for i, v := range []string{base, base + ".1"} {
		bin := filepath.Join(dir, "bin-"+v, "haagent")
		args := []string{"-C", repoRoot, "-f", "Makefile", "-f", "packaging/package.mk", "repo",
			"VERSION=" + v, "BIN=" + bin, "DIST=" + dist, "RPM_SIGNING_KEY=" + key}
		cmd := exec.Command("make", args...)
		// Not the jobserver of a `make test` that runs us.
		cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
			return strings.HasPrefix(e, "MAKEFLAGS=") || strings.HasPrefix(e, "MFLAGS=") || strings.HasPrefix(e, "MAKELEVEL=")
		})
		out, err := cmd.CombinedOutput()
		if err != nil {
			return p, fmt.Errorf("make %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		b := build{
			Version: v,
			Release: "1",
			RPM:     filepath.Join(dist, "haagent-"+v+".x86_64.rpm"),
			DEB:     filepath.Join(dist, "haagent_"+v+"-1_amd64.deb"),
		}
		for _, f := range []string{b.RPM, b.DEB} {
			if _, err := os.Stat(f); err != nil {
				return p, fmt.Errorf("make package did not make %s:\n%s", f, out)
			}
		}
		if i == 0 {
			p.Old = b
		} else {
			p.New = b
		}
		if m := regexp.MustCompile(`(\S+/nfpm) pkg `).FindSubmatch(out); m != nil {
			p.NFPM = string(m[1])
		}
	}
	if p.NFPM == "" {
		return p, fmt.Errorf("cannot tell which nfpm make used")
	}
	return p, nil
}

// requireRoot stops a test that installs into scratch roots or boots test hosts where it
// can't run as root (test/framework/rootonly).
func requireRoot(t *testing.T) {
	t.Helper()
	rootonly.Require(t, "installing packages into scratch roots and test hosts")
}

// run runs a command and returns its stdout, failing the test with its output on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(nil, "", name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runErr runs a command with extra environment in dir and returns its stdout; the error
// carries stderr too.
func runErr(env []string, dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// binVersion is the version that `haagent version` prints: "haagent 0.1.0 (commit ...)".
func binVersion(t *testing.T, out string) string {
	t.Helper()
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "haagent" {
		t.Fatalf("haagent version printed %q", out)
	}
	return f[1]
}

// lines splits output into its non-empty trimmed lines.
func lines(s string) []string {
	var ls []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func octal(m os.FileMode) string { return "0" + strconv.FormatUint(uint64(m.Perm()), 8) }
