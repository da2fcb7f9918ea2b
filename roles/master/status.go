package master

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/haagent/haagent/cluster/addons"
	"github.com/haagent/haagent/embed/etcdmember"
	"github.com/haagent/haagent/roles/node"
)

// PrintStatus writes st as `haagent status` shows it: the member, its cluster's members
// as a table, flannel's network config and the add-ons.
func PrintStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "role: %s   name: %s   version: %s\n", st.Role, st.Name, st.Version)
	fmt.Fprintf(w, "etcd cluster %s, this member %s (started as %s)\n\n", st.Etcd.ClusterID, st.Etcd.LocalID, st.Etcd.Mode)
	PrintMembers(w, st.Etcd.Members)
	if len(st.NotMembers) > 0 {
		fmt.Fprintf(w, "%d of %d masters are members; not members: %s (a master with an empty data dir joins when haagent starts on it)\n",
			len(st.Etcd.Members), len(st.Etcd.Members)+len(st.NotMembers), strings.Join(st.NotMembers, ", "))
	}
	if st.Etcd.Foreign != "" {
		fmt.Fprintf(w, "%s\n", st.Etcd.Foreign)
	}
	printSpace(w, st.Etcd)
	if ca := st.CA; ca != nil {
		fmt.Fprintf(w, "cluster CA: %s signs, trust %s", ca.KeyID, ca.Trust)
		if ca.Phase != "" {
			fmt.Fprintf(w, "; rotation in its %s phase ('haagent certs rotate-ca' carries it on)", ca.Phase)
			if len(ca.Pending) > 0 {
				fmt.Fprintf(w, ", pending: %s", strings.Join(ca.Pending, ", "))
			}
		}
		fmt.Fprintln(w)
	}
	printAuth(w, st.EtcdAuth)
	fmt.Fprintf(w, "\nflannel: %s = %s\n\n", st.Flannel.Key, st.Flannel.Value)
	addons.Print(w, st.Addons)
	node.PrintCertWarnings(w, st.CertWarnings)
}

// printAuth writes etcd's authentication as the watchdog sees it.
func printAuth(w io.Writer, a *AuthStatus) {
	if a == nil {
		return
	}
	state := "on"
	if !a.Enabled {
		state = "OFF"
	}
	fmt.Fprintf(w, "etcd auth: %s", state)
	if a.FoundOff > 0 {
		fmt.Fprintf(w, "; found off %d times and turned back on, last at %s", a.FoundOff, a.LastFoundOff.UTC().Format(time.RFC3339))
	}
	if a.LastError != "" {
		fmt.Fprintf(w, "; turning it back on failed: %s", a.LastError)
	}
	fmt.Fprintln(w)
}

// printSpace writes each member's db size against its quota, and etcd's alarms: a
// NOSPACE there is why writes fail, and haagent is clearing it.
func printSpace(w io.Writer, cs etcdmember.ClusterStatus) {
	var parts []string
	for _, m := range cs.Members {
		if m.Quota > 0 {
			parts = append(parts, fmt.Sprintf("%s %s of %s (%d%%, %s in use)", m.Name, humanize.IBytes(uint64(m.DBSize)),
				humanize.IBytes(uint64(m.Quota)), m.DBSize*100/m.Quota, humanize.IBytes(uint64(m.DBSizeInUse))))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "etcd db size of quota: %s\n", strings.Join(parts, ", "))
	}
	if len(cs.Alarms) == 0 {
		fmt.Fprintln(w, "etcd alarms: none")
		return
	}
	var alarms []string
	for _, a := range cs.Alarms {
		alarms = append(alarms, strings.TrimSpace(a.Type+" "+a.Member))
	}
	fmt.Fprintf(w, "etcd alarms: %s\n", strings.Join(alarms, ", "))
	for _, a := range cs.Alarms {
		if a.Type == "NOSPACE" {
			fmt.Fprintln(w, "  NOSPACE: etcd refuses writes; the elected master compacts, defragments and disarms it (see its [space] log lines)")
			break
		}
	}
}

// PrintMembers writes etcd members as an aligned table: name, ID, URLs, role (leader,
// follower, learner, unstarted or unreachable), health and db size.
func PrintMembers(w io.Writer, ms []etcdmember.MemberStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tPEER URL\tCLIENT URL\tROLE\tHEALTH\tDB SIZE")
	for _, m := range ms {
		role := "follower"
		switch {
		case !m.Started:
			role = "unstarted"
		case m.Learner:
			role = "learner"
		case m.Leader:
			role = "leader"
		case !m.Healthy:
			role = "unreachable"
		}
		health := "healthy"
		if !m.Healthy {
			health = "unhealthy"
			if m.Error != "" {
				health += ": " + m.Error
			}
		}
		size := "-"
		if m.DBSize > 0 {
			size = humanize.IBytes(uint64(m.DBSize))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.ID, strings.Join(m.PeerURLs, ","),
			strings.Join(m.ClientURLs, ","), role, health, size)
	}
	_ = tw.Flush()
}
