// Package snapshots owns a master's scheduled etcd snapshots: every interval it saves
// the local member's database into a local dir, atomically and with a sha256 file,
// verifies what it wrote, prunes the oldest of its own beyond the retention, and lists
// them for `haagent snapshot list`.
package snapshots

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdutlsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/haagent/haagent/base/files"
)

// Defaults for Config, in the spirit of k3s's (every 12 h, keep 5).
const (
	DefaultInterval  = 12 * time.Hour
	DefaultRetention = 5
	DefaultDir       = "/var/lib/haagent/snapshots"

	// timeLayout is in the file name: sortable, and to the millisecond so that two
	// snapshots taken by hand in one second don't collide.
	timeLayout = "20060102T150405.000Z"
	// ChecksumSuffix names the file beside each snapshot, in sha256sum's format.
	ChecksumSuffix = ".sha256"
)

// nameRE matches the snapshots haagent makes, and nothing else, so that pruning never
// touches a file an operator put in the dir.
var nameRE = regexp.MustCompile(`^haagent-(.+)-(\d{8}T\d{6}\.\d{3}Z)\.db$`)

// FileName is the name of node's snapshot taken at t.
func FileName(node string, t time.Time) string {
	return "haagent-" + node + "-" + t.UTC().Format(timeLayout) + ".db"
}

// Config is what the scheduler needs.
type Config struct {
	// Dir is where snapshots go; it is made if missing.
	Dir string
	// Interval between two snapshots; 0 disables the schedule.
	Interval time.Duration
	// Retention is how many of this node's snapshots are kept (at least 1).
	Retention int
	// Node is this master's name, part of each file name.
	Node string
	// Client returns a client of the local member; nil while it has none.
	Client func() *clientv3.Client
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Metrics are the scheduler's collectors.
type Metrics struct {
	failures    prometheus.Counter
	lastSuccess prometheus.Gauge
	lastSize    prometheus.Gauge
}

// NewMetrics makes the collectors; Register adds them to a registry.
func NewMetrics() *Metrics {
	return &Metrics{
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "haagent_snapshot_failures_total",
			Help: "Scheduled etcd snapshots that failed (save, verify, checksum or prune)."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haagent_snapshot_last_success_timestamp_seconds",
			Help: "Unix time of the last scheduled etcd snapshot that was saved and verified; 0 before the first."}),
		lastSize: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haagent_snapshot_last_size_bytes",
			Help: "Size of the last verified etcd snapshot."}),
	}
}

// Register adds the collectors to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.failures, m.lastSuccess, m.lastSize} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register snapshot metrics: %w", err)
		}
	}
	return nil
}

// Scheduler takes the snapshots.
type Scheduler struct {
	cfg Config
	m   *Metrics
	lg  *slog.Logger
}

// New prepares a scheduler; it starts nothing.
func New(cfg Config, m *Metrics) *Scheduler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Scheduler{cfg: cfg, m: m, lg: cfg.Logger}
}

// Run takes a snapshot every Interval until ctx ends, then returns nil. A failed
// snapshot is logged and counted; it never stops the agent, so Run has no error of its
// own to return.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.cfg.Interval <= 0 {
		s.lg.Info("[snapshots] scheduled snapshots disabled (--snapshot-interval=0)")
		return nil
	}
	s.lg.Info("[snapshots] scheduled", "every", s.cfg.Interval, "keep", s.cfg.Retention, "dir", s.cfg.Dir)
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		info, err := s.Take(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.m.failures.Inc()
			s.lg.Error("[snapshots] scheduled snapshot failed; the next one is due in "+s.cfg.Interval.String(), "err", err)
			continue
		}
		s.m.lastSuccess.Set(float64(info.Time.Unix()))
		s.m.lastSize.Set(float64(info.Size))
		s.lg.Info("[snapshots] saved and verified", "file", info.Path, "size", info.Size, "revision", info.Revision)
		pruned, err := Prune(s.cfg.Dir, s.cfg.Node, s.cfg.Retention)
		for _, p := range pruned {
			s.lg.Info("[snapshots] pruned", "file", p, "keep", s.cfg.Retention)
		}
		if err != nil {
			s.m.failures.Inc()
			s.lg.Error("[snapshots] prune failed", "err", err)
		}
	}
}

// Take saves one snapshot now: into a temp file in Dir, fsynced and verified, then
// renamed to its final name beside its checksum file, and the dir fsynced. A snapshot
// that fails verification is removed; nothing else is.
func (s *Scheduler) Take(ctx context.Context) (Info, error) {
	cli := s.cfg.Client()
	if cli == nil {
		return Info{}, errors.New("snapshot: the etcd member is not ready")
	}
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return Info{}, fmt.Errorf("snapshot dir: %w", err)
	}
	now := s.cfg.Now()
	final := filepath.Join(s.cfg.Dir, FileName(s.cfg.Node, now))
	tmp, err := os.CreateTemp(s.cfg.Dir, ".haagent-snapshot-*.part")
	if err != nil {
		return Info{}, fmt.Errorf("snapshot: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("snapshot from the local member: %w", err)
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, h), rc)
	rc.Close()
	if err != nil {
		return Info{}, fmt.Errorf("snapshot from the local member: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return Info{}, fmt.Errorf("snapshot fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Info{}, fmt.Errorf("snapshot close: %w", err)
	}
	st, err := Verify(tmp.Name())
	if err != nil {
		return Info{}, fmt.Errorf("snapshot %s failed verification, not kept: %w", final, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := writeAtomic(final+ChecksumSuffix, []byte(sum+"  "+filepath.Base(final)+"\n")); err != nil {
		return Info{}, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		os.Remove(final + ChecksumSuffix)
		return Info{}, fmt.Errorf("snapshot: %w", err)
	}
	done = true
	if err := syncDir(s.cfg.Dir); err != nil {
		return Info{}, err
	}
	return Info{Name: filepath.Base(final), Path: final, Node: s.cfg.Node, Time: now.UTC().Truncate(time.Millisecond),
		Size: size, Revision: st.Revision, SHA256: sum, ChecksumOK: true}, nil
}

// Verify checks a saved snapshot as etcd's restore would: the sha256 that etcd appends
// to the stream must match the database before it, and the database must pass bbolt's
// consistency check (etcdutl's snapshot status).
func Verify(path string) (etcdutlsnapshot.Status, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return etcdutlsnapshot.Status{}, err
	}
	// etcd pads its snapshot stream to 512 bytes and appends its sha256; a file of any
	// other length was cut short.
	if len(b)%512 != sha256.Size {
		return etcdutlsnapshot.Status{}, fmt.Errorf("%d bytes is not a whole etcd snapshot with its hash (truncated?)", len(b))
	}
	want := sha256.Sum256(b[:len(b)-sha256.Size])
	if !bytes.Equal(want[:], b[len(b)-sha256.Size:]) {
		return etcdutlsnapshot.Status{}, errors.New("the hash etcd appended does not match the data (corrupt)")
	}
	st, err := etcdutlsnapshot.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		return st, fmt.Errorf("snapshot status: %w", err)
	}
	return st, nil
}

// Check verifies a snapshot before a restore: its checksum file first, when there is
// one beside it (haagent's own snapshots have one; etcdctl's don't), then Verify.
func Check(path string) (etcdutlsnapshot.Status, error) {
	want, err := os.ReadFile(path + ChecksumSuffix)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return etcdutlsnapshot.Status{}, err
	default:
		sum, err := files.SHA256(path)
		if err != nil {
			return etcdutlsnapshot.Status{}, err
		}
		if strings.Fields(string(want) + " ")[0] != sum {
			return etcdutlsnapshot.Status{}, fmt.Errorf("its sha256 does not match %s (corrupt, or not the file that was saved)", filepath.Base(path)+ChecksumSuffix)
		}
	}
	return Verify(path)
}

// Info is one snapshot in the dir.
type Info struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"`
	Node     string    `json:"node"`
	Time     time.Time `json:"time"`
	Size     int64     `json:"sizeBytes"`
	Revision int64     `json:"revision"`
	SHA256   string    `json:"sha256"`
	// ChecksumOK is true when the file's sha256 matches its checksum file.
	ChecksumOK bool `json:"checksumOK"`
	// Error says why the checksum or the status could not be read.
	Error string `json:"error,omitempty"`
}

// List returns the snapshots haagent made in dir, oldest first, each with its
// checksum checked and its revision read. A dir that does not exist has none.
func List(dir string) ([]Info, error) {
	infos, err := scan(dir)
	if err != nil {
		return nil, err
	}
	for i := range infos {
		in := &infos[i]
		var problems []string
		sum, err := files.SHA256(in.Path)
		if err != nil {
			problems = append(problems, err.Error())
		}
		want, err := os.ReadFile(in.Path + ChecksumSuffix)
		switch {
		case errors.Is(err, os.ErrNotExist):
			problems = append(problems, "no checksum file")
		case err != nil:
			problems = append(problems, err.Error())
		default:
			in.SHA256 = strings.Fields(string(want) + " ")[0]
			in.ChecksumOK = sum != "" && in.SHA256 == sum
			if !in.ChecksumOK && sum != "" {
				problems = append(problems, "sha256 mismatch")
			}
		}
		if in.ChecksumOK {
			if st, err := etcdutlsnapshot.NewV3(zap.NewNop()).Status(in.Path); err == nil {
				in.Revision = st.Revision
			} else {
				problems = append(problems, err.Error())
			}
		}
		in.Error = strings.Join(problems, "; ")
	}
	return infos, nil
}

// scan finds haagent's snapshots in dir by name, oldest first.
func scan(dir string) ([]Info, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot dir: %w", err)
	}
	var infos []Info
	for _, e := range ents {
		m := nameRE.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		t, err := time.Parse(timeLayout, m[2])
		if err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		infos = append(infos, Info{Name: e.Name(), Path: filepath.Join(dir, e.Name()), Node: m[1], Time: t, Size: fi.Size()})
	}
	slices.SortFunc(infos, func(a, b Info) int { return a.Time.Compare(b.Time) })
	return infos, nil
}

// Prune removes node's oldest snapshots beyond keep, each with its checksum file, and
// returns what it removed. It touches only files whose names haagent gives.
func Prune(dir, node string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("prune: keep %d would remove every snapshot", keep)
	}
	infos, err := scan(dir)
	if err != nil {
		return nil, err
	}
	infos = slices.DeleteFunc(infos, func(in Info) bool { return in.Node != node })
	var removed []string
	var errs []error
	for len(infos) > keep {
		p := infos[0].Path
		infos = infos[1:]
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(p + ChecksumSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		if err := syncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// writeAtomic writes a small file by temp file, fsync and rename, so that a crash
// leaves the old file or the new one, never half of one.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".haagent-*.part")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
