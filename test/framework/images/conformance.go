package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/haagent/haagent/test/framework/hosts"
)

// The conformance suite's images, by the names the suite pulls (registry.k8s.io/NAME,
// which the lab's containerd mirror fetches as NAME): the tags are those of
// test/utils/image/manifest.go in kubernetes v1.37.2. Upstream bases most of them on
// Alpine; here they are made offline from a Debian minbase or upstream's busybox, with the
// same programs at the same paths. Each image differs from the others in at least one
// file, so that no two share a digest (the suite rolls Deployments from one to another).
const (
	Agnhost         = "e2e-test-images/agnhost:2.66.1"
	AgnhostPrev     = "e2e-test-images/agnhost:2.55"
	BusyBox         = "e2e-test-images/busybox:1.37.0-2"
	E2ENginx        = "e2e-test-images/nginx:1.27.0-2"
	E2ENginxNew     = "e2e-test-images/nginx:1.28.0-2"
	GlibcDNSTesting = "e2e-test-images/glibc-dns-testing:2.1.1"
	Kitten          = "e2e-test-images/kitten:1.8"
	Nautilus        = "e2e-test-images/nautilus:1.8"
	NonewPrivs      = "e2e-test-images/nonewprivs:1.4"
	NonRoot         = "e2e-test-images/nonroot:1.5"
	SampleAPIServer = "e2e-test-images/sample-apiserver:1.29.2"
	Etcd            = "etcd:3.7.0-0"
	E2EPause        = "pause:3.10.2"
)

// ConformanceParts says where the conformance images' programs come from.
type ConformanceParts struct {
	// Programs is the dir scripts/build-kube.sh conformance fills: agnhost, nnp and
	// sample-apiserver, built from the kubernetes module.
	Programs string
	// KubeVersion names the kubernetes module whose test/images dir gives kitten's and
	// nautilus's files and agnhost's porter certificate.
	KubeVersion string
	// Set gives pause, nginx and etcd.
	Set  Set
	Logf func(string, ...any)
}

// debianBase is agnhost's base: upstream installs these tools into Alpine (apk add
// bind-tools curl netcat-openbsd iproute2 bash socat), and the suite's specs exec them
// in its pods; glibc-dns-testing is Debian with dnsutils upstream too.
var debianBase = hosts.ImageRootfsSpec{
	Name:     "e2e-debian",
	Recipe:   "1",
	Packages: []string{"dnsutils", "curl", "wget", "netcat-openbsd", "iproute2", "socat", "iputils-ping", "procps"},
	Prepare: func(root string) error {
		// agnhost's Dockerfile adds this user and group; specs of image-defined
		// supplementary groups look for them.
		for f, line := range map[string]string{
			"etc/passwd": "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n",
			"etc/group":  "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n",
		} {
			fh, err := os.OpenFile(filepath.Join(root, f), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = fh.WriteString(line)
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
		return nil
	},
}

// Conformance makes every image the [Conformance] specs pull, by the name they pull it
// by. The first call builds the Debian base (debootstrap, about a minute) and upstream
// busybox from source (a few minutes); both are cached in hosts.CacheDir.
func Conformance(ctx context.Context, p ConformanceParts) (map[string]v1.Image, error) {
	logf := p.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	baseTar, err := hosts.ImageRootfs(ctx, debianBase, logf)
	if err != nil {
		return nil, fmt.Errorf("conformance images: %w", err)
	}
	debian, err := tarball.LayerFromFile(baseTar, tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("conformance images: %s: %w", baseTar, err)
	}
	bb, err := upstreamBusybox(ctx, logf)
	if err != nil {
		return nil, fmt.Errorf("conformance images: %w", err)
	}
	busybox, err := busyboxLayer(ctx, bb)
	if err != nil {
		return nil, fmt.Errorf("conformance images: %w", err)
	}
	kubeDir, err := moduleDir(ctx, "k8s.io/kubernetes@"+p.KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("conformance images: %w", err)
	}
	testImages := filepath.Join(kubeDir, "test/images")

	// file reads src from disk as the entry dst; layer makes a layer of such entries.
	// The first error of either is kept, and checked once all are made.
	var firstErr error
	file := func(src, dst string, mode int64) File {
		b, err := os.ReadFile(src)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return File{Path: dst, Data: b, Mode: mode}
	}
	layer := func(files ...File) v1.Layer {
		l, err := LayerOf(files...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return l
	}
	agnhost := layer(
		file(filepath.Join(p.Programs, "agnhost"), "/agnhost", 0o755),
		File{Path: "/agnhost-2", Link: "agnhost"},
		file(filepath.Join(testImages, "agnhost/porter/localhost.crt"), "/localhost.crt", 0o644),
		file(filepath.Join(testImages, "agnhost/porter/localhost.key"), "/localhost.key", 0o644),
		File{Path: "/uploads", Dir: true})
	agnhostCfg := Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"},
		Ports: []string{"80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"}}
	picture := func(name string) v1.Layer {
		files := []File{
			file(filepath.Join(testImages, name, "html", name+".jpg"), "/"+name+".jpg", 0o644),
			file(filepath.Join(testImages, name, "html/data.json"), "/data.json", 0o644),
		}
		if name == "kitten" {
			// The ImageVolume spec reads kitten's /etc/os-release and wants the Alpine
			// base upstream's kitten has; this one says what it is instead.
			files = append(files, File{Path: "/etc/os-release", Data: []byte(
				"PRETTY_NAME=\"haagent's offline kitten: Debian GNU/Linux 12 (bookworm) in place of upstream's Alpine Linux\"\n" +
					"NAME=\"Debian GNU/Linux\"\nID=debian\n")})
		}
		return layer(files...)
	}
	kitten, nautilus := picture("kitten"), picture("nautilus")
	// nnp is setuid root, as upstream's image has it: its spec checks that
	// allowPrivilegeEscalation=false keeps the effective uid from becoming 0.
	nnp := layer(file(filepath.Join(p.Programs, "nnp"), "/usr/local/bin/nnp", 0o4755))
	sample := layer(file(filepath.Join(p.Programs, "sample-apiserver"), "/sample-apiserver", 0o755))
	etcd := layer(file(p.Set.EtcdBin, "/usr/local/bin/etcd", 0o755))
	nginx := layer(file(p.Set.NginxBin, NginxPath, 0o755))
	pause := layer(file(p.Set.PauseBin, PausePath, 0o755))
	if firstErr != nil {
		return nil, fmt.Errorf("conformance images: %w", firstErr)
	}

	// Each image's last layer names it, so that no two images share a digest.
	tag := func(ref string) File {
		return File{Path: "/etc/haagent-image", Data: []byte("registry.k8s.io/" + ref + "\n")}
	}
	type recipe struct {
		cfg    Config
		layers []v1.Layer
	}
	recipes := map[string]recipe{
		Agnhost:         {agnhostCfg, []v1.Layer{debian, agnhost}},
		AgnhostPrev:     {agnhostCfg, []v1.Layer{debian, agnhost}},
		Kitten:          {Config{Entrypoint: agnhostCfg.Entrypoint, Cmd: []string{"test-webserver"}, Ports: agnhostCfg.Ports}, []v1.Layer{debian, agnhost, kitten}},
		Nautilus:        {Config{Entrypoint: agnhostCfg.Entrypoint, Cmd: []string{"test-webserver"}, Ports: agnhostCfg.Ports}, []v1.Layer{debian, agnhost, nautilus}},
		BusyBox:         {Config{Cmd: []string{"sh"}}, []v1.Layer{busybox}},
		E2ENginx:        {Config{Entrypoint: []string{NginxPath}, Ports: []string{NginxPort}}, []v1.Layer{busybox, nginx}},
		E2ENginxNew:     {Config{Entrypoint: []string{NginxPath}, Ports: []string{NginxPort}}, []v1.Layer{busybox, nginx}},
		GlibcDNSTesting: {Config{Cmd: []string{"bash"}}, []v1.Layer{debian}},
		NonRoot:         {Config{Cmd: []string{"bash"}, User: "1234"}, []v1.Layer{debian}},
		NonewPrivs:      {Config{Cmd: []string{"nnp"}}, []v1.Layer{busybox, nnp}},
		SampleAPIServer: {Config{Entrypoint: []string{"/sample-apiserver"}}, []v1.Layer{busybox, sample}},
		Etcd:            {Config{Cmd: []string{"/usr/local/bin/etcd"}}, []v1.Layer{busybox, etcd}},
		E2EPause:        {Config{Entrypoint: []string{PausePath}}, []v1.Layer{pause}},
	}
	out := make(map[string]v1.Image, len(recipes))
	for ref, r := range recipes {
		t, err := LayerOf(tag(ref))
		if err != nil {
			return nil, fmt.Errorf("conformance image %s: %w", ref, err)
		}
		img, err := Assemble(r.cfg, append(r.layers, t)...)
		if err != nil {
			return nil, fmt.Errorf("conformance image %s: %w", ref, err)
		}
		out[ref] = img
	}
	return out, nil
}

// busyboxLayer holds the static busybox at /bin/busybox with a symlink in /bin for each
// applet it lists (/bin/sh among them), and the few files a shell image needs: root and
// nobody, /tmp, /root.
func busyboxLayer(ctx context.Context, bin string) (v1.Layer, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	list, err := exec.CommandContext(ctx, bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	files := []File{
		{Path: "/bin/busybox", Data: data, Mode: 0o755},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
		{Path: "/root", Dir: true, Mode: 0o700},
	}
	// All in /bin, as in the busybox image upstream's is made from.
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			files = append(files, File{Path: "/bin/" + applet, Link: "busybox"})
		}
	}
	return LayerOf(files...)
}

// The busybox of upstream's busybox image, from its release tarball, which Debian's
// mirror serves as the source package's orig tarball (pinned by hash: plain http).
// Debian's own busybox won't do: it builds ash so that it drops environment variables
// whose names are not shell names, which the suite's Secret and ConfigMap specs read
// ("data-1") from `sh -c env`; upstream's ash passes them on.
const (
	busyboxVersion = "1.37.0"
	busyboxSHA256  = "3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4"
)

// upstreamBusybox returns a static busybox built from the release tarball (defconfig,
// less tc, which does not build against current kernel headers), kept in
// hosts.CacheDir.
func upstreamBusybox(ctx context.Context, logf func(string, ...any)) (string, error) {
	dir := filepath.Join(hosts.CacheDir(), "busybox-"+busyboxVersion)
	bin := filepath.Join(dir, "busybox")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	mirror, err := hosts.AptMirror()
	if err != nil {
		return "", err
	}
	url := strings.TrimSuffix(mirror, "/") + "/pool/main/b/busybox/busybox_" + busyboxVersion + ".orig.tar.bz2"
	work, err := os.MkdirTemp("", "haagent-busybox-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	logf("busybox %s: building from %s", busyboxVersion, url)
	tarball := filepath.Join(work, "busybox.tar.bz2")
	src := filepath.Join(work, "busybox-"+busyboxVersion)
	steps := [][]string{
		{"curl", "-sSfL", "--retry", "3", "-o", tarball, url},
		{"sh", "-c", `echo "` + busyboxSHA256 + `  ` + tarball + `" | sha256sum -c --quiet`},
		{"tar", "-C", work, "-xjf", tarball},
		{"make", "-C", src, "defconfig"},
		{"sed", "-i", "-e", "s/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/", "-e", "s/^CONFIG_TC=y/# CONFIG_TC is not set/", filepath.Join(src, ".config")},
		{"make", "-C", src, "-j" + strconv.Itoa(runtime.NumCPU()), "busybox"},
	}
	for _, step := range steps {
		if out, err := exec.CommandContext(ctx, step[0], step[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("busybox %s: %s: %w\n%s", busyboxVersion, strings.Join(step, " "), err, tailLines(string(out), 20))
		}
	}
	data, err := os.ReadFile(filepath.Join(src, "busybox"))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := bin + ".tmp"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return "", err
	}
	return bin, os.Rename(tmp, bin)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// moduleDir returns the dir of a module version in the module cache, downloading it if
// needed (scripts/build-kube.sh conformance already has).
func moduleDir(ctx context.Context, modVersion string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", modVersion)
	cmd.Dir = os.TempDir() // outside any module
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w\n%s", modVersion, err, stderr.String())
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	if info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no dir (%s)", modVersion, info.Error)
	}
	return info.Dir, nil
}
