package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/lblayout"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/test/framework/procs"
)

// long selects make chaos's run: more clients, longer phases, the schedule three times.
var long = flag.Bool("chaos.long", false, "run the long chaos schedule (make chaos)")

var bin string

func TestMain(m *testing.M) { procs.Main(m, &bin) }

// The layout, in nodes of a lab that each test makes: three masters, the lb with m1
// as its primary, and a client node from which every request comes.
const token = "haagent-chaos-test-0123456789abcdef"

var (
	lbIP      = lblayout.LBIP
	masterIPs = lblayout.MasterIPs
)

// checkTimeout bounds porcupine. Histories of unique values check in well under a
// second; a verdict of Unknown fails the run rather than passing it unchecked.
const checkTimeout = 3 * time.Minute

// healthyTimeout bounds the wait, after a fault heals, for all three members to serve
// with one leader: on a loaded CI machine a restarted master takes seconds to start.
const healthyTimeout = 60 * time.Second

// settings are the knobs that differ between the short run (make test) and the long
// one (make chaos).
type settings struct {
	clients int
	// fault is how long a fault lasts; calm how long the cluster runs whole between two.
	fault, calm time.Duration
	rounds      int
}

func currentSettings() settings {
	if *long {
		return settings{clients: 8, fault: 6 * time.Second, calm: 4 * time.Second, rounds: 3}
	}
	return settings{clients: 4, fault: 3 * time.Second, calm: 2 * time.Second, rounds: 1}
}

// env is three secure masters, the lb and the client node.
type env struct {
	c       *procs.Cluster
	masters []*netlab.Node
	lbNode  *netlab.Node
	client  *netlab.Node
	lb      *procs.LB
	dir     string
	dialer  probe.Dialer
	// lbEndpoint is the only endpoint the workload's clients know.
	lbEndpoint string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	l := lblayout.Start(t, bin, token)
	e := &env{c: l.C, lbNode: l.LBNode, client: l.Client, masters: l.Masters, dir: l.Dir, lbEndpoint: l.LBEndpoint, dialer: l.Dialer}

	e.lb = procs.NewLB(bin, procs.LBConfig{IP: lbIP, Masters: masterIPs, Ports: "2379", Token: token, Dir: e.dir, Node: e.lbNode})
	t.Cleanup(func() {
		e.lb.StopOrKill()
		if t.Failed() {
			t.Logf("--- log of the lb ---\n%s", e.lb.LogTail(40))
		}
	})
	if err := e.startLB(); err != nil {
		t.Fatal(err)
	}
	return e
}

// startLB starts the lb and waits until a put through it is acknowledged.
func (e *env) startLB() error {
	if err := e.lb.Start(); err != nil {
		return err
	}
	if err := e.lb.WaitReady(procs.ReadyTimeout); err != nil {
		return err
	}
	cli, err := e.dialer.Client(e.lbEndpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	return await.Until(context.Background(), "a put through the lb", procs.ReadyTimeout, func() error {
		if !e.lb.Running() {
			return await.Stop(fmt.Errorf("haagent --role=lb exited:\n%s", e.lb.LogTail(20)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "chaos/ready", "1")
		return err
	}, await.Every(100*time.Millisecond))
}

// leader returns the index of the master that leads, as it says itself.
func (e *env) leader() (int, error) {
	cli, err := e.dialer.Client(strings.Split(e.c.Endpoints(), ",")...)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	lead := -1
	err = await.Until(context.Background(), "a master that says it leads", healthyTimeout, func() error {
		for i, m := range e.c.Masters {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cli.Status(ctx, m.ClientURL())
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				lead = i
				return nil
			}
		}
		return errors.New("none of the masters leads")
	}, await.Every(100*time.Millisecond))
	return lead, err
}

// awaitHealthy waits until every master answers a status with the same leader, so
// that a fault never lands on a cluster still short of a member from the last one.
func (e *env) awaitHealthy() error {
	eps := strings.Split(e.c.Endpoints(), ",")
	cli, err := e.dialer.Client(eps...)
	if err != nil {
		return err
	}
	defer cli.Close()
	return await.Until(context.Background(), "all three masters to agree on a leader", healthyTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _, err := probe.Members(ctx, cli, eps)
		return err
	}, await.Every(200*time.Millisecond))
}

// partition cuts master i off from the other two masters with nft rules in its own
// namespace; the lb and the client still reach it. This is the partition an lb must
// handle: the minority member is up and answers TCP, but cannot commit.
func (e *env) partition(i int) error {
	var others []string
	for j, ip := range masterIPs {
		if j != i {
			others = append(others, ip)
		}
	}
	set := "{ " + strings.Join(others, ", ") + " }"
	script := "table inet chaos {\n" +
		"  chain in { type filter hook input priority 0; ip saddr " + set + " drop; }\n" +
		"  chain out { type filter hook output priority 0; ip daddr " + set + " drop; }\n}\n"
	return e.nft(i, script, "-f", "-")
}

func (e *env) heal(i int) error { return e.nft(i, "", "delete", "table", "inet", "chaos") }

func (e *env) nft(i int, stdin string, args ...string) error {
	cmd := e.masters[i].CommandContext(context.Background(), "nft", args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft %s in %s: %v: %s", strings.Join(args, " "), e.masters[i].Name, err, out)
	}
	return nil
}

func (e *env) restart(i int) error {
	m := e.c.Masters[i]
	if err := m.Start(); err != nil {
		return err
	}
	return m.WaitReady(healthyTimeout)
}

// fault is one step of the schedule: apply, hold for the fault time, heal.
type fault struct {
	name  string
	apply func(e *env) (heal func() error, err error)
}

// schedule is the fault schedule, in order. Each fault is healed, and the cluster is
// whole again, before the next one starts.
var schedule = []fault{
	{"kill -9 the etcd leader", func(e *env) (func() error, error) {
		i, err := e.leader()
		if err != nil {
			return nil, err
		}
		return func() error { return e.restart(i) }, e.c.Masters[i].Kill()
	}},
	{"kill -9 a follower", func(e *env) (func() error, error) {
		i, err := e.leader()
		if err != nil {
			return nil, err
		}
		i = (i + 1) % len(e.c.Masters)
		return func() error { return e.restart(i) }, e.c.Masters[i].Kill()
	}},
	{"blackhole m1, the lb's primary", func(e *env) (func() error, error) {
		return e.masters[0].Heal, e.masters[0].Blackhole()
	}},
	{"partition the leader from the other masters (the lb still reaches it)", func(e *env) (func() error, error) {
		i, err := e.leader()
		if err != nil {
			return nil, err
		}
		return func() error { return e.heal(i) }, e.partition(i)
	}},
	{"kill -9 the lb and restart it", func(e *env) (func() error, error) {
		return e.startLB, e.lb.Kill()
	}},
}

// TestChaos runs the workload through the lb while the schedule runs, and checks the
// history. The short run (make test) does the schedule once; -chaos.long (make
// chaos) three times, with more clients and longer faults.
func TestChaos(t *testing.T) {
	s := currentSettings()
	e := newEnv(t)
	w := NewWorkload(WorkloadConfig{
		NewClient: func() (*clientv3.Client, error) { return e.dialer.Client(e.lbEndpoint) },
		Clients:   s.clients, Keys: 5, OpTimeout: time.Second, Prefix: "chaos/",
	})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	at := func() string { return w.Elapsed().Round(time.Millisecond).String() }
	// window is one fault's stretch of the history: from its start to the end of the
	// calm after it, to say which fault caused which gap.
	type window struct {
		fault    string
		from, to time.Duration
	}
	var windows []window
	err := func() error {
		// A fault schedule is timed by design: each fault must last long enough for
		// elections, lb demotions and client reconnects to happen under load.
		pause(context.Background(), s.calm)
		for round := range s.rounds {
			for _, f := range schedule {
				t.Logf("%s round %d: %s", at(), round+1, f.name)
				win := window{fault: f.name, from: w.Elapsed()}
				heal, err := f.apply(e)
				if err != nil {
					return fmt.Errorf("%s: %w", f.name, err)
				}
				pause(context.Background(), s.fault)
				t.Logf("%s heal", at())
				if err := heal(); err != nil {
					return fmt.Errorf("heal after %s: %w", f.name, err)
				}
				if err := e.awaitHealthy(); err != nil {
					return fmt.Errorf("after %s: %w", f.name, err)
				}
				t.Logf("%s whole again", at())
				pause(context.Background(), s.calm)
				win.to = w.Elapsed()
				windows = append(windows, win)
			}
		}
		return nil
	}()
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	h := w.History()
	worst := map[string]time.Duration{}
	for _, win := range windows {
		g, _ := LongestGapIn(h, win.from, win.to)
		worst[win.fault] = max(worst[win.fault], g)
	}
	for _, f := range schedule {
		t.Logf("longest gap, %s (fault held %s): %s", f.name, s.fault, worst[f.name].Round(time.Millisecond))
	}
	r := report(t, w, "the lb in front of three masters")
	if r.Verdict != porcupine.Ok {
		t.Fatalf("the history through the lb is not linearizable: %s; porcupine's view: %s", r, r.Visualization)
	}
	// A run that answered almost nothing would pass the checker without proving much.
	if r.Acked < 100 {
		t.Fatalf("only %d operations were answered: the run checked too little", r.Acked)
	}
}

// TestChaosBrokenFrontEnd runs the same workload through a round-robin TCP proxy in
// front of two independent one-member etcds, each client's connection landing on
// either: every put is acknowledged, and reads miss half of them. The checker must say
// so, or its verdict on the real cluster would mean nothing.
func TestChaosBrokenFrontEnd(t *testing.T) {
	lab := hosts.NewWith(t, hosts.LabOptions{NetworkOnly: true})
	ns, err := lab.AddNodes(context.Background(), "client="+lblayout.ClientIP, "e1=10.77.0.31", "e2=10.77.0.32")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var backends []string
	for _, n := range ns[1:] {
		ip := n.IP.String()
		p := procs.NewEtcd(n.Name, ip, dir, n.Name+"=http://"+ip+":2380")
		p.Node = n
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.StopOrKill)
		if err := p.WaitReady(procs.ReadyTimeout); err != nil {
			t.Fatal(err)
		}
		backends = append(backends, ip+":2379")
	}
	l, err := ns[0].Listen("tcp", lblayout.ClientIP+":2379")
	if err != nil {
		t.Fatal(err)
	}
	px := &roundRobin{l: l, dial: ns[0].DialContext, backends: backends}
	go px.serve()
	t.Cleanup(px.close)

	d := probe.Dialer{Dial: ns[0].DialContext}
	w := NewWorkload(WorkloadConfig{
		NewClient: func() (*clientv3.Client, error) { return d.Client("http://" + lblayout.ClientIP + ":2379") },
		Clients:   4, Keys: 5, OpTimeout: time.Second, Prefix: "chaos/",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w.Run(ctx)
	r := report(t, w, "a round-robin proxy in front of two independent etcds")
	if r.Verdict != porcupine.Illegal || len(r.Anomalies) == 0 {
		t.Fatalf("the checker passed a history from two independent etcds: %s", r)
	}
}

// report checks the workload's history and logs the figures. Porcupine's
// visualization of an illegal history goes to a dir that outlives a failed test, so
// that the failure can be read after it.
func report(t *testing.T, w *Workload, what string) Result {
	t.Helper()
	dir, err := os.MkdirTemp("", "haagent-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	r, err := Check(w.History(), checkTimeout, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s", what, r)
	for e, n := range w.Errors() {
		t.Logf("  %d× %s", n, e)
	}
	return r
}

// roundRobin is a TCP proxy that sends each new connection to the next backend.
type roundRobin struct {
	l        net.Listener
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	backends []string

	mu    sync.Mutex // guards the fields below
	next  int
	conns []net.Conn
}

func (p *roundRobin) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		b := p.backends[p.next%len(p.backends)]
		p.next++
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		go p.pipe(c, b)
	}
}

func (p *roundRobin) pipe(c net.Conn, backend string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := p.dial(ctx, "tcp", backend)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, b)
	p.mu.Unlock()
	go func() { _, _ = io.Copy(b, c); b.Close() }()
	_, _ = io.Copy(c, b)
	c.Close()
}

func (p *roundRobin) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
