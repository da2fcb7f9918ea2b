package etcdmember

import (
	"fmt"
	"strings"
)

// Member is one member as a running peer reports it on its peer port (GET /members),
// and as the data dir's database keeps it (the same JSON).
type Member struct {
	ID         uint64   `json:"id"`
	Name       string   `json:"name,omitempty"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

// started reports whether the member has ever published itself, which etcd
// does once it has joined: only then does it list client URLs.
func (m Member) started() bool { return len(m.ClientURLs) > 0 }

func (m Member) hasPeerURL(u string) bool {
	for _, p := range m.PeerURLs {
		if p == u {
			return true
		}
	}
	return false
}

// Mode names how the local member comes up.
type Mode string

const (
	// ModeRestart: the data dir holds a member; etcd resumes it as the same member ID.
	ModeRestart Mode = "restart"
	// ModeBootstrap: no cluster exists yet; every listed peer starts from the same static list.
	ModeBootstrap Mode = "bootstrap"
	// ModeTakeSlot: the cluster lists this peer URL as a member that never started; start into that place.
	ModeTakeSlot Mode = "take-slot"
	// ModeJoin: the cluster runs without this member; add it as a learner (after removing a stale
	// member with its name or peer URL, if any) and promote it once it has caught up.
	ModeJoin Mode = "join"
)

// plan is what the local member must do before and while starting etcd.
type plan struct {
	mode Mode
	// initialCluster is etcd's --initial-cluster for the chosen mode.
	initialCluster string
	// clusterState is "new" or "existing".
	clusterState string
	// remove lists stale members that stand in this member's place and must go first.
	remove []Member
	// clientURLs are where a running cluster answers, for member add and remove.
	clientURLs []string
}

// decide chooses the start mode. It is pure so that every order of events can be tested:
// haveData says whether the data dir holds a member, and view is the membership that a
// running peer reported (nil when no peer answered).
func decide(self Peer, peers Peers, haveData bool, view []Member) plan {
	static := plan{initialCluster: peers.String(), clusterState: "new"}
	if haveData {
		static.mode = ModeRestart
		return static
	}
	var anyStarted bool
	for _, m := range view {
		anyStarted = anyStarted || m.started()
	}
	if !anyStarted {
		// Nobody has published yet: the peers are bootstrapping from the same static list,
		// and a static bootstrap with the same list and token always yields one cluster.
		static.mode = ModeBootstrap
		return static
	}
	selfURL := self.URL.String()
	p := plan{clusterState: "existing"}
	var kept []Member
	slot := false
	for _, m := range view {
		mine := m.hasPeerURL(selfURL)
		switch {
		case mine && !m.started() && (m.Name == "" || m.Name == self.Name):
			slot = true
			kept = append(kept, m)
		case mine || (m.Name == self.Name && m.Name != ""):
			p.remove = append(p.remove, m)
		default:
			kept = append(kept, m)
			if m.started() {
				p.clientURLs = append(p.clientURLs, m.ClientURLs...)
			}
		}
	}
	if slot {
		p.mode = ModeTakeSlot
		p.remove = nil // a slot and a stale twin can't both exist; the slot wins.
	} else {
		p.mode = ModeJoin
		kept = append(kept, Member{Name: self.Name, PeerURLs: []string{selfURL}})
	}
	p.initialCluster = initialCluster(kept, self, peers)
	return p
}

// initialCluster renders members as etcd's --initial-cluster. Members that never started
// have no name in the cluster, so they take the name --peers gives their URL.
func initialCluster(ms []Member, self Peer, peers Peers) string {
	var parts []string
	selfURL := self.URL.String()
	for _, m := range ms {
		for _, u := range m.PeerURLs {
			name := m.Name
			switch {
			case u == selfURL:
				name = self.Name
			case name == "":
				name = peers.NameOf(u)
			}
			if name == "" {
				name = fmt.Sprintf("member-%x", m.ID)
			}
			parts = append(parts, name+"="+u)
		}
	}
	return strings.Join(parts, ",")
}
