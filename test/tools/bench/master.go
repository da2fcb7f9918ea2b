package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
)

// figures are one round's measurements.
type figures struct {
	bootstrap, newLeader time.Duration
	rssKiB               int
}

func benchMaster(bin string, rounds int) (table, error) {
	var h, e []figures
	for r := range rounds {
		fh, err := masterRound(bin, "haagent", r)
		if err != nil {
			return table{}, fmt.Errorf("haagent round %d: %w", r+1, err)
		}
		fe, err := masterRound(bin, "etcd", r)
		if err != nil {
			return table{}, fmt.Errorf("etcd 3.4 round %d: %w", r+1, err)
		}
		h, e = append(h, fh), append(e, fe)
	}
	pick := func(fs []figures, f func(figures) time.Duration) time.Duration {
		var ds []time.Duration
		for _, x := range fs {
			ds = append(ds, f(x))
		}
		return median(ds)
	}
	boot := func(f figures) time.Duration { return f.bootstrap }
	lead := func(f figures) time.Duration { return f.newLeader }
	rss := func(f figures) time.Duration { return time.Duration(f.rssKiB) }
	hb, eb := pick(h, boot), pick(e, boot)
	hl, el := pick(h, lead), pick(e, lead)
	hr, er := pick(h, rss), pick(e, rss)
	return table{
		title:  fmt.Sprintf("Masters on loopback (median of %d rounds; baseline: Debian's etcd %s with the same static cluster)", rounds, etcdVersion()),
		header: []string{"measure", "haagent", "etcd baseline", "ratio", "target", "verdict"},
		rows: [][]string{
			{"start 3 masters → all ready", ms(hb), ms(eb), ratio(float64(hb), float64(eb)), "≤ 3 s", verdict(hb <= 3*time.Second)},
			{"kill -9 leader → new leader", ms(hl), ms(el), ratio(float64(hl), float64(el)), "≤ 1.5 s", verdict(hl <= 1500*time.Millisecond)},
			{"idle RSS of one master", fmt.Sprintf("%.1f MiB", float64(hr)/1024), fmt.Sprintf("%.1f MiB", float64(er)/1024), ratio(float64(hr), float64(er)), "-", "-"},
		},
		notes: []string{"haagent's RSS includes its status server, metrics and etcd client; both run etcd's default 100 ms heartbeat and 1 s election timeout."},
	}, nil
}

func masterRound(bin, kind string, round int) (figures, error) {
	dir, err := os.MkdirTemp("", "haagent-bench")
	if err != nil {
		return figures{}, err
	}
	defer os.RemoveAll(dir)
	c := procs.NewCluster(bin, dir, 3)
	// The members measured: haagent's masters, or etcd alone with the same static cluster.
	var ms []*procs.Proc
	var eps []string
	for _, m := range c.Masters {
		if kind == "haagent" {
			ms = append(ms, m.Proc)
		} else {
			ms = append(ms, procs.NewEtcd(m.Name, m.IP, dir, c.Peers()))
		}
		eps = append(eps, m.ClientURL())
	}
	defer func() {
		for _, m := range ms {
			m.StopOrKill()
		}
	}()
	var f figures
	t0 := time.Now()
	for _, m := range ms {
		if err := m.Start(); err != nil {
			return f, err
		}
	}
	err = await.Until(context.Background(), "all three "+kind+" members to be ready", 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, m := range ms {
			if err := m.Ready(ctx); err != nil {
				return err
			}
		}
		return nil
	}, await.Every(5*time.Millisecond))
	if err != nil {
		return f, err
	}
	f.bootstrap = time.Since(t0)

	// Let the cluster settle, then read an idle member's RSS.
	time.Sleep(2 * time.Second)
	f.rssKiB = rssKiB(ms[1].Pid())

	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return f, err
	}
	defer cli.Close()
	leaderIdx, oldLeader, err := leaderOf(cli, eps)
	if err != nil {
		return f, err
	}
	t1 := time.Now()
	if err := ms[leaderIdx].Kill(); err != nil {
		return f, err
	}
	err = await.Until(context.Background(), "a new leader after the kill of the old one", 15*time.Second, func() error {
		for i, ep := range eps {
			if i == leaderIdx {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			st, err := cli.Status(ctx, ep)
			cancel()
			if err != nil {
				return err
			}
			if st.Leader == 0 || st.Leader == oldLeader {
				return fmt.Errorf("no new leader yet")
			}
		}
		return nil
	}, await.Every(5*time.Millisecond))
	if err != nil {
		return f, err
	}
	f.newLeader = time.Since(t1)
	return f, nil
}

// leaderOf returns the index of the leader among eps and its member ID.
func leaderOf(cli *clientv3.Client, eps []string) (int, uint64, error) {
	for i, ep := range eps {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			return 0, 0, err
		}
		if st.Leader == st.Header.MemberId {
			return i, st.Leader, nil
		}
	}
	return 0, 0, fmt.Errorf("no leader among %v", eps)
}

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

func etcdVersion() string {
	out, err := exec.Command("etcd", "--version").Output()
	if err != nil {
		return "?"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(first, "etcd Version: ")
}
