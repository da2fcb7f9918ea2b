// Package airgap imports the image tarballs an operator drops into a directory (the
// "airgap images" of k3s and RKE2) into containerd's k8s.io namespace, where the
// kubelet finds them, so that a site with no registry can still run pods.
package airgap

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Defaults.
const (
	// DefaultDir is where tarballs are looked for, relative to --root.
	DefaultDir = "var/lib/haagent/images"
	// DefaultAddress is containerd's socket.
	DefaultAddress = "/run/containerd/containerd.sock"
	// Namespace is the containerd namespace of the CRI plugin, the kubelet's images.
	Namespace = "k8s.io"
	// DefaultWait bounds the wait for containerd to answer before anything is imported.
	DefaultWait = 5 * time.Minute
)

// Config says where the tarballs are and how to reach containerd.
type Config struct {
	// Dir holds the tarballs: *.tar (docker-archive or OCI), *.tar.gz and *.tgz.
	Dir string
	// Ctr is containerd's own client, `ctr` (in every containerd package).
	Ctr string
	// Address is containerd's socket.
	Address string
	// Wait bounds the wait for containerd to answer.
	Wait   time.Duration
	Logger *slog.Logger
}

// Result is what one Import did.
type Result struct {
	Imported []string          `json:"imported,omitempty"`
	Failed   map[string]string `json:"failed,omitempty"`
	At       time.Time         `json:"at"`
}

// Tarballs lists the importable files in dir, sorted. A missing dir holds none.
func Tarballs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, ".tar") || strings.HasSuffix(n, ".tar.gz") || strings.HasSuffix(n, ".tgz")) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	slices.Sort(out)
	return out, nil
}

// Import waits for containerd, then imports every tarball in Dir. A tarball that fails
// is logged and reported in the result, and the rest are still imported; the error is
// only for containerd never answering.
func Import(ctx context.Context, cfg Config) (Result, error) {
	res := Result{Failed: map[string]string{}}
	tarballs, err := Tarballs(cfg.Dir)
	if err != nil || len(tarballs) == 0 {
		res.At = time.Now()
		return res, err
	}
	if cfg.Ctr == "" {
		cfg.Ctr = "ctr"
	}
	if cfg.Address == "" {
		cfg.Address = DefaultAddress
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultWait
	}
	lg := cfg.Logger
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		return struct{}{}, ctr(ctx, cfg, nil, "version")
	}, backoff.WithMaxElapsedTime(cfg.Wait), backoff.WithBackOff(backoff.NewExponentialBackOff()))
	if err != nil {
		return res, fmt.Errorf("airgap images: containerd at %s did not answer within %s: %w", cfg.Address, cfg.Wait, err)
	}
	for _, t := range tarballs {
		start := time.Now()
		// A second and third try, for a containerd that restarts under us; a corrupt
		// tarball fails the same way each time, in milliseconds.
		_, err := backoff.Retry(ctx, func() (struct{}, error) {
			return struct{}{}, importOne(ctx, cfg, t)
		}, backoff.WithMaxTries(3), backoff.WithBackOff(backoff.NewExponentialBackOff()))
		if err != nil {
			lg.Error("airgap image tarball not imported; importing the others", "file", t, "err", err)
			res.Failed[filepath.Base(t)] = err.Error()
			continue
		}
		lg.Info("imported airgap image tarball", "file", t, "took", time.Since(start).Round(time.Millisecond))
		res.Imported = append(res.Imported, filepath.Base(t))
	}
	res.At = time.Now()
	return res, nil
}

func importOne(ctx context.Context, cfg Config, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var in io.Reader = f
	if strings.HasSuffix(path, ".gz") || strings.HasSuffix(path, ".tgz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("gunzip %s: %w", path, err)
		}
		defer zr.Close()
		in = zr
	}
	return ctr(ctx, cfg, in, "images", "import", "-")
}

// ctr runs containerd's client against cfg.Address in the kubelet's namespace.
func ctr(ctx context.Context, cfg Config, stdin io.Reader, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Ctr, append([]string{"--address", cfg.Address, "--namespace", Namespace}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(lastLine(string(out))))
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
