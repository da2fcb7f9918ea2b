package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

// etcdctlAs runs Debian's etcdctl (v3 API) against m with the client certificate
// pair cert/key (paths under m's root, or absolute), so that etcd's user is its CN.
func etcdctlAs(m *procs.Master, cert, key string, args ...string) (string, error) {
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(m.Root, p)
	}
	flags := []string{"--endpoints=" + m.ClientURL(), "--command-timeout=3s", "--dial-timeout=2s",
		"--cacert=" + abs(pki.CACert), "--cert=" + abs(cert), "--key=" + abs(key)}
	return procs.RunEtcdctl(exec.Command("etcdctl", append(flags, args...)...))
}

// TestUpgradeEnablesEtcdAuth starts a secure cluster the way haagent ran before etcd
// auth (--etcd-auth=false runs the same code without the [auth] step), writes data,
// restarts all three masters at once with the default, and checks that the data is
// still there, every certificate's user is in place, and each is held to its prefix.
func TestUpgradeEnablesEtcdAuth(t *testing.T) {
	c := newCluster(t)
	for _, m := range c.Masters {
		m.Extra = []string{"--etcd-auth=false"}
	}
	startReady(t, c)
	requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	m1, m3 := c.Masters[0], c.Masters[2]
	flannelAs := func(m *procs.Master, args ...string) (string, error) {
		return etcdctlAs(m, pki.FlannelEtcdCert, pki.FlannelEtcdKey, args...)
	}
	apiserverAs := func(m *procs.Master, args ...string) (string, error) {
		return etcdctlAs(m, pki.APIServerEtcdCert, pki.APIServerEtcdKey, args...)
	}

	if _, err := apiserverAs(m1, "put", "/registry/secrets/default/before", "kept"); err != nil {
		t.Fatal(err)
	}
	// Before: the flannel certificate is a full client, which is what the upgrade ends.
	if _, err := flannelAs(m1, "get", "/registry/secrets/default/before"); err != nil {
		t.Fatalf("before the upgrade, auth should be off: %v", err)
	}

	c.StopAll()
	for _, m := range c.Masters {
		m.Extra = nil
	}
	// All three at once: each runs the [auth] step against the others.
	startReady(t, c)

	t.Run("the data written before auth is still there", func(t *testing.T) {
		out, err := c.Etcdctl(m3.ClientURL(), "get", "--print-value-only", "/registry/secrets/default/before")
		if err != nil || strings.TrimSpace(out) != "kept" {
			t.Fatalf("got %q, %v", out, err)
		}
	})

	t.Run("users and roles are in place", func(t *testing.T) {
		out, err := c.Etcdctl(m1.ClientURL(), "user", "list")
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"root", "haagent", "kube-apiserver-etcd-client", "flannel", "haagent-lb"} {
			if !strings.Contains("\n"+out, "\n"+u+"\n") {
				t.Errorf("user %s missing from %q", u, out)
			}
		}
		if out, err := c.Etcdctl(m1.ClientURL(), "user", "get", "haagent"); err != nil || !strings.Contains(out, "root") {
			t.Errorf("haagent's roles: %q, %v", out, err)
		}
		out, err = c.Etcdctl(m1.ClientURL(), "role", "get", "flannel")
		if err != nil || !strings.Contains(out, "/kube-centos/network/subnets") {
			t.Errorf("flannel's role: %q, %v", out, err)
		}
	})

	t.Run("the flannel certificate is refused on /registry/secrets and works under its prefix", func(t *testing.T) {
		for _, args := range [][]string{
			{"get", "/registry/secrets/default/before"},
			{"get", "--prefix", "/registry/"},
			{"put", "/registry/secrets/default/evil", "x"},
			{"get", "/haagent/", "--prefix"},
			{"put", "/kube-centos/network/config", `{"Network":"10.0.0.0/8"}`},
		} {
			out, err := flannelAs(m3, args...)
			if err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("flannel: etcdctl %v: want permission denied, got %q, %v", args, out, err)
			}
		}
		if out, err := flannelAs(m3, "get", "--print-value-only", "/kube-centos/network/config"); err != nil || !strings.Contains(out, "Network") {
			t.Errorf("flannel reads its config: %q, %v", out, err)
		}
		lease, err := flannelAs(m3, "lease", "grant", "60")
		if err != nil {
			t.Fatalf("flannel grants a lease: %v", err)
		}
		var id string
		if _, err := fmt.Sscanf(lease, "lease %s granted", &id); err != nil {
			t.Fatalf("lease grant said %q", lease)
		}
		if _, err := flannelAs(m3, "put", "--lease="+id, "/kube-centos/network/subnets/10.1.5.0-24", `{"PublicIP":"127.0.0.1"}`); err != nil {
			t.Errorf("flannel writes its subnet lease: %v", err)
		}
		if out, err := flannelAs(m3, "get", "--prefix", "--keys-only", "/kube-centos/network/"); err != nil || !strings.Contains(out, "subnets/10.1.5.0-24") {
			t.Errorf("flannel lists its prefix: %q, %v", out, err)
		}
	})

	t.Run("the apiserver certificate can use /registry/ only", func(t *testing.T) {
		for _, args := range [][]string{
			{"put", "/registry/health-probe", "x"},
			{"get", "/registry/secrets/default/before"},
		} {
			if _, err := apiserverAs(m1, args...); err != nil {
				t.Errorf("apiserver: %v", err)
			}
		}
		for _, args := range [][]string{{"put", "compact_rev_key", "1"}, {"get", "compact_rev_key"}, {"get", "--prefix", "/haagent/"}, {"get", "--prefix", "/kube-centos/"}, {"user", "list"}, {"auth", "disable"}} {
			if out, err := apiserverAs(m1, args...); err == nil {
				t.Errorf("apiserver: etcdctl %v succeeded: %q", args, out)
			}
		}
	})

	t.Run("an lb's certificate passes /health and can use only the VIP election's prefix", func(t *testing.T) {
		caPEM, _ := os.ReadFile(filepath.Join(m1.Root, pki.CACert))
		keyPEM, _ := os.ReadFile(filepath.Join(m1.Root, pki.CAKey))
		ca, err := pki.LoadCA(caPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		// The identity all lbs shared before lb names were bound has no role.
		oldPEM, oldKeyPEM, err := ca.Issue(pki.LeafSpec{CommonName: pki.LBCommonName, Client: true}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		// lb1's own, as the join service issues it (and adds its etcd user).
		tok, _ := pki.ParseToken(testToken)
		fs, _, err := join.Fetch(context.Background(), m1.IP+":9345", tok, nil, nil, join.Request{Role: "lb", Name: "lb1", NodeSecret: strings.Repeat("d", 64)})
		if err != nil {
			t.Fatal(err)
		}
		var certPEM, lbKeyPEM []byte
		for _, f := range fs {
			switch f.Path {
			case pki.EtcdClientCert:
				certPEM = f.Data
			case pki.EtcdClientKey:
				lbKeyPEM = f.Data
			}
		}
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "lb.crt"), filepath.Join(dir, "lb.key")
		oldCert, oldKey := filepath.Join(dir, "old.crt"), filepath.Join(dir, "old.key")
		for p, data := range map[string][]byte{certFile: certPEM, keyFile: lbKeyPEM, oldCert: oldPEM, oldKey: oldKeyPEM} {
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := etcdctlAs(m1, oldCert, oldKey, "put", "/haagent/vip/10.0.0.10/x", "x"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("the shared lb certificate from before: want permission denied on the VIP's prefix, got %q, %v", out, err)
		}
		for _, args := range [][]string{
			{"get", "/registry/secrets/default/before"},
			{"get", "--prefix", "/haagent/"},
			{"put", "/haagent/vipx", "x"},
			{"put", "/kube-centos/network/config", "x"},
		} {
			if out, err := etcdctlAs(m1, certFile, keyFile, args...); err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("lb cert: etcdctl %v: want permission denied, got %q, %v", args, out, err)
			}
		}
		// The VIP election: a key under the prefix, attached to a lease it may revoke.
		lease, err := etcdctlAs(m1, certFile, keyFile, "lease", "grant", "60")
		var id string
		if _, serr := fmt.Sscanf(lease, "lease %s granted", &id); err != nil || serr != nil {
			t.Fatalf("lb cert grants a lease: %q, %v", lease, err)
		}
		for _, args := range [][]string{
			{"put", "--lease=" + id, "/haagent/vip/10.0.0.10/" + id, "lb1"},
			{"get", "--prefix", "/haagent/vip/"},
			{"lease", "timetolive", id},
			{"lease", "revoke", id},
		} {
			if out, err := etcdctlAs(m1, certFile, keyFile, args...); err != nil {
				t.Errorf("lb cert: etcdctl %v: %q, %v", args, out, err)
			}
		}
		pair, err := tls.X509KeyPair(certPEM, lbKeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(caPEM)
		hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}}
		err = await.Until(context.Background(), "etcd's /health to answer the lb's certificate with health true", 10*time.Second, func() error {
			resp, err := hc.Get(m1.ClientURL() + "/health")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var h struct{ Health string }
			if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || h.Health != "true" {
				return fmt.Errorf("/health: %s health=%q", resp.Status, h.Health)
			}
			return nil
		}, await.Every(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("auth found off is turned back on within seconds, and said so", func(t *testing.T) {
		if out, err := c.Etcdctl(m1.ClientURL(), "auth", "disable"); err != nil {
			t.Fatalf("auth disable: %q, %v", out, err)
		}
		start := time.Now()
		err := await.Until(context.Background(), "etcd auth back on: the flannel certificate refused on /registry/ again", 10*time.Second, func() error {
			out, err := flannelAs(m3, "get", "/registry/secrets/default/before")
			if err == nil || !strings.Contains(err.Error(), "permission denied") {
				return fmt.Errorf("flannel reads /registry/: %q, %v", out, err)
			}
			return nil
		}, await.Every(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("auth back on after %s", time.Since(start).Round(time.Millisecond))
		var logged, counted, shown int
		for _, m := range c.Masters {
			if strings.Contains(m.Logs(), "[auth] etcd authentication was found OFF") {
				logged++
			}
			body, err := httpGet("http://" + m.StatusAddress() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(body, "haagent_etcd_auth_found_disabled_total 0\n") && strings.Contains(body, "haagent_etcd_auth_found_disabled_total ") {
				counted++
			}
			var st struct {
				EtcdAuth *struct {
					Enabled  bool `json:"enabled"`
					FoundOff int  `json:"foundOff"`
				} `json:"etcdAuth"`
			}
			body, err = httpGet("http://" + m.StatusAddress() + "/status")
			if err != nil || json.Unmarshal([]byte(body), &st) != nil || st.EtcdAuth == nil {
				t.Fatalf("%s /status: %v\n%s", m.Name, err, body)
			}
			if st.EtcdAuth.FoundOff > 0 {
				shown++
			}
		}
		if logged == 0 || counted == 0 || shown == 0 {
			t.Fatalf("masters that logged it: %d, counted it in /metrics: %d, showed it in /status: %d; want at least one each", logged, counted, shown)
		}
	})

	t.Run("a restart with auth on changes nothing", func(t *testing.T) {
		before, err := c.Etcdctl(m1.ClientURL(), "role", "get", "kube-apiserver")
		if err != nil {
			t.Fatal(err)
		}
		m3.StopOrKill()
		startReady(t, c, m3)
		after, err := c.Etcdctl(m3.ClientURL(), "role", "get", "kube-apiserver")
		if err != nil || after != before {
			t.Fatalf("role after restart %q (%v), before %q", after, err, before)
		}
	})
}

// TestEtcdCompactsItsOwnHistory: etcd 3.7 allows Compact to root only, so the
// apiserver's user, held to its prefix, is refused it (its own compactor is off), and
// the members compact their history themselves, to the revision of
// --etcd-compaction-retention ago.
func TestEtcdCompactsItsOwnHistory(t *testing.T) {
	c := newCluster(t)
	for _, m := range c.Masters {
		m.Extra = []string{"--etcd-compaction-retention=2s"}
	}
	startReady(t, c)
	m1 := c.Masters[0]
	out, err := c.Etcdctl(c.Endpoints(), "put", "/registry/compact-test", "v1", "-w", "json")
	if err != nil {
		t.Fatal(err)
	}
	var put struct {
		Header struct {
			Revision int64 `json:"revision"`
		} `json:"header"`
	}
	if err := json.Unmarshal([]byte(out), &put); err != nil || put.Header.Revision == 0 {
		t.Fatalf("put answered %q: %v", out, err)
	}
	rev := fmt.Sprint(put.Header.Revision)
	if _, err := c.Etcdctl(c.Endpoints(), "put", "/registry/compact-test", "v2"); err != nil {
		t.Fatal(err)
	}
	if out, err := etcdctlAs(m1, pki.APIServerEtcdCert, pki.APIServerEtcdKey, "compact", rev); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("the apiserver's user compacted (%q, %v); want permission denied", out, err)
	}
	start := time.Now()
	err = await.Until(context.Background(), "revision "+rev+" to be compacted away", 20*time.Second, func() error {
		out, err := c.Etcdctl(c.Endpoints(), "get", "/registry/compact-test", "--rev="+rev)
		if err != nil && strings.Contains(err.Error(), "required revision has been compacted") {
			return nil
		}
		return fmt.Errorf("get at revision %s: %q, %v", rev, out, err)
	}, await.Every(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revision %s compacted %v after it was written over (retention 2s)", rev, time.Since(start).Round(100*time.Millisecond))
}
