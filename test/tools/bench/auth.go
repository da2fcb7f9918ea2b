package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"

	"github.com/haagent/haagent/embed/etcdmember"
	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/pki"
)

// authToken is the benchmark cluster's secret; the cluster lives only in the lab.
const authToken = "haagent-bench-auth-0123456789abcdef"

// authKeyPrefix is where the load writes: inside the apiserver's prefix, so that with
// auth on every put goes through a range permission check, as the apiserver's do.
const authKeyPrefix = "/registry/haagent-bench/"

// benchAuth measures what etcd authorization costs: puts/s and latency through the
// haagent lb on a secure cluster, from a client with the apiserver's certificate, with
// auth off and on. Auth is switched in place between runs (on with the same code a
// master runs at start, off with AuthDisable as haagent's root user), and the order
// alternates by round, so that both states see the same cluster and the same drift.
func benchAuth(bin string, rounds int) (table, error) {
	nb, err := newNetBench("auth", bin, netip.Prefix{}, authProgress, "", lbMasterIPs, "client="+lbClientIP, "lb="+lbIP)
	if err != nil {
		return table{}, err
	}
	defer nb.Close()
	ctx, bin, dir, hs := context.Background(), nb.bin, nb.dir, nb.nodes

	c := procs.NewClusterWith(bin, dir, 3, procs.Options{Nodes: nb.masters(3)})
	c.Secure(authToken)
	for _, m := range c.Masters {
		// The lb's IP goes into the etcd server certificates, which clients check
		// through it; the masters start without auth, which the benchmark switches.
		m.Extra = []string{"--lb=" + lbIP, "--etcd-auth=false"}
	}
	defer c.StopAll()
	if err := c.StartAll(); err != nil {
		return table{}, err
	}
	if err := c.WaitReady(60 * time.Second); err != nil {
		return table{}, err
	}
	lb := procs.NewLB(bin, procs.LBConfig{IP: lbIP, Masters: lbMasterIPs, Ports: lbEtcdPort, Dir: dir, Node: hs[1], Token: authToken})
	if err := lb.Start(); err != nil {
		return table{}, err
	}
	defer lb.StopOrKill()
	if err := lb.WaitReady(60 * time.Second); err != nil {
		return table{}, fmt.Errorf("lb: %w\n%s", err, lb.LogTail(20))
	}

	root := c.Masters[0].Root
	tlsAs := func(cert, key string) (probe.Dialer, error) {
		tc, err := probe.ClientTLS(filepath.Join(root, pki.CACert), filepath.Join(root, cert), filepath.Join(root, key))
		return probe.Dialer{Dial: hs[0].DialContext, TLS: tc}, err
	}
	apiserver, err := tlsAs(pki.APIServerEtcdCert, pki.APIServerEtcdKey)
	if err != nil {
		return table{}, err
	}
	haagent, err := tlsAs(pki.EtcdClientCert, pki.EtcdClientKey)
	if err != nil {
		return table{}, err
	}
	admin, err := haagent.Client(strings.Split(c.Endpoints(), ",")...)
	if err != nil {
		return table{}, err
	}
	defer admin.Close()
	lbEndpoint := "https://" + lbIP + ":" + lbEtcdPort
	newClient := func() (*clientv3.Client, error) {
		cli, err := apiserver.Client(lbEndpoint)
		if err != nil {
			return nil, err
		}
		cli.KV = namespace.NewKV(cli.KV, authKeyPrefix)
		return cli, nil
	}
	policy := master.NewAuthPolicy(master.DefaultAPIServerPrefix, "/kube-centos/network")
	setAuth := func(on bool) error {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if on {
			if err := etcdmember.EnsureAuth(actx, admin, policy, slog.New(slog.DiscardHandler)); err != nil {
				return err
			}
		} else if _, err := admin.AuthDisable(actx); err != nil {
			return fmt.Errorf("disable etcd auth: %w", err)
		}
		return awaitAuth(ctx, c, apiserver, on)
	}

	// One load runs through the whole measurement, and auth is switched under it: the
	// machine is shared, and what else runs on it moves the throughput by more than auth
	// does, so the states alternate every authSlice and only slices close in time are
	// compared. The slices come in blocks of four, off on on off, so that neither state
	// is always first (authBlockRatio); each slice starts authGuard after its switch,
	// so that no put in it was sent before the switch.
	w, err := probe.StartWriters(ctx, newClient, loadClients)
	if err != nil {
		return table{}, err
	}
	defer w.Stop()
	blocks := 3 * max(rounds, 1)
	// The cluster's first writes (an empty store, a heap still growing) count in neither state.
	if err := waitFor(ctx, loadWarmup+authSlice); err != nil {
		return table{}, err
	}
	type window struct {
		on         bool
		start, end time.Time
		cpu        time.Duration
	}
	var windows []window
	for b := range blocks {
		for _, auth := range []bool{false, true, true, false} {
			if err := setAuth(auth); err != nil {
				return table{}, fmt.Errorf("block %d, auth %s: %w", b+1, onOff(auth), err)
			}
			if err := waitFor(ctx, authGuard); err != nil {
				return table{}, err
			}
			cpu0, err := mastersCPU(c)
			if err != nil {
				return table{}, err
			}
			start := time.Now()
			if err := waitFor(ctx, authSlice); err != nil {
				return table{}, err
			}
			end := time.Now()
			cpu1, err := mastersCPU(c)
			if err != nil {
				return table{}, err
			}
			windows = append(windows, window{on: auth, start: start, end: end, cpu: cpu1 - cpu0})
		}
		authProgress("block %d of %d measured (the figures follow at the end)", b+1, blocks)
	}
	w.Stop()
	var off, on []authRun
	for i, win := range windows {
		run := authRun{LoadResult: w.Window(win.start, win.end), CPU: win.cpu}
		authProgress("block %d, auth %s: %.0f puts/s, p50 %s, p99 %s, masters' CPU %.0f µs/put, %d failed", i/4+1, onOff(win.on),
			run.PerSecond(), run.P50.Round(10*time.Microsecond), run.P99.Round(10*time.Microsecond), run.cpuPerPut()*1e6, run.Errors)
		if win.on {
			on = append(on, run)
		} else {
			off = append(off, run)
		}
	}
	return authTable(off, on, blocks), nil
}

const (
	// authSlice is how long each state is measured at a time.
	authSlice = 2 * time.Second
	// authGuard is the wait after a switch before a slice starts: far longer than a put
	// takes through the lb (p99 tens of ms), so that no put in a slice predates its switch.
	authGuard = 250 * time.Millisecond
)

// waitFor waits d, the length of a measurement window, or until ctx ends.
func waitFor(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// authRun is one slice: what the client measured, and the CPU time that the three
// masters' processes used over the same window. The cluster fills the machine's CPU, so
// puts/s moves with the CPU that other processes take; CPU per put shows what auth adds
// (a permission check on every member for every put) with less of that noise, though a
// slower slice batches less and so costs a little more per put.
type authRun struct {
	probe.LoadResult
	CPU time.Duration
}

// cpuPerPut is the masters' CPU seconds per counted put.
func (r authRun) cpuPerPut() float64 {
	if r.Puts == 0 {
		return 0
	}
	return r.CPU.Seconds() / float64(r.Puts)
}

// mastersCPU is the CPU time (user and system) the masters' processes have used so far.
func mastersCPU(c *procs.Cluster) (time.Duration, error) {
	var sum float64
	for _, m := range c.Masters {
		p, err := procfs.NewProc(m.Pid())
		if err != nil {
			return 0, fmt.Errorf("%s: %w", m.Name, err)
		}
		st, err := p.Stat()
		if err != nil {
			return 0, fmt.Errorf("%s: CPU time: %w", m.Name, err)
		}
		sum += st.CPUTime()
	}
	return time.Duration(sum * float64(time.Second)), nil
}

// awaitAuth waits until every member enforces (or no longer enforces) auth: a read
// outside the apiserver's prefix with its certificate is refused exactly when on.
func awaitAuth(ctx context.Context, c *procs.Cluster, d probe.Dialer, on bool) error {
	for _, m := range c.Masters {
		cli, err := d.Client(m.ClientURL())
		if err != nil {
			return err
		}
		err = await.Until(ctx, fmt.Sprintf("%s to have auth %s", m.Name, onOff(on)), 20*time.Second, func() error {
			gctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := cli.Get(gctx, "/haagent-bench-outside")
			denied := errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied)
			switch {
			case on && !denied:
				return fmt.Errorf("a read outside /registry/ was not refused (%v)", err)
			case !on && err != nil:
				return err
			}
			return nil
		}, await.Every(50*time.Millisecond))
		cli.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func authProgress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench auth: "+format+"\n", args...)
}

// authBlockRatio is the median over the blocks of on/off for f. A block is four slices,
// off on on off; its ratio is the geometric mean of the on/off of its first two slices
// and of its last two, in which a drift of the machine that is linear in time cancels
// (to first order).
func authBlockRatio(off, on []authRun, f func(authRun) float64) float64 {
	var rs []float64
	for i := 0; i+1 < min(len(off), len(on)); i += 2 {
		a, b, c, d := f(off[i]), f(on[i]), f(off[i+1]), f(on[i+1])
		if a > 0 && c > 0 {
			rs = append(rs, math.Sqrt(b/a*d/c))
		}
	}
	slices.Sort(rs)
	switch n := len(rs); {
	case n == 0:
		return 0
	case n%2 == 0:
		return (rs[n/2-1] + rs[n/2]) / 2
	default:
		return rs[n/2]
	}
}

func authTable(off, on []authRun, blocks int) table {
	lat := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	loads := func(rs []authRun) []probe.LoadResult {
		var ls []probe.LoadResult
		for _, r := range rs {
			ls = append(ls, r.LoadResult)
		}
		return ls
	}
	medianCPU := func(rs []authRun) float64 {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, time.Duration(r.cpuPerPut()*float64(time.Second)))
		}
		return median(ds).Seconds()
	}
	p50 := func(r probe.LoadResult) time.Duration { return r.P50 }
	p99 := func(r probe.LoadResult) time.Duration { return r.P99 }
	tp := authBlockRatio(off, on, func(r authRun) float64 { return r.PerSecond() })
	r50 := authBlockRatio(off, on, func(r authRun) float64 { return float64(r.P50) })
	r99 := authBlockRatio(off, on, func(r authRun) float64 { return float64(r.P99) })
	rcpu := authBlockRatio(off, on, authRun.cpuPerPut)
	t := table{
		title: fmt.Sprintf("etcd authorization, through the haagent lb (3 secure masters in network namespaces; client with the "+
			"apiserver's certificate writing under /registry/; one load, auth switched under it: %d blocks of %s slices, "+
			"off on on off)", blocks, authSlice),
		header: []string{"measure", "auth off", "auth on", "on/off", "target", "verdict"},
		rows: [][]string{
			{fmt.Sprintf("puts/s, %d clients", loadClients), fmt.Sprintf("%.0f/s", medianLoad(loads(off)).PerSecond()),
				fmt.Sprintf("%.0f/s", medianLoad(loads(on)).PerSecond()), fmt.Sprintf("%.2f×", tp), "≥ 0.9×", verdict(tp >= 0.9)},
			{"p50 put latency", lat(medianOf(loads(off), p50)), lat(medianOf(loads(on), p50)), fmt.Sprintf("%.2f×", r50), "-", "-"},
			{"p99 put latency", lat(medianOf(loads(off), p99)), lat(medianOf(loads(on), p99)), fmt.Sprintf("%.2f×", r99), "-", "-"},
			{"masters' CPU per put", fmt.Sprintf("%.0f µs", medianCPU(off)*1e6), fmt.Sprintf("%.0f µs", medianCPU(on)*1e6),
				fmt.Sprintf("%.2f×", rcpu), "-", "-"},
		},
		notes: []string{fmt.Sprintf("on/off is the median over the blocks of each block's ratio, the geometric mean of "+
			"the on/off of its first two slices and of its last two; the absolute figures are the medians of the slices. "+
			"Each slice starts %s after auth is switched. CPU is the three masters' user and system time over the "+
			"slice, per acknowledged put. %d clients as in the lb section, over TLS with the apiserver's certificate, "+
			"kept open throughout.", authGuard, loadClients)},
	}
	n := 0
	for _, r := range append(append([]authRun{}, off...), on...) {
		n += r.Errors
	}
	if n > 0 {
		t.notes = append(t.notes, fmt.Sprintf("Failed puts during the load runs: %d.", n))
	}
	return t
}
