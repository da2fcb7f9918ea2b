package main

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/pki"
)

// The node-local benchmark's layout, in a lab of its own: three secure masters and a
// minion running haagent --role=minion --lb=local, whose clients write from inside it.
const (
	nlToken    = "haagent-bench-nodelocal-0123456789"
	nlMinionIP = "10.82.0.31"
	// nlKeyPrefix is inside the apiserver's prefix: the clients write with the
	// apiserver's certificate, as a kube-apiserver would.
	nlKeyPrefix = "/registry/haagent-bench/nodelocal/"
	nlLocalEtcd = "https://127.0.0.1:2379"
	maxNLRounds = 10
)

var (
	nlSubnet    = netip.MustParsePrefix("10.82.0.0/24")
	nlMasterIPs = []string{"10.82.0.21", "10.82.0.22", "10.82.0.23"}
)

// nlBench is the shared state of one node-local benchmark run.
type nlBench struct {
	c       *procs.Cluster
	masters []*netlab.Node
	minion  *netlab.Node
	eps     []string // the masters' client URLs
	m1ID    uint64
	// writer writes with the apiserver's etcd certificate; admin moves the leader with
	// haagent's (etcd's root role). Both dial from inside the minion.
	writer, admin probe.Dialer
}

var nlFaults = []struct {
	name  string
	apply func(b *nlBench) error
}{
	{"kill -9", func(b *nlBench) error { return b.c.Masters[0].Kill() }},
	{"blackhole", func(b *nlBench) error { return b.masters[0].Blackhole() }},
}

// benchNodeLocal measures the longest write gap of a client on a minion, going through
// the minion's own lb on 127.0.0.1, when the primary master (the first in --masters,
// also the etcd leader) is killed or blackholed; next to etcd's own client given every
// master, writing from the same minion through the same fault. Both are plain
// clientv3 clients (no reconnect of the benchmark's own), each with a 250 ms timeout
// per put.
func benchNodeLocal(bin string, rounds int) (table, error) {
	nb, err := newNetBench("node-local", bin, nlSubnet, nlProgress, "han", nlMasterIPs, "hanw1="+nlMinionIP)
	if err != nil {
		return table{}, err
	}
	defer nb.Close()
	ctx, bin, dir := context.Background(), nb.bin, nb.dir
	b := &nlBench{minion: nb.nodes[0], masters: nb.masters(3)}
	b.c = procs.NewClusterWith(bin, dir, 3, procs.Options{Nodes: b.masters})
	b.c.Secure(nlToken)
	defer b.c.StopAll()
	if err := b.c.StartAll(); err != nil {
		return table{}, err
	}
	if err := b.c.WaitReady(60 * time.Second); err != nil {
		return table{}, err
	}
	b.eps = strings.Split(b.c.Endpoints(), ",")
	// m1's certificates stay on disk while m1 is down.
	root := b.c.Masters[0].Root
	tlsAs := func(cert, key string) (probe.Dialer, error) {
		tc, err := probe.ClientTLS(filepath.Join(root, pki.CACert), filepath.Join(root, cert), filepath.Join(root, key))
		return probe.Dialer{Dial: b.minion.DialContext, TLS: tc}, err
	}
	if b.writer, err = tlsAs(pki.APIServerEtcdCert, pki.APIServerEtcdKey); err != nil {
		return table{}, err
	}
	if b.admin, err = tlsAs(pki.EtcdClientCert, pki.EtcdClientKey); err != nil {
		return table{}, err
	}

	w := procs.NewMinion(bin, procs.MinionConfig{Name: "w1", IP: nlMinionIP, LB: "local", Token: nlToken,
		Root: filepath.Join(dir, "w1"), Node: b.minion, Extra: []string{"--masters=" + strings.Join(nlMasterIPs, ",")}})
	if err := w.Start(); err != nil {
		return table{}, err
	}
	defer w.StopOrKill()
	if err := w.WaitReady(60 * time.Second); err != nil {
		return table{}, fmt.Errorf("minion: %w\n%s", err, w.LogTail(20))
	}
	if b.m1ID, err = memberID(ctx, b.admin, b.eps, b.eps[0]); err != nil {
		return table{}, err
	}

	n := min(max(rounds, 1), maxNLRounds)
	local, direct := map[string][]probe.Gap{}, map[string][]probe.Gap{}
	for _, f := range nlFaults {
		for r := range n {
			lg, dg, err := b.round(f.apply)
			if err != nil {
				return table{}, fmt.Errorf("%s of the primary, round %d: %w\n--- minion log ---\n%s", f.name, r+1, err, w.LogTail(20))
			}
			local[f.name] = append(local[f.name], lg)
			direct[f.name] = append(direct[f.name], dg)
			nlProgress("%s of the primary, round %d: longest write gap: node-local lb %s, direct %s", f.name, r+1, gapCell(lg), gapCell(dg))
		}
	}
	return nlTable(local, direct, n), nil
}

func nlProgress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench nodelocal: "+format+"\n", args...)
}

// restore brings the cluster back to three healthy masters with m1 as the etcd leader,
// and waits until a new connection through the minion's lb reaches m1 again.
func (b *nlBench) restore() error {
	if err := restorePrimary(b.c, b.masters[0], b.admin, b.eps); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := b.admin.Client(nlLocalEtcd)
	if err != nil {
		return err
	}
	defer cli.Close()
	return await.Until(ctx, "a new connection through the node-local lb to reach m1", 20*time.Second, func() error {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		id, err := probe.AnsweredBy(actx, cli, nlLocalEtcd)
		if err != nil {
			return err
		}
		if id != b.m1ID {
			return fmt.Errorf("reached member %x, not m1 (%x)", id, b.m1ID)
		}
		return nil
	})
}

// restorePrimary heals m1's link, starts every master that is down with its data dir,
// waits for them and makes m1 (eps[0], in node m1) the etcd leader again, talking to
// etcd through d.
func restorePrimary(c *procs.Cluster, m1 *netlab.Node, d probe.Dialer, eps []string) error {
	if err := m1.Heal(); err != nil {
		return err
	}
	for _, m := range c.Masters {
		if !m.Running() {
			if err := m.Start(); err != nil {
				return err
			}
		}
	}
	if err := c.WaitReady(30 * time.Second); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return probe.MoveLeader(ctx, d, eps, eps[0], 30*time.Second)
}

// round starts from a healthy cluster, writes through the node-local lb and directly
// at once, fails the primary and returns both longest gaps.
func (b *nlBench) round(fault func(*nlBench) error) (local, direct probe.Gap, err error) {
	if err := b.restore(); err != nil {
		return local, direct, err
	}
	start := func(name string, endpoints ...string) *probe.Writer {
		return probe.StartWriter(context.Background(), probe.WriterConfig{
			NewClient: func() (*clientv3.Client, error) { return b.writer.Client(endpoints...) },
			Key:       nlKeyPrefix + name, Timeout: putTimeout, Interval: putInterval,
		})
	}
	lw, dw := start("local", nlLocalEtcd), start("direct", b.eps...)
	defer lw.Stop()
	defer dw.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range []*probe.Writer{lw, dw} {
		if err := w.AwaitAcks(ctx, 20, 10*time.Second); err != nil {
			return local, direct, err
		}
	}
	at := time.Now()
	if err := fault(b); err != nil {
		return local, direct, err
	}
	return lw.AwaitRecovery(at, probe.Recovery{Max: gapCap}), dw.AwaitRecovery(at, probe.Recovery{Max: gapCap}), nil
}

func nlTable(local, direct map[string][]probe.Gap, rounds int) table {
	cell := func(gs []probe.Gap) string {
		return fmt.Sprintf("%s (max %s)", gapCell(medianGap(gs)), gapCell(worstGap(gs)))
	}
	t := table{
		title: fmt.Sprintf("Node-local lb, in network namespaces (3 secure haagent masters; a minion with --lb=local; "+
			"m1 is the primary and the etcd leader; median and worst of %d rounds)", rounds),
		header: []string{"fault", "node-local lb (127.0.0.1)", "direct (clientv3, 3 endpoints)", "node-local / direct", "worst ratio", "target", "verdict"},
	}
	for _, f := range nlFaults {
		l, d := local[f.name], direct[f.name]
		r, ok := pairedRatio(l, d)
		worst := 0.0
		for i := range min(len(l), len(d)) {
			if !l[i].Recovered {
				worst = math.Inf(1)
			} else if d[i].Recovered && d[i].Longest > 0 {
				worst = max(worst, float64(l[i].Longest)/float64(d[i].Longest))
			}
		}
		rc, wc := "-", fmt.Sprintf("%.2f×", worst)
		if ok {
			rc = fmt.Sprintf("%.2f×", r)
		}
		if math.IsInf(worst, 1) {
			wc = "∞"
		}
		t.rows = append(t.rows, []string{f.name + " primary → longest write gap", cell(l), cell(d), rc, wc,
			"≤ 1.2× direct", verdict(ok && r <= 1.2)})
	}
	t.notes = append(t.notes, fmt.Sprintf("`go run ./test/tools/bench -only nodelocal`. Both clients run on the minion, in its namespace, and write through "+
		"the same fault: etcd's own clientv3 with the apiserver's certificate, a put every %s, each with a %s timeout, and no reconnect "+
		"of the benchmark's own. node-local lb: one endpoint, https://127.0.0.1:2379, the minion's haagent (--lb=local --masters=m1,m2,m3). "+
		"direct: all three masters. Ratios are per round (the same fault, so the same etcd election): the median, and the worst round's. "+
		"\"> %s\" means writes had not resumed by then.", putInterval, putTimeout, gapCap))
	return t
}
