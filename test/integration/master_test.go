// Package integration runs real haagent processes (test/framework/procs) on loopback addresses,
// masters on 127.0.0.21-23, an lb on 127.0.0.10, a minion on 127.0.0.31, and checks
// them with Debian's etcdctl, an outside client. None of its tests needs root: those
// that do live in test/rootintegration.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
)

var bin string

func TestMain(m *testing.M) { procs.Main(m, &bin) }

const readyTimeout = procs.ReadyTimeout

// testToken is the cluster secret of the test clusters, which run in secure mode.
const testToken = "haagent-integration-test-0123456789"

// newCluster makes a 3-master cluster description and stops it when the test ends,
// dumping the logs of a failed test.
func newCluster(t *testing.T) *procs.Cluster {
	t.Helper()
	c := procs.NewCluster(bin, t.TempDir(), 3)
	c.Secure(testToken)
	t.Cleanup(func() {
		c.StopAll()
		if t.Failed() {
			for _, m := range c.Masters {
				t.Logf("--- log of %s ---\n%s", m.Name, m.LogTail(40))
			}
		}
	})
	return c
}

func startReady(t *testing.T, c *procs.Cluster, ms ...*procs.Master) {
	t.Helper()
	if err := c.StartAll(ms...); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(readyTimeout, ms...); err != nil {
		t.Fatal(err)
	}
}

// requireMembers checks, through etcdctl, that the cluster lists exactly the wanted
// names, all started and voting, with no duplicates.
func requireMembers(t *testing.T, c *procs.Cluster, endpoints string, names ...string) []procs.EtcdMember {
	t.Helper()
	var ms []procs.EtcdMember
	err := await.Until(context.Background(), "members "+strings.Join(names, ", ")+", all started and voting", 20*time.Second, func() error {
		var err error
		ms, _, err = c.MemberList(endpoints)
		if err != nil {
			return err
		}
		got := map[string]int{}
		for _, m := range ms {
			if len(m.ClientURLs) == 0 {
				return fmt.Errorf("member %x (%q) is unstarted: %+v", m.ID, m.Name, ms)
			}
			if m.IsLearner {
				return fmt.Errorf("member %s is still a learner", m.Name)
			}
			got[m.Name]++
		}
		if len(ms) != len(names) {
			return fmt.Errorf("%d members, want %d: %+v", len(ms), len(names), ms)
		}
		for _, n := range names {
			if got[n] != 1 {
				return fmt.Errorf("member %s listed %d times: %+v", n, got[n], ms)
			}
		}
		return nil
	}, await.Every(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func memberID(t *testing.T, ms []procs.EtcdMember, name string) uint64 {
	t.Helper()
	for _, m := range ms {
		if m.Name == name {
			return m.ID
		}
	}
	t.Fatalf("no member %s in %+v", name, ms)
	return 0
}

func TestBootstrapConcurrentlyTenTimes(t *testing.T) {
	for round := range 10 {
		t.Run(fmt.Sprintf("round%d", round+1), func(t *testing.T) {
			c := newCluster(t)
			order := append([]*procs.Master{}, c.Masters...)
			rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			startReady(t, c, order...)
			requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
			st, err := c.Statuses(c.Endpoints())
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st {
				if s.Status.Header.ClusterID != st[0].Status.Header.ClusterID {
					t.Fatalf("split brain: %s is in cluster %x, %s in %x", s.Endpoint, s.Status.Header.ClusterID,
						st[0].Endpoint, st[0].Status.Header.ClusterID)
				}
			}
			for _, m := range c.Masters {
				if code, err := m.Stop(); err != nil || code != 0 {
					t.Fatalf("SIGTERM %s: exit %d, %v", m.Name, code, err)
				}
			}
		})
	}
}

func TestOutsideClientEtcdctl(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")

	if n, err := c.HealthyCount(c.Endpoints()); err != nil || n != 3 {
		t.Fatalf("endpoint health: %d healthy, want 3: %v", n, err)
	}
	if _, err := c.Etcdctl(c.Masters[0].ClientURL(), "put", "/haagent-test/k", "v1"); err != nil {
		t.Fatal(err)
	}
	got, err := c.Etcdctl(c.Masters[2].ClientURL(), "get", "--print-value-only", "/haagent-test/k")
	if err != nil || strings.TrimSpace(got) != "v1" {
		t.Fatalf("get through m3 = %q, %v; want v1", got, err)
	}
	flannelJSON, err := c.Etcdctl(c.Masters[1].ClientURL(), "get", "--print-value-only", "/kube-centos/network/config")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Network":"172.30.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}`
	if strings.TrimSpace(flannelJSON) != want {
		t.Fatalf("flannel config = %q, want %q", flannelJSON, want)
	}
}

func TestLateMemberTakesItsUnstartedSlot(t *testing.T) {
	c := newCluster(t)
	m1, m2, m3 := c.Masters[0], c.Masters[1], c.Masters[2]
	startReady(t, c, m1, m2)
	ms, _, err := c.MemberList(c.Endpoints(m1, m2))
	if err != nil {
		t.Fatal(err)
	}
	unstarted := 0
	for _, m := range ms {
		if len(m.ClientURLs) == 0 {
			unstarted++
		}
	}
	if len(ms) != 3 || unstarted != 1 {
		t.Fatalf("before m3 starts: %d members, %d unstarted; want 3 and 1: %+v", len(ms), unstarted, ms)
	}
	startReady(t, c, m3)
	after := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	if !strings.Contains(m3.Logs(), "mode=take-slot") {
		t.Fatalf("m3 did not take its slot; log:\n%s", m3.LogTail(30))
	}
	for _, m := range ms {
		if len(m.ClientURLs) == 0 && m.ID != memberID(t, after, "m3") {
			t.Fatalf("m3 got a new ID %x instead of its slot %x", memberID(t, after, "m3"), m.ID)
		}
	}
}

func TestNewMemberJoinsAsLearnerAndIsPromoted(t *testing.T) {
	c := newCluster(t)
	m1, m2, m3 := c.Masters[0], c.Masters[1], c.Masters[2]
	// m1 and m2 bootstrap a two-member cluster that doesn't know m3 at all.
	two := fmt.Sprintf("m1=http://%s:2380,m2=http://%s:2380", m1.IP, m2.IP)
	m1.Extra = []string{"--peers=" + two}
	m2.Extra = []string{"--peers=" + two}
	startReady(t, c, m1, m2)
	if _, err := c.Etcdctl(c.Endpoints(m1, m2), "put", "/before-join", "x"); err != nil {
		t.Fatal(err)
	}
	startReady(t, c, m3)
	requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	log := m3.Logs()
	for _, want := range []string{"mode=join", "added to the cluster as a learner", "promoted from learner to voting member"} {
		if !strings.Contains(log, want) {
			t.Fatalf("m3 log lacks %q:\n%s", want, m3.LogTail(30))
		}
	}
	got, err := c.Etcdctl(m3.ClientURL(), "get", "--print-value-only", "/before-join")
	if err != nil || strings.TrimSpace(got) != "x" {
		t.Fatalf("m3 did not catch up: %q, %v", got, err)
	}
}

func TestRestartKeepsMemberID(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	before := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	m2 := c.Masters[1]
	if code, err := m2.Stop(); err != nil || code != 0 {
		t.Fatalf("stop m2: exit %d, %v", code, err)
	}
	startReady(t, c, m2)
	after := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	if memberID(t, before, "m2") != memberID(t, after, "m2") {
		t.Fatalf("m2 changed ID: %x -> %x", memberID(t, before, "m2"), memberID(t, after, "m2"))
	}
	if !strings.Contains(m2.Logs(), "mode=restart") {
		t.Fatal("m2 did not restart from its data dir")
	}
}

func TestRebuiltHostReplacesStaleMember(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	before := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	m3 := c.Masters[2]
	if err := m3.Kill(); err != nil {
		t.Fatal(err)
	}
	// The host is rebuilt: its disk comes back empty. (The test wipes it; haagent never would.)
	if err := os.RemoveAll(m3.DataDir); err != nil {
		t.Fatal(err)
	}
	startReady(t, c, m3)
	after := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	if memberID(t, before, "m3") == memberID(t, after, "m3") {
		t.Fatal("m3 kept its old member ID although its data dir was empty")
	}
	if !strings.Contains(m3.Logs(), "removed stale member") {
		t.Fatalf("m3 log does not say it removed the stale member:\n%s", m3.LogTail(30))
	}
	if n, err := c.HealthyCount(c.Endpoints()); err != nil || n != 3 {
		t.Fatalf("endpoint health after replace: %d healthy, want 3: %v", n, err)
	}
}

func TestRemovedMemberExitsAndKeepsItsData(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	m1, m3 := c.Masters[0], c.Masters[2]
	cmd := exec.Command(bin, "member", "remove", "m3", "--endpoints="+m1.ClientURL(), "--root="+m1.Root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("haagent member remove m3: %v\n%s", err, out)
	}
	code, err := m3.Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Fatalf("removed member exited %d, want 3 (removed)", code)
	}
	if !strings.Contains(m3.Logs(), "removed from the etcd cluster") {
		t.Fatalf("no clear message in m3's log:\n%s", m3.LogTail(10))
	}
	if _, err := os.Stat(filepath.Join(m3.DataDir, "member", "wal")); err != nil {
		t.Fatalf("data dir was not kept: %v", err)
	}
	// A restart must fail fast with the same message instead of looping.
	start := time.Now()
	if err := m3.Start(); err != nil {
		t.Fatal(err)
	}
	code, err = m3.Wait(10 * time.Second)
	if err != nil || code != 3 {
		t.Fatalf("restart of a removed member: exit %d, %v; want exit 3", code, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("restart of a removed member took %s to give up", d)
	}
	requireMembers(t, c, c.Endpoints(m1, c.Masters[1]), "m1", "m2")
}

func TestKillLeaderFailsOverAndRejoins(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	before := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	var rest []*procs.Master
	for _, m := range c.Masters {
		if m != leader {
			rest = append(rest, m)
		}
	}
	var newLeader *procs.Master
	err = await.Until(context.Background(), "a leader agreed by the two other masters", 15*time.Second, func() error {
		var err error
		newLeader, err = c.Leader(rest...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if newLeader == leader {
		t.Fatal("the killed master is still the leader")
	}
	if _, err := c.Etcdctl(c.Endpoints(rest...), "put", "/after-failover", "ok"); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
	startReady(t, c, leader)
	after := requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	if memberID(t, before, leader.Name) != memberID(t, after, leader.Name) {
		t.Fatalf("%s rejoined with a new ID", leader.Name)
	}
	got, err := c.Etcdctl(leader.ClientURL(), "get", "--print-value-only", "/after-failover")
	if err != nil || strings.TrimSpace(got) != "ok" {
		t.Fatalf("rejoined %s misses the write made while it was down: %q, %v", leader.Name, got, err)
	}
}

func TestFlannelConfigIsNotOverwritten(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	m1 := c.Masters[0]
	if code, err := m1.Stop(); err != nil || code != 0 {
		t.Fatalf("stop: %d %v", code, err)
	}
	m1.Extra = []string{"--flannel-network=10.50.0.0/16"}
	startReady(t, c, m1)
	err := await.Until(context.Background(), "m1 to warn that the stored flannel config differs", 10*time.Second, func() error {
		if !strings.Contains(m1.Logs(), "differs from the flags") {
			return fmt.Errorf("no warning about the differing flannel config")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err, m1.LogTail(20))
	}
	got, _ := c.Etcdctl(c.Endpoints(), "get", "--print-value-only", "/kube-centos/network/config")
	if !strings.Contains(got, "172.30.0.0/16") {
		t.Fatalf("stored flannel config was overwritten: %s", got)
	}
}

func TestStatusMetricsNotifyAndSnapshot(t *testing.T) {
	c := newCluster(t)
	// m1 runs under a fake NOTIFY_SOCKET, as systemd would give it.
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	startReady(t, c)
	buf := make([]byte, 256)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := map[string]bool{}
	for len(got) < 3 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("sd_notify: got %v so far: %v", got, err)
		}
		got[string(buf[:n])] = true
		if string(buf[:n]) != "READY=1" {
			t.Fatalf("sd_notify sent %q, want READY=1", buf[:n])
		}
		got[fmt.Sprint(len(got))] = true
	}

	m1 := c.Masters[0]
	out, err := exec.Command(bin, "status", "-o", "json", "--status-address="+m1.StatusAddress()).Output()
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Role string `json:"role"`
		Etcd struct {
			Members []struct {
				Name    string `json:"name"`
				Leader  bool   `json:"leader"`
				Healthy bool   `json:"healthy"`
			} `json:"members"`
		} `json:"etcd"`
		Flannel struct{ Value string } `json:"flannel"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	leaders := 0
	for _, m := range st.Etcd.Members {
		if !m.Healthy {
			t.Errorf("status: %s unhealthy", m.Name)
		}
		if m.Leader {
			leaders++
		}
	}
	if st.Role != "master" || len(st.Etcd.Members) != 3 || leaders != 1 || !strings.Contains(st.Flannel.Value, "vxlan") {
		t.Fatalf("status = %+v", st)
	}
	text, err := exec.Command(bin, "status", "--status-address="+m1.StatusAddress()).Output()
	if err != nil || !strings.Contains(string(text), "leader") {
		t.Fatalf("status text: %v\n%s", err, text)
	}

	metrics, err := httpGet("http://" + m1.StatusAddress() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"etcd_server_has_leader 1", "etcd_server_is_leader", "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if h, err := httpGet("http://" + m1.StatusAddress() + "/healthz"); err != nil || strings.TrimSpace(h) != "ok" {
		t.Errorf("/healthz = %q, %v", h, err)
	}

	snap := filepath.Join(t.TempDir(), "snap.db")
	if out, err := exec.Command(bin, "snapshot", "save", snap, "--endpoints="+m1.ClientURL(), "--root="+m1.Root).CombinedOutput(); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	out, err = exec.Command(bin, "snapshot", "restore", snap, "--data-dir="+restored, "--name=m1", "--peers="+c.Peers()).CombinedOutput()
	if err != nil {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(restored, "member", "snap", "db")); err != nil {
		t.Fatalf("restored data dir lacks the db: %v", err)
	}
	out, err = exec.Command(bin, "snapshot", "restore", snap, "--data-dir="+restored, "--name=m1", "--peers="+c.Peers()).CombinedOutput()
	if code := exitOf(err); code != 2 || !strings.Contains(string(out), "--data-dir") {
		t.Fatalf("restore over an existing data dir: exit %d, %s; want exit 2 naming --data-dir", code, out)
	}
}

func exitOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
