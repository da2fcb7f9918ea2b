package netpol

import (
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"sigs.k8s.io/knftables"

	"github.com/haagent/haagent/test/framework/rootonly"
)

// The kernel and nft of this machine take the table, in a network namespace of the
// test's own, and take it again over itself: the destroy-and-add of one transaction
// works whether the table is there or not.
func TestKernelTakesTheTable(t *testing.T) {
	rootonly.Require(t, "a network namespace")
	if _, err := exec.LookPath("nft"); err != nil {
		rootonly.Unable(t, "nft is not installed (apt-get install nftables)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	// A new namespace for this thread alone: nft, forked from it, runs in it.
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Fatalf("back to the original namespace: %v", err)
		}
		ns.Close()
	}()
	nft, err := knftables.New(knftables.InetFamily, Table, knftables.EmulateDestroy)
	if err != nil {
		t.Fatal(err)
	}
	rules := []PodRules{{Namespace: "a", Name: "web", IP: netip.MustParseAddr("172.30.1.2"), IngressIsolated: true,
		Ingress: []Rule{
			{IPs: []netip.Addr{netip.MustParseAddr("172.30.2.2")}, Ports: []Port{{Proto: "tcp", Port: 80}, {Proto: "tcp", Port: 8000, EndPort: 8080}}},
			{CIDRs: []CIDR{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}},
			{Any: true, Ports: []Port{{Proto: "udp", Port: 53}}},
		}, EgressIsolated: true, Egress: []Rule{{Any: true}}}}
	for i := range 2 {
		tx := nft.NewTransaction()
		Fill(tx, rules)
		if err := nft.Run(t.Context(), tx); err != nil {
			t.Fatalf("pass %d: %v\n%s", i+1, err, tx)
		}
	}
	out, err := exec.Command("nft", "list", "table", "inet", Table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	for _, want := range []string{"chain ingress-172-30-1-2", "ip saddr 172.30.2.2 tcp dport { 80, 8000-8080 } return", "udp dport 53 return",
		"ip saddr 10.0.0.0/8 ip saddr != 10.1.0.0/16 return", "chain egress-172-30-1-2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the kernel's table has no %q:\n%s", want, out)
		}
	}
	if strings.Count(string(out), "jump ingress-172-30-1-2") != 1 {
		t.Errorf("the second pass did not replace the first:\n%s", out)
	}
}
