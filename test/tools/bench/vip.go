package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/lblayout"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/procs"
)

// The VIP benchmark's layout, in network namespaces it makes itself: three masters,
// two lb hosts and a client. haagent's VIP pair and keepalived fronting haproxy run on
// the same two lb hosts, one after the other, with the same masters.
var (
	vipBenchSubnet  = lblayout.VIP.Subnet
	vipBenchClient  = lblayout.VIP.Client
	vipBenchLBs     = lblayout.VIP.LBs
	vipBenchMasters = lblayout.VIP.Masters
	// Each system has its own VIP, so that no neighbour entry carries over.
	vipHaagent    = netip.MustParseAddr(lblayout.VIP.VIP)
	vipKeepalived = netip.MustParseAddr("10.81.0.9")
)

const (
	// vipProbeEvery starts a request through the VIP this often, each on a new
	// connection, so that a request stuck on the old holder does not hide the new one.
	vipProbeEvery   = 20 * time.Millisecond
	vipProbeTimeout = 300 * time.Millisecond
	vipGapCap       = 15 * time.Second
	// vipStable is how long one host must hold the VIP before a round: longer than
	// VRRP's master-down interval (3 adverts and the skew), in which a healed or
	// restarted peer settles its claim.
	vipStable = 4 * time.Second
)

// vipSystem is one way to hold a VIP over the two lb hosts.
type vipSystem struct {
	name string
	vip  netip.Addr
	// start runs the system on lb host i.
	start func(i int) error
	// ready is nil once lb host i follows the holder (or holds).
	ready func(i int) error
}

type vipBench struct {
	dir    string
	c      *procs.Cluster
	lbs    []*netlab.Node
	client *netlab.Node
	http   *http.Client
}

func benchVIP(bin string, rounds int) (table, error) {
	for _, p := range []string{"keepalived", "haproxy"} {
		if _, err := exec.LookPath(p); err != nil {
			return table{}, fmt.Errorf("%s is not installed: run scripts/deps.sh", p)
		}
	}
	pairs := []string{"client=" + vipBenchClient}
	for i, ip := range vipBenchLBs {
		pairs = append(pairs, fmt.Sprintf("lb%d=%s", i+1, ip))
	}
	nb, err := newNetBench("vip", bin, vipBenchSubnet, vipProgress, "", vipBenchMasters, pairs...)
	if err != nil {
		return table{}, err
	}
	defer nb.Close()
	bin, dir, ns := nb.bin, nb.dir, nb.nodes
	b := &vipBench{dir: dir, client: ns[0], lbs: ns[1:3]}
	b.http = &http.Client{Timeout: vipProbeTimeout,
		Transport: &http.Transport{DialContext: b.client.DialContext, DisableKeepAlives: true}}
	// Insecure masters, as in the lb benchmark, so that haproxy's httpchk reads /health.
	b.c = procs.NewClusterWith(bin, dir, 3, procs.Options{Nodes: nb.masters(3)})
	defer b.c.StopAll()
	if err := b.c.StartAll(); err != nil {
		return table{}, err
	}
	if err := b.c.WaitReady(30 * time.Second); err != nil {
		return table{}, err
	}

	faults := []string{"kill -9", "blackhole"}
	res := map[string]map[string][]time.Duration{}
	for _, sys := range []func() (vipSystem, func()){b.haagentSystem(bin), b.keepalivedSystem()} {
		s, stop := sys()
		res[s.name] = map[string][]time.Duration{}
		err := b.runSystem(s, faults, rounds, res[s.name])
		stop()
		if err != nil {
			return table{}, fmt.Errorf("%s: %w\n%s", s.name, err, logTails(dir))
		}
	}
	return vipTable(faults, res, rounds), nil
}

func vipProgress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench vip: "+format+"\n", args...)
}

// runSystem starts s on both lb hosts and measures each fault rounds times.
func (b *vipBench) runSystem(s vipSystem, faults []string, rounds int, res map[string][]time.Duration) error {
	for i := range b.lbs {
		if err := s.start(i); err != nil {
			return err
		}
	}
	for r := range rounds {
		for _, f := range faults {
			if err := b.settle(s); err != nil {
				return fmt.Errorf("before %s round %d: %w", f, r+1, err)
			}
			d, err := b.round(s, f)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", f, r+1, err)
			}
			vipProgress("%s, %s, round %d: first request served %s after the fault", s.name, f, r+1, d.Round(time.Millisecond))
			res[f] = append(res[f], d)
		}
	}
	return nil
}

// holder is the lb host that carries the VIP; it fails unless exactly one does.
func (b *vipBench) holder(vip netip.Addr) (int, error) {
	var on []int
	for i, n := range b.lbs {
		has, err := n.HasAddr(vip)
		if err != nil {
			return -1, err
		}
		if has {
			on = append(on, i)
		}
	}
	if len(on) != 1 {
		return -1, fmt.Errorf("the VIP %s is on lb hosts %v, want one", vip, on)
	}
	return on[0], nil
}

// settle waits until one lb host holds the VIP, the other follows, and the client
// reaches the masters through the VIP. It forgets the client's neighbour entry
// first: how the client learnt the last holder is no part of the next round.
func (b *vipBench) settle(s vipSystem) error {
	_ = netlab.IP(context.Background(), "-n", b.client.NetNS, "neigh", "flush", "to", s.vip.String())
	last, since := -1, time.Now()
	return await.Until(context.Background(), s.name+" to hold the VIP on one host for "+vipStable.String()+", the other following, and serve", 60*time.Second, func() error {
		h, err := b.holder(s.vip)
		if err != nil {
			last = -1
			return err
		}
		if h != last {
			last, since = h, time.Now()
		}
		if time.Since(since) < vipStable {
			return fmt.Errorf("lb%d holds the VIP since %s", h+1, time.Since(since).Round(time.Millisecond))
		}
		for i := range b.lbs {
			if err := s.ready(i); err != nil {
				return err
			}
		}
		return b.request(s.vip)
	}, await.Every(50*time.Millisecond))
}

// request is one GET of etcd's /health through the VIP, on a new connection.
func (b *vipBench) request(vip netip.Addr) error {
	resp, err := b.http.Get("http://" + vip.String() + ":2379/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("/health through the VIP: %s %s", resp.Status, body)
	}
	return nil
}

// round fails the holder and returns the time from the fault to the first request
// through the VIP that succeeded; then it brings the failed host back.
func (b *vipBench) round(s vipSystem, fault string) (time.Duration, error) {
	h, err := b.holder(s.vip)
	if err != nil {
		return 0, err
	}
	n := b.lbs[h]
	start := time.Now()
	switch fault {
	case "kill -9":
		// Every process of the lb host, as when the host dies. All are frozen first:
		// keepalived's VRRP child would otherwise get SIGTERM from its parent's death
		// and resign cleanly before its own SIGKILL.
		err = freezeAll(n)
		if err == nil {
			err = n.KillAll()
		}
	case "blackhole":
		err = n.Blackhole()
	}
	if err != nil {
		return 0, err
	}
	vipProgress("%s: %s of lb%d, the holder", s.name, fault, h+1)
	d, err := b.firstSuccess(s.vip, start)
	if fault == "blackhole" {
		err = errors.Join(err, n.Heal())
	} else {
		// A killed keepalived leaves its address behind; the host comes back clean.
		_ = netlab.IP(context.Background(), "-n", n.NetNS, "addr", "del", s.vip.String()+"/24", "dev", "eth0")
	}
	if err != nil {
		return 0, err
	}
	if fault == "kill -9" {
		if err := s.start(h); err != nil {
			return 0, err
		}
	}
	return d, nil
}

// firstSuccess starts a request through the VIP every vipProbeEvery until one
// succeeds, and returns when it did, from start.
func (b *vipBench) firstSuccess(vip netip.Addr, start time.Time) (time.Duration, error) {
	ok := make(chan time.Time, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	t := time.NewTicker(vipProbeEvery)
	defer t.Stop()
	limit := time.After(vipGapCap)
	for {
		select {
		case at := <-ok:
			return at.Sub(start), nil
		case <-limit:
			return 0, fmt.Errorf("no request through the VIP succeeded within %s", vipGapCap)
		case <-t.C:
			wg.Go(func() {
				if b.request(vip) != nil {
					return
				}
				select {
				case ok <- time.Now():
				case <-done:
				default:
				}
			})
		}
	}
}

// haagentSystem is haagent --role=lb --vip on both lb hosts.
func (b *vipBench) haagentSystem(bin string) func() (vipSystem, func()) {
	return func() (vipSystem, func()) {
		lbs := make([]*procs.LB, len(b.lbs))
		for i, n := range b.lbs {
			lbs[i] = procs.NewLB(bin, procs.LBConfig{Name: fmt.Sprintf("lb%d", i+1), IP: vipBenchLBs[i], Masters: vipBenchMasters,
				Ports: "2379", Dir: b.dir, Node: n,
				Extra: []string{"--vip=" + vipHaagent.String() + "/24", "--listen-address=0.0.0.0"}})
		}
		s := vipSystem{name: "haagent", vip: vipHaagent,
			start: func(i int) error {
				if !lbs[i].Running() {
					_, _ = lbs[i].Wait(5 * time.Second) // reap a killed run
				}
				return lbs[i].Start()
			},
			ready: func(i int) error {
				if !lbs[i].Running() {
					return fmt.Errorf("%s is not running", lbs[i].Name)
				}
				return lbs[i].Ready(context.Background())
			},
		}
		return s, func() {
			for _, l := range lbs {
				l.StopOrKill()
			}
		}
	}
}

// keepalivedSystem is Debian's keepalived (VRRP, advert_int 1, priorities 101 and
// 100 as in kubeadm's guide, nopreempt so that a restarted host does not take the VIP
// back) holding the VIP, and haproxy on each lb host fronting
// the masters as in the lb benchmark.
func (b *vipBench) keepalivedSystem() func() (vipSystem, func()) {
	return func() (vipSystem, func()) {
		var mu sync.Mutex
		running := map[int][]*procs.Proc{}
		start := func(i int) error {
			n := b.lbs[i]
			dir := filepath.Join(b.dir, fmt.Sprintf("keepalived-lb%d", i+1))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			conf := fmt.Sprintf(`global_defs {
    router_id lb%d
    vrrp_garp_master_repeat 5
    vrrp_garp_master_delay 5
}
vrrp_instance haagent_bench {
    state BACKUP
    interface eth0
    virtual_router_id 81
    priority %d
    advert_int 1
    nopreempt
    virtual_ipaddress {
        %s/24 dev eth0
    }
}
`, i+1, 101-i, vipKeepalived)
			// A killed keepalived leaves its pid files, and refuses to start while a
			// process has the pid they name.
			for _, f := range []string{"keepalived.pid", "vrrp.pid"} {
				_ = os.Remove(filepath.Join(dir, f))
			}
			path := filepath.Join(dir, "keepalived.conf")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				return err
			}
			ka := procs.New(procs.Spec{Name: fmt.Sprintf("keepalived-lb%d", i+1), Log: filepath.Join(b.dir, fmt.Sprintf("keepalived-lb%d.log", i+1)), Node: n,
				Argv: func() []string {
					return []string{"keepalived", "-n", "-l", "-D", "-P", "-f", path,
						"-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid")}
				}})
			if err := ka.Start(); err != nil {
				return err
			}
			hp, err := startVIPHaproxy(n, dir)
			if err != nil {
				return err
			}
			mu.Lock()
			old := running[i]
			running[i] = []*procs.Proc{ka, hp}
			mu.Unlock()
			for _, p := range old {
				_, _ = p.Wait(5 * time.Second)
			}
			return nil
		}
		s := vipSystem{name: "keepalived + haproxy", vip: vipKeepalived, start: start,
			ready: func(i int) error {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range running[i] {
					if !p.Running() {
						return fmt.Errorf("%s is not running", p.Name)
					}
				}
				return nil
			},
		}
		return s, func() {
			mu.Lock()
			defer mu.Unlock()
			for _, ps := range running {
				for _, p := range ps {
					p.StopOrKill()
				}
			}
			for _, n := range b.lbs {
				_ = netlab.IP(context.Background(), "-n", n.NetNS, "addr", "del", vipKeepalived.String()+"/24", "dev", "eth0")
			}
		}
	}
}

func vipTable(faults []string, res map[string]map[string][]time.Duration, rounds int) table {
	t := table{
		title: fmt.Sprintf("VIP takeover: the holder's fault to the first request served through the VIP (median and worst of %d rounds)", rounds),
		header: []string{"fault", "haagent median", "haagent worst", "keepalived + haproxy median", "keepalived worst",
			"ratio (median)", "target", "verdict"},
	}
	for _, f := range faults {
		h, k := res["haagent"][f], res["keepalived + haproxy"][f]
		hm, hw, km, kw := median(h), worst(h), median(k), worst(k)
		ok := hm <= 2*time.Second && hw <= 3*time.Second && float64(hm) <= 0.6*float64(km)
		t.rows = append(t.rows, []string{f, ms(hm), ms(hw), ms(km), ms(kw), ratio(float64(hm), float64(km)),
			"≤ 2 s median, ≤ 3 s worst, ≤ 0.6× keepalived", verdict(ok)})
	}
	t.notes = append(t.notes,
		"Three haagent masters, two lb hosts and a client in network namespaces; the client starts a GET /health through the VIP every 20 ms, each on a new connection. "+
			"kill -9 kills every process of the holder's host; blackhole takes its link down. "+
			"haagent: `--role=lb --vip`, the election in the masters' etcd (lease 2 s; a standby revokes a holder past its deadlines, package vip). "+
			"keepalived: Debian's 2.2, VRRP advert_int 1, priorities 101/100, nopreempt, in front of haproxy (tcp, httpchk) on the same hosts.")
	return t
}

func worst(ds []time.Duration) time.Duration {
	var w time.Duration
	for _, d := range ds {
		w = max(w, d)
	}
	return w
}

// startVIPHaproxy runs haproxy on an lb host of the VIP pair: tcp on every address's
// port 2379 (so on the VIP too), m1 primary and the others backup, GET /health checks.
func startVIPHaproxy(n *netlab.Node, dir string) (*procs.Proc, error) {
	conf := "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    timeout server 1h\n\n" +
		"listen etcd\n    bind 0.0.0.0:2379\n    option httpchk GET /health\n"
	for i, m := range vipBenchMasters {
		backup := ""
		if i > 0 {
			backup = " backup"
		}
		conf += fmt.Sprintf("    server m%d %s:2379 check%s\n", i+1, m, backup)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p := procs.New(procs.Spec{Name: "haproxy-" + n.Name, Log: filepath.Join(filepath.Dir(dir), "haproxy-"+n.Name+".log"), Node: n,
		Argv: func() []string { return []string{"haproxy", "-db", "-f", path} }})
	return p, p.Start()
}

// freezeAll stops every process in the node with SIGSTOP.
func freezeAll(n *netlab.Node) error {
	pids, err := n.Pids()
	for _, p := range pids {
		err = errors.Join(err, syscall.Kill(p, syscall.SIGSTOP))
	}
	return err
}
