package images

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/haagent/haagent/test/framework/rootonly"
)

// conformancePrograms is where scripts/build-kube.sh conformance (make kube) puts
// agnhost, nnp and sample-apiserver.
const conformancePrograms = "/var/cache/haagent/kube/v1.37.2/conformance"

// TestConformanceImages builds the conformance suite's images and reads each one's
// flattened file system: the programs and tools the suite's specs exec must be there,
// runnable, and no two images may share a digest.
func TestConformanceImages(t *testing.T) {
	rootonly.Require(t, "debootstrap of the images' Debian base")
	if _, err := os.Stat(filepath.Join(conformancePrograms, "agnhost")); err != nil {
		rootonly.Unable(t, "the conformance programs are missing ("+err.Error()+"): run scripts/build-kube.sh conformance (make kube does)")
	}
	set := built(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	imgs, err := Conformance(ctx, ConformanceParts{Programs: conformancePrograms, KubeVersion: "v1.37.2", Set: set, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	// want: per image, paths that must be regular files with these mode bits (0 for
	// any), or symlinks (-1). Debian's /bin is a symlink to /usr/bin.
	want := map[string]map[string]int64{
		Agnhost:         {"/agnhost": 0o755, "/usr/bin/dig": 0o755, "/usr/bin/curl": 0o755, "/usr/bin/nc": -1, "/usr/bin/wget": 0o755, "/localhost.crt": 0},
		AgnhostPrev:     {"/agnhost": 0o755},
		Kitten:          {"/agnhost": 0o755, "/kitten.jpg": 0, "/data.json": 0, "/etc/os-release": 0},
		Nautilus:        {"/nautilus.jpg": 0, "/data.json": 0},
		BusyBox:         {"/bin/busybox": 0o755, "/bin/sh": -1, "/bin/wget": -1, "/bin/nslookup": -1},
		E2ENginx:        {NginxPath: 0o755, "/bin/sh": -1},
		E2ENginxNew:     {NginxPath: 0o755},
		GlibcDNSTesting: {"/usr/bin/dig": 0o755},
		NonRoot:         {"/usr/bin/bash": 0o755},
		NonewPrivs:      {"/usr/local/bin/nnp": 0o4755},
		SampleAPIServer: {"/sample-apiserver": 0o755},
		Etcd:            {"/usr/local/bin/etcd": 0o755},
		E2EPause:        {PausePath: 0o755},
	}
	if len(imgs) != len(want) {
		t.Errorf("%d images, want %d", len(imgs), len(want))
	}
	digests := map[v1.Hash]string{}
	for ref, files := range want {
		img, ok := imgs[ref]
		if !ok {
			t.Errorf("no image %s", ref)
			continue
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := digests[d]; dup {
			t.Errorf("%s and %s share the digest %s", ref, other, d)
		}
		digests[d] = ref
		got := flatten(t, img)
		for p, mode := range files {
			h, ok := got[p]
			switch {
			case !ok:
				t.Errorf("%s: no %s", ref, p)
			case mode == -1 && h.Typeflag != tar.TypeSymlink:
				t.Errorf("%s: %s is not a symlink", ref, p)
			case mode > 0 && (h.Typeflag != tar.TypeReg || h.Mode&0o7777 != mode):
				t.Errorf("%s: %s has type %c mode %o, want a file of mode %o", ref, p, h.Typeflag, h.Mode&0o7777, mode)
			}
		}
	}
	// The busybox image's shell as the suite's specs use it: `sh -c env` passes on
	// variables whose names are not shell names (the Secret and ConfigMap env specs),
	// and a failed redirect says so in busybox's words (the read-only root spec).
	bb, err := upstreamBusybox(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	env := exec.Command(bb, "sh", "-c", "env")
	env.Env = []string{"data-1=value-1"}
	if out, err := env.Output(); err != nil || !strings.Contains(string(out), "data-1=value-1\n") {
		t.Errorf("busybox sh -c env: %q, %v; want data-1=value-1 passed on", out, err)
	}
	redirect := exec.Command(bb, "-c", "echo > /proc/no-such-dir/file")
	redirect.Args[0] = "/bin/sh"
	if out, _ := redirect.CombinedOutput(); !strings.HasPrefix(string(out), "/bin/sh: can't create /proc/no-such-dir/file: ") {
		t.Errorf("busybox sh's redirect error: %q, want busybox's \"/bin/sh: can't create ...\"", out)
	}
	cfg, err := imgs[NonRoot].ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "1234" {
		t.Errorf("nonroot's user is %q, want 1234", cfg.Config.User)
	}
}

// flatten returns the headers of an image's flattened file system by absolute path.
func flatten(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Join("/", h.Name)] = h
	}
}
