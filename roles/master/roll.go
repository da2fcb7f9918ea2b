package master

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haagent/haagent/cluster/roll"
	"github.com/haagent/haagent/embed/etcdmember"
)

// RollDir keeps the roll's state and the binary a roll replaced: beside the etcd data
// dir, /var/lib/haagent/roll by default.
func (c *Config) RollDir() string { return filepath.Join(filepath.Dir(c.DataDir), "roll") }

// newRoller prepares this master's part in rolling a newly installed haagent binary
// (package roll), with its metrics in reg.
func (m *Master) newRoller(reg prometheus.Registerer) error {
	exe, err := installedPath()
	if err != nil {
		return err
	}
	m.roller, err = roll.New(roll.Config{
		Name: m.cfg.Name, Dir: m.cfg.RollDir(), Installed: exe, GateTimeout: m.cfg.RollGateTimeout,
		Client:         m.member.Client,
		ClusterHealthy: m.clusterHealthy,
		Leader:         m.leads,
		BeforeStop:     m.outOfService,
		Gate:           m.servesAgain,
		Logger:         m.lg,
	}, reg)
	return err
}

// runRoll finishes a roll that the last exec left under way, then watches for the
// next install. Its *roll.Exec ends the master, which execs the binary it names.
func (m *Master) runRoll(ctx context.Context) error {
	if err := m.roller.Resume(ctx); err != nil {
		var ex *roll.Exec
		if errors.As(err, &ex) {
			return err
		}
		m.lg.Error("[roll] could not finish the roll under way", "err", err)
	}
	return m.roller.Watch(ctx)
}

// clusterHealthy fails unless every etcd member answers with a leader: restarting this
// one then leaves a quorum.
func (m *Master) clusterHealthy(ctx context.Context) error {
	cs, err := etcdmember.ClusterStatusOf(ctx, m.member.Client(), m.member.Mode())
	if err != nil {
		return err
	}
	var bad []string
	for _, ms := range cs.Members {
		if !ms.Healthy || ms.Learner {
			bad = append(bad, fmt.Sprintf("%s (%s)", ms.Name, cmpOr(ms.Error, "no leader, or a learner")))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("members not healthy: %s", strings.Join(bad, ", "))
	}
	return nil
}

// leads says whether this master's member is etcd's leader, and how many members the
// cluster has.
func (m *Master) leads(ctx context.Context) (bool, int, error) {
	cli := m.member.Client()
	st, err := cli.Status(ctx, cli.Endpoints()[0])
	if err != nil {
		return false, 0, err
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		return false, 0, err
	}
	return st.Leader == st.Header.MemberId, len(list.Members), nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// servingAPIServer names the apiserver among what a master serves, for the roll's gate.
const servingAPIServer = "apiserver"

// outOfService stops the apiserver before the exec restarts the etcd member it reads
// alone, as a CA rotation does: /readyz fails at once, the lbs send new requests to
// the other masters, and what it serves finishes while the member still answers. The
// reconciler of the new binary starts it again. It says whether the apiserver was
// ready: the gate waits for it only then (a master whose apiserver was already down
// is not sent back for it). Without systemd there is no unit.
func (m *Master) outOfService(ctx context.Context) ([]string, error) {
	if st := m.node.FilesStatus(); st == nil || !st.Systemd {
		return nil, nil
	}
	var serving []string
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if m.awaitAPIServerReady(rctx) == nil {
		serving = append(serving, servingAPIServer)
	}
	cancel()
	return serving, m.node.StopUnit(ctx, apiserverUnit)
}

// servesAgain is the roll's gate on the new binary: the etcd member healthy and caught
// up with the leader (its applied index past the leader's commit index as read at the
// gate's start), then the apiserver ready if it was before the exec.
func (m *Master) servesAgain(ctx context.Context, serving []string) error {
	var target uint64
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		if err := m.member.Healthy(); err != nil {
			return struct{}{}, err
		}
		cli := m.member.Client()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		own, err := cli.Status(sctx, cli.Endpoints()[0])
		if err != nil {
			return struct{}{}, err
		}
		if target == 0 {
			cs, err := etcdmember.ClusterStatusOf(sctx, cli, m.member.Mode())
			if err != nil {
				return struct{}{}, err
			}
			for _, ms := range cs.Members {
				if ms.Leader && len(ms.ClientURLs) > 0 {
					lst, err := cli.Status(sctx, ms.ClientURLs[0])
					if err != nil {
						return struct{}{}, err
					}
					target = lst.RaftIndex
				}
			}
			if target == 0 {
				return struct{}{}, errors.New("no leader found")
			}
		}
		if own.RaftAppliedIndex < target {
			return struct{}{}, fmt.Errorf("the member applied index %d, the leader had committed %d", own.RaftAppliedIndex, target)
		}
		return struct{}{}, nil
	}, backoff.WithBackOff(&backoff.ConstantBackOff{Interval: 250 * time.Millisecond}), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return fmt.Errorf("etcd member healthy and caught up: %w", err)
	}
	m.lg.Info("[roll] the etcd member is healthy and caught up with the leader", "index", target)
	if !slices.Contains(serving, servingAPIServer) {
		return nil
	}
	return m.awaitAPIServerReady(ctx)
}

// installedPath is where this process's binary was installed, which the package
// manager replaces: argv[0] as systemd gives it (ExecStart=/usr/bin/haagent), kept
// across the roll's execs, whatever file runs (the kept binary after a way back).
func installedPath() (string, error) {
	p, err := exec.LookPath(os.Args[0])
	if err == nil {
		p, err = filepath.Abs(p)
	}
	if err != nil {
		return "", fmt.Errorf("roll: the installed binary's path (argv[0] %q): %w", os.Args[0], err)
	}
	return p, nil
}
