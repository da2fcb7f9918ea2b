package e2e

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/cluster/addons"
	"github.com/haagent/haagent/test/framework/sixhost"
)

// kubeServiceIP is the kubernetes Service's ClusterIP: the first of the lab's default
// service range, 10.254.0.0/16.
const kubeServiceIP = "10.254.0.1"

// resolves waits until pod resolves name to want, with the pod's own resolv.conf.
func (w walk) resolves(t *testing.T, pod, name, want string, timeout time.Duration) {
	t.Helper()
	waitFor(t, w.ctx, "pod "+pod+" to resolve "+name+" to "+want, timeout, func() error {
		out, err := w.l.Kubectl(w.ctx, "exec", pod, "--", "/nginx", "-lookup", name)
		if err != nil || strings.TrimSpace(out) != want {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
}

// clusterDNS: CoreDNS is applied by a master as a built-in add-on, runs two replicas on
// both minions, and pods on both minions resolve names through it.
func (w walk) clusterDNS(t *testing.T, pods []string, service, serviceIP string) {
	kubectl := func(args ...string) (string, error) { return w.l.Kubectl(w.ctx, args...) }
	var out string
	waitFor(t, w.ctx, "CoreDNS's 2 replicas ready, its rollout done and its old pods gone", 4*time.Minute, func() error {
		var err error
		out, err = kubectl("-n", "kube-system", "get", "deployment", "coredns", "-o",
			"jsonpath={.status.readyReplicas}/{.status.updatedReplicas}/{.status.replicas}")
		if err != nil || strings.TrimSpace(out) != "2/2/2" {
			return fmt.Errorf("ready/updated/all replicas %q %v", out, err)
		}
		out, err = kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "jsonpath={.items[*].spec.nodeName}")
		if err != nil || len(strings.Fields(out)) != 2 {
			return fmt.Errorf("pods on %q %v", out, err)
		}
		return nil
	})
	if nodes := strings.Fields(out); nodes[0] == nodes[1] {
		t.Errorf("CoreDNS's pods are on %q, want one on each minion", out)
	}
	out, err := kubectl("-n", "kube-system", "get", "deployment", "coredns", "-o",
		"jsonpath={.metadata.managedFields[*].manager} {.metadata.labels."+strings.ReplaceAll(addons.NameLabel, ".", `\.`)+"}")
	must(t, err)
	if !strings.Contains(out, addons.FieldManager) || !strings.HasSuffix(strings.TrimSpace(out), addons.CoreDNS) {
		t.Errorf("coredns's managers and add-on label: %q, want field manager %q and label %s", out, addons.FieldManager, addons.CoreDNS)
	}
	out, err = kubectl("-n", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil || strings.TrimSpace(out) != "10.254.0.10" {
		t.Errorf("kube-dns's ClusterIP: %q %v, want 10.254.0.10 (the kubelets' clusterDNS)", out, err)
	}
	// The operator's own DNS settings, which haagent never writes: checked after
	// master1 halts (afterMaster1), once the kubelets have synced the volume.
	w.apply("coredns-custom", `apiVersion: v1
kind: ConfigMap
metadata: {name: `+addons.CoreDNSCustom+`, namespace: kube-system}
data:
  lab.server: |
    haagent.test:53 {
        hosts {
            10.9.9.9 custom.haagent.test
        }
    }
`)
	for _, pod := range pods {
		w.resolves(t, pod, "kubernetes.default", kubeServiceIP, time.Minute)
		w.resolves(t, pod, service, serviceIP, time.Minute)
		w.resolves(t, pod, service+".default.svc.cluster.local", serviceIP, time.Minute)
		out, err := kubectl("exec", pod, "--", "/nginx", "-get", "http://"+service+"/healthz")
		if err != nil || strings.TrimSpace(out) != "ok" {
			t.Errorf("pod %s fetching http://%s/healthz by name: %q %v", pod, service, out, err)
		}
	}
	out, err = w.l.Host("master2").Exec(w.ctx, "haagent", "status")
	must(t, err)
	if !regexpLine(out, `^coredns\s+builtin\s+Applied\s+7\s`) {
		t.Errorf("haagent status on master2 does not show coredns applied with its 7 objects:\n%s", out)
	}
}

// regexpLine says whether a line of out matches the pattern.
func regexpLine(out, pattern string) bool {
	for _, l := range strings.Split(out, "\n") {
		if regexp.MustCompile(pattern).MatchString(l) {
			return true
		}
	}
	return false
}

// addonsLifecycle: a manifest put on one master is applied cluster-wide with haagent's
// field manager; a new version deletes what it no longer holds; one the server refuses
// is reported with its name and the server's error while the others still apply; a
// broken file is refused at once; deleting an add-on deletes its objects.
func (w walk) addonsLifecycle(t *testing.T) {
	m2, m3 := w.l.Host("master2"), w.l.Host("master3")
	kubectl := func(args ...string) (string, error) { return w.l.Kubectl(w.ctx, args...) }
	put := func(name, manifest string) (string, error) {
		must(t, m2.WriteFile("/var/tmp/"+name+".yaml", []byte(manifest), 0o644))
		return m2.Exec(w.ctx, "haagent", "addons", "put", name, "/var/tmp/"+name+".yaml")
	}
	v1 := `apiVersion: v1
kind: Namespace
metadata: {name: addon-demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: first, namespace: addon-demo}
data: {v: "1"}
`
	start := time.Now()
	out, err := put("demo", v1)
	if err != nil {
		t.Fatalf("haagent addons put demo on master2: %v\n%s", err, out)
	}
	t.Logf("add-on put on master2 and applied in %s:\n%s", time.Since(start).Round(100*time.Millisecond), out)
	out, err = kubectl("-n", "addon-demo", "get", "configmap", "first", "-o", "jsonpath={.metadata.managedFields[*].manager}")
	if err != nil || !strings.Contains(out, addons.FieldManager) {
		t.Fatalf("ConfigMap first through the VIP: %q %v, want it managed by %q", out, err, addons.FieldManager)
	}

	// Version 2 drops first and adds second: first is deleted.
	v2 := strings.Replace(v1, "name: first", "name: second", 1)
	if out, err := put("demo", v2); err != nil {
		t.Fatalf("put demo v2: %v\n%s", err, out)
	}
	if out, err := kubectl("-n", "addon-demo", "get", "configmap", "second"); err != nil {
		t.Errorf("ConfigMap second: %v\n%s", err, out)
	}
	waitFor(t, w.ctx, "ConfigMap first, which demo v2 no longer holds, to be deleted", 30*time.Second, func() error {
		out, err := kubectl("-n", "addon-demo", "get", "configmap", "first")
		if err == nil || !strings.Contains(out, "NotFound") {
			return fmt.Errorf("still there: %q %v", out, err)
		}
		return nil
	})

	// The server refuses one object: the add-on is Failed with the server's message; its
	// valid object is applied, and demo is untouched.
	out, err = put("refused", `apiVersion: v1
kind: ConfigMap
metadata: {name: valid-one, namespace: addon-demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: Not_A_Valid_Name, namespace: addon-demo}
`)
	if err == nil {
		t.Fatalf("put of a manifest the server refuses succeeded:\n%s", out)
	}
	if !strings.Contains(out, "Failed") || !strings.Contains(out, "Not_A_Valid_Name") {
		t.Errorf("put's report names neither the state nor the object:\n%s", out)
	}
	if out, err := kubectl("-n", "addon-demo", "get", "configmap", "valid-one"); err != nil {
		t.Errorf("the refused add-on's valid object was not applied: %v\n%s", err, out)
	}
	st, err := m3.Exec(w.ctx, "haagent", "status")
	must(t, err)
	if !strings.Contains(st, "add-on refused: ConfigMap addon-demo/Not_A_Valid_Name:") || !strings.Contains(st, "is invalid") {
		t.Errorf("haagent status on master3 does not report the refused object with the server's error:\n%s", st)
	}
	if !regexpLine(st, `^demo\s+manifest\s+Applied\s+2\s`) || !regexpLine(st, `^coredns\s+builtin\s+Applied\s`) {
		t.Errorf("haagent status on master3: demo and coredns should still be Applied:\n%s", st)
	}

	// A file that does not parse is refused before it is stored, naming the file.
	must(t, m2.WriteFile("/var/tmp/broken.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: [\n"), 0o644))
	out, err = m2.Shell(w.ctx, "haagent addons put broken /var/tmp/broken.yaml; echo rc=$?")
	must(t, err)
	if !strings.Contains(out, "rc=2") || !strings.Contains(out, "/var/tmp/broken.yaml") {
		t.Errorf("put of a broken file: want exit 2 naming the file, got:\n%s", out)
	}

	// Deleting the add-ons deletes their objects, the namespace with them.
	for _, name := range []string{"refused", "demo"} {
		if out, err := m3.Exec(w.ctx, "haagent", "addons", "delete", name); err != nil {
			t.Fatalf("haagent addons delete %s on master3: %v\n%s", name, err, out)
		}
	}
	waitFor(t, w.ctx, "namespace addon-demo to be deleted with add-on demo", 2*time.Minute, func() error {
		out, err := kubectl("get", "namespace", "addon-demo")
		if err == nil || !strings.Contains(out, "NotFound") {
			return fmt.Errorf("still there: %q %v", out, err)
		}
		return nil
	})
	waitFor(t, w.ctx, "the deleted add-ons to leave haagent addons list", 30*time.Second, func() error {
		out, err := m2.Exec(w.ctx, "haagent", "addons", "list")
		if err != nil || strings.Contains(out, "demo") || strings.Contains(out, "refused") || !strings.Contains(out, "coredns") {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
}

// webhookManifest runs the lab's webhook on a minion behind Service deny; pods labelled
// haagent.test/webhook go through it, and it denies those also labelled haagent.test/deny.
const webhookManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: deny}
spec:
  replicas: 1
  selector: {matchLabels: {app: deny}}
  template:
    metadata: {labels: {app: deny}}
    spec:
      containers:
      - name: webhook
        image: webhook:e2e
        args: [-dns-name=deny.default.svc]
        ports: [{containerPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: deny}
spec:
  selector: {app: deny}
  ports: [{port: 443, targetPort: 8443}]
`

// webhookPod is a pod the webhook sees, denied when deny is set.
func webhookPod(name string, deny bool) string {
	labels := "haagent.test/webhook: \"on\""
	if deny {
		labels += ", haagent.test/deny: \"yes\""
	}
	return strings.Replace(localPod(name, ""), "  name: "+name+"\n", "  name: "+name+"\n  labels: {"+labels+"}\n", 1)
}

// admissionWebhook: the apiservers on the masters, which run no kube-proxy, reach a
// webhook served by a pod on a minion (at its endpoint, over flannel), and it denies a
// pod.
func (w walk) admissionWebhook(t *testing.T) {
	kubectl := func(args ...string) (string, error) { return w.l.Kubectl(w.ctx, args...) }
	w.apply("deny-webhook", webhookManifest)
	var caPEM string
	waitFor(t, w.ctx, "the webhook's certificate in its log", 3*time.Minute, func() error {
		out, err := kubectl("logs", "deployment/deny")
		if err != nil || !strings.Contains(out, "-----END CERTIFICATE-----") {
			return fmt.Errorf("%q %v", out, err)
		}
		caPEM = out[:strings.Index(out, "-----END CERTIFICATE-----")+len("-----END CERTIFICATE-----")+1]
		return nil
	})
	w.apply("deny-config", `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: deny}
webhooks:
- name: deny.haagent.test
  objectSelector: {matchExpressions: [{key: haagent.test/webhook, operator: Exists}]}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
  clientConfig:
    service: {namespace: default, name: deny, path: /validate}
    caBundle: `+base64.StdEncoding.EncodeToString([]byte(caPEM))+`
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
`)
	w.webhookDenies(t, "wh-allowed", "wh-denied")
}

// webhookDenies creates a pod the webhook allows, which proves the apiserver reached it
// (its failurePolicy is Fail), and one it denies.
func (w walk) webhookDenies(t *testing.T, allowed, denied string) {
	client := w.l.Host(sixhost.Client)
	must(t, client.WriteFile("/var/tmp/"+allowed+".yaml", []byte(webhookPod(allowed, false)), 0o644))
	must(t, client.WriteFile("/var/tmp/"+denied+".yaml", []byte(webhookPod(denied, true)), 0o644))
	waitFor(t, w.ctx, "pod "+allowed+" created through the webhook", 2*time.Minute, func() error {
		out, err := w.l.Kubectl(w.ctx, "create", "-f", "/var/tmp/"+allowed+".yaml")
		if err != nil && !strings.Contains(out, "AlreadyExists") {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	out, err := w.l.Kubectl(w.ctx, "create", "-f", "/var/tmp/"+denied+".yaml")
	if err == nil || !strings.Contains(out, "denied by the lab's webhook") {
		t.Errorf("pod %s: want it denied by the webhook, got %v:\n%s", denied, err, out)
	}
}

// afterMaster1: with master1 halted, CoreDNS still follows the API (a new Service
// resolves from pods on both minions) and serves the operator's coredns-custom, the
// apiservers left still reach the webhook, and a master left applies an add-on put on
// master3.
func (w walk) afterMaster1(t *testing.T, pods []string) {
	kubectl := func(args ...string) (string, error) { return w.l.Kubectl(w.ctx, args...) }
	waitFor(t, w.ctx, "kubectl expose through the VIP", time.Minute, func() error {
		out, err := kubectl("expose", "pod", "nginx-pod", "--name=late", "--port=80")
		if err != nil && !strings.Contains(out, "AlreadyExists") {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	out, err := kubectl("get", "service", "late", "-o", "jsonpath={.spec.clusterIP}")
	must(t, err)
	for _, pod := range pods {
		w.resolves(t, pod, "late", strings.TrimSpace(out), time.Minute)
	}
	// The coredns-custom server put before the CA rotation and master1's halt, through
	// which haagent applied CoreDNS again and rolled its pods.
	w.resolves(t, pods[0], "custom.haagent.test", "10.9.9.9", 2*time.Minute)
	w.webhookDenies(t, "wh-allowed-2", "wh-denied-2")
	m3 := w.l.Host("master3")
	must(t, m3.WriteFile("/var/tmp/after.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after-master1}\n"), 0o644))
	out, err = m3.Exec(w.ctx, "haagent", "addons", "put", "after-master1", "/var/tmp/after.yaml")
	if err != nil {
		t.Fatalf("haagent addons put on master3 after master1 halted: %v\n%s", err, out)
	}
	if !regexpLine(out, `^after-master1\s+manifest\s+Applied\s+1\s.*master[23]\s*$`) {
		t.Errorf("the add-on put after master1 halted was not applied by master2 or master3:\n%s", out)
	}
}

// networkPolicy: a default-deny policy in a namespace blocks a pod on one minion from a
// pod on the other, over the vxlan overlay, and an allow rule for the client opens it
// again, on the allowed port only.
func (w walk) networkPolicy(t *testing.T, serverNode, clientNode string) {
	kubectl := func(args ...string) (string, error) { return w.l.Kubectl(w.ctx, args...) }
	pod := func(name, node, app string) string {
		return `apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: np, labels: {app: ` + app + `}}
spec:
  nodeSelector: {kubernetes.io/hostname: ` + node + `}
  containers:
  - {name: nginx, image: nginx, imagePullPolicy: IfNotPresent, ports: [{name: http, containerPort: 80}]}
`
	}
	w.apply("np-namespace", "apiVersion: v1\nkind: Namespace\nmetadata: {name: np}\n")
	w.apply("np-server", pod("server", serverNode, "server"))
	w.apply("np-client", pod("client", clientNode, "client"))
	w.apply("np-stranger", pod("stranger", clientNode, "stranger"))
	var serverIP string
	waitFor(t, w.ctx, "the np pods Running", 3*time.Minute, func() error {
		out, err := kubectl("-n", "np", "get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.phase}/{.status.podIP} {end}")
		if err != nil || strings.Count(out, "=Running/") != 3 {
			return fmt.Errorf("%q %v", out, err)
		}
		for _, f := range strings.Fields(out) {
			if strings.HasPrefix(f, "server=Running/") {
				serverIP = strings.TrimPrefix(f, "server=Running/")
			}
		}
		return nil
	})
	fetch := func(from string) error {
		out, err := kubectl("-n", "np", "exec", from, "--", "/nginx", "-get", "http://"+serverIP+"/healthz")
		if err != nil || strings.TrimSpace(out) != "ok" {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	}
	blocked := func(from string) func() error {
		return func() error {
			if err := fetch(from); err == nil {
				return fmt.Errorf("%s still reaches the server", from)
			}
			return nil
		}
	}
	waitFor(t, w.ctx, "client to reach the server across minions before any policy", time.Minute, func() error { return fetch("client") })

	w.apply("np-deny", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: np}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`)
	start := time.Now()
	waitFor(t, w.ctx, "default-deny to block client from the server", time.Minute, blocked("client"))
	t.Logf("default-deny blocked the client %s after it was created", time.Since(start).Round(100*time.Millisecond))
	out, err := w.l.Host(serverNode).Exec(w.ctx, "nft", "list", "table", "inet", "haagent-netpol")
	if err != nil || !strings.Contains(out, "ip daddr "+serverIP+" jump ingress-") {
		t.Errorf("%s's nftables table does not isolate the server %s: %v\n%s", serverNode, serverIP, err, out)
	}

	w.apply("np-allow", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: np}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
`)
	start = time.Now()
	waitFor(t, w.ctx, "the allow rule to let client reach the server again", time.Minute, func() error { return fetch("client") })
	t.Logf("the allow rule let the client through %s after it was created", time.Since(start).Round(100*time.Millisecond))
	if err := blocked("stranger")(); err != nil {
		t.Errorf("a pod the allow rule does not name: %v", err)
	}
}
