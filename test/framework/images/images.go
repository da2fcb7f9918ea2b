// Package images builds the lab's container images from the project's own static Go
// programs (nginx, pause, webhook and etcd beside this file), from CoreDNS's binary and,
// for Kubernetes' conformance suite, from the test programs of the kubernetes module, a
// Debian base and Debian's busybox (conformance.go), and
// pushes them to a plain-HTTP registry or writes them as docker-archive tarballs, so
// that pods run with no internet.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/haagent/haagent/cluster/addons"
)

// Names of the images in the lab's registry. containerd reaches that registry as a
// mirror of docker.io and of registry.k8s.io, and a mirror is asked for the repository
// path without the registry's host: `image: nginx` becomes docker.io/library/nginx:latest
// and is fetched as library/nginx:latest; the sandbox image registry.k8s.io/pause:3.10 is
// fetched as pause:3.10.
const (
	Nginx   = "library/nginx:latest"
	Pause   = "pause:3.10"
	Webhook = "library/webhook:e2e"
	// CoreDNS is the cluster DNS add-on's image (addons.CoreDNSImage), made from the
	// binary scripts/build-kube.sh builds.
	CoreDNS = "coredns/coredns:" + addons.CoreDNSVersion
)

// The names that pods and containerd's config use for the same images, and that
// WriteTarball should be given, since `ctr images import` names an image by its tag.
const (
	NginxImage   = "docker.io/" + Nginx
	SandboxImage = "registry.k8s.io/" + Pause
)

// Where each program lives inside its image, and nginx's port.
const (
	NginxPath   = "/nginx"
	PausePath   = "/pause"
	WebhookPath = "/webhook"
	CoreDNSPath = "/coredns"
	NginxPort   = "80/tcp"
)

// The platform of the images: the lab's hosts. Build cross-compiles for it, so that the
// config never claims an architecture its binary is not.
const (
	OS   = "linux"
	Arch = "amd64"
)

// Set holds the paths of the built programs.
type Set struct {
	NginxBin   string
	PauseBin   string
	WebhookBin string
	// EtcdBin is etcd's server, for the conformance suite's etcd image.
	EtcdBin string
}

// Build compiles the nginx, pause, webhook and etcd programs, statically (CGO_ENABLED=0), into dir. It
// needs the go tool and this package's source tree, so it serves tests and the lab, not
// an installed haagent.
func Build(ctx context.Context, dir string) (Set, error) {
	_, file, _, ok := runtime.Caller(0)
	src := filepath.Dir(file)
	if !ok || !filepath.IsAbs(src) {
		return Set{}, fmt.Errorf("build images: no source dir for this package (built with -trimpath?): %q", src)
	}
	// go build runs in the source dir, so a relative dir must be made absolute first.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Set{}, fmt.Errorf("build images: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Set{}, fmt.Errorf("build images: %w", err)
	}
	// One go build for both shares the compile of the standard library. An empty
	// -buildid and -trimpath keep the binaries, and so the images' digests, the same
	// from one build to the next with the same toolchain.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", dir+string(filepath.Separator), "./nginx", "./pause", "./webhook", "./etcd")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+OS, "GOARCH="+Arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return Set{}, fmt.Errorf("build images in %s: %w\n%s", src, err, out)
	}
	return Set{NginxBin: filepath.Join(dir, "nginx"), PauseBin: filepath.Join(dir, "pause"), WebhookBin: filepath.Join(dir, "webhook"),
		EtcdBin: filepath.Join(dir, "etcd")}, nil
}

// Nginx returns the nginx image made from the built binary.
func (s Set) Nginx() (v1.Image, error) {
	return FromBinary(s.NginxBin, []string{NginxPath}, NginxPort)
}

// Pause returns the pause image made from the built binary.
func (s Set) Pause() (v1.Image, error) {
	return FromBinary(s.PauseBin, []string{PausePath})
}

// Webhook returns the admission webhook image made from the built binary.
func (s Set) Webhook() (v1.Image, error) {
	return FromBinary(s.WebhookBin, []string{WebhookPath}, "8443/tcp")
}

// CoreDNSFrom returns the CoreDNS image made from the binary at bin.
func CoreDNSFrom(bin string) (v1.Image, error) {
	return FromBinary(bin, []string{CoreDNSPath}, "53/udp", "53/tcp", "9153/tcp")
}

// FromBinary makes a single-layer linux/amd64 image holding the file at bin as
// entrypoint[0] (an absolute path), mode 0755, run as entrypoint. ports are exposed
// ports such as "80/tcp". Timestamps are zero, so the same binary gives the same digest.
func FromBinary(bin string, entrypoint []string, ports ...string) (v1.Image, error) {
	if len(entrypoint) == 0 || !path.IsAbs(entrypoint[0]) {
		return nil, fmt.Errorf("image from %s: entrypoint %q must start with an absolute path", bin, entrypoint)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("image from %s: %w", bin, err)
	}
	layer, err := LayerOf(File{Path: entrypoint[0], Data: data, Mode: 0o755})
	if err != nil {
		return nil, fmt.Errorf("image from %s: %w", bin, err)
	}
	img, err := Assemble(Config{Entrypoint: entrypoint, Ports: ports}, layer)
	if err != nil {
		return nil, fmt.Errorf("image from %s: %w", bin, err)
	}
	return img, nil
}

// Config is what an image made by Assemble runs, as in an image's config file.
type Config struct {
	Entrypoint, Cmd []string
	// User is the image's USER, such as "1234".
	User string
	// Ports are exposed ports such as "80/tcp".
	Ports []string
}

// Assemble makes a linux/amd64 image of layers, bottom first, that runs cfg.
func Assemble(cfg Config, layers ...v1.Layer) (v1.Image, error) {
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{Layer: l, History: v1.History{CreatedBy: "haagent test/framework/images"}}
	}
	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = OS
	cf.Architecture = Arch
	cf.Config.Entrypoint = cfg.Entrypoint
	cf.Config.Cmd = cfg.Cmd
	cf.Config.User = cfg.User
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if len(cfg.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range cfg.Ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// File is one entry of a layer that LayerOf makes in memory.
type File struct {
	// Path is absolute, in the image.
	Path string
	// Data is a regular file's content.
	Data []byte
	// Mode holds the permission bits, setuid included; zero means 0644 for a file.
	Mode int64
	// Link, if set, makes the entry a symlink to Link.
	Link string
	// Dir makes the entry a directory (mode 0755 unless Mode says otherwise).
	Dir bool
}

// LayerOf returns a layer holding files and their parent dirs. Timestamps are zero and
// owners root, so the same files give the same digest.
func LayerOf(files ...File) (v1.Layer, error) {
	layerTar, err := tarOf(files)
	if err != nil {
		return nil, err
	}
	// Caching the compressed layer saves gzipping it again for each of digest, push
	// and tarball.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return layer, nil
}

// tarOf returns a layer tar holding files, each parent dir written once before its
// first child.
func tarOf(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	seen := map[string]bool{}
	dir := func(d string, mode int64) error {
		if seen[d] {
			return nil
		}
		seen[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("layer: path %q is not absolute", f.Path)
		}
		rel := strings.TrimPrefix(path.Clean(f.Path), "/")
		var parents []string
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := dir(d, 0o755); err != nil {
				return nil, err
			}
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			mode := f.Mode
			if mode == 0 {
				mode = 0o755
			}
			if err := dir(rel, mode); err != nil {
				return nil, err
			}
			continue
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Size, h.Mode = tar.TypeSymlink, f.Link, 0, 0o777
		case h.Mode == 0:
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pushConfig is what the PushOptions set.
type pushConfig struct {
	transport http.RoundTripper
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
}

// PushOption changes how Push reaches the registry.
type PushOption func(*pushConfig)

// WithTransport makes Push send its requests through rt.
func WithTransport(rt http.RoundTripper) PushOption {
	return func(c *pushConfig) { c.transport = rt }
}

// WithDialContext makes Push open its connections with dial, e.g. to push from inside
// a network namespace. WithTransport, when given too, wins.
func WithDialContext(dial func(ctx context.Context, network, addr string) (net.Conn, error)) PushOption {
	return func(c *pushConfig) { c.dial = dial }
}

// Push uploads img as ref, a full reference such as "10.0.0.5:5000/"+Nginx, to a
// registry that speaks plain HTTP.
func Push(ctx context.Context, img v1.Image, ref string, opts ...PushOption) error {
	var c pushConfig
	for _, o := range opts {
		o(&c)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	rt := c.transport
	if rt == nil {
		t := remote.DefaultTransport.(*http.Transport).Clone()
		// No proxy: the lab's registry is on a test network no proxy can reach.
		t.Proxy = nil
		if c.dial != nil {
			t.DialContext = c.dial
		}
		rt = t
	}
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithTransport(rt)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// WriteTarball writes img to path as a docker-archive tarball tagged ref (e.g.
// NginxImage), which `ctr -n k8s.io images import` loads for airgapped hosts.
func WriteTarball(img v1.Image, ref, path string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("write %s as %s: %w", path, ref, err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("write %s as %s: %w", path, ref, err)
	}
	return nil
}

// RegistryConfig returns a config.yml for Debian's docker-registry (the distribution
// registry, `docker-registry serve FILE`) that serves plain HTTP on addr and keeps its
// blobs under root. With port 0 the registry logs the port it got ("listening on ...").
func RegistryConfig(addr, root string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
http:
  addr: %q
  # Fixed, since no other instance shares uploads with this one; a generated one
  # only adds a warning to the log.
  secret: haagent-lab
`, root, addr)
}
