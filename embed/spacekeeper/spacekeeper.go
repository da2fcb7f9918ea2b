// Package spacekeeper owns getting a full etcd writable again: when etcd raises its
// NOSPACE alarm, the one master elected under /haagent/spacekeeper compacts to the
// current revision, defragments the members one at a time with the leader last, and
// disarms the alarm once every member has room again.
package spacekeeper

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Defaults for Config.
const (
	DefaultElection = "/haagent/spacekeeper"
	DefaultPoll     = 2 * time.Second
	// DefaultRetryAfter is the wait after a recovery that left etcd full: another
	// compaction and defragmentation so soon would only load the cluster again.
	DefaultRetryAfter = time.Minute
	// roomPercent is how full (of the quota) every member must be under before the
	// alarm is disarmed, so that the first writes after it don't raise it again.
	roomPercent = 90
	// sessionTTL is the election lease, in seconds: a dead keeper's successor takes
	// over this long after it died.
	sessionTTL = 10
)

// Config is what the keeper needs.
type Config struct {
	// Client returns a client of the local member; nil while it has none.
	Client func() *clientv3.Client
	// Name is this master's name, its value in the election.
	Name string
	// Election is the key prefix of the election; one keeper per cluster holds it.
	Election   string
	Poll       time.Duration
	RetryAfter time.Duration
	Logger     *slog.Logger
}

// Metrics are the keeper's collectors.
type Metrics struct {
	recoveries prometheus.Counter
	failures   prometheus.Counter
}

// NewMetrics makes the collectors; Register adds them to a registry.
func NewMetrics() *Metrics {
	return &Metrics{
		recoveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "haagent_etcd_nospace_recoveries_total",
			Help: "NOSPACE alarms this master cleared: compacted, defragmented and disarmed."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "haagent_etcd_nospace_recovery_failures_total",
			Help: "Recoveries from NOSPACE that this master started and could not finish."}),
	}
}

// Register adds the collectors to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.recoveries, m.failures} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register spacekeeper metrics: %w", err)
		}
	}
	return nil
}

// Keeper watches the alarms and clears NOSPACE.
type Keeper struct {
	cfg Config
	m   *Metrics
	lg  *slog.Logger
}

// New prepares a keeper; it starts nothing.
func New(cfg Config, m *Metrics) *Keeper {
	if cfg.Election == "" {
		cfg.Election = DefaultElection
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Keeper{cfg: cfg, m: m, lg: cfg.Logger}
}

// Run campaigns in the election and, while elected, polls etcd's alarms, until ctx
// ends; then it returns nil. Every master campaigns from its start, while etcd still
// has room: a full etcd refuses the lease and the key a late campaign would need, but
// a waiting campaigner whose key exists takes over when the keeper's lease expires.
// Failures are logged and retried; they never stop the agent.
func (k *Keeper) Run(ctx context.Context) error {
	wait := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := k.term(ctx)
		if ctx.Err() != nil {
			return nil
		}
		k.lg.Warn("[space] lost the spacekeeper election or its session; campaigning again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
	return nil
}

// term is one session: campaign, then keep watch while elected.
func (k *Keeper) term(ctx context.Context) error {
	cli := k.cfg.Client()
	if cli == nil {
		return errors.New("the etcd member is not ready")
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(sessionTTL), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("spacekeeper session: %w", err)
	}
	defer func() {
		// Session.Close revokes with ctx, which has ended by now; a short revoke of our
		// own hands the election to the next master at once instead of after the TTL.
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = cli.Revoke(rctx, sess.Lease())
		sess.Close()
	}()
	el := concurrency.NewElection(sess, k.cfg.Election)
	if err := el.Campaign(ctx, k.cfg.Name); err != nil {
		return fmt.Errorf("spacekeeper campaign: %w", err)
	}
	k.lg.Info("[space] this master keeps etcd's space: it clears NOSPACE alarms", "election", k.cfg.Election)
	t := time.NewTicker(k.cfg.Poll)
	defer t.Stop()
	var notBefore time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return errors.New("spacekeeper session expired")
		case <-t.C:
		}
		if time.Now().Before(notBefore) {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		alarms, err := cli.AlarmList(actx)
		cancel()
		if err != nil {
			k.lg.Debug("[space] alarm list", "err", err)
			continue
		}
		var nospace []*pb.AlarmMember
		for _, a := range alarms.Alarms {
			if a.Alarm == pb.AlarmType_NOSPACE {
				nospace = append(nospace, a)
			}
		}
		if len(nospace) == 0 {
			continue
		}
		if err := k.Recover(ctx, cli, nospace); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			k.m.failures.Inc()
			notBefore = time.Now().Add(k.cfg.RetryAfter)
			k.lg.Error("[space] etcd is still full; trying again later", "err", err, "in", k.cfg.RetryAfter)
			continue
		}
		k.m.recoveries.Inc()
	}
}

// member is one member as Recover orders them.
type member struct {
	id     uint64
	name   string
	url    string
	leader bool
}

// Recover clears a NOSPACE alarm: compact, defragment each member (followers first,
// one at a time, the leader last), then disarm once every member has room.
func (k *Keeper) Recover(ctx context.Context, cli *clientv3.Client, alarms []*pb.AlarmMember) error {
	k.lg.Warn("[space] etcd raised NOSPACE: it refuses writes until it has room again; compacting and defragmenting",
		"alarms", len(alarms))

	// [compact] Everything before the current revision goes; watchers of older
	// revisions (the apiserver's) relist, as after any compaction.
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := cli.Get(gctx, "haagent-spacekeeper-revision", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("read the current revision: %w", err)
	}
	rev := resp.Header.Revision
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = cli.Compact(cctx, rev, clientv3.WithCompactPhysical())
	cancel()
	switch {
	case err == nil:
		k.lg.Info("[space] compacted", "revision", rev)
	case errors.Is(rpctypes.Error(err), rpctypes.ErrCompacted):
		k.lg.Info("[space] already compacted", "revision", rev)
	default:
		return fmt.Errorf("compact to revision %d: %w", rev, err)
	}

	// [defrag] Defragmenting blocks a member's reads and writes while it runs, so one
	// member at a time, and the leader last: the cluster keeps a quorum and its leader
	// throughout.
	ms, err := k.members(ctx, cli)
	if err != nil {
		return err
	}
	for _, m := range ms {
		before, _ := k.size(ctx, cli, m.url)
		k.lg.Info("[space] defragmenting", "member", m.name, "leader", m.leader, "db-size", before)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		_, err := cli.Defragment(dctx, m.url)
		cancel()
		if err != nil {
			return fmt.Errorf("defragment %s (%s): %w", m.name, m.url, err)
		}
		after, err := k.size(ctx, cli, m.url)
		if err != nil {
			return fmt.Errorf("status of %s after defragmenting: %w", m.name, err)
		}
		k.lg.Info("[space] defragmented", "member", m.name, "leader", m.leader, "db-size-before", before, "db-size", after)
	}

	// [disarm] Only when every member has room: disarming a member still over its
	// quota would only have etcd raise the alarm again at the next write.
	for _, m := range ms {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := cli.Status(sctx, m.url)
		cancel()
		if err != nil {
			return fmt.Errorf("status of %s: %w", m.name, err)
		}
		if st.DbSizeQuota > 0 && st.DbSize*100 >= st.DbSizeQuota*roomPercent {
			return fmt.Errorf("%s holds %d bytes of its %d-byte quota after compaction and defragmentation: the data itself fills it; "+
				"delete data or raise --etcd-quota-backend-bytes on every master", m.name, st.DbSize, st.DbSizeQuota)
		}
	}
	for _, a := range alarms {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.AlarmDisarm(dctx, &clientv3.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm})
		cancel()
		if err != nil {
			return fmt.Errorf("disarm NOSPACE on %s: %w", types.ID(a.MemberID), err)
		}
		k.lg.Info("[space] disarmed NOSPACE; etcd takes writes again", "member", types.ID(a.MemberID).String())
	}
	return nil
}

// members lists the started members, followers first by name, the leader last.
func (k *Keeper) members(ctx context.Context, cli *clientv3.Client) ([]member, error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	list, err := cli.MemberList(lctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("member list: %w", err)
	}
	var ms []member
	leaderKnown := false
	for _, m := range list.Members {
		if len(m.ClientURLs) == 0 {
			continue
		}
		mb := member{id: m.ID, name: cmp.Or(m.Name, types.ID(m.ID).String()), url: m.ClientURLs[0]}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := cli.Status(sctx, mb.url)
		cancel()
		if err != nil {
			// A member that can't answer can't be defragmented either; better to stop
			// than to risk defragmenting the leader while a follower is down.
			return nil, fmt.Errorf("status of %s: %w", mb.name, err)
		}
		mb.leader = st.Leader == m.ID
		leaderKnown = leaderKnown || mb.leader
		ms = append(ms, mb)
	}
	if !leaderKnown {
		return nil, errors.New("the etcd cluster has no leader")
	}
	slices.SortFunc(ms, func(a, b member) int {
		if a.leader != b.leader {
			if a.leader {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.name, b.name)
	})
	return ms, nil
}

func (k *Keeper) size(ctx context.Context, cli *clientv3.Client, url string) (int64, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := cli.Status(sctx, url)
	if err != nil {
		return 0, err
	}
	return st.DbSize, nil
}
