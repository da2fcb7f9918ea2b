// Package netpol enforces Kubernetes NetworkPolicy for the pods of one node: it reads
// pods, namespaces and policies from the API, works out what each local pod may send
// and receive (Compute), and keeps that as one nftables table in the node's forward
// hook, replaced whole in one transaction on every change (Ruleset, Controller).
package netpol

import (
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Port is a port range of one protocol; Port 0 is every port of it.
type Port struct {
	Proto         string // tcp, udp or sctp
	Port, EndPort int32
}

// CIDR is an ipBlock: a prefix without its exceptions.
type CIDR struct {
	Prefix netip.Prefix
	Except []netip.Prefix
}

// Rule is one way traffic is let through: from (or to) any of its peers, on any of its
// ports.
type Rule struct {
	// Any is a rule without peers: every address.
	Any   bool
	IPs   []netip.Addr
	CIDRs []CIDR
	// Ports is nil for every port.
	Ports []Port
}

// PodRules is what one local pod may receive and send. A direction that no policy
// isolates has no rules and is open.
type PodRules struct {
	Namespace, Name string
	IP              netip.Addr
	IngressIsolated bool
	Ingress         []Rule
	EgressIsolated  bool
	Egress          []Rule
}

// Input is the cluster as the API shows it.
type Input struct {
	// Node is this node's name: its pods are the ones enforced here.
	Node       string
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
}

// Compute returns the rules of every local pod that a policy isolates, sorted by IP.
func Compute(in Input) []PodRules {
	nsLabels := map[string]labels.Set{}
	for _, ns := range in.Namespaces {
		nsLabels[ns.Name] = ns.Labels
	}
	var out []PodRules
	for _, pod := range in.Pods {
		ip, ok := podIP(pod)
		if !ok || pod.Spec.NodeName != in.Node || pod.Spec.HostNetwork {
			continue
		}
		pr := PodRules{Namespace: pod.Namespace, Name: pod.Name, IP: ip}
		for _, pol := range in.Policies {
			if pol.Namespace != pod.Namespace || !selects(&pol.Spec.PodSelector, pod.Labels) {
				continue
			}
			ingress, egress := policyTypes(pol)
			if ingress {
				pr.IngressIsolated = true
				for _, r := range pol.Spec.Ingress {
					pr.Ingress = append(pr.Ingress, rules(in, nsLabels, pol.Namespace, r.From, r.Ports, pod)...)
				}
			}
			if egress {
				pr.EgressIsolated = true
				for _, r := range pol.Spec.Egress {
					pr.Egress = append(pr.Egress, rules(in, nsLabels, pol.Namespace, r.To, r.Ports, nil)...)
				}
			}
		}
		if pr.IngressIsolated || pr.EgressIsolated {
			out = append(out, pr)
		}
	}
	slices.SortFunc(out, func(a, b PodRules) int { return a.IP.Compare(b.IP) })
	return out
}

// policyTypes is the policy's directions: as listed, or, when none are, ingress and
// egress if it has egress rules (the API's defaulting).
func policyTypes(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// rules turns one ingress or egress rule into Rules. Named ports are resolved on the
// pod they name a port of: target (the local pod) for ingress, each peer pod for egress
// (target nil); a peer pod without that port is not let through by it.
func rules(in Input, nsLabels map[string]labels.Set, ns string, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, target *corev1.Pod) []Rule {
	named := slices.ContainsFunc(ports, func(p networkingv1.NetworkPolicyPort) bool {
		return p.Port != nil && p.Port.Type == intstr.String
	})
	base := Rule{}
	if len(peers) == 0 {
		base.Any = true
	}
	var peerPods []*corev1.Pod
	for _, peer := range peers {
		if peer.IPBlock != nil {
			c, ok := cidr(peer.IPBlock)
			if ok {
				base.CIDRs = append(base.CIDRs, c)
			}
			continue
		}
		for _, p := range in.Pods {
			if _, ok := podIP(p); ok && peerSelects(peer, ns, nsLabels, p) && !slices.Contains(peerPods, p) {
				peerPods = append(peerPods, p)
			}
		}
	}
	if !named || target != nil {
		for _, p := range peerPods {
			ip, _ := podIP(p)
			if !slices.Contains(base.IPs, ip) {
				base.IPs = append(base.IPs, ip)
			}
		}
		sortAddrs(base.IPs)
		if len(ports) > 0 {
			base.Ports = resolvePorts(ports, target)
			if len(base.Ports) == 0 {
				return nil // only named ports, none of which the pod has
			}
		}
		return []Rule{base}
	}
	// Egress with named ports: one rule per peer pod, with that pod's ports; the
	// blocks and "any" get the numbered ports only.
	var out []Rule
	if base.Any || len(base.CIDRs) > 0 {
		if ps := resolvePorts(ports, nil); len(ps) > 0 {
			base.Ports = ps
			out = append(out, base)
		}
	}
	for _, p := range peerPods {
		ip, _ := podIP(p)
		if ps := resolvePorts(ports, p); len(ps) > 0 {
			out = append(out, Rule{IPs: []netip.Addr{ip}, Ports: ps})
		}
	}
	return out
}

// peerSelects says whether a podSelector/namespaceSelector peer of a policy in ns
// selects pod.
func peerSelects(peer networkingv1.NetworkPolicyPeer, ns string, nsLabels map[string]labels.Set, pod *corev1.Pod) bool {
	if peer.NamespaceSelector == nil {
		if pod.Namespace != ns {
			return false
		}
	} else if !selects(peer.NamespaceSelector, nsLabels[pod.Namespace]) {
		return false
	}
	return peer.PodSelector == nil || selects(peer.PodSelector, pod.Labels)
}

// resolvePorts turns the policy's ports into Ports; a named port is looked up in pod's
// containers (skipped when pod is nil or has no such port).
func resolvePorts(ports []networkingv1.NetworkPolicyPort, pod *corev1.Pod) []Port {
	var out []Port
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		pp := Port{Proto: protoName(proto)}
		switch {
		case p.Port == nil:
		case p.Port.Type == intstr.Int:
			pp.Port = p.Port.IntVal
			if p.EndPort != nil {
				pp.EndPort = *p.EndPort
			}
		default:
			n, ok := namedPort(pod, p.Port.StrVal, proto)
			if !ok {
				continue
			}
			pp.Port = n
		}
		if !slices.Contains(out, pp) {
			out = append(out, pp)
		}
	}
	return out
}

func namedPort(pod *corev1.Pod, name string, proto corev1.Protocol) (int32, bool) {
	if pod == nil {
		return 0, false
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name && cmpProto(cp.Protocol) == proto {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func cmpProto(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func protoName(p corev1.Protocol) string {
	switch p {
	case corev1.ProtocolUDP:
		return "udp"
	case corev1.ProtocolSCTP:
		return "sctp"
	}
	return "tcp"
}

// cidr parses an ipBlock; only IPv4 is enforced (the pod network is IPv4).
func cidr(b *networkingv1.IPBlock) (CIDR, bool) {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !p.Addr().Is4() {
		return CIDR{}, false
	}
	c := CIDR{Prefix: p.Masked()}
	for _, e := range b.Except {
		if ep, err := netip.ParsePrefix(e); err == nil && ep.Addr().Is4() {
			c.Except = append(c.Except, ep.Masked())
		}
	}
	return c, true
}

// podIP is a running pod's IPv4 address.
func podIP(p *corev1.Pod) (netip.Addr, bool) {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil && p.Status.PodIP == "" {
		return netip.Addr{}, false
	}
	for _, s := range append([]corev1.PodIP{{IP: p.Status.PodIP}}, p.Status.PodIPs...) {
		if a, err := netip.ParseAddr(s.IP); err == nil && a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func selects(sel *metav1.LabelSelector, l labels.Set) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false // an invalid selector selects nothing
	}
	return s.Matches(l)
}

func sortAddrs(a []netip.Addr) {
	sort.Slice(a, func(i, j int) bool { return a[i].Less(a[j]) })
}
