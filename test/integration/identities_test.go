package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/trust/pki"
)

// etcdIdentities is what each etcd identity may do, as the README's table of etcd users
// says: by certificate CN, the prefixes it may read ("r") or read and write ("rw").
// Every other prefix of etcdIdentityPrefixes must be refused.
var etcdIdentities = []struct {
	cn  string
	may map[string]string
}{
	{"haagent", map[string]string{"/registry/": "rw", "compact_rev_key": "rw", "/haagent/": "rw", "/haagent/vip/": "rw",
		"/kube-centos/network/": "rw", "/kube-centos/network/subnets/": "rw"}},
	{"kube-apiserver-etcd-client", map[string]string{"/registry/": "rw"}},
	{"flannel", map[string]string{"/kube-centos/network/": "r", "/kube-centos/network/subnets/": "rw"}},
	// The shared lb name of lbs joined before lbs were bound: no role any more. Each lb's
	// own user, haagent-lb:<name>, exists once its join made it: TestLBsAreBoundByName
	// checks it with a real lb's certificate (read/write /haagent/vip/ only).
	{"haagent-lb", nil},
	// Certificates of the cluster CA whose CN is no etcd user: a minion's kubelet and
	// kube-proxy.
	{"system:node:minion1", nil},
	{"system:kube-proxy", nil},
}

// etcdIdentityPrefixes are the prefixes the table covers; "compact_rev_key" is one key.
var etcdIdentityPrefixes = []string{"/registry/", "compact_rev_key", "/haagent/", "/haagent/vip/", "/kube-centos/network/", "/kube-centos/network/subnets/"}

// TestEtcdIdentities checks the table above against a real etcd: a secure master, with
// Debian's etcdctl as the client, one certificate of the cluster CA per identity.
func TestEtcdIdentities(t *testing.T) {
	c := newCluster(t)
	c.Masters = c.Masters[:1]
	for _, m := range c.Masters {
		m.Extra = []string{"--peers=m1=http://127.0.0.21:2380"}
	}
	startReady(t, c)
	m := c.Masters[0]
	caPEM, err := os.ReadFile(filepath.Join(m.Root, pki.CACert))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(m.Root, pki.CAKey))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(caPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, id := range etcdIdentities {
		t.Run(id.cn, func(t *testing.T) {
			certPEM, idKeyPEM, err := ca.Issue(pki.LeafSpec{CommonName: id.cn, Client: true}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			name := strings.NewReplacer(":", "_").Replace(id.cn)
			certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
			if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, idKeyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, prefix := range etcdIdentityPrefixes {
				key := prefix
				if strings.HasSuffix(prefix, "/") {
					key += "identity-test"
				}
				may := id.may[prefix]
				for _, op := range []struct {
					args    []string
					allowed bool
				}{
					{[]string{"put", key, "x"}, may == "rw"},
					{[]string{"get", key}, may == "r" || may == "rw"},
				} {
					out, err := etcdctlAs(m, certFile, keyFile, op.args...)
					switch {
					case op.allowed && err != nil:
						t.Errorf("%s: etcdctl %s: %v, want it allowed", id.cn, strings.Join(op.args, " "), err)
					case !op.allowed && (err == nil || !strings.Contains(err.Error(), "permission denied")):
						t.Errorf("%s: etcdctl %s: %q, %v; want permission denied", id.cn, strings.Join(op.args, " "), out, err)
					}
				}
			}
		})
	}
}
