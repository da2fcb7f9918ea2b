package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"

	"github.com/haagent/haagent/etcdmember"
	"github.com/haagent/haagent/pki"
	"github.com/haagent/haagent/test/await"
	"github.com/haagent/haagent/test/hosts"
	"github.com/haagent/haagent/test/probe"
	"github.com/haagent/haagent/test/procs"
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
	if os.Geteuid() != 0 {
		return table{}, fmt.Errorf("the auth benchmark runs in network namespaces: run it as root")
	}
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	ctx := context.Background()
	lab, err := hosts.NewLabWith(ctx, hosts.LabOptions{NetworkOnly: true, Logf: authProgress})
	if err != nil {
		return table{}, err
	}
	defer lab.Teardown()
	pairs := []string{"client=" + lbClientIP, "lb=" + lbIP}
	for i, ip := range lbMasterIPs {
		pairs = append(pairs, fmt.Sprintf("m%d=%s", i+1, ip))
	}
	hs, err := lab.AddNodes(ctx, pairs...)
	if err != nil {
		return table{}, err
	}
	dir, err := os.MkdirTemp("", "haagent-bench-auth")
	if err != nil {
		return table{}, err
	}
	defer os.RemoveAll(dir)

	c := procs.NewClusterWith(bin, dir, 3, procs.Options{Nodes: hs[2:]})
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
	policy := etcdmember.NewAuthPolicy(etcdmember.DefaultAPIServerPrefix, "/kube-centos/network")
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

	// More rounds than the lb section: the two states differ by little, and only
	// adjacent runs, paired, cancel the machine's drift.
	loadRounds := max(rounds, 1)
	var off, on []probe.LoadResult
	for r := range loadRounds {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, auth := range order {
			if err := setAuth(auth); err != nil {
				return table{}, fmt.Errorf("round %d, auth %s: %w", r+1, onOff(auth), err)
			}
			lctx, cancel := context.WithTimeout(ctx, loadDuration+30*time.Second)
			lr, err := probe.Load(lctx, newClient, loadClients, loadWarmup, loadDuration)
			cancel()
			if err != nil {
				return table{}, fmt.Errorf("round %d, auth %s: %w", r+1, onOff(auth), err)
			}
			authProgress("round %d, auth %s: %.0f puts/s, p50 %s, p99 %s, %d failed", r+1, onOff(auth), lr.PerSecond(),
				lr.P50.Round(10*time.Microsecond), lr.P99.Round(10*time.Microsecond), lr.Errors)
			if auth {
				on = append(on, lr)
			} else {
				off = append(off, lr)
			}
		}
	}
	return authTable(off, on, loadRounds), nil
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

func authTable(off, on []probe.LoadResult, rounds int) table {
	lat := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	p50 := func(r probe.LoadResult) time.Duration { return r.P50 }
	p99 := func(r probe.LoadResult) time.Duration { return r.P99 }
	// paired is the median over the rounds of on/off, each round's two runs adjacent.
	paired := func(f func(probe.LoadResult) float64) float64 {
		var rs []float64
		for i := range min(len(off), len(on)) {
			if b := f(off[i]); b > 0 {
				rs = append(rs, f(on[i])/b)
			}
		}
		slices.Sort(rs)
		if len(rs) == 0 {
			return 0
		}
		return rs[len(rs)/2]
	}
	tp := paired(func(r probe.LoadResult) float64 { return r.PerSecond() })
	r50 := paired(func(r probe.LoadResult) float64 { return float64(r.P50) })
	r99 := paired(func(r probe.LoadResult) float64 { return float64(r.P99) })
	t := table{
		title: fmt.Sprintf("etcd authorization, through the haagent lb (3 secure masters in network namespaces; client with the "+
			"apiserver's certificate writing under /registry/; median of %d rounds, auth off and on alternating)", rounds),
		header: []string{"measure", "auth off", "auth on", "on/off", "target", "verdict"},
		rows: [][]string{
			{fmt.Sprintf("puts/s, %d clients", loadClients), fmt.Sprintf("%.0f/s", medianLoad(off).PerSecond()),
				fmt.Sprintf("%.0f/s", medianLoad(on).PerSecond()), fmt.Sprintf("%.2f×", tp), "≥ 0.9×", verdict(tp >= 0.9)},
			{"p50 put latency", lat(medianOf(off, p50)), lat(medianOf(on, p50)), fmt.Sprintf("%.2f×", r50), "-", "-"},
			{"p99 put latency", lat(medianOf(off, p99)), lat(medianOf(on, p99)), fmt.Sprintf("%.2f×", r99), "-", "-"},
		},
		notes: []string{"on/off is the median of the rounds' ratios, each round's two runs back to back; the absolute " +
			"figures are the medians of the rounds. Load as in the lb section, over TLS with the apiserver's certificate."},
	}
	n := 0
	for _, r := range append(append([]probe.LoadResult{}, off...), on...) {
		n += r.Errors
	}
	if n > 0 {
		t.notes = append(t.notes, fmt.Sprintf("Failed puts during the load runs: %d.", n))
	}
	return t
}
