package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haagent/haagent/embed/loadbalancer"
	lbrole "github.com/haagent/haagent/roles/lb"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/probe"
	"github.com/haagent/haagent/test/framework/sixhost"
	"github.com/haagent/haagent/trust/pki"
)

// stepKind is one kind of round of the walkthrough's own step: master1 goes (kill: the
// host stops and its link goes down, as vagrant halt; cut: its link is blackholed), then
// after a while one plain kubectl create runs on master3.
type stepKind struct {
	name   string
	leader bool // master1 is the etcd leader when it goes, else a follower
	fault  string
	after  time.Duration
	// direct sends the create to lb1's own address, past the VIP: the single-lb figure.
	direct bool
	rounds int
}

// stepResult is one round: how long the create took, and its error output if it failed.
type stepResult struct {
	took time.Duration
	err  string
}

// seedStep is the lab and what its rounds share.
type seedStep struct {
	ctx     context.Context
	l       *sixhost.Lab
	etcd    probe.Dialer
	eps     []string
	n       int
	streams []string // failures the streams saw, over every stream round
}

// benchSeedStep measures the walkthrough's step on the seven-host lab, through the VIP
// and through lb1 alone, for master1 as an etcd follower and as the leader, killed or
// blackholed; then it fails master2, the etcd leader, while a watch, a kubectl logs -f,
// a streaming kubectl exec and a loop of GETs run through the VIP on master1, and counts
// what they saw.
func benchSeedStep(bin string, rounds int) (table, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	l, _, teardown, err := bootLab(ctx, "step")
	if err != nil {
		return table{}, err
	}
	defer teardown()
	s := &seedStep{ctx: ctx, l: l}
	if err := s.openEtcd(); err != nil {
		return table{}, err
	}
	// Warm the minions' image cache, so that no round waits for a first pull.
	if _, err := s.create(false); err != nil {
		return table{}, err
	}

	streamRounds := 0
	for _, fault := range []string{"kill", "cut"} {
		for i := range max(rounds/2, 1) {
			if err := s.streamRound(fault); err != nil {
				return table{}, fmt.Errorf("streams, master2 %s, round %d: %w", fault, i+1, err)
			}
			streamRounds++
		}
	}

	many := 2 * rounds
	kinds := []stepKind{
		{name: "follower, kill, create at +0.5 s", fault: "kill", after: 500 * time.Millisecond, rounds: rounds},
		{name: "leader, kill, create at +2 s", leader: true, fault: "kill", after: 2 * time.Second, rounds: many},
		{name: "leader, kill, create at +2 s, lb1 alone", leader: true, fault: "kill", after: 2 * time.Second, direct: true, rounds: many},
		{name: "leader, kill, create at +1 s", leader: true, fault: "kill", after: time.Second, rounds: rounds},
		{name: "leader, kill, create at +0.5 s", leader: true, fault: "kill", after: 500 * time.Millisecond, rounds: rounds},
		{name: "follower, cut, create at +0.5 s", fault: "cut", after: 500 * time.Millisecond, rounds: rounds},
		{name: "leader, cut, create at +2 s", leader: true, fault: "cut", after: 2 * time.Second, rounds: rounds},
		{name: "leader, cut, create at +2 s, lb1 alone", leader: true, fault: "cut", after: 2 * time.Second, direct: true, rounds: rounds},
		{name: "leader, cut, create at +1 s", leader: true, fault: "cut", after: time.Second, rounds: rounds},
	}
	results := map[string][]stepResult{}
	for _, k := range kinds {
		for i := range k.rounds {
			r, err := s.round(k)
			if err != nil {
				return table{}, fmt.Errorf("%s, round %d: %w", k.name, i+1, err)
			}
			status := "ok"
			if r.err != "" {
				status = "failed: " + r.err
			}
			progress("step: %s, round %d: %s, %s", k.name, i+1, r.took.Round(time.Millisecond), status)
			results[k.name] = append(results[k.name], r)
		}
	}
	t := table{
		title:  "The walkthrough's step on the lab: master1 goes, then one plain kubectl create on master3 (default settings, no retry)",
		header: []string{"round", "rounds", "median", "worst", "failed"},
	}
	for _, k := range kinds {
		rs := results[k.name]
		var ds []time.Duration
		failed := 0
		for _, r := range rs {
			ds = append(ds, r.took)
			if r.err != "" {
				failed++
			}
		}
		t.rows = append(t.rows, []string{k.name, fmt.Sprint(len(rs)), ms(median(ds)), ms(slices.Max(ds)), fmt.Sprint(failed)})
	}
	via := func(name string) (med, worst time.Duration) {
		var ds []time.Duration
		for _, r := range results[name] {
			ds = append(ds, r.took)
		}
		return median(ds), slices.Max(ds)
	}
	vm, vw := via("leader, kill, create at +2 s")
	dm, dw := via("leader, kill, create at +2 s, lb1 alone")
	t.rows = append(t.rows, []string{"VIP minus lb1 alone, leader killed, +2 s", "-",
		fmt.Sprintf("%+d ms (target ≤ +500)", (vm - dm).Milliseconds()), fmt.Sprintf("%+d ms (target ≤ +1000)", (vw - dw).Milliseconds()), "-"})
	streamNote := fmt.Sprintf("Streams: in %d rounds master2, the etcd leader, was killed or cut while a kubectl get pods -w, a kubectl logs -f, "+
		"a streaming kubectl exec and a loop of GETs (one keep-alive connection, every 100 ms) ran through the VIP on master1: ", streamRounds)
	if len(s.streams) == 0 {
		streamNote += "none saw an error."
	} else {
		streamNote += fmt.Sprintf("%d failures: %s.", len(s.streams), strings.Join(s.streams, "; "))
	}
	t.notes = []string{
		"kill: the host stops at once and its link goes down (vagrant halt); cut: its link is blackholed. Both leave no RST behind.",
		"Each round starts from a whole cluster (three etcd members, both lbs seeing every apiserver healthy, one VIP holder) with the etcd leader moved as the row says.",
		"'lb1 alone': the same create sent to lb1's own address with the VIP as TLS server name, past the VIP.",
		streamNote,
	}
	return t, nil
}

// openEtcd sets up the etcd client the rounds check the cluster with.
func (s *seedStep) openEtcd() error {
	var err error
	s.etcd, s.eps, err = s.l.Etcd()
	return err
}

// create runs one plain kubectl create of a new nginx pod on master3, through the VIP or
// (direct) through lb1's own address, and returns its duration; a failed create is a
// result, not an error, unless it could not run at all.
func (s *seedStep) create(direct bool) (stepResult, error) {
	s.n++
	name := fmt.Sprintf("step-%d", s.n)
	manifest := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n"
	c := s.l.Host(sixhost.Client)
	if err := c.WriteFile("/var/tmp/"+name+".yaml", []byte(manifest), 0o644); err != nil {
		return stepResult{}, err
	}
	args := []string{"create", "-f", "/var/tmp/" + name + ".yaml"}
	if direct {
		args = append([]string{"--server=https://" + sixhost.LB.String() + ":6443", "--tls-server-name=" + sixhost.VIP.Addr().String()}, args...)
	}
	cmd := s.l.KubectlCommand(s.ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := stepResult{took: time.Since(start)}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return r, err
		}
		r.err = strings.TrimSpace(out.String())
	}
	return r, nil
}

// round restores the cluster, places the etcd leader, takes master1 away, waits k.after
// and times one create.
func (s *seedStep) round(k stepKind) (stepResult, error) {
	if err := s.restore(); err != nil {
		return stepResult{}, err
	}
	target := "master2"
	if k.leader {
		target = "master1"
	}
	if err := s.l.MoveLeader(s.ctx, target); err != nil {
		return stepResult{}, err
	}
	m1 := s.l.Host("master1")
	fault := m1.Kill
	if k.fault == "cut" {
		fault = m1.Blackhole
	}
	if err := fault(); err != nil {
		return stepResult{}, err
	}
	// The schedule of the experiment, not a wait for a condition.
	time.Sleep(k.after)
	return s.create(k.direct)
}

// restore brings every master back (booted again after a kill, its link healed after a
// cut) and waits until the cluster is whole: every etcd member agrees on a leader, every
// master's apiserver answers /readyz directly, both lbs see every apiserver healthy, and
// one lb holds the VIP and serves through it.
func (s *seedStep) restore() error {
	for _, m := range s.l.Masters() {
		if !m.Running() {
			if err := m.Start(s.ctx); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(s.ctx, hosts.BootTimeout)
			err := m.WaitRunning(wctx)
			cancel()
			if err != nil {
				return err
			}
		}
		if err := m.Heal(); err != nil {
			return err
		}
	}
	return await.Until(s.ctx, "the lab whole again (etcd, apiservers, both lbs, the VIP)", 5*time.Minute, func() error {
		cli, err := s.etcd.Client(s.eps...)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		defer cancel()
		if _, _, err := probe.Members(ctx, cli, s.eps); err != nil {
			return err
		}
		for _, m := range s.l.Masters() {
			if _, err := s.l.KubectlDirect(s.ctx, m.Name, "--request-timeout=2s", "get", "--raw=/readyz"); err != nil {
				return fmt.Errorf("%s's apiserver: %w", m.Name, err)
			}
		}
		for _, lb := range []string{"lb1", "lb2"} {
			out, err := s.l.Host(lb).Exec(s.ctx, "haagent", "status", "-o", "json")
			if err != nil {
				return fmt.Errorf("%s: %w", lb, err)
			}
			var doc lbrole.StatusDoc
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				return fmt.Errorf("%s's status: %w", lb, err)
			}
			for _, b := range doc.Backends {
				if b.State != loadbalancer.StateHealthy {
					return fmt.Errorf("%s sees %s:%d %s", lb, b.Address, b.Port, b.State)
				}
			}
		}
		hs, err := s.l.VIPHolders(s.ctx)
		if err != nil || len(hs) != 1 {
			return fmt.Errorf("VIP holders %v (%v)", hs, err)
		}
		_, err = s.l.Kubectl(s.ctx, "--request-timeout=2s", "get", "--raw=/readyz")
		return err
	}, await.Every(500*time.Millisecond))
}

// stream is one long-lived client through the VIP: a kubectl process that must keep
// running and printing, or the GET loop.
type stream struct {
	name string
	cmd  *exec.Cmd
	out  *lineBuffer
	done chan struct{} // closed when the process has ended
}

// lineBuffer collects a stream's output and when its last line came.
type lineBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines int
	last  time.Time
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines += bytes.Count(p, []byte("\n"))
	b.last = time.Now()
	return b.buf.Write(p)
}

func (b *lineBuffer) state() (int, time.Time, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lines, b.last, b.buf.String()
}

// streamRound starts the streams on a whole cluster (they land on master1, the lbs'
// first choice), makes master2 the etcd leader and takes it away, keeps the streams
// going for 10 s and records every error they saw.
func (s *seedStep) streamRound(fault string) error {
	if err := s.restore(); err != nil {
		return err
	}
	before := len(s.streams)
	defer func() {
		for _, f := range s.streams[before:] {
			progress("step: stream failure: %s", f)
		}
	}()
	if err := s.ensureTicker(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var streams []*stream
	for _, st := range []struct {
		name string
		args []string
	}{
		{"watch", []string{"get", "pods", "-w", "--output-watch-events"}},
		{"logs -f", []string{"logs", "-f", "--tail=1", "ticker"}},
		{"exec", []string{"exec", "ticker", "--", "/nginx", "-tick", "100ms"}},
	} {
		cmd := s.l.KubectlCommand(ctx, st.args...)
		// nsenter forks kubectl into the host's PID namespace: stopping the stream must
		// kill both, or kubectl lives on and holds the output pipe open.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		out := &lineBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			return err
		}
		str := &stream{name: st.name, cmd: cmd, out: out, done: make(chan struct{})}
		go func() {
			_ = cmd.Wait()
			close(str.done)
		}()
		streams = append(streams, str)
	}
	gets := s.startGets(ctx)
	defer func() {
		cancel()
		for _, st := range streams {
			<-st.done
		}
	}()
	if err := await.Until(s.ctx, "every stream to print", 30*time.Second, func() error {
		for _, st := range streams {
			if n, _, out := st.out.state(); n == 0 {
				return fmt.Errorf("%s has printed nothing yet: %q", st.name, out)
			}
		}
		if gets.ok() == 0 {
			return errors.New("no GET has succeeded yet")
		}
		return nil
	}, await.Every(100*time.Millisecond)); err != nil {
		return err
	}
	if err := s.l.MoveLeader(s.ctx, "master2"); err != nil {
		return err
	}
	m2 := s.l.Host("master2")
	f := m2.Kill
	if fault == "cut" {
		f = m2.Blackhole
	}
	if err := f(); err != nil {
		return err
	}
	// The streams' test is that nothing happens to them: 10 s past the fault.
	time.Sleep(10 * time.Second)
	for _, st := range streams {
		n, last, out := st.out.state()
		switch {
		case isClosed(st.done):
			s.streams = append(s.streams, fmt.Sprintf("master2 %s: %s ended: %q", fault, st.name, tail(out)))
		case st.name != "watch" && time.Since(last) > 2*time.Second:
			s.streams = append(s.streams, fmt.Sprintf("master2 %s: %s printed nothing for %s (%d lines)", fault, st.name, time.Since(last).Round(time.Millisecond), n))
		}
	}
	if errs := gets.failures(); len(errs) > 0 {
		s.streams = append(s.streams, fmt.Sprintf("master2 %s: the GET loop failed %d times: %s", fault, len(errs), errs[0]))
	}
	progress("step: streams, master2 %s: %d GETs ok, %d failures so far", fault, gets.ok(), len(s.streams))
	return nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// ensureTicker makes the pod that the logs and exec streams read: the nginx image
// printing a numbered line every 100 ms.
func (s *seedStep) ensureTicker() error {
	if out, err := s.l.Kubectl(s.ctx, "get", "pod", "ticker", "-o", "jsonpath={.status.phase}"); err == nil && out == "Running" {
		return nil
	}
	_, _ = s.l.Kubectl(s.ctx, "delete", "pod", "ticker", "--ignore-not-found", "--wait=true")
	manifest := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  containers:\n  - name: ticker\n    image: nginx\n    args: [\"-tick\", \"100ms\"]\n"
	if err := s.l.Host(sixhost.Client).WriteFile("/var/tmp/ticker.yaml", []byte(manifest), 0o644); err != nil {
		return err
	}
	if _, err := s.l.Kubectl(s.ctx, "create", "-f", "/var/tmp/ticker.yaml"); err != nil {
		return err
	}
	return await.Until(s.ctx, "the ticker pod Running", 3*time.Minute, func() error {
		out, err := s.l.Kubectl(s.ctx, "get", "pod", "ticker", "-o", "jsonpath={.status.phase}")
		if err != nil || out != "Running" {
			return fmt.Errorf("phase %q %v", out, err)
		}
		return nil
	}, await.Every(250*time.Millisecond))
}

// getLoop is a GET of a pod through the VIP every 100 ms on one keep-alive connection,
// from master3 with the admin credentials.
type getLoop struct {
	mu   sync.Mutex
	good int
	errs []string
}

func (g *getLoop) ok() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.good
}

func (g *getLoop) failures() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.errs)
}

func (s *seedStep) startGets(ctx context.Context) *getLoop {
	g := &getLoop{}
	kc, err := s.l.Host(sixhost.Client).ReadFile("/root/.kube/config")
	var server string
	var tc *tls.Config
	if err == nil {
		server, tc, err = pki.ParseKubeconfig(kc)
	}
	if err != nil {
		g.errs = append(g.errs, "admin kubeconfig: "+err.Error())
		return g
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: s.l.Host(sixhost.Client).DialContext, TLSClientConfig: tc, MaxIdleConnsPerHost: 1}}
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/api/v1/namespaces/default/pods/ticker", nil)
			resp, err := hc.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("GET: %s", resp.Status)
				}
			}
			if ctx.Err() != nil {
				return
			}
			g.mu.Lock()
			if err != nil {
				g.errs = append(g.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
			} else {
				g.good++
			}
			g.mu.Unlock()
		}
	}()
	return g
}
