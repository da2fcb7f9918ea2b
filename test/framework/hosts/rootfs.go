package hosts

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/haagent/haagent/test/framework/await"
)

// Suite is the Debian release every test host runs.
const Suite = "bookworm"

// Packages are installed into the rootfs on top of debootstrap's minbase. Changing the
// list changes the cache key, so the next run builds a new rootfs.
var Packages = []string{
	"systemd", "systemd-sysv", "dbus", "iproute2", "procps", "ca-certificates",
	"iputils-ping", "netcat-openbsd", "curl", "nftables", "iptables",
	// a container runtime for the minion's kubelet (the e2e test); runc is containerd's
	// dependency, named so that it stays when containerd's dependencies change
	"containerd", "runc",
	// the CNI plugins (bridge, host-local, loopback, portmap in /usr/lib/cni) that the
	// minion's conflist uses, since Debian has no flannel CNI plugin
	"containernetworking-plugins",
	// kube-proxy's and the kubelet's host tools beyond iptables and nft: conntrack to
	// inspect and flush entries, ethtool for checksum offload on vxlan links, socat
	// for port-forwarding runtimes that still shell out to it
	"conntrack", "ethtool", "socat",
	// Debian's distribution registry, for the lab's lb host to serve images: not
	// started at boot, plain HTTP on :5000 without auth (see prepareRootfs)
	"docker-registry",
}

// recipe names how the rootfs is made after debootstrap; bump it when prepareRootfs
// changes so that cached rootfs are rebuilt.
const recipe = "4"

// DefaultCacheDir holds the rootfs tarball and its extracted copy, outside the repo.
// HAAGENT_TEST_CACHE overrides it.
const DefaultCacheDir = "/var/cache/haagent-test"

// CacheDir is where rootfs are cached.
func CacheDir() string {
	if d := os.Getenv("HAAGENT_TEST_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// rootfsKey identifies one rootfs recipe: the suite, the package list and the recipe.
func rootfsKey() string {
	pkgs := slices.Clone(Packages)
	slices.Sort(pkgs)
	sum := sha256.Sum256([]byte(Suite + "\n" + strings.Join(pkgs, ",") + "\n" + recipe))
	return hex.EncodeToString(sum[:])[:12]
}

// Rootfs returns the directory of the read-only base rootfs, building it on first use:
// debootstrap (about a minute), then a tarball in the cache dir that later runs, and
// other test processes, reuse. Only the lower layer of each host's overlay: never write
// into it. Concurrent callers, in this or another process, wait on a file lock.
func Rootfs(ctx context.Context, logf func(string, ...any)) (string, error) {
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	name := "rootfs-" + Suite + "-" + rootfsKey()
	dir := filepath.Join(cache, name)
	stamp := dir + ".ready"
	tarball := dir + ".tar.zst"
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}

	unlock, err := lockFile(ctx, filepath.Join(cache, "lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil // another process finished it while we waited
	}
	if err := removeStale(cache); err != nil {
		return "", err
	}

	if _, err := os.Stat(tarball); err != nil {
		start := time.Now()
		logf("hosts: building the %s rootfs with debootstrap (once; cached in %s)", Suite, tarball)
		if err := buildTarball(ctx, cache, tarball); err != nil {
			return "", err
		}
		logf("hosts: rootfs tarball built in %v", time.Since(start).Round(time.Second))
	}
	start := time.Now()
	tmp := filepath.Join(cache, "extract-"+fmt.Sprint(os.Getpid()))
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	if err := run(ctx, "tar", "--zstd", "-xpf", tarball, "-C", tmp, "--numeric-owner", "--xattrs", "--xattrs-include=*"); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("extract %s: %w", tarball, err)
	}
	os.RemoveAll(dir) // a half-extracted dir from a killed run
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	if err := os.WriteFile(stamp, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	logf("hosts: rootfs extracted to %s in %v", dir, time.Since(start).Round(time.Millisecond))
	return dir, nil
}

// buildTarball runs debootstrap, trims the result and packs it into tarball.
func buildTarball(ctx context.Context, cache, tarball string) error {
	return debootstrapTar(ctx, cache, tarball, Packages, prepareRootfs, "--zstd")
}

// debootstrapTar runs debootstrap's minbase of Suite with packages into a build dir in
// cache, lets prepare change it, and packs it into tarball with tar's extra flags.
func debootstrapTar(ctx context.Context, cache, tarball string, packages []string, prepare func(root string) error, tarFlags ...string) error {
	mirror, err := AptMirror()
	if err != nil {
		return err
	}
	build := filepath.Join(cache, "build-"+fmt.Sprint(os.Getpid()))
	defer removeTree(build)
	args := []string{"--variant=minbase", "--include=" + strings.Join(packages, ","), Suite, build, mirror}
	if err := run(ctx, "debootstrap", args...); err != nil {
		return fmt.Errorf("debootstrap %s from %s: %w", Suite, mirror, err)
	}
	if err := prepare(build); err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	tmp := tarball + ".tmp"
	args = append(append([]string{}, tarFlags...), "-cf", tmp, "-C", build, "--numeric-owner", "--xattrs", "--xattrs-include=*", ".")
	if err := run(ctx, "tar", args...); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pack rootfs: %w", err)
	}
	return os.Rename(tmp, tarball)
}

// ImageRootfsSpec says how to make a container image's Debian base layer.
type ImageRootfsSpec struct {
	// Name and Recipe name the result in the cache: bump Recipe when Prepare changes.
	Name, Recipe string
	// Packages are installed on top of debootstrap's minbase of Suite.
	Packages []string
	// Prepare, if set, changes the rootfs after docs and apt's caches are trimmed.
	Prepare func(root string) error
}

// ImageRootfs returns the path of an uncompressed tar of the rootfs spec describes (test/framework/images
// makes the conformance suite's Debian-based images from it). It is built once, in
// about a minute, and cached in CacheDir under a key of the spec; concurrent callers
// wait on the same lock as Rootfs.
func ImageRootfs(ctx context.Context, spec ImageRootfsSpec, logf func(string, ...any)) (string, error) {
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	pkgs := slices.Clone(spec.Packages)
	slices.Sort(pkgs)
	sum := sha256.Sum256([]byte(Suite + "\n" + strings.Join(pkgs, ",") + "\n" + spec.Recipe))
	tarball := filepath.Join(cache, "image-"+spec.Name+"-"+Suite+"-"+hex.EncodeToString(sum[:])[:12]+".tar")
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil
	}
	unlock, err := lockFile(ctx, filepath.Join(cache, "lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil
	}
	if err := removeStale(cache); err != nil {
		return "", err
	}
	start := time.Now()
	logf("hosts: building the %s image rootfs with debootstrap (once; cached in %s)", spec.Name, tarball)
	prepare := func(root string) error {
		if err := trimRootfs(root); err != nil {
			return err
		}
		if spec.Prepare == nil {
			return nil
		}
		return spec.Prepare(root)
	}
	if err := debootstrapTar(ctx, cache, tarball, spec.Packages, prepare); err != nil {
		return "", err
	}
	logf("hosts: %s image rootfs built in %v", spec.Name, time.Since(start).Round(time.Second))
	return tarball, nil
}

// registryConfig replaces Debian's, which asks for htpasswd auth with no users, so
// every client gets 401. The registry is only reachable inside a lab's namespaces.
const (
	registryConfigPath = "etc/docker/registry/config.yml"
	registryConfig     = `# The test hosts' registry (test/framework/hosts): plain HTTP on :5000, no auth.
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`
)

// prepareRootfs trims docs and locales, removes what must differ per host (each host
// gets its own hostname and machine-id in its overlay), keeps the registry from
// starting on every host, and lets it serve without auth.
func prepareRootfs(root string) error {
	if err := trimRootfs(root); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(root, "etc/hostname")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// The registry's postinst enables it; only the host that serves images should run
	// it, and that host enables it itself.
	if err := os.Remove(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/docker-registry.service")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, registryConfigPath), []byte(registryConfig), 0o644); err != nil {
		return fmt.Errorf("write the registry's config: %w", err)
	}
	// An empty machine-id is "not set yet"; every host writes its own.
	return os.WriteFile(filepath.Join(root, "etc/machine-id"), nil, 0o444)
}

// trimRootfs removes docs, locales and apt's caches: nothing a test reads.
func trimRootfs(root string) error {
	for _, glob := range []string{
		"usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
		"usr/share/lintian/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
		"var/lib/apt/lists/*_*", "var/log/*.log", "var/log/apt/*",
	} {
		matches, _ := filepath.Glob(filepath.Join(root, glob))
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// AptMirror is the first Debian URI that apt uses for Suite, from the deb822 sources
// or, failing that, the one-line sources.list.
func AptMirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(string(b), "\n\n") {
			fields := map[string]string{}
			for _, line := range strings.Split(stanza, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
					fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
				}
			}
			if !slices.Contains(strings.Fields(fields["types"]), "deb") ||
				!slices.Contains(strings.Fields(fields["suites"]), Suite) {
				continue
			}
			if uris := strings.Fields(fields["uris"]); len(uris) > 0 {
				return uris[0], nil
			}
		}
	}
	if f, err := os.Open("/etc/apt/sources.list"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			w := strings.Fields(sc.Text())
			// deb [options] URI suite components...
			if len(w) >= 3 && w[0] == "deb" {
				w = w[1:]
				if strings.HasPrefix(w[0], "[") {
					for len(w) > 0 && !strings.HasSuffix(w[0], "]") {
						w = w[1:]
					}
					w = w[1:]
				}
				if len(w) >= 2 && w[1] == Suite {
					return w[0], nil
				}
			}
		}
	}
	return "", fmt.Errorf("no apt source for %s in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list", Suite)
}

// lockFile takes an exclusive flock on path, waiting until ctx ends or rootfsLockTimeout.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	// Another process builds the rootfs meanwhile: that takes minutes the first time.
	err = await.Until(ctx, "the lock "+path+" (another test process builds the rootfs)", rootfsLockTimeout, func() error {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != nil && !errors.Is(err, syscall.EWOULDBLOCK) {
			return await.Stop(err)
		}
		return err
	}, await.Every(200*time.Millisecond))
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// rootfsLockTimeout bounds the wait for another process's rootfs build: debootstrap
// takes 90-120 s, and a loaded machine may take several times that.
const rootfsLockTimeout = 15 * time.Minute

// removeStale removes build and extract dirs of runs that died; the caller holds the lock,
// so nobody else is using them.
func removeStale(cache string) error {
	for _, glob := range []string{"build-*", "extract-*", "*.tar.zst.tmp", "*.tar.tmp"} {
		matches, _ := filepath.Glob(filepath.Join(cache, glob))
		for _, m := range matches {
			if err := removeTree(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeTree unmounts whatever a killed debootstrap left mounted under dir (proc, sys),
// then removes dir without crossing into any other file system.
func removeTree(dir string) error {
	for _, mp := range mountsUnder(dir) {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if b, err := exec.Command("rm", "-rf", "--one-file-system", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("remove %s: %v: %s", dir, err, b)
	}
	return nil
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	slices.SortFunc(mps, func(a, b string) int { return len(b) - len(a) })
	return mps
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// run runs a command on this machine and returns its output in the error.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(string(b), 30))
	}
	return string(b), nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
