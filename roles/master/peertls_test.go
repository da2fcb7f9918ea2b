package master

import (
	"testing"

	"github.com/haagent/haagent/trust/join"
)

// The move to the etcd peer CA while the masters roll one at a time: no master
// presents a peer-CA certificate before every member trusts the peer CA, and none
// drops the cluster CA before every member presents a peer-CA certificate.
func TestPeerMove(t *testing.T) {
	ms := []string{"m1", "m2", "m3"}
	tests := []struct {
		name          string
		members       []string
		records       map[string]string
		legacy, mixed bool
		present, drop bool
	}{
		{name: "first upgraded master: the others run an older haagent", members: ms, legacy: true, mixed: true,
			records: map[string]string{"m1": presentsClusterCA}},
		{name: "two of three upgraded", members: ms, legacy: true, mixed: true,
			records: map[string]string{"m1": presentsClusterCA, "m2": presentsClusterCA}},
		{name: "all upgraded: present a peer-CA certificate", members: ms, legacy: true, mixed: true, present: true,
			records: map[string]string{"m1": presentsClusterCA, "m2": presentsClusterCA, "m3": presentsClusterCA}},
		{name: "a member not started yet holds the move", members: []string{"m1", "m2", ""}, legacy: true, mixed: true,
			records: map[string]string{"m1": presentsClusterCA, "m2": presentsClusterCA}},
		{name: "a member still presents a cluster-CA certificate: keep trusting the cluster CA", members: ms, mixed: true,
			records: map[string]string{"m1": presentsPeerCA, "m2": presentsClusterCA, "m3": presentsPeerCA}},
		{name: "every member presents a peer-CA certificate: drop the cluster CA", members: ms, mixed: true, drop: true,
			records: map[string]string{"m1": presentsPeerCA, "m2": presentsPeerCA, "m3": presentsPeerCA}},
		{name: "a stale record of a removed member counts for nothing", members: []string{"m1", "m2"}, mixed: true, drop: true,
			records: map[string]string{"m1": presentsPeerCA, "m2": presentsPeerCA, "m9": presentsClusterCA}},
		{name: "moved over: nothing to do", members: ms,
			records: map[string]string{"m1": presentsPeerCA, "m2": presentsPeerCA, "m3": presentsPeerCA}},
		{name: "no members listed", legacy: true, mixed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			present, drop := peerMove(tt.members, tt.records, tt.legacy, tt.mixed)
			if present != tt.present || drop != tt.drop {
				t.Fatalf("present, drop = %v, %v; want %v, %v", present, drop, tt.present, tt.drop)
			}
		})
	}
}

// A minion's serving certificate names no master's, lb's or service address, and an
// address that one node holds no other node, unless it proves it.
func TestNodeHosts(t *testing.T) {
	cfg := NewConfig()
	cfg.LB, cfg.ServiceClusterIPRange = "10.0.0.10", "10.254.0.0/16"
	if err := cfg.Peers.Set("m1=https://10.0.0.21:2380,m2=https://10.0.0.22:2380"); err != nil {
		t.Fatal(err)
	}
	cfg.peers = cfg.Peers.Resolve("https", 2380)
	m := &Master{cfg: cfg}
	held := map[string]string{} // address -> node, as bindAddress keeps them
	bindAs := func(node string) func(string, bool) error {
		return func(addr string, proven bool) error {
			if owner, ok := held[addr]; ok && owner != node && !proven {
				return join.ErrNameTaken
			}
			held[addr] = node
			return nil
		}
	}
	tests := []struct {
		node, from string
		hosts      []string
		kept       string
	}{
		{node: "n1", from: "10.0.0.31", hosts: []string{"10.0.0.31", "kubernetes", "10.254.0.1", "10.0.0.21", "10.0.0.10", "0.0.0.0"}, kept: "10.0.0.31"},
		{node: "n1", from: "10.0.0.10", hosts: []string{"10.0.0.31"}, kept: "10.0.0.31"}, // its own again, through the lb
		{node: "n2", from: "10.0.0.10", hosts: []string{"10.0.0.31"}},                    // n1's, through the lb
		{node: "n2", from: "10.0.0.99", hosts: []string{"10.0.0.31"}},                    // n1's, from elsewhere
		{node: "n2", from: "10.0.0.10", hosts: []string{"10.0.0.32"}, kept: "10.0.0.32"}, // first come, through the lb
		{node: "n3", from: "10.0.0.32", hosts: []string{"10.0.0.32"}, kept: "10.0.0.32"}, // proven: the request came from it
		{node: "n2", from: "10.0.0.10", hosts: []string{"10.0.0.32"}},                    // now n3's
		{node: "n4", from: "10.0.0.21", hosts: []string{"10.0.0.21"}},                    // a master's, even from it
	}
	for _, tt := range tests {
		kept, dropped := m.nodeHosts(tt.hosts, tt.from, bindAs(tt.node))
		want := 0
		if tt.kept != "" {
			want = 1
		}
		if len(kept) != want || want == 1 && kept[0] != tt.kept || len(kept)+len(dropped) != len(tt.hosts) {
			t.Errorf("%s from %s asking for %v: kept %v, dropped %v; want [%s]", tt.node, tt.from, tt.hosts, kept, dropped, tt.kept)
		}
	}
}
