package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// TestRotateCAWithoutAFailedRequest: three secure masters, an lb on 127.0.0.10 and a
// minion behind it. While 'haagent certs rotate-ca' runs, a client with the minion's
// flannel identity reads etcd through the lb without pause, on a long-lived connection
// and on a fresh one (a new handshake with the files as they are) every few reads; no
// request fails. Afterwards every leaf of every host comes from the new CA or a CA
// derived from it, and no trust file holds the old CA. The cluster has a server, an
// agent and an lb token: the lb joins with the lb token, the minion with the agent
// token, and the rotation keeps both, and the encryption keys, on every master.
func TestRotateCAWithoutAFailedRequest(t *testing.T) {
	c := newCluster(t)
	c.Secure(serverToken)
	for _, m := range c.Masters {
		m.Extra = []string{"--lb=127.0.0.10", "--systemd=off"}
	}
	startReady(t, c)
	m1 := c.Masters[0]
	_, agent, lbToken := tokenShow(t, m1)
	agentTok, _ := pki.ParseToken(agent)
	lbTok, _ := pki.ParseToken(lbToken)
	encryptionConfig := func(m *procs.Master) string {
		b, err := os.ReadFile(filepath.Join(m.Root, nodeconf.EncryptionConfig))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	keysBefore := encryptionConfig(m1)

	lb := procs.NewLB(bin, procs.LBConfig{Name: "lb1", IP: "127.0.0.10", Masters: []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"},
		Token: lbToken, Dir: t.TempDir()})
	minion := procs.NewMinion(bin, procs.MinionConfig{IP: "127.0.0.31", LB: "127.0.0.10", Token: agent, Root: filepath.Join(t.TempDir(), "minion1")})
	t.Cleanup(func() {
		minion.StopOrKill()
		lb.StopOrKill()
		if t.Failed() {
			t.Logf("--- lb log ---\n%s", lb.LogTail(40))
			t.Logf("--- minion log ---\n%s", minion.LogTail(40))
		}
	})
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	if err := awaitLBHealthy(lb, map[int]int{2379: 3}); err != nil {
		t.Fatal(err)
	}
	if err := minion.Start(); err != nil {
		t.Fatal(err)
	}
	if err := minion.WaitReady(procs.ReadyTimeout); err != nil {
		t.Fatal(err)
	}
	old, err := pki.LoadShared(m1.Root)
	if err != nil {
		t.Fatal(err)
	}

	// The client: flanneld's identity on the minion, through the lb, reading the
	// minion's files at each handshake as flanneld does at each of its restarts.
	tc, err := node.ClusterTLS(minion.Config.Root, pki.FlannelEtcdCert, pki.FlannelEtcdKey)
	if err != nil {
		t.Fatal(err)
	}
	newClient := func() (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{"https://127.0.0.10:2379"},
			DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(tc.GRPC())},
			DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	}
	long, err := newClient()
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	var ok, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			cli := long
			if i%10 == 0 {
				fresh, err := newClient()
				if err != nil {
					failed.Add(1)
					continue
				}
				cli = fresh
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := cli.Get(ctx, "/kube-centos/network/config")
			cancel()
			if cli != long {
				cli.Close()
			}
			if err != nil {
				failed.Add(1)
				failMu.Lock()
				failures = append(failures, time.Now().Format(time.TimeOnly)+" "+err.Error())
				failMu.Unlock()
				continue
			}
			ok.Add(1)
		}
	})

	rotate := exec.Command(bin, "certs", "rotate-ca", "--root="+m1.Root, "--listen-address="+m1.IP, "--timeout=4m")
	out, err := rotate.CombinedOutput()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("certs rotate-ca: %v\n%s", err, out)
	}
	t.Logf("certs rotate-ca:\n%s", out)
	for _, phase := range []string{"[trust]", "[reissue]", "[drop]", "[done]"} {
		if !strings.Contains(string(out), phase) {
			t.Errorf("rotate-ca did not report %s", phase)
		}
	}
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests through the lb failed, %d succeeded: %q", failed.Load(), ok.Load(), failures)
	}
	t.Logf("%d requests through the lb, none failed", ok.Load())

	now, err := pki.LoadShared(m1.Root)
	if err != nil {
		t.Fatal(err)
	}
	if now.CA.Cert.Equal(old.CA.Cert) || now.Rotation != nil {
		t.Fatalf("m1 still signs with the old CA, or still rotates (%+v)", now.Rotation)
	}
	// The key IDs of the new CAs, and of the old ones.
	ids := func(ca *pki.CA) []string {
		out := []string{pki.KeyIDString(ca.Cert.SubjectKeyId)}
		for _, purpose := range pki.DerivedCANames {
			d, err := ca.Derive(purpose)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pki.KeyIDString(d.Cert.SubjectKeyId))
		}
		return out
	}
	newIDs, oldIDs := ids(now.CA), ids(old.CA)
	roots := map[string]string{"lb1": lb.Root(), "minion1": minion.Config.Root}
	for _, m := range c.Masters {
		roots[m.Name] = m.Root
	}
	for host, root := range roots {
		infos, err := pki.Inspect(root)
		if err != nil {
			t.Fatal(err)
		}
		leaves := 0
		for _, ci := range infos {
			if ci.IsCA {
				if slices.Contains(oldIDs, ci.KeyID) {
					t.Errorf("%s: %s still trusts the old CA %s", host, ci.Path, ci.KeyID)
				}
				continue
			}
			leaves++
			if id := ci.SignedBy[strings.LastIndex(ci.SignedBy, " ")+1:]; !slices.Contains(newIDs, id) {
				t.Errorf("%s: %s (%s) is signed by %s, not by the new CA %v", host, ci.Path, ci.Subject, ci.SignedBy, newIDs)
			}
		}
		if leaves == 0 {
			t.Errorf("%s: no leaf certificates under %s", host, root)
		}
		// The minion's serving certificate comes from the new kubelet-serving CA, which
		// only the masters' kubelet bundle holds.
		if _, err := os.Stat(filepath.Join(root, pki.CAOtherKey)); err == nil {
			t.Errorf("%s: the old CA's key is still on disk", host)
		}
	}
	// The lb's status shows its etcd backends healthy with the new trust, and the
	// masters' status the end of the rotation.
	if err := awaitLBHealthy(lb, map[int]int{2379: 3}); err != nil {
		t.Fatal(err)
	}
	// The master learns of the rotation's end from its watch of the shared document,
	// a moment after the command's last write.
	err = await.Until(context.Background(), "m1's status to show the new CA and no rotation", 10*time.Second, func() error {
		st, err := exec.Command(bin, "status", "--status-address="+m1.StatusAddress()).CombinedOutput()
		if err != nil || !strings.Contains(string(st), "cluster CA: "+pki.KeyIDString(now.CA.Cert.SubjectKeyId)+" signs") || strings.Contains(string(st), "rotation in its") {
			return fmt.Errorf("haagent status after the rotation: %v\n%s", err, st)
		}
		return nil
	}, await.Every(100*time.Millisecond))
	if err != nil {
		t.Error(err)
	}
	// Every master still has the agent and lb tokens and the encryption keys from before
	// the rotation: only their pins changed.
	for _, m := range c.Masters {
		_, a, l := tokenShow(t, m)
		at, _ := pki.ParseToken(a)
		lt, _ := pki.ParseToken(l)
		if !at.SecretEqual(agentTok.Secret) || !lt.SecretEqual(lbTok.Secret) {
			t.Errorf("%s: the agent or lb token changed with the CA rotation: %s, %s; want %s, %s", m.Name, a, l, agent, lbToken)
		}
		if encryptionConfig(m) != keysBefore {
			t.Errorf("%s: the encryption keys changed with the CA rotation", m.Name)
		}
	}
	// The lb token, unpinned, still obtains a new lb's certificate, from the new CA.
	lbSecret := strings.Repeat("e", 64)
	fs, _, err := join.Fetch(context.Background(), m1.IP+":9345", lbTok.Unpinned(), nil, nil,
		join.Request{Role: "lb", Name: "lb2", NodeSecret: lbSecret})
	if err != nil {
		t.Errorf("an lb joining with the lb token after the rotation: %v", err)
	}
	for _, f := range fs {
		if f.Path != pki.EtcdClientCert {
			continue
		}
		if crt, _ := pki.ParseCert(f.Data); crt == nil || crt.Subject.CommonName != pki.LBNamePrefix+"lb2" ||
			!slices.Contains(newIDs, pki.KeyIDString(crt.AuthorityKeyId)) {
			t.Errorf("lb2's certificate after the rotation: %v, want %slb2 from the new CA", crt, pki.LBNamePrefix)
		}
	}
	// A new node needs the new pin: the old one is refused, the one token show prints joins.
	oldPinned := agentTok.Unpinned().Pinned(old.CA.Cert.Raw).String()
	if code, log := runMinionNamed(t, "minion2", "127.0.0.32", oldPinned); code == 0 || !strings.Contains(log, "token show") {
		t.Errorf("a join with the old pin: exit %d, want a refusal that says where the new token is:\n%s", code, procs.Tail(log, 10))
	}
	shown, err := exec.Command(bin, "token", "show", "--kind=agent", "--root="+m1.Root).Output()
	if err != nil {
		t.Fatal(err)
	}
	if code, log := runMinionNamed(t, "minion3", "127.0.0.33", strings.TrimSpace(string(shown))); code != 0 {
		t.Errorf("a join with the token that token show prints: exit %d\n%s", code, procs.Tail(log, 10))
	}
}

// awaitLBHealthy waits until the lb reports, for each port in want, that many healthy
// backends.
func awaitLBHealthy(lb *procs.LB, want map[int]int) error {
	return await.Until(context.Background(), fmt.Sprintf("the lb's backends to be healthy (port: count %v)", want), 30*time.Second, func() error {
		if !lb.Running() {
			return await.Stop(fmt.Errorf("the lb exited:\n%s", lb.LogTail(20)))
		}
		body, err := httpGet("http://" + lb.StatusAddress() + "/status")
		if err != nil {
			return err
		}
		var doc struct {
			Backends []struct {
				Port  int    `json:"port"`
				State string `json:"state"`
			} `json:"backends"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			return err
		}
		healthy := map[int]int{}
		for _, b := range doc.Backends {
			if b.State == "healthy" {
				healthy[b.Port]++
			}
		}
		for port, n := range want {
			if healthy[port] != n {
				return fmt.Errorf("%d healthy backends on port %d, want %d: %s", healthy[port], port, n, body)
			}
		}
		return nil
	}, await.Every(100*time.Millisecond))
}

// runMinionNamed runs a minion that joins through the lb on 127.0.0.10, and returns
// its exit code and log once it is ready (then stopped) or has exited.
func runMinionNamed(t *testing.T, name, ip, token string) (int, string) {
	t.Helper()
	return runMinionWith(t, procs.MinionConfig{Name: name, IP: ip, LB: "127.0.0.10", Token: token, Root: filepath.Join(t.TempDir(), name)})
}
