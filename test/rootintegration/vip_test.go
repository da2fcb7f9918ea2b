package rootintegration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/embed/vip"
	lbrole "github.com/haagent/haagent/roles/lb"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/lblayout"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/test/framework/procs"
)

// The VIP tests' layout, in its own subnet: three secure masters, two lbs that share
// the VIP, and a client host that sends every request to the VIP.
var (
	vipSubnet    = lblayout.VIP.Subnet
	vipAddr      = lblayout.VIP.VIP
	vipLBIPs     = lblayout.VIP.LBs
	vipMasterIPs = lblayout.VIP.Masters
	vipClientIP  = lblayout.VIP.Client
)

// Bounds the tests enforce; the benchmark measures the real figures. A takeover after
// kill -9 or a freeze is due at about 1.6 s (package vip); a clean stop hands over at
// once.
const (
	maxTakeover = 4 * time.Second
	// maxFrozenHold is when a frozen holder's kernel must have dropped the VIP: its
	// deadline is 1.45 s after its last acknowledged keepalive was sent.
	maxFrozenHold = 2 * time.Second
	maxHandover   = time.Second
	vipMoves      = 20
)

type vipEnv struct {
	c       *procs.Cluster
	lbs     []*procs.LB
	lbNodes []*netlab.Node
	client  *netlab.Node
	macs    []net.HardwareAddr
	http    *http.Client
	status  *http.Client
	dialer  probe.Dialer
	mNodes  []*netlab.Node
}

func newVIPEnv(t *testing.T) *vipEnv {
	t.Helper()
	lab := hosts.NewWith(t, hosts.LabOptions{NetworkOnly: true, Subnet: vipSubnet})
	pairs := []string{"client=" + vipClientIP}
	for i, ip := range vipLBIPs {
		pairs = append(pairs, fmt.Sprintf("lb%d=%s", i+1, ip))
	}
	for i, ip := range vipMasterIPs {
		pairs = append(pairs, fmt.Sprintf("m%d=%s", i+1, ip))
	}
	ns, err := lab.AddNodes(context.Background(), pairs...)
	if err != nil {
		t.Fatal(err)
	}
	e := &vipEnv{client: ns[0], lbNodes: ns[1:3], mNodes: ns[3:]}
	dir := t.TempDir()
	e.c = procs.NewClusterWith(bin, dir, 3, procs.Options{Nodes: ns[3:]})
	e.c.Secure(testToken)
	for _, m := range e.c.Masters {
		m.Extra = append(m.Extra, "--lb="+vipAddr) // the VIP in the serving certificates
	}
	startReady(t, e.c)
	pki := filepath.Join(e.c.Masters[0].Root, "etc/kubernetes/pki")
	tc, err := probe.ClientTLS(filepath.Join(pki, "ca.crt"), filepath.Join(pki, "etcd-client.crt"), filepath.Join(pki, "etcd-client.key"))
	if err != nil {
		t.Fatal(err)
	}
	e.http = &http.Client{Timeout: time.Second,
		Transport: &http.Transport{DialContext: e.client.DialContext, TLSClientConfig: tc, DisableKeepAlives: true}}
	e.dialer = probe.Dialer{Dial: e.client.DialContext, TLS: tc}
	e.status = &http.Client{Timeout: time.Second,
		Transport: &http.Transport{DialContext: e.client.DialContext, DisableKeepAlives: true}}
	for i, n := range e.lbNodes {
		l := procs.NewLB(bin, procs.LBConfig{Name: fmt.Sprintf("lb%d", i+1), IP: vipLBIPs[i], Masters: vipMasterIPs,
			Ports: "2379", Token: testToken, Dir: dir, Node: n,
			Extra: []string{"--vip=" + vipAddr + "/24", "--listen-address=0.0.0.0"}})
		e.lbs = append(e.lbs, l)
		t.Cleanup(func() {
			_ = l.Signal(syscall.SIGCONT)
			l.StopOrKill()
			if t.Failed() {
				t.Logf("--- log of %s ---\n%s", l.Name, l.LogTail(40))
			}
		})
		var mac net.HardwareAddr
		if err := n.Do(func() error {
			link, err := netlink.LinkByName("eth0")
			if err == nil {
				mac = link.Attrs().HardwareAddr
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		e.macs = append(e.macs, mac)
	}
	return e
}

// start starts lb i and waits until it serves.
func (e *vipEnv) start(t *testing.T, i int) {
	t.Helper()
	if err := e.lbs[i].Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.lbs[i].WaitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// holders lists the lbs whose eth0 carries the VIP, as netlink sees it in their
// namespaces.
func (e *vipEnv) holders() ([]int, error) {
	var out []int
	for i, n := range e.lbNodes {
		has, err := n.HasAddr(netip.MustParseAddr(vipAddr))
		if err != nil {
			return nil, err
		}
		if has {
			out = append(out, i)
		}
	}
	return out, nil
}

// vipStatus is lb i's view of the VIP, from its /status.
func (e *vipEnv) vipStatus(i int) (vip.Status, error) {
	resp, err := e.status.Get("http://" + e.lbs[i].StatusAddress() + "/status")
	if err != nil {
		return vip.Status{}, err
	}
	defer resp.Body.Close()
	var doc lbrole.StatusDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return vip.Status{}, err
	}
	if doc.VIP == nil {
		return vip.Status{}, errors.New("/status has no vip")
	}
	return *doc.VIP, nil
}

// request sends one request through the VIP: etcd's /health on the masters, through
// whichever lb holds the VIP.
func (e *vipEnv) request() error {
	resp, err := e.http.Get("https://" + vipAddr + ":2379/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"health":"true"`)) {
		return fmt.Errorf("/health through the VIP: %s %s", resp.Status, body)
	}
	return nil
}

// awaitHolder waits until lb i alone carries the VIP, says so in /status, and a request
// through the VIP succeeds; it returns how long that took.
func (e *vipEnv) awaitHolder(t *testing.T, i int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	err := await.Until(context.Background(), fmt.Sprintf("lb%d to hold the VIP alone and serve through it", i+1), timeout, func() error {
		hs, err := e.holders()
		if err != nil {
			return await.Stop(err)
		}
		if !slices.Equal(hs, []int{i}) {
			return fmt.Errorf("holders %v", hs)
		}
		st, err := e.vipStatus(i)
		if err != nil {
			return err
		}
		if !st.Holding || st.Holder != e.lbs[i].Name {
			return fmt.Errorf("lb%d's status: %+v", i+1, st)
		}
		return e.request()
	}, await.Every(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// awaitStandby waits until lb i follows the election and names the other lb as holder.
func (e *vipEnv) awaitStandby(t *testing.T, i int) {
	t.Helper()
	err := await.Until(context.Background(), fmt.Sprintf("lb%d to see lb%d as the holder, and to be campaigning", i+1, 2-i), 10*time.Second, func() error {
		st, err := e.vipStatus(i)
		if err != nil {
			return err
		}
		// Between terms (RetryAt set) it is out of the election and could not take over.
		if st.Holding || st.Holder != e.lbs[1-i].Name || st.RetryAt != nil {
			return fmt.Errorf("lb%d's status: %+v", i+1, st)
		}
		return nil
	}, await.Every(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
}

// awaitDropped waits until lb i no longer carries the VIP, and fails unless that was
// within maxFrozenHold of since; it returns how long after since it was gone.
func (e *vipEnv) awaitDropped(t *testing.T, i int, since time.Time, who string) time.Duration {
	t.Helper()
	ip := netip.MustParseAddr(vipAddr)
	err := await.Until(context.Background(), who+" to drop the VIP", maxFrozenHold+time.Second, func() error {
		has, err := e.lbNodes[i].HasAddr(ip)
		if err != nil {
			return await.Stop(err)
		}
		if has {
			return fmt.Errorf("lb%d still has the VIP", i+1)
		}
		return nil
	}, await.Every(10*time.Millisecond))
	gone := time.Since(since)
	if err != nil || gone > maxFrozenHold {
		t.Fatalf("%s kept the VIP for %s (bound %s): %v", who, gone, maxFrozenHold, err)
	}
	return gone
}

// killLeader makes m2 the etcd leader, notes which lb holds the VIP and its status, and
// takes m2 away with kill; it returns the holder, its status, and when m2 went.
func (e *vipEnv) killLeader(t *testing.T, kill func(*procs.Master) error) (int, vip.Status, time.Time) {
	t.Helper()
	var eps []string
	for _, m := range e.c.Masters {
		eps = append(eps, m.ClientURL())
	}
	if err := probe.MoveLeader(context.Background(), e.dialer, eps, e.c.Masters[1].ClientURL(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The move is an election of its own, to a member that may have restarted just
	// before: the new leader serves a linearizable read once it has committed in its
	// term (and so promoted its lessor), and should the holder have lapsed in the move,
	// the VIP settles first.
	cli, err := e.dialer.Client(eps...)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := await.Until(context.Background(), "a linearizable read after the etcd leader's move", 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, vip.KeyPrefix)
		return err
	}, await.Every(20*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var hs []int
	err = await.Until(context.Background(), "one lb to hold the VIP after the etcd leader's move", 10*time.Second, func() error {
		var err error
		hs, err = e.holders()
		if err != nil {
			return await.Stop(err)
		}
		if len(hs) != 1 {
			return fmt.Errorf("the VIP is on %v", hs)
		}
		return nil
	}, await.Every(20*time.Millisecond))
	if err != nil {
		t.Fatalf("%v\nlb1:\n%s\nlb2:\n%s", err, e.lbs[0].LogTail(12), e.lbs[1].LogTail(12))
	}
	e.awaitStandby(t, 1-hs[0])
	st, err := e.vipStatus(hs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := kill(e.c.Masters[1]); err != nil {
		t.Fatal(err)
	}
	return hs[0], st, time.Now()
}

// awaitServed waits until a request through the VIP succeeds again after since (etcd's
// /health fails until etcd has a leader); it returns how long after since that was.
func (e *vipEnv) awaitServed(t *testing.T, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	if err := await.Until(context.Background(), "a request through the VIP to succeed", bound-time.Since(since), e.request,
		await.Every(20*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	return time.Since(since)
}

// watchKept checks, from now until since+until, that lb h carries the VIP alone
// (nothing to await: it must stay); the returned func waits for that window to end and
// fails unless the VIP stayed, lb h counted no takeover since before, and the client's
// neighbour entry still names lb h.
func (e *vipEnv) watchKept(t *testing.T, h int, before vip.Status, since time.Time, until time.Duration) (wait func()) {
	done := make(chan error, 1)
	go func() {
		for time.Since(since) < until {
			if hs, err := e.holders(); err != nil || !slices.Equal(hs, []int{h}) {
				done <- fmt.Errorf("%s after the etcd leader went the VIP is on %v (%v), want lb%d alone",
					time.Since(since).Round(time.Millisecond), hs, err, h+1)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		done <- nil
	}()
	return func() {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatalf("%v:\n%s", err, e.lbs[h].LogTail(10))
		}
		after, err := e.vipStatus(h)
		if err != nil || after.Takeovers != before.Takeovers {
			t.Fatalf("lb%d's takeovers went from %d to %d (%v)", h+1, before.Takeovers, after.Takeovers, err)
		}
		mac, err := e.neighMAC()
		if err != nil || !bytes.Equal(mac, e.macs[h]) {
			t.Fatalf("the client's neighbour entry for the VIP is %s (%v), lb%d's MAC is %s", mac, err, h+1, e.macs[h])
		}
	}
}

// awaitEtcdWhole waits until the three members agree on a leader and a linearizable
// read works: the next subtest starts from a settled etcd, not one
// whose healed member is still catching up.
func (e *vipEnv) awaitEtcdWhole(t *testing.T) {
	t.Helper()
	var eps []string
	for _, m := range e.c.Masters {
		eps = append(eps, m.ClientURL())
	}
	cli, err := e.dialer.Client(eps...)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	err = await.Until(context.Background(), "etcd whole again: one leader for all three members, and a linearizable read", 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// From the client's namespace, as every request of these tests.
		if _, _, err := probe.Members(ctx, cli, eps); err != nil {
			return err
		}
		_, err := cli.Do(ctx, clientv3.OpGet(vip.KeyPrefix, clientv3.WithCountOnly()))
		return err
	}, await.Every(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
}

// logsSince keeps the lines of a slog text log stamped at or after since.
func logsSince(logs string, since time.Time) string {
	var keep []string
	for _, line := range strings.Split(logs, "\n") {
		ts, _, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); ok && err == nil && !at.Before(since) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// neighMAC is the client's neighbour entry for the VIP.
func (e *vipEnv) neighMAC() (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := e.client.Do(func() error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		ns, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
		for _, n := range ns {
			if n.IP.String() == vipAddr && n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 {
				mac = n.HardwareAddr
			}
		}
		return err
	})
	if err == nil && mac == nil {
		err = errors.New("no neighbour entry for the VIP")
	}
	return mac, err
}

// watchTwoHolders checks, until stop is called, that never two lbs hold the VIP: by
// netlink in the lbs' namespaces, and by ARP requests from the client, which every
// host that has the address answers. It returns what it saw.
func (e *vipEnv) watchTwoHolders(t *testing.T) (stop func() (probes, answered int, seen []string)) {
	t.Helper()
	var ac *arp.Client
	if err := e.client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err == nil {
			ac, err = arp.Dial(ifi)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	target := netip.MustParseAddr(vipAddr)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var seen []string
	probes, answered := 0, 0
	wg.Go(func() {
		defer ac.Close()
		for {
			select {
			case <-done:
				return
			default:
			}
			if hs, err := e.holders(); err == nil && len(hs) > 1 {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s: netlink finds the VIP on lbs %v", time.Now().Format("15:04:05.000"), hs))
				mu.Unlock()
			}
			if err := ac.Request(target); err != nil {
				continue
			}
			macs := map[string]bool{}
			_ = ac.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			for {
				p, _, err := ac.Read()
				if err != nil {
					break
				}
				if p.Operation == arp.OperationReply && p.SenderIP == target {
					macs[p.SenderHardwareAddr.String()] = true
				}
			}
			mu.Lock()
			probes++
			if len(macs) == 1 {
				answered++
			}
			if len(macs) > 1 {
				seen = append(seen, fmt.Sprintf("%s: ARP replies for the VIP from %v", time.Now().Format("15:04:05.000"), macs))
			}
			mu.Unlock()
		}
	})
	return func() (int, int, []string) {
		close(done)
		wg.Wait()
		return probes, answered, seen
	}
}

// TestVIP runs two lbs sharing a VIP in front of three secure masters, and fails the
// holder in each way: kill -9, a restart of the dead holder, SIGSTOP, a clean stop, a
// blackhole, a lost etcd quorum (the holder keeps it), the etcd leader master killed or
// blackholed (the holder keeps it through the election), and 20 moves back and forth,
// while a client checks that never two hosts answer for the VIP.
func TestVIP(t *testing.T) {
	e := newVIPEnv(t)
	stopWatch := e.watchTwoHolders(t)
	defer func() {
		probes, answered, seen := stopWatch()
		t.Logf("%d ARP probes of the VIP from the client, %d answered by one host", probes, answered)
		if probes < 100 || answered < probes/2 {
			t.Errorf("%d ARP probes ran, %d answered: the two-holder check saw too little", probes, answered)
		}
		for _, s := range seen {
			t.Errorf("two holders: %s", s)
		}
	}()

	// lb1 starts first and wins; lb2 then only follows.
	e.start(t, 0)
	e.awaitHolder(t, 0, 10*time.Second)
	e.start(t, 1)
	e.awaitStandby(t, 1)
	if hs, err := e.holders(); err != nil || !slices.Equal(hs, []int{0}) {
		t.Fatalf("with both lbs up, the VIP is on %v (%v), want lb1 alone", hs, err)
	}

	t.Run("status and metrics show the holder", func(t *testing.T) {
		st, err := e.vipStatus(0)
		if err != nil || st.Since == nil || st.Takeovers != 1 || st.Interface != "eth0" || st.Address != vipAddr+"/24" {
			t.Fatalf("lb1's status: %+v, %v", st, err)
		}
		resp, err := e.status.Get("http://" + e.lbs[0].StatusAddress() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"haagent_vip_holding 1", "haagent_vip_takeovers_total 1", "haagent_vip_holding_since_timestamp_seconds 1."} {
			if !strings.Contains(string(body), want) {
				t.Errorf("lb1's /metrics lacks %q", want)
			}
		}
	})

	t.Run("kill -9 of the holder", func(t *testing.T) {
		if err := e.lbs[0].Kill(); err != nil {
			t.Fatal(err)
		}
		d := e.awaitHolder(t, 1, maxTakeover)
		t.Logf("lb2 took over and served %s after lb1's kill -9", d.Round(time.Millisecond))
		// The fast path: lb2 fenced lb1 by revoking its lease, before etcd expired it.
		if !strings.Contains(e.lbs[1].Logs(), "revoked the lease of a holder past its deadline") {
			t.Errorf("lb2 did not revoke the dead holder's lease:\n%s", e.lbs[1].LogTail(20))
		}
	})

	t.Run("the killed holder comes back and does not take the VIP", func(t *testing.T) {
		e.start(t, 0)
		e.awaitStandby(t, 0)
		// Nothing to await here: the VIP must stay where it is for a while.
		end := time.Now().Add(2 * time.Second)
		for time.Now().Before(end) {
			if hs, err := e.holders(); err != nil || !slices.Equal(hs, []int{1}) {
				t.Fatalf("after lb1's restart the VIP is on %v (%v), want lb2 alone", hs, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("SIGSTOP of the holder", func(t *testing.T) {
		if err := e.lbs[1].Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		gone := e.awaitDropped(t, 1, stopped, "the frozen lb2's kernel")
		e.awaitHolder(t, 0, maxTakeover)
		t.Logf("the frozen lb2 lost the VIP after %s; lb1 served %s after the freeze",
			gone.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		if err := e.lbs[1].Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// Thawed, lb2 finds its lease gone and follows.
		e.awaitStandby(t, 1)
		if hs, err := e.holders(); err != nil || !slices.Equal(hs, []int{0}) {
			t.Fatalf("after lb2 thawed the VIP is on %v (%v), want lb1 alone", hs, err)
		}
	})

	t.Run("a clean stop hands over at once", func(t *testing.T) {
		stop := time.Now()
		if _, err := e.lbs[0].Stop(); err != nil {
			t.Fatal(err)
		}
		if hs, err := e.holders(); err != nil || slices.Contains(hs, 0) {
			t.Fatalf("lb1 stopped cleanly but the VIP is on %v (%v)", hs, err)
		}
		e.awaitHolder(t, 1, maxHandover)
		t.Logf("lb2 served %s after lb1's SIGTERM", time.Since(stop).Round(time.Millisecond))
		e.start(t, 0)
		e.awaitStandby(t, 0)
	})

	t.Run("blackhole of the holder", func(t *testing.T) {
		cut := time.Now()
		if err := e.lbNodes[1].Blackhole(); err != nil {
			t.Fatal(err)
		}
		healed := false
		defer func() {
			if !healed {
				_ = e.lbNodes[1].Heal()
			}
		}()
		gone := e.awaitDropped(t, 1, cut, "the cut-off lb2")
		e.awaitHolder(t, 0, maxTakeover)
		t.Logf("the cut-off lb2 dropped the VIP after %s; lb1 served %s after the cut",
			gone.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond))
		if err := e.lbNodes[1].Heal(); err != nil {
			t.Fatal(err)
		}
		healed = true
		e.awaitStandby(t, 1)
		if hs, err := e.holders(); err != nil || !slices.Equal(hs, []int{0}) {
			t.Fatalf("after lb2's link came back the VIP is on %v (%v), want lb1 alone", hs, err)
		}
	})

	t.Run("without an etcd quorum the holder keeps the VIP", func(t *testing.T) {
		down := e.c.Masters[1:]
		for _, m := range down {
			if err := m.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		// Four times the holder's own deadline, and past its address's kernel lifetime:
		// nothing to await, the VIP must stay.
		end := time.Now().Add(4 * time.Second)
		for time.Now().Before(end) {
			if hs, err := e.holders(); err != nil || !slices.Equal(hs, []int{0}) {
				t.Fatalf("with m2 and m3 down the VIP is on %v (%v), want lb1 alone", hs, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(e.lbs[0].Logs(), "etcd has no leader") {
			t.Errorf("lb1 kept the VIP without noticing the lost quorum:\n%s", e.lbs[0].LogTail(20))
		}
		if err := e.c.StartAll(down...); err != nil {
			t.Fatal(err)
		}
		if err := e.c.WaitReady(procs.ReadyTimeout, down...); err != nil {
			t.Fatal(err)
		}
		e.awaitHolder(t, 0, 10*time.Second)
		e.awaitStandby(t, 1)
	})

	for _, fault := range []struct {
		name string
		do   func(int) error
		heal func(int) error
	}{
		{"kill -9", func(i int) error { return e.c.Masters[i].Kill() }, func(i int) error {
			if err := e.c.StartAll(e.c.Masters[i]); err != nil {
				return err
			}
			return e.c.WaitReady(procs.ReadyTimeout, e.c.Masters[i])
		}},
		// No member refuses: the followers name the silent leader until their election
		// timeout, and the holder keeps the VIP on their word (package vip).
		{"blackhole", func(i int) error { return e.mNodes[i].Blackhole() }, func(i int) error {
			if err := e.mNodes[i].Heal(); err != nil {
				return err
			}
			return e.c.WaitReady(procs.ReadyTimeout, e.c.Masters[i])
		}},
	} {
		t.Run(fault.name+" of the etcd leader master: the holder keeps the VIP", func(t *testing.T) {
			h, before, gone := e.killLeader(t, func(m *procs.Master) error { return fault.do(1) })
			kept := e.watchKept(t, h, before, gone, 4*time.Second)
			defer func() {
				if t.Failed() {
					for _, lb := range e.lbs {
						t.Logf("--- %s, from the fault on ---\n%s", lb.Name, logsSince(lb.Logs(), gone.Add(-time.Second)))
					}
				}
				if err := fault.heal(1); err != nil {
					t.Fatal(err)
				}
				e.awaitEtcdWhole(t)
				e.awaitStandby(t, 1-h)
			}()
			back := e.awaitServed(t, gone, 4*time.Second)
			kept()
			t.Logf("requests through the VIP served again %s after the %s; lb%d kept the VIP", back.Round(time.Millisecond), fault.name, h+1)
		})
	}

	t.Run("the VIP moves back and forth and the client follows it", func(t *testing.T) {
		holder := 1
		for move := range vipMoves {
			from, to := holder, 1-holder
			if _, err := e.lbs[from].Stop(); err != nil {
				t.Fatal(err)
			}
			e.awaitHolder(t, to, maxHandover+time.Second)
			err := await.Until(context.Background(), fmt.Sprintf("move %d: the client's neighbour entry to be lb%d's MAC", move+1, to+1), 2*time.Second, func() error {
				mac, err := e.neighMAC()
				if err != nil {
					return err
				}
				if !bytes.Equal(mac, e.macs[to]) {
					return fmt.Errorf("the client's neighbour entry for the VIP is %s, lb%d's MAC is %s", mac, to+1, e.macs[to])
				}
				return nil
			}, await.Every(10*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			e.start(t, from)
			e.awaitStandby(t, from)
			holder = to
		}
		st, err := e.vipStatus(holder)
		if err != nil || st.Takeovers < 1 {
			t.Fatalf("status of the last holder: %+v, %v", st, err)
		}
	})
}
