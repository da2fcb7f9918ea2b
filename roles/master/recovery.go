package master

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haagent/haagent/embed/etcdmember"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/haagent/haagent/embed/snapshots"
	"github.com/haagent/haagent/embed/spacekeeper"
)

// Recovery is the master's flags for getting through the bad days: scheduled
// snapshots and etcd's space quota.
type Recovery struct {
	// SnapshotDir is where scheduled snapshots go, under --root like every file haagent
	// writes outside the etcd data dir.
	SnapshotDir string
	// SnapshotInterval is the time between two scheduled snapshots; 0 disables them.
	SnapshotInterval time.Duration
	// SnapshotRetention is how many scheduled snapshots of this master are kept.
	SnapshotRetention int
	// QuotaBackendBytes is etcd's space quota in bytes; 0 is etcd's default (2 GiB).
	QuotaBackendBytes int64
	// CompactionRetention is how much history etcd keeps (etcdmember.Config).
	CompactionRetention time.Duration
}

// NewRecovery returns the defaults.
func NewRecovery() Recovery {
	return Recovery{SnapshotDir: snapshots.DefaultDir, SnapshotInterval: snapshots.DefaultInterval,
		SnapshotRetention: snapshots.DefaultRetention, CompactionRetention: etcdmember.DefaultCompactionRetention}
}

// AddFlags binds the flags to r.
func (r *Recovery) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&r.SnapshotDir, "snapshot-dir", r.SnapshotDir, "dir of the scheduled etcd snapshots, under --root; 'haagent snapshot list' shows them")
	fs.DurationVar(&r.SnapshotInterval, "snapshot-interval", r.SnapshotInterval, "time between two scheduled etcd snapshots of the local member; 0 disables them")
	fs.IntVar(&r.SnapshotRetention, "snapshot-retention", r.SnapshotRetention, "how many scheduled snapshots this master keeps; older ones are deleted")
	fs.DurationVar(&r.CompactionRetention, "etcd-compaction-retention", r.CompactionRetention, "how much history etcd keeps: the leader compacts to the revision of that long ago, that often (kube-apiserver's own compactor is off: etcd allows Compact to root only)")
	fs.Int64Var(&r.QuotaBackendBytes, "etcd-quota-backend-bytes", r.QuotaBackendBytes, "etcd's space quota in bytes, past which it raises NOSPACE and haagent compacts and defragments (0: etcd's default, 2 GiB)")
}

// Validate reports every problem at once, each naming its flag. It does no I/O.
func (r *Recovery) Validate() []error {
	var errs []error
	if !filepath.IsAbs(r.SnapshotDir) {
		errs = append(errs, fmt.Errorf("--snapshot-dir: %q must be an absolute path", r.SnapshotDir))
	}
	if r.SnapshotInterval < 0 {
		errs = append(errs, fmt.Errorf("--snapshot-interval: %s is negative; use a duration such as 12h, or 0 to disable snapshots", r.SnapshotInterval))
	} else if r.SnapshotInterval > 0 && r.SnapshotInterval < time.Second {
		errs = append(errs, fmt.Errorf("--snapshot-interval: %s is shorter than a second; use a duration such as 12h, or 0 to disable snapshots", r.SnapshotInterval))
	}
	if r.SnapshotRetention < 1 {
		errs = append(errs, fmt.Errorf("--snapshot-retention: %d would keep no snapshot and delete every one; keep at least 1 (default %d), or disable snapshots with --snapshot-interval=0",
			r.SnapshotRetention, snapshots.DefaultRetention))
	}
	if r.CompactionRetention < time.Second {
		errs = append(errs, fmt.Errorf("--etcd-compaction-retention: %s is shorter than a second; use a duration such as %s", r.CompactionRetention, etcdmember.DefaultCompactionRetention))
	}
	if r.QuotaBackendBytes < 0 {
		errs = append(errs, fmt.Errorf("--etcd-quota-backend-bytes: %d is negative; use a size in bytes, or 0 for etcd's default", r.QuotaBackendBytes))
	}
	return errs
}

// SnapshotDirPath is where this master's snapshots are, --root included.
func (c *Config) SnapshotDirPath() string { return filepath.Join(c.Root, c.SnapshotDir) }

// preflightSnapshotDir checks, without writing, that the snapshot dir is or can be
// made a writable dir, so that a file in its way fails the start, not the first
// snapshot 12 hours later.
func (c *Config) preflightSnapshotDir() error {
	if c.SnapshotInterval == 0 {
		return nil
	}
	want := c.SnapshotDirPath()
	for dir := want; ; {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("--snapshot-dir: %s is not a directory, so %s can't be made; move it away or choose another --snapshot-dir", dir, want)
			}
			if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("--snapshot-dir: %s is not writable (%v); fix its permissions or choose another --snapshot-dir", dir, err)
			}
			var st unix.Statfs_t
			if unix.Statfs(dir, &st) == nil && st.Flags&unix.ST_RDONLY != 0 {
				return fmt.Errorf("--snapshot-dir: %s is on a read-only file system; choose another --snapshot-dir", dir)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--snapshot-dir: %v; choose another --snapshot-dir", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return fmt.Errorf("--snapshot-dir: no existing parent of %s", want)
		}
		dir = parent
	}
}

// recoveryParts makes the snapshot scheduler and the space keeper, with their metrics
// in reg.
func (m *Master) recoveryParts(reg prometheus.Registerer) (*snapshots.Scheduler, *spacekeeper.Keeper, error) {
	sm, km := snapshots.NewMetrics(), spacekeeper.NewMetrics()
	if err := errors.Join(sm.Register(reg), km.Register(reg)); err != nil {
		return nil, nil, err
	}
	sched := snapshots.New(snapshots.Config{
		Dir: m.cfg.SnapshotDirPath(), Interval: m.cfg.SnapshotInterval, Retention: m.cfg.SnapshotRetention,
		Node: m.cfg.Name, Client: m.member.Client, Logger: m.lg.With("component", "snapshots"),
	}, sm)
	keeper := spacekeeper.New(spacekeeper.Config{
		Client: m.member.Client, Name: m.cfg.Name, Logger: m.lg.With("component", "spacekeeper"),
	}, km)
	return sched, keeper, nil
}
