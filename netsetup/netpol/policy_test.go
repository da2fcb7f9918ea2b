package netpol

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

func pod(ns, name, node, ip string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func policy(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

var (
	web    = pod("a", "web", "n1", "172.30.1.2", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080})
	client = pod("a", "client", "n2", "172.30.2.2", map[string]string{"app": "client"})
	other  = pod("b", "other", "n2", "172.30.2.3", map[string]string{"app": "client"})
	nsA    = namespace("a", map[string]string{"team": "a"})
	nsB    = namespace("b", map[string]string{"team": "b"})
	tcp    = corev1.ProtocolTCP
	udp    = corev1.ProtocolUDP
)

func ruleString(r Rule) string {
	var b strings.Builder
	if r.Any {
		b.WriteString("any")
	}
	for _, ip := range r.IPs {
		b.WriteString(" " + ip.String())
	}
	for _, c := range r.CIDRs {
		b.WriteString(" " + c.Prefix.String())
		for _, e := range c.Except {
			b.WriteString(" !" + e.String())
		}
	}
	for _, p := range r.Ports {
		b.WriteString(" " + p.Proto + ":" + itoa(p.Port))
		if p.EndPort > 0 {
			b.WriteString("-" + itoa(p.EndPort))
		}
	}
	return strings.TrimSpace(b.String())
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func TestCompute(t *testing.T) {
	port := func(p intstr.IntOrString, proto *corev1.Protocol) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Port: &p, Protocol: proto}
	}
	for _, tc := range []struct {
		name     string
		pols     []*networkingv1.NetworkPolicy
		ingress  []string // nil: not isolated
		egress   []string
		isolated bool
	}{
		{name: "no policy: open", pols: nil},
		{name: "default deny ingress", isolated: true, ingress: []string{}, pols: []*networkingv1.NetworkPolicy{
			policy("a", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}})}},
		{name: "a policy of another namespace does not isolate", pols: []*networkingv1.NetworkPolicy{
			policy("b", "deny", networkingv1.NetworkPolicySpec{})}},
		{name: "allow from app=client in the same namespace, on the named port", isolated: true,
			ingress: []string{"172.30.2.2 tcp:8080"}, pols: []*networkingv1.NetworkPolicy{
				policy("a", "allow", networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					Ingress: []networkingv1.NetworkPolicyIngressRule{{
						From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
						Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), nil)},
					}}})}},
		{name: "namespaceSelector alone: every pod of team b", isolated: true, ingress: []string{"172.30.2.3"},
			pols: []*networkingv1.NetworkPolicy{policy("a", "allow", networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}}},
				}}})}},
		{name: "an empty rule allows every peer on the port; ipBlock with except", isolated: true,
			ingress: []string{"any udp:5", "10.0.0.0/8 !10.1.0.0/16"}, pols: []*networkingv1.NetworkPolicy{
				policy("a", "allow", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{
					{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5), &udp)}},
					{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}}},
				}})}},
		{name: "egress rules make it egress-isolated by default", isolated: true, ingress: []string{}, egress: []string{"172.30.2.2 tcp:5"},
			pols: []*networkingv1.NetworkPolicy{policy("a", "egress", networkingv1.NetworkPolicySpec{
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
					Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(5), &tcp)},
				}}})}},
		{name: "a named port the pod lacks lets nothing through", isolated: true, ingress: []string{},
			pols: []*networkingv1.NetworkPolicy{policy("a", "allow", networkingv1.NetworkPolicySpec{
				Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("nope"), nil)}}}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Compute(Input{Node: "n1", Pods: []*corev1.Pod{web, client, other}, Namespaces: []*corev1.Namespace{nsA, nsB}, Policies: tc.pols})
			if !tc.isolated {
				if len(got) != 0 {
					t.Fatalf("got %+v, want web open", got)
				}
				return
			}
			if len(got) != 1 || got[0].Name != "web" {
				t.Fatalf("got %+v, want web alone (the only pod on n1)", got)
			}
			check := func(dir string, isolated bool, rules []Rule, want []string) {
				if isolated != (want != nil) {
					t.Fatalf("%s isolated %v, want %v", dir, isolated, want != nil)
				}
				var s []string
				for _, r := range rules {
					s = append(s, ruleString(r))
				}
				if strings.Join(s, "|") != strings.Join(want, "|") {
					t.Errorf("%s rules %q, want %q", dir, s, want)
				}
			}
			check("ingress", got[0].IngressIsolated, got[0].Ingress, tc.ingress)
			check("egress", got[0].EgressIsolated, got[0].Egress, tc.egress)
		})
	}
}

// The table is replaced whole in one transaction: default deny with one allowed peer
// and port, egress checked before ingress, replies let through first.
func TestFill(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, Table)
	tx := fake.NewTransaction()
	ip := netip.MustParseAddr("172.30.1.2")
	Fill(tx, []PodRules{{Namespace: "a", Name: "web", IP: ip, IngressIsolated: true,
		Ingress: []Rule{{IPs: []netip.Addr{netip.MustParseAddr("172.30.2.2"), netip.MustParseAddr("172.30.2.3")},
			Ports: []Port{{Proto: "tcp", Port: 80}, {Proto: "tcp", Port: 8000, EndPort: 8080}, {Proto: "udp"}}}},
		EgressIsolated: true}})
	got := tx.String()
	for _, want := range []string{
		"destroy table inet haagent-netpol",
		"add chain inet haagent-netpol forward { type filter hook forward priority -5 ; policy accept ; }",
		"add rule inet haagent-netpol forward ct state established,related accept",
		"add rule inet haagent-netpol forward ip saddr 172.30.1.2 jump egress-172-30-1-2",
		"add rule inet haagent-netpol egress-172-30-1-2 drop",
		"add rule inet haagent-netpol forward ip daddr 172.30.1.2 jump ingress-172-30-1-2",
		"add rule inet haagent-netpol ingress-172-30-1-2 ip saddr { 172.30.2.2, 172.30.2.3 } meta l4proto tcp th dport { 80, 8000-8080 } return",
		"add rule inet haagent-netpol ingress-172-30-1-2 ip saddr { 172.30.2.2, 172.30.2.3 } meta l4proto udp return",
		"add rule inet haagent-netpol ingress-172-30-1-2 drop",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("no %q in:\n%s", want, got)
		}
	}
	if strings.Index(got, "jump egress") > strings.Index(got, "jump ingress") {
		t.Errorf("egress must be checked before ingress:\n%s", got)
	}
	if err := fake.Run(t.Context(), tx); err != nil {
		t.Fatalf("the fake nftables refuses the transaction: %v", err)
	}
}
