package netpol

import (
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/knftables"
)

// Table is the nftables table (inet family) that holds the node's policies.
const Table = "haagent-netpol"

// forwardChain is the base chain in the forward hook: it sends a local pod's new
// traffic through the chain of the pod that sends it (egress), then of the one that
// receives it (ingress). Replies of an allowed connection pass at once. A chain returns
// what a rule lets through, and drops the rest.
const forwardChain = "forward"

// Fill adds the whole table to tx, replacing what the kernel has: the table is
// destroyed and made again in the same transaction, which the kernel applies at once
// or not at all, so that no packet sees half a ruleset.
func Fill(tx *knftables.Transaction, pods []PodRules) {
	tx.Destroy(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("Kubernetes NetworkPolicy of this node's pods, by haagent")})
	tx.Add(&knftables.Chain{Name: forwardChain, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(knftables.FilterPriority + "-5"),
		Policy: knftables.PtrTo(knftables.AcceptPolicy)})
	tx.Add(&knftables.Rule{Chain: forwardChain, Rule: "ct state established,related accept"})
	// Egress first: a packet leaves its sender's policy before it meets its receiver's.
	for _, p := range pods {
		if p.EgressIsolated {
			isolate(tx, "egress", "saddr", "daddr", p, p.Egress)
		}
	}
	for _, p := range pods {
		if p.IngressIsolated {
			isolate(tx, "ingress", "daddr", "saddr", p, p.Ingress)
		}
	}
}

// isolate sends the pod's traffic in one direction (the pod's IP in the packet's own
// field) through a chain of its own, which lets through what rules match on the peer's
// field.
func isolate(tx *knftables.Transaction, dir, own, peer string, p PodRules, rules []Rule) {
	chain := dir + "-" + dashed(p.IP)
	tx.Add(&knftables.Chain{Name: chain, Comment: knftables.PtrTo(dir + " of " + p.Namespace + "/" + p.Name)})
	tx.Add(&knftables.Rule{Chain: forwardChain, Rule: knftables.Concat("ip", own, p.IP, "jump", chain)})
	addRules(tx, chain, peer, rules)
}

// addRules lets each rule's peers (the packet's addr field: saddr for ingress, daddr
// for egress) through on its ports, and drops everything else.
func addRules(tx *knftables.Transaction, chain, field string, rules []Rule) {
	for _, r := range rules {
		var peers []string
		if r.Any {
			peers = append(peers, "")
		}
		if len(r.IPs) > 0 {
			peers = append(peers, "ip "+field+" "+set(r.IPs))
		}
		for _, c := range r.CIDRs {
			m := "ip " + field + " " + c.Prefix.String()
			if len(c.Except) > 0 {
				m += " ip " + field + " != " + set(c.Except)
			}
			peers = append(peers, m)
		}
		for _, peer := range peers {
			for _, ports := range portMatches(r.Ports) {
				tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(peer, ports, "return")})
			}
		}
	}
	tx.Add(&knftables.Rule{Chain: chain, Rule: "drop"})
}

// portMatches is one match per protocol ("" for every port of every protocol).
func portMatches(ports []Port) []string {
	if len(ports) == 0 {
		return []string{""}
	}
	var out []string
	byProto := map[string][]string{}
	var order []string
	for _, p := range ports {
		if _, seen := byProto[p.Proto]; !seen {
			order = append(order, p.Proto)
			byProto[p.Proto] = []string{}
		}
		switch {
		case p.Port == 0:
			byProto[p.Proto] = nil // every port of it
		case byProto[p.Proto] == nil:
		case p.EndPort > p.Port:
			byProto[p.Proto] = append(byProto[p.Proto], fmt.Sprintf("%d-%d", p.Port, p.EndPort))
		default:
			byProto[p.Proto] = append(byProto[p.Proto], fmt.Sprint(p.Port))
		}
	}
	for _, proto := range order {
		m := "meta l4proto " + proto
		if ps := byProto[proto]; ps != nil {
			m += " th dport { " + strings.Join(ps, ", ") + " }"
		}
		out = append(out, m)
	}
	return out
}

func set[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

func dashed(a netip.Addr) string { return strings.ReplaceAll(a.String(), ".", "-") }
