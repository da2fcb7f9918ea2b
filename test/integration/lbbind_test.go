package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/embed/vip"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// lbCertCN is the CN of the certificate an lb holds under root.
func lbCertCN(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, pki.EtcdClientCert))
	if err != nil {
		return "", err
	}
	c, err := pki.ParseCert(data)
	if err != nil {
		return "", err
	}
	return c.Subject.CommonName, nil
}

// awaitLBCert waits until the lb's certificate is its own: CN haagent-lb:<name>.
func awaitLBCert(t *testing.T, lb *procs.LB) {
	t.Helper()
	want := pki.LBNamePrefix + lb.Config.Name
	err := await.Until(context.Background(), lb.Config.Name+" to hold its own certificate", 60*time.Second, func() error {
		if !lb.Running() {
			return await.Stop(fmt.Errorf("the lb exited:\n%s", lb.LogTail(20)))
		}
		if cn, err := lbCertCN(lb.Root()); err != nil || cn != want {
			return fmt.Errorf("CN %q (%v), want %q", cn, err, want)
		}
		return nil
	}, await.Every(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
}

// TestLBsAreBoundByName: lbs join with the lb token, each lb's certificate is its own
// name's and renews it only, and only an lb's own etcd user may touch the VIP's
// election. An attacker with the agent token and a minion's files gets no lb, and no
// identity but an lb's reads, writes or deletes under /haagent/vip/, nor revokes the
// holder's lease. A cluster from before keeps working: the shared haagent-lb user
// loses the election's role when a master starts, and an lb with a certificate from
// before gets its own with the lb token.
func TestLBsAreBoundByName(t *testing.T) {
	c := procs.NewCluster(bin, t.TempDir(), 3)
	c.Secure(serverToken)
	var lb *procs.LB
	t.Cleanup(func() {
		if lb != nil {
			lb.StopOrKill()
		}
		c.StopAll()
		if t.Failed() {
			for _, m := range c.Masters {
				t.Logf("--- log of %s ---\n%s", m.Name, m.LogTail(40))
			}
			if lb != nil {
				t.Logf("--- log of lb1 ---\n%s", lb.LogTail(40))
			}
		}
	})
	startReady(t, c)
	m1 := c.Masters[0]
	_, agent, lbToken := tokenShow(t, m1)
	agentTok, _ := pki.ParseToken(agent)
	lbTok, _ := pki.ParseToken(lbToken)
	ctx := context.Background()
	var masters []string // m1, m2, m3
	for _, m := range c.Masters {
		masters = append(masters, m.IP)
	}

	// The attacker's files: a minion joined with the agent token.
	minion := t.TempDir()
	if code, log := runNamedMinion(t, "minion1", minion, m1.IP, agent); code != 0 {
		t.Fatalf("minion exit %d:\n%s", code, log)
	}

	t.Run("the agent token on an lb is refused at parse", func(t *testing.T) {
		root := t.TempDir()
		out, err := exec.Command(bin, "--role=lb", "--name=lb9", "--masters="+m1.IP, "--token="+agent, "--root="+root).CombinedOutput()
		want := "haagent: --token: this is the agent token; lbs take the lb token from 'haagent token show --kind=lb' on a master"
		if exitOf(err) != 2 || strings.TrimSpace(string(out)) != want {
			t.Fatalf("exit %d, %q; want exit 2 and %q", exitOf(err), out, want)
		}
		requireNothingWritten(t, root)
	})

	// lb1 joins with the lb token; it balances the join port only, as the test needs. It
	// asks m2 first: the attacker's refused attempts below, sent to m1 and m3 from
	// 127.0.0.1 as lb1's are, spend their budgets of refusals for that address.
	lb = procs.NewLB(bin, procs.LBConfig{Name: "lb1", IP: "127.0.0.11", Masters: []string{masters[1], masters[2], masters[0]},
		Ports: "9345", Token: lbToken, Dir: t.TempDir()})
	if err := lb.Start(); err != nil {
		t.Fatal(err)
	}
	awaitLBCert(t, lb)
	lbCert := func() *identity {
		for _, id := range identities(t, lb.Root()) {
			if id.name == filepath.Base(pki.EtcdClientCert) {
				return &id
			}
		}
		t.Fatal("lb1 holds no etcd client certificate")
		return nil
	}()

	// A certificate as every lb got with the agent token before lb names were bound.
	ca, err := pki.LoadShared(m1.Root)
	if err != nil {
		t.Fatal(err)
	}
	legacyDir := t.TempDir()
	legacyCrt, legacyKey, err := ca.CA.Issue(pki.LeafSpec{CommonName: pki.LBCommonName, Client: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	legacyFiles := []files.File{{Path: pki.EtcdClientCert, Mode: 0o644, Data: legacyCrt}, {Path: pki.EtcdClientKey, Mode: 0o600, Data: legacyKey}}
	if _, err := node.WriteCredentials(legacyDir, legacyFiles); err != nil {
		t.Fatal(err)
	}
	legacy := identities(t, legacyDir)[0]

	t.Run("nothing a minion holds obtains or renews an lb", func(t *testing.T) {
		secret := strings.Repeat("c", 64)
		type attempt struct {
			name   string
			tok    pki.Token
			cert   *identity
			req    join.Request
			reason string
		}
		attempts := []attempt{
			{"the agent token, a new lb name", agentTok, nil, join.Request{Role: "lb", Name: "lb2", NodeSecret: secret}, "can't obtain an lb's certificate"},
			{"the agent token, lb1's name", agentTok, nil, join.Request{Role: "lb", Name: "lb1", NodeSecret: secret}, "can't obtain an lb's certificate"},
			{"an lb certificate from before names were bound, renewing lb1", pki.Token{}, &legacy, join.Request{Role: "lb", Name: "lb1"}, "renews nothing"},
			{"the lb token with lb1's name and another node secret", lbTok, nil, join.Request{Role: "lb", Name: "lb1", NodeSecret: secret}, "belongs to another node"},
		}
		for _, id := range identities(t, minion) {
			attempts = append(attempts, attempt{"the minion's " + id.name + " renewing lb1", pki.Token{}, &id,
				join.Request{Role: "lb", Name: "lb1"}, ""})
		}
		for i, a := range attempts {
			var cert *tls.Certificate
			if a.cert != nil {
				cert = &a.cert.cert
			}
			// Each master refuses 5 attempts a minute from one address (127.0.0.1 here)
			// before it throttles: spread over the three, each attempt meets the checks.
			server := c.Masters[i%3].IP + ":9345"
			fs, _, err := join.Fetch(ctx, server, a.tok, nil, cert, a.req)
			switch {
			case err == nil:
				t.Errorf("%s: got %d files", a.name, len(fs))
			case strings.Contains(err.Error(), "429"):
				t.Errorf("%s: throttled before it was checked: %v", a.name, err)
			case a.reason == "":
				// A minion's certificate: refused (403), or not even a client certificate
				// of the cluster CA (the kubelet's serving one), refused at the handshake.
			case !errors.Is(err, join.ErrForbidden) || !strings.Contains(err.Error(), a.reason):
				t.Errorf("%s: err = %v, want forbidden: %q", a.name, err, a.reason)
			}
		}
		if len(attempts) < 9 {
			t.Fatalf("only %d attempts: %v", len(attempts), attempts)
		}
	})
	t.Run("lb1 renews itself and no other lb", func(t *testing.T) {
		// Every master throttles 127.0.0.1's refused attempts after the ones above, and
		// a valid credential still goes through.
		m2 := c.Masters[1]
		fs, _, err := join.Fetch(ctx, m2.IP+":9345", pki.Token{}, nil, &lbCert.cert, join.Request{Role: "lb", Name: "lb1"})
		if err != nil {
			t.Fatalf("lb1 renewing: %v", err)
		}
		for _, f := range fs {
			if f.Path == pki.EtcdClientCert {
				if c, _ := pki.ParseCert(f.Data); c == nil || c.Subject.CommonName != pki.LBNamePrefix+"lb1" {
					t.Fatalf("lb1's renewed certificate: %v", c)
				}
			}
		}
		_, _, err = join.Fetch(ctx, m2.IP+":9345", pki.Token{}, nil, &lbCert.cert, join.Request{Role: "lb", Name: "lb2"})
		if !errors.Is(err, join.ErrForbidden) || !strings.Contains(err.Error(), "can't renew lb lb2") {
			t.Fatalf("lb1's certificate renewing lb2: err = %v", err)
		}
	})

	// lb1 campaigns for a VIP as package vip does, with its own certificate.
	prefix := vip.KeyPrefix + "10.0.0.10/"
	tlsc, err := node.ClusterTLS(lb.Root(), pki.EtcdClientCert, pki.EtcdClientKey)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m1.ClientURL()},
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(tlsc.GRPC())}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(60))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, prefix)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = el.Campaign(cctx, "lb1")
	cancel()
	if err != nil {
		t.Fatalf("lb1 campaigning with its own certificate: %v", err)
	}
	key, lease := el.Key(), strconv.FormatInt(int64(sess.Lease()), 16)
	requireHeld := func(t *testing.T) {
		t.Helper()
		if out, err := c.Etcdctl(m1.ClientURL(), "get", "--print-value-only", key); err != nil || strings.TrimSpace(out) != "lb1" {
			t.Fatalf("lb1's election key %s: %q, %v; want it held by lb1", key, out, err)
		}
	}
	requireHeld(t)

	t.Run("no identity but an lb's touches the election", func(t *testing.T) {
		type who struct{ name, crt, key string }
		var ids []who
		crts, _ := filepath.Glob(filepath.Join(minion, pki.Dir, "*.crt"))
		for _, crt := range crts {
			k := strings.TrimSuffix(crt, ".crt") + ".key"
			data, _ := os.ReadFile(crt)
			if c, err := pki.ParseCert(data); err == nil && fileExists(k) && slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
				ids = append(ids, who{"the minion's " + filepath.Base(crt), crt, k})
			}
		}
		ids = append(ids,
			who{"an lb certificate from before names were bound", filepath.Join(legacyDir, pki.EtcdClientCert), filepath.Join(legacyDir, pki.EtcdClientKey)},
			who{"the apiserver's", filepath.Join(m1.Root, pki.APIServerEtcdCert), filepath.Join(m1.Root, pki.APIServerEtcdKey)})
		if len(ids) < 5 { // flannel, kube-proxy, the kubelet's client, the old lb's, the apiserver's
			t.Fatalf("only %d identities to try: %v", len(ids), ids)
		}
		for _, id := range ids {
			for _, args := range [][]string{
				{"get", "--prefix", vip.KeyPrefix},
				{"put", prefix + "0", "evil"},
				{"del", key},
				{"del", "--prefix", vip.KeyPrefix},
				{"lease", "revoke", lease},
			} {
				out, err := etcdctlAs(m1, id.crt, id.key, args...)
				if err == nil {
					t.Errorf("%s: etcdctl %s succeeded: %q", id.name, strings.Join(args, " "), out)
				} else if !strings.Contains(err.Error(), "permission denied") {
					t.Errorf("%s: etcdctl %s: %v; want permission denied", id.name, strings.Join(args, " "), err)
				}
			}
			requireHeld(t)
		}
		// lb1's own user reads the election and nothing else.
		if out, err := etcdctlAs(m1, filepath.Join(lb.Root(), pki.EtcdClientCert), filepath.Join(lb.Root(), pki.EtcdClientKey),
			"get", "--prefix", "--print-value-only", vip.KeyPrefix); err != nil || strings.TrimSpace(out) != "lb1" {
			t.Errorf("lb1 reading the election: %q, %v", out, err)
		}
		for _, k := range []string{"/haagent/nodes/lb1", pki.SharedKey, "/registry/secrets/default/x"} {
			if out, err := etcdctlAs(m1, filepath.Join(lb.Root(), pki.EtcdClientCert), filepath.Join(lb.Root(), pki.EtcdClientKey), "get", k); err == nil ||
				!strings.Contains(err.Error(), "permission denied") {
				t.Errorf("lb1 reading %s: %q, %v; want permission denied", k, out, err)
			}
		}
	})

	t.Run("on upgrade the shared lb user loses the election and an lb gets its own", func(t *testing.T) {
		// As an earlier haagent left it: the shared user holds the election's role.
		if out, err := c.Etcdctl(m1.ClientURL(), "user", "grant-role", pki.LBCommonName, "haagent-lb"); err != nil {
			t.Fatalf("grant the old role: %v\n%s", err, out)
		}
		legacyPut := func() error {
			_, err := etcdctlAs(m1, filepath.Join(legacyDir, pki.EtcdClientCert), filepath.Join(legacyDir, pki.EtcdClientKey), "put", prefix+"legacy", "x")
			return err
		}
		if err := legacyPut(); err != nil {
			t.Fatalf("the old shared lb user with its old role can't write the election: %v", err)
		}
		if _, err := c.Etcdctl(m1.ClientURL(), "del", prefix+"legacy"); err != nil {
			t.Fatal(err)
		}
		m3 := c.Masters[2]
		if _, err := m3.Stop(); err != nil {
			t.Fatal(err)
		}
		startReady(t, c, m3)
		if err := legacyPut(); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("the shared lb user after a master's start: %v, want permission denied", err)
		}
		if !strings.Contains(m3.Logs(), "revoked etcd role") {
			t.Error("m3 did not log the revoked role")
		}
		// lb1 with a certificate from before: at its next start it joins with the lb
		// token under its bound name, and gets its own certificate.
		if _, err := lb.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := node.WriteCredentials(lb.Root(), legacyFiles); err != nil {
			t.Fatal(err)
		}
		if cn, _ := lbCertCN(lb.Root()); cn != pki.LBCommonName {
			t.Fatalf("lb1's certificate before its restart: %q", cn)
		}
		if err := lb.Start(); err != nil {
			t.Fatal(err)
		}
		awaitLBCert(t, lb)
		if !strings.Contains(lb.Logs(), "not this lb's own") {
			t.Error("lb1 did not say why it got its certificate again")
		}
		requireHeld(t)
	})
}

// fileExists reports whether p exists.
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
