package main

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/test/framework/procs"
)

// The lb benchmark's layout, in network namespaces it makes itself: the masters, a
// client host, and one host per proxy so that they can run side by side.
const (
	lbIP        = "10.77.0.10"
	nginxIP     = "10.77.0.11"
	haproxyIP   = "10.77.0.12"
	lbClientIP  = "10.77.0.5"
	lbEtcdPort  = "2379"
	nginxModule = "/usr/lib/nginx/modules/ngx_stream_module.so"
)

var lbMasterIPs = []string{"10.77.0.21", "10.77.0.22", "10.77.0.23"}

// Measurement settings. gapCap bounds one failover measurement: a front end that is
// still stalled then is reported as "> gapCap".
//
// The gap clients are etcd's own clientv3 as flanneld or the apiserver run it: one
// client, never rebuilt, with 1 s gRPC keepalives (grpc-go raises them to 10 s) and a
// 250 ms timeout per put; all that moves it off a failed master is gRPC's own
// reconnect, and the lb closing the connections of a master it finds down.
const (
	putTimeout       = 250 * time.Millisecond
	putInterval      = 20 * time.Millisecond
	keepAliveTime    = time.Second
	keepAliveTimeout = time.Second
	gapCap           = 20 * time.Second
	loadClients      = 16
	loadWarmup       = time.Second
	loadDuration     = 5 * time.Second
	maxLoadRounds    = 3
)

// The gap target: in every round, the lb's gap is at most max(gapFloor, gapRatio ×
// direct's gap in the same round). Below gapFloor the election alone decides.
const (
	gapFloor = 1500 * time.Millisecond
	gapRatio = 1.2
)

// traceEnv, set to 1, prints every round's timelines (puts, gRPC states, lb log); they
// are printed anyway for a round that misses the target, or where the lb's gap is
// longer than direct's by more than traceOver.
const (
	traceEnv  = "HAAGENT_BENCH_TRACE"
	traceOver = 100 * time.Millisecond
)

// frontend is one way for a client to reach the masters.
type frontend struct {
	name string
	// node runs the proxy; nil for direct, which needs nothing.
	node *netlab.Node
	// start runs the proxy in node, logging into dir.
	start func(n *netlab.Node, dir string) (*procs.Proc, error)
	// endpoints are what the client is given.
	endpoints []string
	// baseline front ends' gaps come from fixed timers (health-check intervals,
	// connect timeouts): they take part in the first round of each fault only.
	baseline bool
}

// lbBench is the shared state of one lb benchmark run.
type lbBench struct {
	dir     string
	c       *procs.Cluster
	masters []*netlab.Node
	client  *netlab.Node
	eps     []string // the masters' client URLs
	m1ID    uint64
}

// dialer is how the benchmark's clients reach etcd: from the client host, plain
// http (the masters run --insecure, so that haproxy's httpchk can read /health).
func (b *lbBench) dialer() probe.Dialer { return probe.Dialer{Dial: b.client.DialContext} }

// gapDialer is the gap clients' dialer: the same, with keepalives.
func (b *lbBench) gapDialer() probe.Dialer {
	d := b.dialer()
	d.KeepAliveTime, d.KeepAliveTimeout = keepAliveTime, keepAliveTimeout
	return d
}

// faultKind is how the primary fails.
type faultKind struct {
	name  string
	apply func(b *lbBench) error
}

var lbFaults = []faultKind{
	{"kill -9", func(b *lbBench) error { return b.c.Masters[0].Kill() }},
	{"blackhole", func(b *lbBench) error { return b.masters[0].Blackhole() }},
}

// feResult is one front end's figures.
type feResult struct {
	gaps     map[string][]probe.Gap // by fault
	loadRuns []probe.LoadResult
}

func benchLB(bin string, rounds int) (table, error) {
	for _, p := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(p); err != nil {
			return table{}, fmt.Errorf("%s is not installed: run scripts/deps.sh", p)
		}
	}
	if _, err := os.Stat(nginxModule); err != nil {
		return table{}, fmt.Errorf("nginx's stream module is missing (Debian package libnginx-mod-stream): %w", err)
	}
	nb, err := newNetBench("lb", bin, netip.Prefix{}, progress, "", lbMasterIPs, "client="+lbClientIP, "lb="+lbIP, "nginx="+nginxIP, "haproxy="+haproxyIP)
	if err != nil {
		return table{}, err
	}
	defer nb.Close()
	ctx, bin, dir, hs := context.Background(), nb.bin, nb.dir, nb.nodes
	b := &lbBench{dir: dir, client: hs[0], masters: nb.masters(3)}
	b.c = procs.NewClusterWith(bin, dir, 3, procs.Options{Nodes: b.masters})
	defer b.c.StopAll()
	if err := b.c.StartAll(); err != nil {
		return table{}, err
	}
	if err := b.c.WaitReady(30 * time.Second); err != nil {
		return table{}, err
	}
	b.eps = strings.Split(b.c.Endpoints(), ",")
	if err := b.restore(); err != nil {
		return table{}, err
	}
	if b.m1ID, err = memberID(ctx, b.dialer(), b.eps, b.eps[0]); err != nil {
		return table{}, err
	}

	fes := []frontend{
		{name: "haagent lb", node: hs[1], start: startHaagent(bin), endpoints: []string{lbIP + ":" + lbEtcdPort}},
		{name: "nginx", node: hs[2], start: startNginx, endpoints: []string{nginxIP + ":" + lbEtcdPort}, baseline: true},
		{name: "haproxy", node: hs[3], start: startHaproxy, endpoints: []string{haproxyIP + ":" + lbEtcdPort}, baseline: true},
		{name: "direct", endpoints: b.eps},
	}
	res := map[string]*feResult{}
	for _, fe := range fes {
		res[fe.name] = &feResult{gaps: map[string][]probe.Gap{}}
	}

	// Throughput and latency: one front end at a time, taking turns in each round,
	// each round starting with the next one.
	loadRounds := min(max(rounds, 1), maxLoadRounds)
	for r := range loadRounds {
		for i := range fes {
			fe := fes[(i+r)%len(fes)]
			lr, err := b.loadRun(fe)
			if err != nil {
				return table{}, fmt.Errorf("%s load round %d: %w", fe.name, r+1, err)
			}
			progress("%s, load round %d: %.0f puts/s, p50 %s, p99 %s, %d failed", fe.name, r+1, lr.PerSecond(),
				lr.P50.Round(10*time.Microsecond), lr.P99.Round(10*time.Microsecond), lr.Errors)
			res[fe.name].loadRuns = append(res[fe.name].loadRuns, lr)
		}
	}

	// Failover gaps: the front ends measured side by side, through the same fault, so
	// that they share its election. The lb and direct take part in every round, the
	// baselines in the first round of each fault.
	gapRounds := 2 * max(rounds, 1)
	for _, f := range lbFaults {
		for r := range gapRounds {
			var in []frontend
			for _, fe := range fes {
				if r == 0 || !fe.baseline {
					in = append(in, fe)
				}
			}
			gs, err := b.gapRound(in, f, r+1)
			if err != nil {
				return table{}, fmt.Errorf("%s of the primary, round %d: %w", f.name, r+1, err)
			}
			var say []string
			for i, fe := range in {
				res[fe.name].gaps[f.name] = append(res[fe.name].gaps[f.name], gs[i])
				say = append(say, fmt.Sprintf("%s %s", fe.name, gapCell(gs[i])))
			}
			lg, dg := gs[0], gs[len(gs)-1]
			progress("%s of the primary, round %d: longest write gap: %s; limit %s: %s", f.name, r+1,
				strings.Join(say, ", "), ms(gapLimit(dg)), verdict(withinLimit(lg, dg)))
		}
	}
	return lbTable(fes, res, gapRounds, loadRounds), nil
}

// progress tells the operator, on stderr, what the benchmark is at.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench lb: "+format+"\n", args...)
}

// restore brings the cluster back to three healthy masters with m1 as the etcd
// leader: m1's link up, m1 restarted with its data dir if it is down.
func (b *lbBench) restore() error {
	return restorePrimary(b.c, b.masters[0], b.dialer(), b.eps)
}

// runFrontend starts fe and waits until a new connection through it reaches m1 and a
// put through it succeeds. The returned stop kills it.
func (b *lbBench) runFrontend(fe frontend) (stop func(), err error) {
	stop = func() {}
	var p *procs.Proc
	if fe.start != nil {
		d := filepath.Join(b.dir, strings.ReplaceAll(fe.name, " ", "-"))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if p, err = fe.start(fe.node, d); err != nil {
			return nil, err
		}
		stop = func() {
			_ = fe.node.KillAll() // the proxy and any worker processes
			_, _ = p.Wait(procs.KillTimeout)
		}
		defer func() {
			if err != nil {
				stop()
				err = fmt.Errorf("%w; logs in %s:\n%s", err, d, logTails(d))
			}
		}()
	}
	cli, err := b.dialer().Client(fe.endpoints...)
	if err != nil {
		return stop, err
	}
	defer cli.Close()
	err = await.Until(context.Background(), "a put through "+fe.name+", whose new connections reach m1", 20*time.Second, func() error {
		if p != nil && !p.Running() {
			return await.Stop(fmt.Errorf("%s exited", fe.name))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if fe.start != nil {
			id, err := probe.AnsweredBy(ctx, cli, fe.endpoints[0])
			if err != nil {
				return err
			}
			if id != b.m1ID {
				return fmt.Errorf("%s sent a new connection to %x, not the primary m1 (%x)", fe.name, id, b.m1ID)
			}
		}
		_, err := cli.Put(ctx, "bench/ready", fe.name)
		return err
	})
	return stop, err
}

func (b *lbBench) newClient(fe frontend) func() (*clientv3.Client, error) {
	return func() (*clientv3.Client, error) { return b.dialer().Client(fe.endpoints...) }
}

// loadRun measures throughput and latency through fe on a healthy cluster.
func (b *lbBench) loadRun(fe frontend) (probe.LoadResult, error) {
	if err := b.restore(); err != nil {
		return probe.LoadResult{}, err
	}
	stop, err := b.runFrontend(fe)
	if err != nil {
		return probe.LoadResult{}, err
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), loadDuration+30*time.Second)
	defer cancel()
	return probe.Load(ctx, b.newClient(fe), loadClients, loadWarmup, loadDuration)
}

// gapRound starts from a healthy cluster, writes through every front end in fes at
// once, fails the primary (the etcd leader) and returns each front end's longest time
// without an acknowledged write. The haagent lb must come first and direct last.
func (b *lbBench) gapRound(fes []frontend, f faultKind, round int) ([]probe.Gap, error) {
	if err := b.restore(); err != nil {
		return nil, err
	}
	var ws []*probe.Writer
	defer func() {
		for _, w := range ws {
			w.Stop()
		}
	}()
	lbLog := filepath.Join(b.dir, "haagent-lb", "lb.log")
	for _, fe := range fes {
		stop, err := b.runFrontend(fe)
		if err != nil {
			return nil, err
		}
		defer stop()
		ws = append(ws, probe.StartWriter(context.Background(), probe.WriterConfig{
			NewClient: func() (*clientv3.Client, error) { return b.gapDialer().Client(fe.endpoints...) },
			Key:       "bench/gap/" + fe.name, Timeout: putTimeout, Interval: putInterval, Trace: true,
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, w := range ws {
		if err := w.AwaitAcks(ctx, 20, 10*time.Second); err != nil {
			return nil, fmt.Errorf("%s: %w", fes[i].name, err)
		}
	}
	at := time.Now()
	if err := f.apply(b); err != nil {
		return nil, err
	}
	gs := make([]probe.Gap, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { gs[i] = w.AwaitRecovery(at, probe.Recovery{Max: gapCap}) })
	}
	wg.Wait()
	if os.Getenv(traceEnv) == "1" || !withinLimit(gs[0], gs[len(gs)-1]) || gs[0].Longest > gs[len(gs)-1].Longest+traceOver {
		end := time.Now()
		for i, w := range ws {
			if fes[i].baseline {
				continue
			}
			progress("%s round %d, %s: puts and gRPC states (s after the fault):\n%s", f.name, round, fes[i].name,
				w.Timeline(at, at.Add(-300*time.Millisecond), end))
		}
		progress("%s round %d, haagent lb's log (s after the fault):\n%s", f.name, round, logSince(lbLog, at, at.Add(-300*time.Millisecond), end))
	}
	return gs, nil
}

// gapLimit is the longest gap through the lb that meets the target, given direct's
// gap in the same round.
func gapLimit(direct probe.Gap) time.Duration {
	return max(gapFloor, time.Duration(gapRatio*float64(direct.Longest)))
}

// withinLimit reports whether the lb's gap meets the target in its round.
func withinLimit(lb, direct probe.Gap) bool {
	return lb.Recovered && direct.Recovered && lb.Longest <= gapLimit(direct)
}

// logSince returns the lines of a slog text log whose time= lies in [from, to], each
// led by its time relative to at.
func logSince(path string, at, from, to time.Time) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		ts, _, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || t.Before(from) || t.After(to) {
			continue
		}
		out = append(out, fmt.Sprintf("  %+.3f %s", t.Sub(at).Seconds(), line))
	}
	return strings.Join(out, "\n")
}

// startHaagent runs haagent --role=lb with m1 as the primary.
func startHaagent(bin string) func(n *netlab.Node, dir string) (*procs.Proc, error) {
	return func(n *netlab.Node, dir string) (*procs.Proc, error) {
		lb := procs.NewLB(bin, procs.LBConfig{IP: n.IP.String(), Masters: lbMasterIPs, Ports: lbEtcdPort, Dir: dir, Node: n})
		return lb.Proc, lb.Start()
	}
}

// startNginx runs nginx's stream proxy in the classic layout: m1 primary, the others
// backup, every timeout at nginx's default.
func startNginx(n *netlab.Node, dir string) (*procs.Proc, error) {
	conf := fmt.Sprintf(`load_module %s;
daemon off;
worker_processes auto;
pid %s/nginx.pid;
error_log %s/error.log notice;
events { worker_connections 4096; }
stream {
    upstream etcd {
        server %s:%s;
        server %s:%s backup;
        server %s:%s backup;
    }
    server {
        listen %s:%s;
        proxy_pass etcd;
    }
}
`, nginxModule, dir, dir, lbMasterIPs[0], lbEtcdPort, lbMasterIPs[1], lbEtcdPort, lbMasterIPs[2], lbEtcdPort, n.IP, lbEtcdPort)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p := procs.New(procs.Spec{Name: "nginx", Log: filepath.Join(dir, "stdout.log"), Node: n,
		Argv: func() []string {
			return []string{"nginx", "-p", dir + "/", "-c", path, "-e", filepath.Join(dir, "error.log")}
		}})
	return p, p.Start()
}

// startHaproxy runs haproxy in tcp mode with the classic health check: GET /health
// every 2 s (default inter), down after 3 failures (default fall), m1 primary and
// the others backup.
func startHaproxy(n *netlab.Node, dir string) (*procs.Proc, error) {
	conf := fmt.Sprintf(`global
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen etcd
    bind %s:%s
    option httpchk GET /health
    server m1 %s:%s check
    server m2 %s:%s check backup
    server m3 %s:%s check backup
`, n.IP, lbEtcdPort, lbMasterIPs[0], lbEtcdPort, lbMasterIPs[1], lbEtcdPort, lbMasterIPs[2], lbEtcdPort)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p := procs.New(procs.Spec{Name: "haproxy", Log: filepath.Join(dir, "haproxy.log"), Node: n,
		Argv: func() []string { return []string{"haproxy", "-db", "-f", path} }})
	return p, p.Start()
}

func logTails(dir string) string {
	var out []string
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		out = append(out, "--- "+filepath.Base(f)+" ---\n"+strings.Join(lines, "\n"))
	}
	return strings.Join(out, "\n")
}

// sortGaps orders gaps from shortest to longest; a round that never recovered counts
// as longer than any that did.
func sortGaps(gs []probe.Gap) []probe.Gap {
	s := slices.Clone(gs)
	slices.SortFunc(s, func(a, b probe.Gap) int {
		if a.Recovered != b.Recovered {
			if a.Recovered {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Longest, b.Longest)
	})
	return s
}

func medianGap(gs []probe.Gap) probe.Gap {
	if len(gs) == 0 {
		return probe.Gap{}
	}
	return sortGaps(gs)[len(gs)/2]
}

func worstGap(gs []probe.Gap) probe.Gap {
	if len(gs) == 0 {
		return probe.Gap{}
	}
	return sortGaps(gs)[len(gs)-1]
}

// pairedRatio is the median over the rounds of a's gap over b's gap in the same round
// (the same fault, so the same etcd election); ok is false when b never recovered.
func pairedRatio(a, b []probe.Gap) (r float64, ok bool) {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if !b[i].Recovered || b[i].Longest == 0 {
			return 0, false
		}
		x := float64(a[i].Longest) / float64(b[i].Longest)
		if !a[i].Recovered {
			x = math.Inf(1)
		}
		rs = append(rs, x)
	}
	if len(rs) == 0 {
		return 0, false
	}
	slices.Sort(rs)
	return rs[len(rs)/2], true
}

func gapCell(g probe.Gap) string {
	if !g.Recovered {
		return fmt.Sprintf("> %.0f s", g.Longest.Seconds())
	}
	return ms(g.Longest)
}

// medianLoad takes the round with the median throughput.
func medianLoad(rs []probe.LoadResult) probe.LoadResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b probe.LoadResult) int { return cmp.Compare(a.PerSecond(), b.PerSecond()) })
	if len(s) == 0 {
		return probe.LoadResult{}
	}
	return s[len(s)/2]
}

// medianOf is the median of f over the rounds.
func medianOf(rs []probe.LoadResult, f func(probe.LoadResult) time.Duration) time.Duration {
	var ds []time.Duration
	for _, r := range rs {
		ds = append(ds, f(r))
	}
	return median(ds)
}

func lbTable(fes []frontend, res map[string]*feResult, gapRounds, loadRounds int) table {
	h, ng, hp, d := res[fes[0].name], res[fes[1].name], res[fes[2].name], res[fes[3].name]
	cell := func(gs []probe.Gap) string {
		m := medianGap(gs)
		if w := worstGap(gs); len(gs) > 1 && w != m {
			return fmt.Sprintf("%s (max %s)", gapCell(m), gapCell(w))
		}
		return gapCell(m)
	}
	ratioCell := func(r float64, ok bool) string {
		switch {
		case !ok:
			return "-"
		case math.IsInf(r, 1):
			return "∞"
		}
		return fmt.Sprintf("%.2f×", r)
	}
	var perRounds []string
	t := table{
		title: fmt.Sprintf("Load balancer for etcd, in network namespaces (3 haagent masters; m1 is the primary and the etcd leader; "+
			"gaps: median (max) of %d rounds, nginx and haproxy 1; load: median of %d rounds)", gapRounds, loadRounds),
		header: []string{"measure", "haagent lb", "nginx", "haproxy", "direct", "vs nginx", "vs direct", "target", "verdict"},
	}
	for _, f := range lbFaults {
		hg, ngg, hpg, dg := h.gaps[f.name], ng.gaps[f.name], hp.gaps[f.name], d.gaps[f.name]
		vsN, okN := pairedRatio(hg, ngg)
		met, worst := 0, 0.0
		var perRound []string
		for i := range min(len(hg), len(dg)) {
			if withinLimit(hg[i], dg[i]) {
				met++
			}
			if dg[i].Longest > 0 {
				worst = max(worst, float64(hg[i].Longest)/float64(dg[i].Longest))
			}
			perRound = append(perRound, fmt.Sprintf("%d/%d", hg[i].Longest.Milliseconds(), dg[i].Longest.Milliseconds()))
		}
		vsD, okD := pairedRatio(hg, dg)
		vsDCell := ratioCell(vsD, okD)
		if okD {
			vsDCell += fmt.Sprintf(" (max %.2f×)", worst)
		}
		t.rows = append(t.rows, []string{
			f.name + " primary → longest write gap",
			cell(hg), cell(ngg), cell(hpg), cell(dg),
			ratioCell(vsN, okN), vsDCell, "every round ≤ max(1.5 s, 1.2× direct)",
			fmt.Sprintf("%s (%d of %d)", verdict(met == len(hg) && len(hg) > 0), met, len(hg)),
		})
		perRounds = append(perRounds, f.name+": "+strings.Join(perRound, ", "))
	}
	tp := func(r probe.LoadResult) float64 { return r.PerSecond() }
	p50 := func(r probe.LoadResult) time.Duration { return r.P50 }
	p99 := func(r probe.LoadResult) time.Duration { return r.P99 }
	lat := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	hl, nl, pl, dl := medianLoad(h.loadRuns), medianLoad(ng.loadRuns), medianLoad(hp.loadRuns), medianLoad(d.loadRuns)
	h50, n50, p50p, d50 := medianOf(h.loadRuns, p50), medianOf(ng.loadRuns, p50), medianOf(hp.loadRuns, p50), medianOf(d.loadRuns, p50)
	h99, n99, p99p, d99 := medianOf(h.loadRuns, p99), medianOf(ng.loadRuns, p99), medianOf(hp.loadRuns, p99), medianOf(d.loadRuns, p99)
	t.rows = append(t.rows,
		[]string{fmt.Sprintf("puts/s, %d clients", loadClients),
			fmt.Sprintf("%.0f/s", tp(hl)), fmt.Sprintf("%.0f/s", tp(nl)), fmt.Sprintf("%.0f/s", tp(pl)), fmt.Sprintf("%.0f/s", tp(dl)),
			ratio(tp(hl), tp(nl)), ratio(tp(hl), tp(dl)), "≥ 0.95× nginx", verdict(tp(hl) >= 0.95*tp(nl))},
		[]string{"p50 put latency", lat(h50), lat(n50), lat(p50p), lat(d50),
			ratio(float64(h50), float64(n50)), ratio(float64(h50), float64(d50)), "-", "-"},
		[]string{"p99 put latency", lat(h99), lat(n99), lat(p99p), lat(d99),
			ratio(float64(h99), float64(n99)), ratio(float64(h99), float64(d99)), "≤ 1.1× nginx",
			verdict(float64(h99) <= 1.1*float64(n99))},
	)
	var errs []string
	for _, fe := range fes {
		n := 0
		for _, r := range res[fe.name].loadRuns {
			n += r.Errors
		}
		if n > 0 {
			errs = append(errs, fmt.Sprintf("%s %d", fe.name, n))
		}
	}
	t.notes = append(t.notes,
		fmt.Sprintf("Write gap: the longest time without an acknowledged put after m1 is killed (kill -9) or blackholed (its link down: no RST). "+
			"Every front end has its own client, all writing through the same fault: etcd's own clientv3, as flanneld or the apiserver run it, "+
			"one client for the whole round (never rebuilt), %s gRPC keepalives (grpc-go raises them to 10 s), a put every %s, "+
			"each with a %s timeout; the haagent lb, nginx and haproxy clients are given only the front end's address, direct is given all three masters (no lb). "+
			"The target holds in a round when the lb's gap is at most max(%s, %.1f× direct's gap in the same round): no gap can be shorter than etcd's election "+
			"(a follower waits the election timeout, 1 s, plus a random part of up to 1 s more), and direct, measured through the same election, "+
			"shows what the election alone costs. \"vs\" for gaps is the median of the per-round ratios; \"> %s\" means writes had not resumed by then. "+
			"nginx (stream) and haproxy (tcp) run the classic layout at their defaults: m1 primary, the others backup; haproxy checks GET /health every 2 s, fall 3.",
			keepAliveTime, putInterval, putTimeout, gapFloor, gapRatio, gapCap),
		"Per round, haagent lb/direct in ms: "+strings.Join(perRounds, "; ")+".",
		fmt.Sprintf("Load: one front end at a time, %d clients, each with its own connection and one put (128-byte value) at a time, "+
			"for %s after %s of warm-up; throughput is the median round's, latencies the medians of the rounds' percentiles; failed puts: %s.",
			loadClients, loadDuration, loadWarmup, orNone(errs)))
	return t
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
