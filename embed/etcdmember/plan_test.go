package etcdmember

import (
	"testing"
)

func started(id uint64, name, peer string) Member {
	return Member{ID: id, Name: name, PeerURLs: []string{peer}, ClientURLs: []string{"http://c-" + name}}
}

func TestDecide(t *testing.T) {
	peers, err := ParsePeers("m1=http://10.0.0.21:2380,m2=http://10.0.0.22:2380,m3=http://10.0.0.23:2380", "http", 2380)
	if err != nil {
		t.Fatal(err)
	}
	self := peers[2] // m3
	unstarted := func(id uint64, name, peer string) Member {
		return Member{ID: id, Name: name, PeerURLs: []string{peer}}
	}
	static := peers.String()
	tests := []struct {
		name      string
		haveData  bool
		view      []Member
		mode      Mode
		state     string
		initial   string
		removeIDs []uint64
	}{
		{name: "data dir holds a member", haveData: true, view: nil, mode: ModeRestart, state: "new", initial: static},
		{name: "no peer answers", mode: ModeBootstrap, state: "new", initial: static},
		{name: "peers are bootstrapping too",
			view: []Member{unstarted(1, "m1", "http://10.0.0.21:2380"), unstarted(2, "m2", "http://10.0.0.22:2380"), unstarted(3, "m3", "http://10.0.0.23:2380")},
			mode: ModeBootstrap, state: "new", initial: static},
		{name: "our slot was never started",
			view: []Member{started(1, "m1", "http://10.0.0.21:2380"), started(2, "m2", "http://10.0.0.22:2380"), unstarted(3, "m3", "http://10.0.0.23:2380")},
			mode: ModeTakeSlot, state: "existing", initial: static},
		{name: "slot added by member add has no name",
			view: []Member{started(1, "m1", "http://10.0.0.21:2380"), started(2, "m2", "http://10.0.0.22:2380"), unstarted(3, "", "http://10.0.0.23:2380")},
			mode: ModeTakeSlot, state: "existing", initial: static},
		{name: "not a member: join as learner",
			view: []Member{started(1, "m1", "http://10.0.0.21:2380"), started(2, "m2", "http://10.0.0.22:2380")},
			mode: ModeJoin, state: "existing", initial: static},
		{name: "rebuilt host: stale member with our URL",
			view: []Member{started(1, "m1", "http://10.0.0.21:2380"), started(2, "m2", "http://10.0.0.22:2380"), started(3, "m3", "http://10.0.0.23:2380")},
			mode: ModeJoin, state: "existing", initial: static, removeIDs: []uint64{3}},
		{name: "rebuilt host with a new IP: stale member with our name",
			view: []Member{started(1, "m1", "http://10.0.0.21:2380"), started(2, "m2", "http://10.0.0.22:2380"), started(3, "m3", "http://10.0.0.99:2380")},
			mode: ModeJoin, state: "existing", initial: static, removeIDs: []uint64{3}},
		{name: "another peer's slot is unstarted",
			view: []Member{started(1, "m1", "http://10.0.0.21:2380"), unstarted(2, "", "http://10.0.0.22:2380")},
			mode: ModeJoin, state: "existing", initial: static},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decide(self, peers, tt.haveData, tt.view)
			if p.mode != tt.mode || p.clusterState != tt.state || p.initialCluster != tt.initial {
				t.Fatalf("decide = {mode %s, state %s, initial %s}, want {%s, %s, %s}",
					p.mode, p.clusterState, p.initialCluster, tt.mode, tt.state, tt.initial)
			}
			var ids []uint64
			for _, m := range p.remove {
				ids = append(ids, m.ID)
			}
			if len(ids) != len(tt.removeIDs) || (len(ids) > 0 && ids[0] != tt.removeIDs[0]) {
				t.Fatalf("remove = %v, want %v", ids, tt.removeIDs)
			}
			for _, u := range p.clientURLs {
				if u == "http://c-m3" {
					t.Fatalf("the stale member's client URL %s must not be used to reach the cluster", u)
				}
			}
		})
	}
}

// TestBestViewPrefersAClusterWithQuorum: after a cluster-reset --restore, the master
// left on the old cluster lists three started members, the restored cluster one; a new
// master must join the restored one, whose quorum answers.
func TestBestViewPrefersAClusterWithQuorum(t *testing.T) {
	old := Answer{Name: "m3", ClusterID: "a", Members: []Member{started(1, "m1", "http://10.0.0.21:2380"),
		started(2, "m2", "http://10.0.0.22:2380"), started(3, "m3", "http://10.0.0.23:2380")}}
	restored := Answer{Name: "m1", ClusterID: "b", Members: []Member{started(9, "m1", "http://10.0.0.21:2380")}}
	for _, answers := range [][]Answer{{old, restored}, {restored, old}} {
		if got := bestView(answers); len(got) != 1 || got[0].ID != 9 {
			t.Errorf("bestView picked %+v, want the restored cluster's", got)
		}
	}
	// Without a quorum anywhere (peers still coming up), the most started members win.
	two := Answer{Name: "m2", ClusterID: "a", Members: old.Members[:2]}
	if got := bestView([]Answer{two, old}); len(got) != 3 {
		t.Errorf("bestView picked %+v, want the view with 3 started members", got)
	}
}
