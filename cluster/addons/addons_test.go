package addons

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	objs, err := Parse("demo", []byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: x}
---
# only a comment
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}
---
apiVersion: v1
kind: Namespace
metadata: {name: x}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, RefOf(o).String())
	}
	// The namespace goes first, the rest keep their order.
	if want := "Namespace x,ConfigMap x/a,ConfigMap b"; strings.Join(got, ",") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestParseRefusesWithTheAddonsName(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "add-on demo, object 1 (ConfigMap ): no metadata.name"},
		{"kind: ConfigMap\nmetadata: {name: a}\n", "no apiVersion"},
		{"apiVersion: v1\nkind: [\n", "add-on demo, document 1"},
		{"# nothing\n", "add-on demo: no objects"},
	} {
		_, err := Parse("demo", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.doc, err, tc.want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{"coredns": true, "my-addon-2": true, "": false, "Big": false, "-a": false,
		"a.b": false, strings.Repeat("a", 64): false} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
}

func TestDNSServiceIP(t *testing.T) {
	ip, err := DNSServiceIP("10.254.0.0/16")
	if err != nil || ip != netip.MustParseAddr("10.254.0.10") {
		t.Fatalf("got %s %v", ip, err)
	}
	if _, err := DNSServiceIP("10.0.0.0/29"); err == nil {
		t.Fatal("a /29 has no tenth address, want an error")
	}
}

// The built-in CoreDNS parses into kubeadm's objects plus a PodDisruptionBudget, with
// kubeadm's Corefile and the operator's coredns-custom imports.
func TestRenderCoreDNS(t *testing.T) {
	data, err := RenderCoreDNS(DNSOptions{ServiceIP: netip.MustParseAddr("10.254.0.10"), Domain: "example.local",
		Image: CoreDNSImage, RootCAHash: "abc", APIServer: netip.MustParseAddrPort("10.0.0.100:6443")})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Parse(CoreDNS, data)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.GetKind()] = true
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service"} {
		if !kinds[k] {
			t.Errorf("no %s", k)
		}
	}
	s := string(data)
	for _, want := range []string{"lameduck 5s", "kubernetes example.local in-addr.arpa ip6.arpa", "forward . /etc/resolv.conf",
		"cache 30", "loop", "reload", "loadbalance", "import /etc/coredns/custom/*.override", "import /etc/coredns/custom/*.server",
		"clusterIP: 10.254.0.10", "replicas: 2", "image: " + CoreDNSImage, "endpointslices", RootCAAnnotation + `: "abc"`,
		`{name: KUBERNETES_SERVICE_HOST, value: "10.0.0.100"}`, `{name: KUBERNETES_SERVICE_PORT, value: "6443"}`} {
		if !strings.Contains(s, want) {
			t.Errorf("the manifest has no %q", want)
		}
	}
	if _, err := RenderCoreDNS(DNSOptions{Domain: "x"}); err == nil {
		t.Error("no service IP and image: want an error")
	}
}
