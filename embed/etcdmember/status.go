package etcdmember

import (
	"context"
	"errors"
	"sort"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberStatus is one member as the cluster and its own endpoint report it.
type MemberStatus struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	Started    bool     `json:"started"`
	Learner    bool     `json:"learner"`
	Leader     bool     `json:"leader"`
	Healthy    bool     `json:"healthy"`
	DBSize     int64    `json:"dbSizeBytes,omitempty"`
	// DBSizeInUse is what a defragmentation would shrink DBSize to.
	DBSizeInUse int64 `json:"dbSizeInUseBytes,omitempty"`
	// Quota is the member's space quota: past it, etcd raises NOSPACE.
	Quota int64  `json:"quotaBytes,omitempty"`
	Error string `json:"error,omitempty"`
}

// ClusterStatus is the cluster as seen from this member.
type ClusterStatus struct {
	ClusterID string         `json:"clusterID"`
	LocalID   string         `json:"localID"`
	Mode      Mode           `json:"startMode"`
	Members   []MemberStatus `json:"members"`
	// Alarms are etcd's raised alarms (NOSPACE, CORRUPT), by member name or ID.
	Alarms []Alarm `json:"alarms"`
	// Foreign is the last cluster ID mismatch with a peer in --peers: a master left on
	// an old cluster after a cluster-reset --restore, or this one.
	Foreign string `json:"foreignCluster,omitempty"`
}

// Alarm is one alarm raised on one member.
type Alarm struct {
	Member string `json:"member"`
	Type   string `json:"type"`
}

// Status lists the members and asks each started one for its own status, each
// bounded by a short timeout so that a dead member shows as unhealthy, not as a hang.
func (s *Server) Status(ctx context.Context) (ClusterStatus, error) {
	cli := s.Client()
	if cli == nil {
		return ClusterStatus{}, s.withForeign(errors.New("etcd member not ready"))
	}
	if !s.hasLeader() {
		// The member list needs a quorum: say why it would time out.
		return ClusterStatus{}, s.withForeign(errors.New("etcd cluster has no leader: a majority of the masters is unreachable; " +
			"if they are lost for good, run 'haagent cluster-reset' on a master that is left"))
	}
	cs, err := ClusterStatusOf(ctx, cli, s.Mode())
	if err != nil {
		return cs, s.withForeign(err)
	}
	cs.Foreign = s.ForeignCluster()
	return cs, nil
}

// ClusterStatusOf builds a ClusterStatus with any client of the cluster.
func ClusterStatusOf(ctx context.Context, cli *clientv3.Client, mode Mode) (ClusterStatus, error) {
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	list, err := cli.MemberList(lctx)
	if err != nil {
		return ClusterStatus{}, err
	}
	cs := ClusterStatus{
		ClusterID: types.ID(list.Header.ClusterId).String(),
		LocalID:   types.ID(list.Header.MemberId).String(),
		Mode:      mode,
	}
	cs.Members = make([]MemberStatus, len(list.Members))
	done := make(chan struct{}, len(list.Members))
	for i, m := range list.Members {
		ms := MemberStatus{
			ID: types.ID(m.ID).String(), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs,
			Started: len(m.ClientURLs) > 0, Learner: m.IsLearner,
		}
		cs.Members[i] = ms
		go func(i int, urls []string) {
			defer func() { done <- struct{}{} }()
			if len(urls) == 0 {
				cs.Members[i].Error = "not started"
				return
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			st, err := cli.Status(sctx, urls[0])
			if err != nil {
				cs.Members[i].Error = err.Error()
				return
			}
			cs.Members[i].Healthy = st.Leader != 0 && len(st.Errors) == 0
			cs.Members[i].Leader = st.Leader == st.Header.MemberId
			cs.Members[i].DBSize = st.DbSize
			cs.Members[i].DBSizeInUse = st.DbSizeInUse
			cs.Members[i].Quota = st.DbSizeQuota
		}(i, m.ClientURLs)
	}
	for range list.Members {
		<-done
	}
	sort.Slice(cs.Members, func(a, b int) bool { return cs.Members[a].Name < cs.Members[b].Name })
	cs.Alarms = []Alarm{}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	alarms, err := cli.AlarmList(actx)
	if err != nil {
		// The members' table is still worth showing; the alarms say they are unknown.
		cs.Alarms = append(cs.Alarms, Alarm{Type: "unknown: " + err.Error()})
		return cs, nil
	}
	for _, a := range alarms.Alarms {
		who := types.ID(a.MemberID).String()
		for _, m := range list.Members {
			if m.ID == a.MemberID && m.Name != "" {
				who = m.Name
			}
		}
		cs.Alarms = append(cs.Alarms, Alarm{Member: who, Type: a.Alarm.String()})
	}
	return cs, nil
}
