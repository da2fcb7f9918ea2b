package etcdmember

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// DefaultClusterCheckInterval is how often a member asks its peers which cluster they
// are in.
const DefaultClusterCheckInterval = 5 * time.Second

// watchClusterIDs asks every peer in --peers, every ClusterCheckInterval, which etcd
// cluster it is in. etcd refuses a peer of another cluster (one reset or restored
// without this master, or a master left behind on the old one) only with log lines
// deep in its own output, repeated for ever; haagent says it once per peer, plainly,
// naming both cluster IDs and the fix, and /readyz carries it.
func (s *Server) watchClusterIDs(ctx context.Context, e *embed.Etcd) {
	hc, err := s.peerHTTP()
	if err != nil {
		s.lg.Error("[membership] can't check the peers' cluster IDs", "err", err)
		return
	}
	defer hc.CloseIdleConnections()
	every := s.cfg.ClusterCheckInterval
	if every <= 0 {
		every = DefaultClusterCheckInterval
	}
	foreign := map[string]string{} // peer name -> its cluster ID, while it differs
	msgs := map[string]string{}    // peer name -> what was logged about it
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.Server.StopNotify():
			return
		case <-t.C:
		}
		own := e.Server.Cluster().ID().String()
		for _, p := range s.cfg.Peers {
			if p.Name == s.cfg.Name || ctx.Err() != nil {
				continue
			}
			ms, id, err := fetchMembers(ctx, hc, p.URL.String())
			switch {
			case err != nil || id == "" || own == "0":
				// No answer says nothing about its cluster: keep what was seen.
			case id == own:
				delete(foreign, p.Name)
				delete(msgs, p.Name)
			case foreign[p.Name] != id:
				foreign[p.Name] = id
				msgs[p.Name] = s.mismatch(p, own, id, ms)
				s.lg.Error("[membership] " + msgs[p.Name])
			}
		}
		s.foreign.Store(nil)
		for _, p := range s.cfg.Peers {
			if m, ok := msgs[p.Name]; ok {
				s.foreign.Store(&m)
				break
			}
		}
		t.Reset(every)
	}
}

// mismatch says which side was left behind, and how to bring it over: a cluster that
// still lists this host's peer URL under another member is the old one.
func (s *Server) mismatch(p Peer, own, theirs string, theirMembers []Member) string {
	listsUs := false
	for _, m := range theirMembers {
		listsUs = listsUs || m.hasPeerURL(s.self.URL.String())
	}
	if listsUs {
		return fmt.Sprintf("cluster ID mismatch: peer %s (%s) is still in etcd cluster %s, this master in cluster %s, and etcd refuses its messages; "+
			"on %s: stop haagent, run 'haagent reset --yes' (it deletes that host's old etcd data) and start haagent again: it joins cluster %s",
			p.Name, p.URL.String(), theirs, own, p.Name, own)
	}
	return fmt.Sprintf("cluster ID mismatch: this master is in etcd cluster %s, but its peer %s (%s) is in cluster %s, which does not list this master: "+
		"the cluster was reset or restored without it, and etcd refuses its messages; to join cluster %s: stop haagent here, "+
		"run 'haagent reset --yes' (it deletes this host's old etcd data) and start haagent again", own, p.Name, p.URL.String(), theirs, theirs)
}

// ForeignCluster is the last cluster ID mismatch seen with a peer, or "".
func (s *Server) ForeignCluster() string {
	if m := s.foreign.Load(); m != nil {
		return *m
	}
	return ""
}
