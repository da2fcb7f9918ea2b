package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haagent/haagent/test/cluster"
)

// member abstracts the thing being measured: a haagent master or a plain etcd 3.4.
type member interface {
	start() error
	kill() error
	stop()
	pid() int
	clientURL() string
	ready() bool
}

type haagentMember struct{ m *cluster.Master }

func (h haagentMember) start() error      { return h.m.Start() }
func (h haagentMember) kill() error       { return h.m.Kill() }
func (h haagentMember) stop()             { _, _ = h.m.Stop() }
func (h haagentMember) pid() int          { return h.m.Pid() }
func (h haagentMember) clientURL() string { return h.m.ClientURL() }
func (h haagentMember) ready() bool       { return h.m.Ready(context.Background()) }

// etcdMember is Debian's etcd 3.4 started with the same static cluster, the baseline.
type etcdMember struct {
	name, ip, dir, cluster string
	cmd                    *exec.Cmd
	done                   chan struct{}
}

func (e *etcdMember) start() error {
	e.cmd = exec.Command("etcd", "--name", e.name, "--data-dir", e.dir,
		"--listen-peer-urls", "http://"+e.ip+":2380", "--initial-advertise-peer-urls", "http://"+e.ip+":2380",
		"--listen-client-urls", "http://"+e.ip+":2379", "--advertise-client-urls", "http://"+e.ip+":2379",
		"--initial-cluster", e.cluster, "--initial-cluster-token", "etcd-cluster", "--initial-cluster-state", "new",
		"--log-level", "error")
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		return err
	}
	e.done = make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	return nil
}
func (e *etcdMember) kill() error { _ = e.cmd.Process.Kill(); <-e.done; return nil }
func (e *etcdMember) stop() {
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(10 * time.Second):
			_ = e.kill()
		}
	}
}
func (e *etcdMember) pid() int          { return e.cmd.Process.Pid }
func (e *etcdMember) clientURL() string { return "http://" + e.ip + ":2379" }
func (e *etcdMember) ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(e.clientURL() + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == 200
}

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
	c := cluster.New(bin, dir, 3)
	var ms []member
	for _, m := range c.Masters {
		if kind == "haagent" {
			ms = append(ms, haagentMember{m})
		} else {
			ms = append(ms, &etcdMember{name: m.Name, ip: m.IP, dir: filepath.Join(dir, m.Name), cluster: c.Peers()})
		}
	}
	defer func() {
		for _, m := range ms {
			m.stop()
		}
	}()
	var f figures
	t0 := time.Now()
	for _, m := range ms {
		if err := m.start(); err != nil {
			return f, err
		}
	}
	err = cluster.Await(30*time.Second, 5*time.Millisecond, func() error {
		for _, m := range ms {
			if !m.ready() {
				return fmt.Errorf("waiting for %s to be ready", m.clientURL())
			}
		}
		return nil
	})
	if err != nil {
		return f, err
	}
	f.bootstrap = time.Since(t0)

	// Let the cluster settle, then read an idle member's RSS.
	time.Sleep(2 * time.Second)
	f.rssKiB = rssKiB(ms[1].pid())

	var eps []string
	for _, m := range ms {
		eps = append(eps, m.clientURL())
	}
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
	if err := ms[leaderIdx].kill(); err != nil {
		return f, err
	}
	err = cluster.Await(15*time.Second, 5*time.Millisecond, func() error {
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
	})
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
