// Package e2e proves haagent on the walkthrough's hosts (test/framework/sixhost): systemd test
// hosts in their own network namespaces, haagent installed from its .deb, the real
// Kubernetes 1.37.2 and flannel 0.28.10, a real registry on lb1, and real pods on the
// minions. It goes as the walkthrough does, to master1 halted and a pod created through
// the lb Running on a minion with a 172.30.x.y address; then it takes away what is in
// front of the masters: the lb holding the VIP (killed, then blackholed), and at last
// both lbs, under the minion with its own node-local lb.
package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/images"
	"github.com/haagent/haagent/test/framework/sixhost"
	"github.com/haagent/haagent/trust/pki"
)

// nginxPod is the walkthrough's manifest, verbatim.
const nginxPod = `apiVersion: v1
kind: Pod
metadata:
  name: nginx-pod
spec:
  containers:
  - name: nginx-container
    image: nginx
    ports:
    - containerPort: 80
`

// airgapImage is only in the tarball dropped on minion1, never in the registry.
const airgapImage = "haagent.test/airgap:1"

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor is await.Until for a test: it fails the test, and says how long it waited.
func waitFor(t *testing.T, ctx context.Context, what string, timeout time.Duration, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := await.Until(ctx, what, timeout, cond, await.Every(250*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// caKeyIDs are the key IDs of the CAs in the output of 'haagent certs check': the
// first field of a CA's line that is a key ID (8 hex digits).
func caKeyIDs(check string) []string {
	var ids []string
	for _, line := range strings.Split(check, "\n") {
		if !strings.Contains(line, "(CA") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if len(f) == 8 && strings.Trim(f, "0123456789abcdef") == "" {
				ids = append(ids, f)
				break
			}
		}
	}
	return ids
}

func TestWalkthrough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	hl := hosts.NewWith(t, hosts.LabOptions{Subnet: sixhost.Subnet})
	work := t.TempDir()
	deb, err := sixhost.BuildDeb(ctx, filepath.Join(work, "dist"))
	must(t, err)
	cfg := sixhost.DefaultConfig()
	cfg.Deb, cfg.WorkDir, cfg.Logf = deb, work, t.Logf
	must(t, cfg.Check())
	l, err := sixhost.Boot(ctx, hl)
	must(t, err)
	minion1, client := l.Host("minion1"), l.Host(sixhost.Client)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, h := range hl.Hosts() {
			if !h.Running() {
				continue
			}
			out, _ := h.Shell(context.Background(), "journalctl -u haagent --no-pager | tail -30; systemctl --no-pager list-units 'kube*' 'flanneld*' 'containerd*'; "+
				"for u in flanneld kube-apiserver containerd kubelet kube-proxy; do echo \"== $u\"; journalctl -u $u --no-pager | grep -v ' I[0-9]' | tail -12; done")
			t.Logf("--- %s ---\n%s", h.Name, out)
		}
	})

	// Airgap tarballs on minion1 before haagent first starts: one good, one corrupt.
	set, err := images.Build(ctx, filepath.Join(work, "airgap"))
	must(t, err)
	img, err := set.Nginx()
	must(t, err)
	// Its own image ID: the kubelet (1.35+, KubeletEnsureSecretPulledImages) asks for
	// credentials for an ID it pulled itself under another name, and it pulls nginx.
	img, err = mutate.Config(img, v1.Config{Entrypoint: []string{images.NginxPath}, Labels: map[string]string{"haagent.test/airgap": "1"}})
	must(t, err)
	tarball := filepath.Join(work, "airgap.tar")
	must(t, images.WriteTarball(img, airgapImage, tarball))
	must(t, minion1.CopyIn(tarball, "/var/lib/haagent/images/airgap.tar"))
	must(t, minion1.WriteFile("/var/lib/haagent/images/corrupt.tar", []byte("this is not a tarball"), 0o644))

	start := time.Now()
	must(t, l.Install(ctx, cfg))
	t.Logf("both minions Ready %s after haagent was installed from its .deb", time.Since(start).Round(time.Second))

	kubectl := func(args ...string) (string, error) { return l.Kubectl(ctx, args...) }
	apply := func(name, manifest string) {
		t.Helper()
		must(t, client.WriteFile("/var/tmp/"+name+".yaml", []byte(manifest), 0o644))
		waitFor(t, ctx, "kubectl create of "+name+" through the VIP", 2*time.Minute, func() error {
			out, err := kubectl("create", "-f", "/var/tmp/"+name+".yaml")
			if err != nil && strings.Contains(out, "AlreadyExists") {
				return nil
			}
			return err
		})
	}
	podIP := func(name string) string {
		out, err := kubectl("get", "pod", name, "-o", "jsonpath={.status.phase} {.status.podIP} {.spec.nodeName}")
		if err != nil {
			return ""
		}
		return out
	}
	waitRunning := func(name string, timeout time.Duration) (ip netip.Addr, node string) {
		t.Helper()
		waitFor(t, ctx, "pod "+name+" Running with an IP", timeout, func() error {
			f := strings.Fields(podIP(name))
			if len(f) != 3 || f[0] != "Running" {
				return fmt.Errorf("pod %s: %v", name, f)
			}
			ip, _ = netip.ParseAddr(f[1])
			node = f[2]
			return nil
		})
		return ip, node
	}
	flannelNet := netip.MustParsePrefix("172.30.0.0/16")

	t.Run("the minion runs on cgroup v1 and says so", func(t *testing.T) {
		out, err := minion1.Exec(ctx, "haagent", "status")
		must(t, err)
		if !strings.Contains(out, "cgroups: hybrid") && !strings.Contains(out, "cgroups: v1") {
			t.Errorf("haagent status shows no cgroup v1 mode:\n%s", out)
		}
		cfgYAML, err := minion1.ReadFile("/etc/kubernetes/kubelet-config.yaml")
		must(t, err)
		for _, want := range []string{"failCgroupV1: false", "cgroupDriver: cgroupfs", "tlsCertFile:"} {
			if !strings.Contains(string(cfgYAML), want) {
				t.Errorf("kubelet-config.yaml lacks %q", want)
			}
		}
		ctd, err := minion1.ReadFile("/etc/containerd/config.toml")
		must(t, err)
		// The lab's minions run containerd 2.4 (test/framework/sixhost), whose config is version 3.
		if !strings.Contains(string(ctd), "version = 3") || !strings.Contains(string(ctd), "SystemdCgroup = false") {
			t.Errorf("containerd config for containerd 2.4 is not version 3 with cgroupfs:\n%s", ctd)
		}
		log, _ := minion1.Shell(ctx, "journalctl -u haagent --no-pager -o cat")
		if n := strings.Count(log, "cgroup v1 controllers: the kubelet runs on them"); n != 1 {
			t.Errorf("the cgroup v1 warning appears %d times, want once", n)
		}
	})

	var nginxIP netip.Addr
	var nginxNode string
	t.Run("the walkthrough's nginx-pod Runs on a minion with a flannel address", func(t *testing.T) {
		apply("nginx-pod", nginxPod)
		d := time.Now()
		nginxIP, nginxNode = waitRunning("nginx-pod", 3*time.Minute)
		t.Logf("nginx-pod Running on %s as %s, %s after create", nginxNode, nginxIP, time.Since(d).Round(100*time.Millisecond))
		if !flannelNet.Contains(nginxIP) {
			t.Fatalf("pod IP %s is not in the flannel network %s", nginxIP, flannelNet)
		}
		// /run is a tmpfs inside the host: read it from inside.
		env, err := l.Host(nginxNode).Exec(ctx, "cat", "/"+nodeconf.FlannelSubnetEnv)
		must(t, err)
		sub, err := nodeconf.ParseSubnetEnv([]byte(env))
		must(t, err)
		if !sub.Subnet.Masked().Contains(nginxIP) {
			t.Fatalf("pod IP %s is not in %s's flannel subnet %s", nginxIP, nginxNode, sub.Subnet.Masked())
		}
	})
	if nginxNode == "" {
		t.FailNow()
	}

	t.Run("minion1 stolen: its own files, with etcdctl, curl and kubectl, get no further than a minion's role", func(t *testing.T) {
		// The attacker holds minion1's disk. The clients are the real ones, run on
		// minion1 against the addresses its components use. A minion has no etcdctl of
		// its own: the test brings the machine's.
		must(t, minion1.CopyIn("/usr/bin/etcdctl", "/var/tmp/etcdctl"))
		etcdctl := func(args string) (string, error) {
			return minion1.Shell(ctx, ". /"+nodeconf.Flanneld+" && ETCDCTL_API=3 /var/tmp/etcdctl --endpoints=\"$FLANNEL_ETCD_ENDPOINTS\" --command-timeout=5s "+
				"--cacert=/"+pki.CACert+" --cert=/"+pki.FlannelEtcdCert+" --key=/"+pki.FlannelEtcdKey+" "+args)
		}
		for _, attempt := range []string{"get --prefix --keys-only /registry/secrets/", "get --prefix --keys-only /haagent/",
			"put /haagent/vip/holder minion1", "put /registry/clusterrolebindings/evil x", "user list", "auth disable"} {
			if out, err := etcdctl(attempt); err == nil || !strings.Contains(out, "permission denied") {
				t.Errorf("etcdctl %s with the flannel certificate, through the VIP: %q, %v; want permission denied", attempt, out, err)
			}
		}
		out, err := etcdctl("get --prefix --keys-only /kube-centos/network/subnets/")
		must(t, err)
		if n := strings.Count(out, "/kube-centos/network/subnets/"); n < 2 {
			t.Errorf("want the two minions' flannel leases (and the masters'), got %d:\n%s", n, out)
		}

		// Every identity minion1 holds, at each master's etcd peer port: no handshake.
		// The same client identity at the etcd client port is the control: it does
		// complete a handshake there, so the refusal at 2380 is the peer port's.
		ids, err := minion1.Shell(ctx, `set -e; cd /var/tmp; d=/`+pki.Dir+`
for c in $d/*.crt; do k=${c%.crt}.key; [ -f "$k" ] && echo "$c $k"; done
for kc in /etc/kubernetes/*.kubeconfig; do n=$(basename $kc .kubeconfig)
  sed -n 's/^ *client-certificate-data: //p' $kc | base64 -d > $n.crt; sed -n 's/^ *client-key-data: //p' $kc | base64 -d > $n.key
  [ -s $n.crt ] && echo "/var/tmp/$n.crt /var/tmp/$n.key"; done`)
		must(t, err)
		pairs := strings.Split(strings.TrimSpace(ids), "\n")
		if len(pairs) < 3 {
			t.Fatalf("minion1 holds %d client identities, want its flannel, kubelet and kube-proxy ones at least: %q", len(pairs), ids)
		}
		t.Logf("minion1's client identities, each tried at the three peer ports: %q", pairs)
		for _, pair := range pairs {
			crt, key, _ := strings.Cut(pair, " ")
			curl := func(url string) (string, error) {
				return minion1.Exec(ctx, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
					"--cacert", "/"+pki.CACert, "--cert", crt, "--key", key, url)
			}
			for _, m := range l.Masters() {
				if out, err := curl("https://" + m.IP.String() + ":2380/members"); err == nil || strings.HasPrefix(out, "200") {
					t.Errorf("%s at %s's peer port: %q, %v; want the handshake refused", crt, m.Name, out, err)
				} else if !strings.Contains(out, "SSL") && !strings.Contains(out, "TLS") && !strings.Contains(out, "alert") {
					t.Errorf("%s at %s's peer port failed, but not at the handshake: %s", crt, m.Name, out)
				}
			}
			// The kubelet's serving certificate is from the kubelet-serving CA, which
			// no etcd port trusts.
			out, err := curl("https://" + l.Host("master2").IP.String() + ":2379/health")
			if serving := strings.HasSuffix(crt, "/"+pki.KubeletServingCert); serving && err == nil {
				t.Errorf("%s, from the kubelet-serving CA, at master2's etcd client port: %s; want it refused", crt, out)
			} else if !serving && err != nil {
				t.Errorf("control: %s at master2's etcd client port: %v\n%s", crt, err, out)
			}
		}

		// The agent token, at the join service through the VIP: no master's or lb's
		// files, and no master's name.
		env, err := minion1.ReadFile("/etc/sysconfig/haagent")
		must(t, err)
		var secret string
		for _, line := range strings.Split(string(env), "\n") {
			if v, ok := strings.CutPrefix(line, "HAAGENT_TOKEN="); ok {
				tok, err := pki.ParseToken(v)
				must(t, err)
				secret = tok.Secret
			}
		}
		if secret == "" {
			t.Fatalf("no HAAGENT_TOKEN in minion1's /etc/sysconfig/haagent:\n%s", env)
		}
		for _, req := range []string{`{"role":"master","name":"master4"}`, `{"role":"lb","name":"lb3"}`, `{"role":"minion","name":"master1"}`} {
			out, _ := minion1.Exec(ctx, "curl", "-sS", "--max-time", "5", "--cacert", "/"+pki.CACert, "-H", "Authorization: Bearer "+secret,
				"-H", "Content-Type: application/json", "-d", req, "-w", "\n%{http_code}", "https://"+sixhost.VIP.Addr().String()+":9345/v1/join")
			if !strings.HasSuffix(strings.TrimSpace(out), "403") {
				t.Errorf("a join with the agent token asking for %s: %s; want 403", req, out)
			}
		}

		// The kubelet's own kubeconfig, through the VIP: its node's business only.
		for _, attempt := range [][]string{{"get", "secrets", "-A"}, {"create", "clusterrolebinding", "evil", "--clusterrole=cluster-admin", "--user=system:node:minion1"},
			{"label", "node", "minion2", "evil=1"}} {
			out, err := minion1.Exec(ctx, append([]string{"kubectl", "--kubeconfig=/" + pki.KubeletKubeconfig, "--request-timeout=10s"}, attempt...)...)
			if err == nil || !strings.Contains(out, "Forbidden") && !strings.Contains(out, "forbidden") {
				t.Errorf("kubectl %s with minion1's kubelet kubeconfig: %v\n%s; want Forbidden", strings.Join(attempt, " "), err, out)
			}
		}
	})
	t.Run("an approved kubelet-serving CSR is signed by the kubelet-serving CA, which no client of the masters trusts", func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject:     pkix.Name{CommonName: "system:node:minion1", Organization: []string{"system:nodes"}},
			IPAddresses: []net.IP{net.ParseIP(sixhost.VIP.Addr().String())}, DNSNames: []string{"kubernetes.default.svc"},
		}, key)
		must(t, err)
		csr := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
		apply("serving-csr", `apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: serving-csr
spec:
  signerName: kubernetes.io/kubelet-serving
  usages: ["digital signature", "server auth"]
  request: `+csr+`
`)
		_, err = kubectl("certificate", "approve", "serving-csr")
		must(t, err)
		var crt *x509.Certificate
		waitFor(t, ctx, "the controller-manager to sign the approved CSR", time.Minute, func() error {
			out, err := kubectl("get", "csr", "serving-csr", "-o", "jsonpath={.status.certificate}")
			if err != nil || strings.TrimSpace(out) == "" {
				return fmt.Errorf("no certificate yet: %v", err)
			}
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
			if err != nil {
				return err
			}
			crt, err = pki.ParseCert(b)
			return err
		})
		signer, err := l.Host("master1").ReadFile("/" + pki.KubeletSignerCert)
		must(t, err)
		kubeletCA, err := pki.ParseCert(signer)
		must(t, err)
		if !bytes.Equal(crt.AuthorityKeyId, kubeletCA.SubjectKeyId) {
			t.Fatalf("the approved kubelet-serving CSR was signed by key %x, want the kubelet-serving CA's %x", crt.AuthorityKeyId, kubeletCA.SubjectKeyId)
		}
		trust, err := minion1.ReadFile("/" + pki.CACert)
		must(t, err)
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(trust)
		if _, err := crt.Verify(x509.VerifyOptions{Roots: roots, DNSName: "kubernetes.default.svc"}); err == nil {
			t.Fatalf("a client that trusts ca.crt accepts the kubelet-serving certificate for kubernetes.default.svc")
		}
	})

	other := "minion1"
	if nginxNode == "minion1" {
		other = "minion2"
	}

	t.Run("a pod on the other minion reaches it over the overlay", func(t *testing.T) {
		apply("client", `apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: `+other+`
  containers:
  - name: c
    image: nginx
`)
		ip, node := waitRunning("client", 3*time.Minute)
		if node != other {
			t.Fatalf("client on %s, want %s", node, other)
		}
		if !flannelNet.Contains(ip) {
			t.Fatalf("client IP %s not in %s", ip, flannelNet)
		}
		waitFor(t, ctx, "client to fetch nginx-pod's page across minions", time.Minute, func() error {
			out, err := kubectl("exec", "client", "--", "/nginx", "-get", "http://"+nginxIP.String()+"/")
			if err != nil || !strings.Contains(out, "Welcome to nginx!") {
				return fmt.Errorf("%q %v", out, err)
			}
			return nil
		})
	})

	t.Run("a ClusterIP Service answers from both minions and from a pod", func(t *testing.T) {
		_, err := kubectl("label", "pod", "nginx-pod", "app=nginx", "--overwrite")
		must(t, err)
		_, err = kubectl("expose", "pod", "nginx-pod", "--name=nginx", "--port=80")
		must(t, err)
		out, err := kubectl("get", "service", "nginx", "-o", "jsonpath={.spec.clusterIP}")
		must(t, err)
		cip := strings.TrimSpace(out)
		for _, m := range l.Minions() {
			waitFor(t, ctx, "the Service "+cip+" from "+m.Name, time.Minute, func() error {
				out, err := m.Exec(ctx, "curl", "-sS", "--max-time", "3", "http://"+cip+"/")
				if err != nil || !strings.Contains(out, "Welcome to nginx!") {
					return fmt.Errorf("%q %v", out, err)
				}
				return nil
			})
		}
		waitFor(t, ctx, "the Service from the client pod", time.Minute, func() error {
			out, err := kubectl("exec", "client", "--", "/nginx", "-get", "http://"+cip+"/healthz")
			if err != nil || strings.TrimSpace(out) != "ok" {
				return fmt.Errorf("%q %v", out, err)
			}
			return nil
		})
	})

	w := walk{ctx: ctx, l: l, apply: apply, waitRunning: waitRunning}
	dnsPods := []string{"nginx-pod", "client"} // one on each minion
	t.Run("cluster DNS: CoreDNS, a built-in add-on, runs on both minions, and pods on both resolve the API and a Service by name", func(t *testing.T) {
		out, err := kubectl("get", "service", "nginx", "-o", "jsonpath={.spec.clusterIP}")
		must(t, err)
		w.clusterDNS(t, dnsPods, "nginx", strings.TrimSpace(out))
	})

	t.Run("add-ons: put on one master, applied cluster-wide, pruned, refusals reported by name, deleted with their objects", func(t *testing.T) {
		w.addonsLifecycle(t)
	})

	t.Run("an admission webhook served by a pod on a minion denies a pod", func(t *testing.T) {
		w.admissionWebhook(t)
	})

	t.Run("NetworkPolicy: default-deny blocks pod-to-pod traffic across minions, an allow rule opens it for one client", func(t *testing.T) {
		w.networkPolicy(t, "minion1", "minion2")
	})

	t.Run("Kubernetes' own conformance specs for DNS, Services, a Deployment rollout, a webhook and NetworkPolicy pass through the VIP", func(t *testing.T) {
		w.conformanceSubset(t)
	})

	t.Run("kubectl logs, exec and port-forward through the VIP", func(t *testing.T) {
		out, err := kubectl("logs", "nginx-pod")
		must(t, err)
		if !strings.Contains(out, "GET /") {
			t.Errorf("kubectl logs nginx-pod shows no request:\n%s", out)
		}
		out, err = kubectl("exec", "nginx-pod", "--", "/nginx", "-get", "http://127.0.0.1/healthz")
		if err != nil || strings.TrimSpace(out) != "ok" {
			t.Errorf("kubectl exec: %q %v", out, err)
		}
		// port-forward stays in the foreground: run it beside a bounded wait for its
		// local port to answer, in one shell.
		out, err = client.Shell(ctx, `kubectl --kubeconfig=/root/.kube/config port-forward pod/nginx-pod 18080:80 >/var/tmp/pf.log 2>&1 & pf=$!
for i in $(seq 100); do if curl -sf --max-time 1 http://127.0.0.1:18080/healthz; then kill $pf; exit 0; fi; sleep 0.1; done
kill $pf; cat /var/tmp/pf.log; exit 1`)
		if err != nil || strings.TrimSpace(out) != "ok" {
			t.Errorf("kubectl port-forward: %q %v", out, err)
		}
	})

	t.Run("haagent upgrade plan reads every node's versions, and refuses a skipped minor with exit 2", func(t *testing.T) {
		m3 := l.Host("master3")
		out, err := m3.Exec(ctx, "haagent", "upgrade", "plan")
		must(t, err)
		for _, want := range []string{"master1  master  kube-apiserver", "minion2  minion  kubelet", "Nothing to upgrade"} {
			if !strings.Contains(out, want) {
				t.Errorf("haagent upgrade plan on master3: no %q in\n%s", want, out)
			}
		}
		if strings.Contains(out, "warning:") {
			t.Errorf("haagent upgrade plan with every master up warns:\n%s", out)
		}
		out, err = m3.Exec(ctx, "haagent", "upgrade", "plan", "--to", "v1.39.0")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, "skips a minor") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("haagent upgrade plan --to v1.39.0: want exit 2 and one line saying it skips a minor, got %v:\n%s", err, out)
		}
	})

	t.Run("airgap tarballs are imported; a corrupt one is logged", func(t *testing.T) {
		waitFor(t, ctx, "the airgap image in minion1's containerd", time.Minute, func() error {
			out, err := minion1.Exec(ctx, "ctr", "-n", "k8s.io", "images", "ls", "-q")
			if err != nil || !strings.Contains(out, airgapImage) {
				return fmt.Errorf("images: %q %v", out, err)
			}
			return nil
		})
		log, _ := minion1.Shell(ctx, "journalctl -u haagent --no-pager -o cat")
		if !strings.Contains(log, "corrupt.tar") || !strings.Contains(log, "airgap image tarball not imported") {
			t.Errorf("no error logged for corrupt.tar")
		}
		apply("airgap", `apiVersion: v1
kind: Pod
metadata:
  name: airgap
spec:
  nodeName: minion1
  containers:
  - name: c
    image: `+airgapImage+`
    imagePullPolicy: Never
`)
		waitRunning("airgap", 2*time.Minute)
	})

	t.Run("a stopped unit is brought back", func(t *testing.T) {
		m2 := l.Host("master2")
		_, err := m2.Exec(ctx, "systemctl", "stop", "kube-scheduler")
		must(t, err)
		d := waitFor(t, ctx, "haagent to restart kube-scheduler on master2", time.Minute, func() error {
			out, err := m2.Exec(ctx, "systemctl", "is-active", "kube-scheduler")
			if err != nil {
				return fmt.Errorf("%s", strings.TrimSpace(out))
			}
			return nil
		})
		t.Logf("kube-scheduler back %s after systemctl stop", d.Round(100*time.Millisecond))
	})

	t.Run("a hand edit is reverted with a backup", func(t *testing.T) {
		m3 := l.Host("master3")
		_, err := m3.Shell(ctx, `echo 'KUBE_API_ARGS="--hand-edit"' >> /etc/kubernetes/apiserver`)
		must(t, err)
		waitFor(t, ctx, "haagent to revert /etc/kubernetes/apiserver on master3", time.Minute, func() error {
			cur, err := m3.ReadFile("/etc/kubernetes/apiserver")
			if err != nil || strings.Contains(string(cur), "--hand-edit") {
				return fmt.Errorf("not reverted yet")
			}
			bak, err := m3.ReadFile("/etc/kubernetes/apiserver.haagent-bak")
			if err != nil || !strings.Contains(string(bak), "--hand-edit") {
				return fmt.Errorf("no backup with the edit: %v", err)
			}
			return nil
		})
		waitFor(t, ctx, "kube-apiserver on master3 active after the revert", 3*time.Minute, func() error {
			out, err := m3.Exec(ctx, "systemctl", "is-active", "kube-apiserver")
			if err != nil {
				return fmt.Errorf("%s", strings.TrimSpace(out))
			}
			return nil
		})
	})

	// Before master1 halts: a rotation waits for every master's apiserver, so that none
	// comes back unable to read the Secrets.
	t.Run("Secrets are encrypted at rest, a key rotation re-encrypts them, and the audit log has no bodies", func(t *testing.T) {
		const plaintext = "haagent-at-rest-canary"
		m1 := l.Host("master1")
		_, err := kubectl("create", "secret", "generic", "at-rest", "--from-literal=password="+plaintext)
		must(t, err)
		// The last step of a rotation restarts every apiserver: the lb may not have
		// seen them back yet.
		readBack := func() {
			t.Helper()
			waitFor(t, ctx, "kubectl to read the Secret back", time.Minute, func() error {
				out, err := kubectl("get", "secret", "at-rest", "-o", "jsonpath={.data.password}")
				if err != nil {
					return err
				}
				if got, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(out)); string(got) != plaintext {
					return fmt.Errorf("kubectl reads the Secret back as %q, want %q", got, plaintext)
				}
				return nil
			})
		}
		raw := func(key string) {
			t.Helper()
			out, err := m1.Exec(ctx, "etcdctl", "--endpoints=https://127.0.0.1:2379", "--cacert=/"+pki.CACert,
				"--cert=/"+pki.EtcdClientCert, "--key=/"+pki.EtcdClientKey, "get", "/registry/secrets/default/at-rest", "--print-value-only")
			must(t, err)
			if want := "k8s:enc:secretbox:v1:" + key + ":"; !strings.HasPrefix(out, want) || strings.Contains(out, plaintext) {
				t.Fatalf("the Secret in etcd starts %q, want %q and no plaintext", out[:min(len(out), 40)], want)
			}
		}
		readBack()
		raw("key1")

		d := time.Now()
		out, err := m1.Shell(ctx, "haagent secrets rotate-key 2>&1")
		t.Logf("haagent secrets rotate-key on master1, %s:\n%s", time.Since(d).Round(100*time.Millisecond), out)
		must(t, err)
		for _, step := range []string{"[add]", "[promote]", "[rewrite]", "[remove]", "[done]"} {
			if !strings.Contains(out, step) {
				t.Errorf("the rotation did not log its %s step", step)
			}
		}
		raw("key2")
		readBack()
		for _, m := range l.Masters() {
			cfg, err := m.ReadFile("/" + nodeconf.EncryptionConfig)
			must(t, err)
			if !strings.Contains(string(cfg), "name: key2") || strings.Contains(string(cfg), "name: key1") {
				t.Errorf("%s's encryption config still has key1 or lacks key2:\n%s", m.Name, cfg)
			}
		}

		// The create went through one of the apiservers; each writes its own log.
		var created bool
		for _, m := range l.Masters() {
			log, err := m.ReadFile(nodeconf.AuditLog)
			if err != nil {
				t.Errorf("%s has no audit log: %v", m.Name, err)
				continue
			}
			if strings.Contains(string(log), plaintext) || strings.Contains(string(log), base64.StdEncoding.EncodeToString([]byte(plaintext))) {
				t.Errorf("%s's audit log holds the Secret's data", m.Name)
			}
			for _, line := range strings.Split(string(log), "\n") {
				if strings.Contains(line, `"verb":"create"`) && strings.Contains(line, `"resource":"secrets"`) &&
					strings.Contains(line, `"name":"at-rest"`) && strings.Contains(line, `"level":"Metadata"`) {
					created = true
				}
			}
		}
		if !created {
			t.Errorf("no apiserver's audit log has the Secret's create at Metadata level")
		}
	})

	// Before master1 halts: a rotation waits for every master, lb and minion.
	t.Run("the cluster CA is rotated while kubectl reads through the VIP, and no request fails", func(t *testing.T) {
		m1 := l.Host("master1")
		before, err := m1.Exec(ctx, "haagent", "certs", "check")
		must(t, err)
		oldCAs := caKeyIDs(before)
		if len(oldCAs) < 3 {
			t.Fatalf("certs check on master1 lists %d CAs, want the cluster CA and the two derived from it:\n%s", len(oldCAs), before)
		}

		// The readers are operators who copy master1's admin kubeconfig before each
		// request: it trusts both CAs from the trust phase on, and its client
		// certificate comes from the CA that signs. One kubectl per request, each on a
		// new connection through the VIP, to whichever apiserver the lb picks; three
		// readers, so that every apiserver restart meets requests.
		var mu sync.Mutex
		var reads int
		var slowest time.Duration
		var failures []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 3 {
			kc := fmt.Sprintf("/var/tmp/rotating-%d.kubeconfig", i)
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					admin, err := m1.ReadFile("/etc/kubernetes/admin.kubeconfig")
					if err == nil {
						err = client.WriteFile(kc, admin, 0o600)
					}
					at := time.Now()
					var out string
					if err == nil {
						// A bound, where kubectl's default has none: a read slower than 30 s
						// counts as failed. A CI machine that runs the lab at a third of
						// this one's speed makes reads of several seconds.
						out, err = client.Exec(ctx, "kubectl", "--kubeconfig="+kc, "--request-timeout=30s", "get", "pod", "nginx-pod", "-o", "jsonpath={.status.phase}")
					}
					took := time.Since(at)
					mu.Lock()
					if err != nil || out != "Running" {
						failures = append(failures, fmt.Sprintf("%s (after %s): %q %v", at.Format("15:04:05.000"), took.Round(time.Millisecond), out, err))
					}
					reads++
					slowest = max(slowest, took)
					mu.Unlock()
				}
			})
		}
		d := time.Now()
		out, err := l.RotateCA(ctx, 5*time.Minute)
		took := time.Since(d)
		close(stop)
		wg.Wait()
		t.Logf("haagent certs rotate-ca on master1, %s:\n%s", took.Round(time.Second), out)
		must(t, err)
		for _, phase := range []string{"[trust]", "[reissue]", "[drop]", "[done]"} {
			if !strings.Contains(out, phase) {
				t.Errorf("the rotation did not log its %s phase", phase)
			}
		}
		if len(failures) > 0 || reads < 10 {
			// The failures first: CI keeps the head and the tail of a long output, and
			// the journals below run to hundreds of lines.
			t.Errorf("%d of %d reads through the VIP failed during the rotation:\n%s", len(failures), reads, strings.Join(failures, "\n"))
			for _, s := range sixhost.Specs {
				if s.Role == sixhost.RoleMinion {
					continue
				}
				log, _ := l.Host(s.Name).Shell(ctx, fmt.Sprintf("journalctl --since=@%d -u haagent -u kube-apiserver -o short-precise --no-pager | grep -v ' I[0-9]' | tail -100", d.Unix()))
				t.Logf("--- %s during the rotation ---\n%s", s.Name, log)
			}
			t.FailNow()
		}
		t.Logf("%d reads through the VIP during the rotation, none failed; the slowest took %s", reads, slowest.Round(time.Millisecond))

		// No host holds a certificate of the old CAs, or one signed by them.
		for _, s := range sixhost.Specs {
			h := l.Host(s.Name)
			out, err := h.Exec(ctx, "haagent", "certs", "check")
			must(t, err)
			for _, id := range oldCAs {
				if strings.Contains(out, id) {
					t.Errorf("%s still holds the old CA %s, or a certificate it signed:\n%s", s.Name, id, out)
				}
			}
		}
		// What runs through the new certificates: the kubelets (Ready, serving logs
		// to the apiserver through the new kubelet-serving CA), and a new pod.
		must(t, l.WaitNodesReady(ctx, 2*time.Minute))
		waitFor(t, ctx, "kubectl logs of nginx-pod through the VIP", time.Minute, func() error {
			_, err := kubectl("logs", "nginx-pod")
			return err
		})
		apply("after-rotation", strings.Replace(nginxPod, "name: nginx-pod", "name: after-rotation", 1))
		ip, node := waitRunning("after-rotation", 3*time.Minute)
		if !flannelNet.Contains(ip) {
			t.Fatalf("pod IP %s not in %s", ip, flannelNet)
		}
		t.Logf("after the rotation: a new pod Runs on %s as %s", node, ip)
	})

	t.Run("master1 halted: a new pod through the lb reaches Running", func(t *testing.T) {
		// The hard case of the walkthrough's step: master1 leads etcd when it halts. The
		// create comes once etcd has had time to elect (2 s), and it is the user's own:
		// one plain kubectl create through the VIP, default settings, no retry.
		must(t, l.MoveLeader(ctx, "master1"))
		must(t, client.WriteFile("/var/tmp/after-master1.yaml", []byte(strings.Replace(nginxPod, "name: nginx-pod", "name: after-master1", 1)), 0o644))
		must(t, l.Host("master1").Kill())
		start := time.Now()
		time.Sleep(2 * time.Second) // the step's schedule, not a wait for a condition
		cmd := l.KubectlCommand(ctx, "create", "-f", "/var/tmp/after-master1.yaml")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl create through the VIP %s after master1 (the etcd leader) halted: %v\n%s",
				time.Since(start).Round(time.Millisecond), err, out)
		}
		created := time.Since(start)
		ip, node := waitRunning("after-master1", 3*time.Minute)
		if !flannelNet.Contains(ip) {
			t.Fatalf("pod IP %s not in %s", ip, flannelNet)
		}
		t.Logf("after master1 was killed: created through the VIP after %s, Running on %s as %s after %s",
			created.Round(100*time.Millisecond), node, ip, time.Since(start).Round(100*time.Millisecond))
		nodes, err := kubectl("get", "nodes")
		must(t, err)
		t.Logf("nodes:\n%s", nodes)
	})

	t.Run("master1 halted: a new Service resolves on both minions, the webhook still denies, an add-on is applied", func(t *testing.T) {
		w.afterMaster1(t, dnsPods)
	})

	w.noSPOF(t)
}
