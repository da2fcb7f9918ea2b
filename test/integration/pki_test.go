package integration

import (
	"bytes"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/pki"
)

// runMinion runs a minion joining through joinHost and returns its exit code and
// output once it is ready (then stopped with SIGINT) or has exited.
func runMinion(t *testing.T, root, joinHost, token string) (code int, out string) {
	t.Helper()
	return runMinionWith(t, procs.MinionConfig{IP: "127.0.0.31", LB: joinHost, Token: token, Root: root})
}

// runMinionWith runs a minion once (procs.Minion.RunOnce) and returns its exit code
// and log.
func runMinionWith(t *testing.T, cfg procs.MinionConfig) (int, string) {
	t.Helper()
	m := procs.NewMinion(bin, cfg)
	code, err := m.RunOnce()
	if err != nil {
		t.Fatalf("%v\n%s", err, m.Logs())
	}
	return code, m.Logs()
}

func TestSecureClusterWithTokenJoin(t *testing.T) {
	c := newCluster(t)
	for _, m := range c.Masters {
		m.Extra = []string{"--lb=127.0.0.10"}
	}
	startReady(t, c)
	requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	m1, m2 := c.Masters[0], c.Masters[1]

	t.Run("every master holds the same CA and its own certificates with the right modes", func(t *testing.T) {
		ca0, _ := os.ReadFile(filepath.Join(m1.Root, pki.CACert))
		for _, m := range c.Masters {
			ca, err := os.ReadFile(filepath.Join(m.Root, pki.CACert))
			if err != nil || !bytes.Equal(ca, ca0) {
				t.Fatalf("%s has a different CA (%v)", m.Name, err)
			}
			err = filepath.Walk(filepath.Join(m.Root, "etc/kubernetes"), func(p string, fi os.FileInfo, err error) error {
				if err != nil || fi.IsDir() {
					return err
				}
				want := os.FileMode(0o644)
				// The encryption config holds the keys of Secrets at rest.
				if pki.IsKey(p) || strings.HasSuffix(p, "/"+nodeconf.EncryptionConfig) {
					want = 0o600
				}
				if fi.Mode().Perm() != want {
					t.Errorf("%s: mode %o, want %o", p, fi.Mode().Perm(), want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("apiserver and etcd certificates carry the right SANs", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(m2.Root, pki.APIServerCert))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := pki.ParseCert(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range []string{m2.IP, "127.0.0.10", "10.254.0.1"} {
			if !slices.ContainsFunc(cert.IPAddresses, func(a net.IP) bool { return a.Equal(net.ParseIP(ip)) }) {
				t.Errorf("apiserver cert of m2 lacks %s: %v", ip, cert.IPAddresses)
			}
		}
		for _, d := range []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} {
			if !slices.Contains(cert.DNSNames, d) {
				t.Errorf("apiserver cert lacks %s", d)
			}
		}
		// openssl, as an outside tool, agrees.
		out, err := exec.Command("openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", filepath.Join(m2.Root, pki.EtcdServerCrt)).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "IP Address:"+m2.IP) {
			t.Errorf("openssl sees no %s in the etcd server cert: %s", m2.IP, out)
		}
		roots := x509.NewCertPool()
		caPEM, _ := os.ReadFile(filepath.Join(m2.Root, pki.CACert))
		roots.AppendCertsFromPEM(caPEM)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "kubernetes.default.svc"}); err != nil {
			t.Errorf("apiserver cert does not verify: %v", err)
		}
	})

	t.Run("etcdctl needs a client certificate", func(t *testing.T) {
		pkiDir := filepath.Join(m1.Root, pki.Dir)
		out, err := exec.Command("etcdctl", "--endpoints="+m1.ClientURL(), "--command-timeout=2s", "--dial-timeout=2s",
			"--cacert="+filepath.Join(pkiDir, "ca.crt"), "get", "/x").CombinedOutput()
		if err == nil {
			t.Fatalf("etcdctl without a client cert succeeded: %s", out)
		}
		if _, err := c.Etcdctl(m1.ClientURL(), "put", "/secure", "yes"); err != nil {
			t.Fatalf("etcdctl with the client cert: %v", err)
		}
		plain := strings.Replace(m1.ClientURL(), "https", "http", 1)
		if out, err := exec.Command("etcdctl", "--endpoints="+plain, "--command-timeout=2s", "--dial-timeout=2s", "get", "/x").CombinedOutput(); err == nil {
			t.Fatalf("plain http to etcd succeeded: %s", out)
		}
	})

	t.Run("the CA key is sealed in etcd, not in the clear", func(t *testing.T) {
		snap := filepath.Join(t.TempDir(), "s.db")
		if out, err := exec.Command(bin, "snapshot", "save", snap, "--endpoints="+m1.ClientURL(), "--root="+m1.Root).CombinedOutput(); err != nil {
			t.Fatalf("snapshot: %v\n%s", err, out)
		}
		db, _ := os.ReadFile(snap)
		caKey, _ := os.ReadFile(filepath.Join(m1.Root, pki.CAKey))
		if bytes.Contains(db, []byte("PRIVATE KEY")) || bytes.Contains(db, caKey[40:80]) {
			t.Fatal("the snapshot holds private key material in the clear")
		}
		if !bytes.Contains(db, []byte(pki.SharedKey)) {
			t.Fatal("the snapshot lacks the sealed shared material")
		}
	})

	out, err := exec.Command(bin, "token", "show", "--root="+m1.Root).Output()
	if err != nil {
		t.Fatal(err)
	}
	pinned := strings.TrimSpace(string(out))
	if !strings.HasPrefix(pinned, "K10") || !strings.HasSuffix(pinned, "::"+testToken) {
		t.Fatalf("token show = %q", pinned)
	}

	t.Run("a minion joins with the pinned token", func(t *testing.T) {
		root := t.TempDir()
		code, log := runMinion(t, root, m2.IP, pinned)
		if code != 0 {
			t.Fatalf("minion exit %d:\n%s", code, log)
		}
		data, err := os.ReadFile(filepath.Join(root, pki.KubeletClientCert))
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := pki.ParseCert(data)
		if cert.Subject.CommonName != "system:node:minion1" || !slices.Equal(cert.Subject.Organization, []string{"system:nodes"}) {
			t.Fatalf("kubelet cert subject %v", cert.Subject)
		}
		if _, err := os.Stat(filepath.Join(root, pki.CAKey)); err == nil {
			t.Fatal("the minion received the CA key")
		}
		// A cluster made with one token has no agent token: the single token still joins
		// a minion, with a warning.
		if !strings.Contains(m2.Logs(), "joined with the single legacy token") {
			t.Fatal("m2 did not warn about the legacy token")
		}
		kc, _ := os.ReadFile(filepath.Join(root, pki.KubeletKubeconfig))
		if !strings.Contains(string(kc), "server: https://127.0.0.10:6443") {
			t.Fatal("the kubelet kubeconfig does not point at the lb")
		}
	})

	t.Run("a wrong token is refused", func(t *testing.T) {
		code, log := runMinion(t, t.TempDir(), m2.IP, "a-wrong-token-0123456789-abcdefghijk")
		if code == 0 || !strings.Contains(log, "refused the token") {
			t.Fatalf("wrong token: exit %d:\n%s", code, log)
		}
		if !strings.Contains(m2.Logs(), "join refused: wrong token") {
			t.Fatal("the master did not log the refused attempt")
		}
	})

	t.Run("a CA mismatch is refused", func(t *testing.T) {
		bogus := "K10" + strings.Repeat("0", 64) + "::" + testToken
		code, log := runMinion(t, t.TempDir(), m2.IP, bogus)
		if code == 0 || !strings.Contains(log, "cluster CA does not match the token") {
			t.Fatalf("CA mismatch: exit %d:\n%s", code, log)
		}
	})

	t.Run("certs check and renew", func(t *testing.T) {
		before, _ := os.ReadFile(filepath.Join(m1.Root, pki.EtcdServerCrt))
		out, err := exec.Command(bin, "certs", "check", "--root="+m1.Root).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "etcd-server.crt") || !strings.Contains(string(out), "admin.kubeconfig") {
			t.Fatalf("certs check: %v\n%s", err, out)
		}
		args := []string{"certs", "renew"}
		for _, a := range m1.Args()[1:] {
			if !strings.HasPrefix(a, "--log-level") {
				args = append(args, a)
			}
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("certs renew: %v\n%s", err, out)
		}
		after, _ := os.ReadFile(filepath.Join(m1.Root, pki.EtcdServerCrt))
		if bytes.Equal(before, after) {
			t.Fatal("certs renew left the etcd server cert as it was")
		}
		// etcd reloads the renewed certificate: new clients still connect.
		if _, err := c.Etcdctl(m1.ClientURL(), "get", "/secure"); err != nil {
			t.Fatalf("after renewal: %v", err)
		}
	})
}

func TestTokenBadInput(t *testing.T) {
	cases := [][]string{
		{"--role=master", "--name=m1", "--peers=m1=http://127.0.0.21:2380,m2=http://127.0.0.22:2380", "--data-dir=" + t.TempDir()},
		{"--role=master", "--name=m1", "--token=bad token", "--data-dir=" + t.TempDir()},
		{"--role=minion", "--lb=127.0.0.10"},
		{"--role=minion", "--lb=127.0.0.10", "--token=K10zz::x"},
	}
	for _, args := range cases {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if code := exitOf(err); code != 2 || !strings.Contains(string(out), "--token") || !strings.Contains(string(out), "haagent token") {
			t.Errorf("%v: exit %d, %q; want exit 2 naming --token and how to get one", args, code, out)
		}
		if strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("%v: more than one line: %q", args, out)
		}
	}
}
