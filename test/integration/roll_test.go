package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/cluster/roll"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
)

const (
	rollGood   = "0.99.0-roll"
	rollBroken = "0.99.1-broken"
)

// TestRollANewBinaryOneMasterAtATime: three secure masters, each with its own copy of
// haagent as a package would install it. A new build lands on all three at the same
// moment: the masters exec it one at a time under the roll lock, each keeping its PID,
// while a client writes through all three members every 20 ms and watches what it
// writes. The leader rolls last, so that etcd's leadership moves once; no write fails
// but one that move drops (see rollObserver.stop), the watch misses none, etcd is
// never without a leader for longer than an election, and never more than one master
// is rolling. Then a build whose gate fails lands on all three: the first master to
// try it (a follower) goes back to the build before, the roll stops there (etcd,
// /status, /metrics), the other two never restart, no write fails, and, started again
// from the installed (refused) file as systemd would, the master goes straight back to
// the kept build.
func TestRollANewBinaryOneMasterAtATime(t *testing.T) {
	dir := t.TempDir()
	const rel = "-X github.com/haagent/haagent/base/release.Version="
	good, err := procs.Build(filepath.Join(dir, "good"), rel+rollGood)
	if err != nil {
		t.Fatal(err)
	}
	broken, err := procs.Build(filepath.Join(dir, "broken"), rel+rollBroken+" -X github.com/haagent/haagent/cluster/roll.gateFault=the-test's-broken-build", "rollfault")
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t)
	installed := map[string]string{}
	for _, m := range c.Masters {
		path := filepath.Join(dir, m.Name, "usr/bin/haagent")
		install(t, bin, path)
		installed[m.Name] = path
		m.Argv = func() []string { return append([]string{path}, m.Args()...) }
		m.Extra = []string{"--roll-gate-timeout=30s"}
	}
	startReady(t, c)
	pids := map[string]int{}
	for _, m := range c.Masters {
		pids[m.Name] = m.Pid()
	}
	cli := etcdClient(t, c, c.Masters[0])

	// 1. A good build everywhere at once.
	obs := observe(t, c, cli)
	start := time.Now()
	for _, m := range c.Masters {
		install(t, good, installed[m.Name])
	}
	if err := await.Until(context.Background(), "every master to run "+rollGood, 4*time.Minute, func() error {
		for _, m := range c.Masters {
			if st := rollStatus(t, m); st.Running.Version != rollGood || st.State != "idle" {
				return fmt.Errorf("%s runs %s: %s", m.Name, st.Running, st.State)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the roll took %s for 3 masters", time.Since(start).Round(100*time.Millisecond))
	obs.stop(t, 1)
	for _, m := range c.Masters {
		if !m.Running() || m.Pid() != pids[m.Name] {
			t.Errorf("%s: pid %d, was %d: the roll must exec in place", m.Name, m.Pid(), pids[m.Name])
		}
		if rec := rollRecord(t, cli, m.Name); rec.State != roll.StateDone || rec.To.Version != rollGood {
			t.Errorf("%s's roll record: %+v", m.Name, rec)
		}
		if n := strings.Count(m.Logs(), "[roll] this master's turn"); n != 1 {
			t.Errorf("%s took its turn %d times", m.Name, n)
		}
	}

	// 2. A build whose gate fails everywhere at once.
	obs = observe(t, c, cli)
	for _, m := range c.Masters {
		install(t, broken, installed[m.Name])
	}
	var stopped roll.Stopped
	if err := await.Until(context.Background(), "the roll onto "+rollBroken+" to stop", 2*time.Minute, func() error {
		resp, err := cli.Get(context.Background(), roll.StoppedKey)
		if err != nil || len(resp.Kvs) == 0 {
			return fmt.Errorf("no stopped roll yet (%v)", err)
		}
		return json.Unmarshal(resp.Kvs[0].Value, &stopped)
	}); err != nil {
		t.Fatal(err)
	}
	if stopped.Binary.Version != rollBroken || !strings.Contains(stopped.Reason, "the-test's-broken-build") {
		t.Fatalf("stopped roll = %+v", stopped)
	}
	back := c.Masters[slicesIndex(c.Masters, stopped.Node)]
	if err := await.Until(context.Background(), "every master to run "+rollGood+" and show the stopped roll", 2*time.Minute, func() error {
		for _, m := range c.Masters {
			st := rollStatus(t, m)
			if st.Running.Version != rollGood || st.Stopped == nil || !strings.Contains(st.State, "stopped") {
				return fmt.Errorf("%s runs %s: %s", m.Name, st.Running, st.State)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	obs.stop(t, 0) // a follower goes first, and back: the leader never moves
	for _, m := range c.Masters {
		turns := strings.Count(m.Logs(), "[roll] this master's turn")
		rec := rollRecord(t, cli, m.Name)
		metrics, err := httpGet("http://" + m.StatusAddress() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(metrics, "haagent_roll_stopped 1") {
			t.Errorf("%s: /metrics lacks haagent_roll_stopped 1", m.Name)
		}
		if m == back {
			if turns != 2 || rec.State != roll.StateRolledBack || !strings.Contains(metrics, "haagent_roll_rollbacks_total 1") {
				t.Errorf("%s (went back): %d turns, record %+v", m.Name, turns, rec)
			}
			continue
		}
		if turns != 1 || rec.State != roll.StateDone || rec.To.Version != rollGood {
			t.Errorf("%s restarted for the broken build: %d turns, record %+v", m.Name, turns, rec)
		}
	}

	// 3. systemd starts the installed, refused build again: it goes straight back.
	if _, err := back.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := back.Start(); err != nil {
		t.Fatal(err)
	}
	// Two starts (the refused build, then the kept one), each hashing its binary.
	if err := back.WaitReady(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if st := rollStatus(t, back); st.Running.Version != rollGood {
		t.Fatalf("%s started from the refused build runs %s", back.Name, st.Running)
	}
	requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
}

// install puts src at path as a package manager does: a new file renamed over the old.
func install(t *testing.T, src, path string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func rollStatus(t *testing.T, m *procs.Master) roll.Status {
	t.Helper()
	out, err := exec.Command(bin, "status", "-o", "json", "--status-address="+m.StatusAddress()).Output()
	if err != nil {
		return roll.Status{State: "no status: " + err.Error()}
	}
	var st struct {
		Roll roll.Status `json:"roll"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("%s status: %v", m.Name, err)
	}
	return st.Roll
}

func rollRecord(t *testing.T, cli *clientv3.Client, name string) roll.Record {
	t.Helper()
	var rec roll.Record
	resp, err := cli.Get(context.Background(), roll.NodesPrefix+name)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("%s's roll record: %v", name, err)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func slicesIndex(ms []*procs.Master, name string) int {
	for i, m := range ms {
		if m.Name == name {
			return i
		}
	}
	panic("no master " + name)
}

// rollObserver writes through all the members, watches what it writes, and watches
// etcd's leader and the masters' roll records, for the length of a roll.
type rollObserver struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex
	writes        int
	failed        []string
	written       map[int64]bool // revisions of the writes that succeeded
	seen          map[int64]bool // revisions the watch delivered
	watchErr      string
	maxLeaderless time.Duration
	maxRolling    int
	// rewatches counts the watches the observer had to start again.
	rewatches int
	// leader is the last leader a member named, changes how often that changed.
	leader  uint64
	changes int
}

func observe(t *testing.T, c *procs.Cluster, cli *clientv3.Client) *rollObserver {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o := &rollObserver{cancel: cancel, written: map[int64]bool{}, seen: map[int64]bool{}}
	resp, err := cli.Get(ctx, "/roll-test/")
	if err != nil {
		t.Fatal(err)
	}
	// A watch that requires a leader ends when its member loses one (as the leader's
	// restart makes it); a client watches again from the revision after the last it
	// saw, as client-go's reflectors do, and must miss nothing.
	next := resp.Header.Revision + 1
	o.wg.Go(func() {
		for ctx.Err() == nil {
			wch := cli.Watch(clientv3.WithRequireLeader(ctx), "/roll-test/", clientv3.WithPrefix(), clientv3.WithRev(next))
			for wr := range wch {
				o.mu.Lock()
				if wr.CompactRevision != 0 {
					o.watchErr = fmt.Sprintf("watch from revision %d: compacted at %d", next, wr.CompactRevision)
				}
				for _, ev := range wr.Events {
					o.seen[ev.Kv.ModRevision] = true
					next = ev.Kv.ModRevision + 1
				}
				if wr.Canceled && ctx.Err() == nil {
					o.rewatches++
				}
				o.mu.Unlock()
			}
			select { // pace the watches while a member has no leader
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	o.wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := cli.Put(wctx, "/roll-test/k", strconv.Itoa(i))
			cancel()
			o.mu.Lock()
			if ctx.Err() == nil {
				o.writes++
				if err != nil {
					o.failed = append(o.failed, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				} else {
					o.written[resp.Header.Revision] = true
				}
			}
			o.mu.Unlock()
		}
	})
	// The leader as the members report it, and the masters' roll records.
	eps := strings.Split(c.Endpoints(), ",")
	o.wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var since time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// A member that does not answer in time (a loaded host) says nothing about
			// the leader; only answers without one count as leaderless.
			var leader, answered atomic.Bool
			var named atomic.Uint64
			var sw sync.WaitGroup
			for _, ep := range eps {
				sw.Go(func() {
					sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
					defer cancel()
					if st, err := cli.Status(sctx, ep); err == nil {
						answered.Store(true)
						if st.Leader != 0 {
							leader.Store(true)
							named.Store(st.Leader)
						}
					}
				})
			}
			sw.Wait()
			if !answered.Load() {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			resp, err := cli.Get(rctx, roll.NodesPrefix, clientv3.WithPrefix())
			cancel()
			rolling := 0
			if err == nil {
				for _, kv := range resp.Kvs {
					var rec roll.Record
					if json.Unmarshal(kv.Value, &rec) == nil && rec.State == roll.StateRolling {
						rolling++
					}
				}
			}
			o.mu.Lock()
			switch {
			case leader.Load():
				since = time.Time{}
			case since.IsZero():
				since = time.Now()
			default:
				o.maxLeaderless = max(o.maxLeaderless, time.Since(since))
			}
			o.maxRolling = max(o.maxRolling, rolling)
			if id := named.Load(); id != 0 && id != o.leader {
				if o.leader != 0 {
					o.changes++
				}
				o.leader = id
			}
			o.mu.Unlock()
		}
	})
	return o
}

// stop ends the observation and checks it: every write watched, a leader within an
// election (1 s here) of losing one, one master rolling at a time, etcd's leadership
// moved at most maxChanges times, and no failed write but those that a move of the
// leadership drops: raft's leader drops proposals while it transfers, and the member
// that took one reports that it timed out. The leader rolls last, so that a roll
// costs one move.
func (o *rollObserver) stop(t *testing.T, maxChanges int) {
	t.Helper()
	// The last writes' events may still be on their way.
	_ = await.Until(context.Background(), "the watch to deliver every write", 10*time.Second, func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		for rev := range o.written {
			if !o.seen[rev] {
				return fmt.Errorf("revision %d not watched yet", rev)
			}
		}
		return nil
	})
	o.cancel()
	o.wg.Wait()
	t.Logf("%d writes through the members, %d failed; %d watched (%d watch(es) started again); longest without an etcd leader %s; %d leader change(s); at most %d master(s) rolling at once",
		o.writes, len(o.failed), len(o.seen), o.rewatches, o.maxLeaderless, o.changes, o.maxRolling)
	dropped := 0
	for _, f := range o.failed {
		if strings.Contains(f, "etcdserver: request timed out") || strings.Contains(f, "proposal dropped") {
			dropped++
		}
	}
	if dropped < len(o.failed) || dropped > o.changes {
		t.Errorf("%d writes failed during the roll (%d dropped by %d leader change(s)): %s", len(o.failed), dropped, o.changes,
			strings.Join(o.failed[:min(5, len(o.failed))], "; "))
	}
	if o.changes > maxChanges {
		t.Errorf("etcd's leadership moved %d times, want at most %d", o.changes, maxChanges)
	}
	if o.watchErr != "" {
		t.Error(o.watchErr)
	}
	missed := 0
	for rev := range o.written {
		if !o.seen[rev] {
			missed++
		}
	}
	if missed > 0 {
		t.Errorf("the watch missed %d of %d writes", missed, len(o.written))
	}
	if o.maxLeaderless > time.Second {
		t.Errorf("etcd was without a leader for %s, longer than an election", o.maxLeaderless)
	}
	if o.maxRolling > 1 {
		t.Errorf("%d masters rolled at once", o.maxRolling)
	}
	if o.writes < 100 {
		t.Errorf("only %d writes: the observer did not run", o.writes)
	}
}
