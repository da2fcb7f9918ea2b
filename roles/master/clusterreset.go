package master

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/haagent/haagent/embed/etcdmember"
	"github.com/haagent/haagent/embed/snapshots"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/trust/pki"
)

// Refusal is a cluster-reset refused before it changed anything: the operator's input
// or the cluster's state says no. The command exits 2 with it.
type Refusal struct{ Err error }

func (r Refusal) Error() string { return r.Err.Error() }
func (r Refusal) Unwrap() error { return r.Err }

func refusef(format string, args ...any) error { return Refusal{fmt.Errorf(format, args...)} }

// ResetOptions say what cluster-reset does beyond the master's own configuration.
type ResetOptions struct {
	// Restore is a snapshot file to restore under a new cluster ID; empty keeps the
	// data dir's own data (etcd's force-new-cluster).
	Restore string
	// MoveDataDir lets a restore rename a data dir that is not empty aside instead of
	// refusing.
	MoveDataDir bool
	// Confirm gets the plan, one line each, before anything changes; an error stops.
	Confirm func(plan []string) error
	// Out gets the outcome.
	Out io.Writer
}

// ClusterReset makes this master the only member of a cluster again, with haagent
// stopped on this host: from its own data dir after the others are lost for good, or
// from a snapshot on a new host. The masters started afterwards with empty data dirs
// join it. It refuses, changing nothing, while a quorum of the old cluster answers.
func ClusterReset(ctx context.Context, cfg *Config, lg *slog.Logger, o ResetOptions) error {
	// etcd's warnings of a one-time start (its listeners, its removed peers) would bury
	// the plan and the outcome; its errors still show.
	member, _, err := cfg.newMember(lg, slog.LevelError)
	if err != nil {
		return err
	}
	if err := cfg.checkStopped(); err != nil {
		return err
	}
	if o.Restore == "" {
		return cfg.forceNewCluster(ctx, member, o)
	}
	return cfg.restore(ctx, member, o)
}

// checkStopped refuses while the master runs here: its status port answers.
func (c *Config) checkStopped() error {
	host, port, err := net.SplitHostPort(c.StatusAddress)
	if err != nil {
		return refusef("--status-address: %q is not host:port", c.StatusAddress)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 500*time.Millisecond)
	if err == nil {
		conn.Close()
		return refusef("cluster-reset: haagent runs on this host (its status address %s answers); stop it first: 'systemctl stop haagent'", c.StatusAddress)
	}
	return nil
}

// quorum is how many of n voting members make a majority.
func quorum(n int) int { return n/2 + 1 }

// dataDirMembers reads the member list that the data dir holds, refusing while a
// running etcd holds the dir.
func (c *Config) dataDirMembers() ([]etcdmember.Member, error) {
	ms, err := etcdmember.DataDirMembers(c.DataDir)
	if errors.Is(err, etcdmember.ErrInUse) {
		return nil, refusef("--data-dir: %s is in use by a running etcd; stop haagent on this host first: 'systemctl stop haagent'", c.DataDir)
	}
	return ms, err
}

func (c *Config) forceNewCluster(ctx context.Context, member *etcdmember.Server, o ResetOptions) error {
	if !etcdmember.HasData(c.DataDir) {
		return refusef("--data-dir: %s holds no etcd member; cluster-reset keeps the data of the master that survived, so run it there, or restore a snapshot with --restore=FILE", c.DataDir)
	}
	ms, err := c.dataDirMembers()
	if err != nil {
		return err
	}
	peers := c.PeerList()
	self, _ := peers.ByName(c.Name)
	voters, gone := 0, []string{}
	for _, m := range ms {
		if !m.IsLearner {
			voters++
		}
		if m.Name != c.Name && !slices.Contains(m.PeerURLs, self.URL.String()) {
			gone = append(gone, fmt.Sprintf("%s (%s, %s)", orID(m), types.ID(m.ID), strings.Join(m.PeerURLs, ",")))
		}
	}
	if len(ms) <= 1 {
		return refusef("cluster-reset: %s is already the only member of its cluster; start haagent: 'systemctl start haagent'", c.Name)
	}
	answers, err := member.Reachable(ctx, ms)
	if err != nil {
		return err
	}
	if alive := 1 + len(answers); alive >= quorum(voters) {
		return refusef("cluster-reset: %d of the cluster's %d members are reachable (this one and %s): the cluster still has a quorum and nothing was changed; start haagent here instead ('systemctl start haagent'); cluster-reset is for when most masters are gone for good",
			alive, voters, answerNames(answers))
	}
	plan := []string{
		fmt.Sprintf("keep every key in %s and make member %s the only member of its etcd cluster (etcd's force-new-cluster)", c.DataDir, c.Name),
		"drop the members that are gone: " + strings.Join(gone, ", "),
		"start etcd once on this host to commit that, then stop it; nothing is deleted",
		"afterwards: start haagent here ('systemctl start haagent'); rebuilt masters with empty data dirs then join with their usual configuration",
	}
	if err := o.Confirm(plan); err != nil {
		return err
	}
	out, err := member.StartOnce(ctx, true)
	if err != nil {
		return fmt.Errorf("cluster-reset: %w", err)
	}
	fmt.Fprintf(o.Out, "cluster-reset: %s (member %s) is the only member of etcd cluster %s, all data kept (revision %d); "+
		"next: start haagent here ('systemctl start haagent'), then the rebuilt masters with empty data dirs, which join it\n",
		c.Name, out.MemberID, out.ClusterID, out.Revision)
	return nil
}

func (c *Config) restore(ctx context.Context, member *etcdmember.Server, o ResetOptions) error {
	file := o.Restore
	st, err := snapshots.Check(file)
	if err != nil {
		return refusef("--restore: %s: %v; nothing was changed; pick another snapshot ('haagent snapshot list' checks them)", file, err)
	}
	nonEmpty, err := dirHasEntries(c.DataDir)
	if err != nil {
		return err
	}
	aside := fmt.Sprintf("%s.before-restore-%s", c.DataDir, time.Now().UTC().Format("20060102T150405Z"))
	if nonEmpty && !o.MoveDataDir {
		return refusef("--data-dir: %s is not empty; cluster-reset --restore never overwrites a data dir: move it away, or pass --move-data-dir to have it renamed to %s",
			c.DataDir, aside)
	}
	if etcdmember.HasData(c.DataDir) {
		if _, err := c.dataDirMembers(); err != nil {
			return err
		}
	}
	peers := c.PeerList()
	answers, err := member.Reachable(ctx, member.PeersAsMembers())
	if err != nil {
		return err
	}
	if len(answers) >= quorum(len(peers)) {
		return refusef("cluster-reset --restore: %s answer on their peer ports, a quorum of the %d masters in --peers: the old cluster still runs and nothing was changed; stop haagent on them first, so that the restored cluster is the only one",
			answerNames(answers), len(peers))
	}
	var token pki.Token
	if !c.Insecure {
		if token, err = c.resetToken(); err != nil {
			return err
		}
	}

	plan := []string{}
	if nonEmpty {
		plan = append(plan, fmt.Sprintf("rename %s to %s (nothing is deleted)", c.DataDir, aside))
	}
	plan = append(plan, fmt.Sprintf("restore %s (revision %d, %d keys, checksum ok) into %s as member %s, the only member of a NEW etcd cluster with a new cluster ID",
		file, st.Revision, st.TotalKey, c.DataDir, c.Name))
	if !c.Insecure {
		plan = append(plan, fmt.Sprintf("open the cluster CA sealed in the snapshot with the token, and write this master's certificates under %s", c.Root))
	}
	plan = append(plan, "afterwards: start haagent here ('systemctl start haagent'), then the other masters with empty data dirs: they join; "+
		"masters still on the old cluster are refused (cluster ID mismatch) until 'haagent reset --yes' on them")
	if err := o.Confirm(plan); err != nil {
		return err
	}

	// Restore beside the data dir, then rename: a failure anywhere leaves the data dir
	// as it was, and the temporary dir is ours to remove.
	if err := os.MkdirAll(filepath.Dir(c.DataDir), 0o755); err != nil {
		return fmt.Errorf("cluster-reset: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(c.DataDir), filepath.Base(c.DataDir)+".restoring-")
	if err != nil {
		return fmt.Errorf("cluster-reset: %w", err)
	}
	defer os.RemoveAll(tmp)
	restored := filepath.Join(tmp, "etcd")
	clusterID, err := member.Restore(file, restored)
	if err != nil {
		return fmt.Errorf("cluster-reset: %w", err)
	}
	if !c.Insecure {
		if err := c.certificatesFromSnapshot(restored, token); err != nil {
			return err
		}
	}
	if nonEmpty {
		if err := os.Rename(c.DataDir, aside); err != nil {
			return fmt.Errorf("cluster-reset: move the data dir aside: %w", err)
		}
	} else if err := os.Remove(c.DataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cluster-reset: %w", err)
	}
	if err := os.Rename(restored, c.DataDir); err != nil {
		return fmt.Errorf("cluster-reset: put the restored data dir in place: %w", err)
	}
	fmt.Fprintf(o.Out, "cluster-reset: restored %s (revision %d) into %s: %s is the only member of the new etcd cluster %s; "+
		"next: start haagent here ('systemctl start haagent'), then the other masters with empty data dirs, which join it\n",
		file, st.Revision, c.DataDir, c.Name, clusterID)
	return nil
}

// resetToken is the server token, as the master finds it: the flag, else the one it saved.
func (c *Config) resetToken() (pki.Token, error) {
	if c.Token == "" {
		t, err := pki.ReadTokenFile(filepath.Join(c.Root, TokenFile))
		if errors.Is(err, os.ErrNotExist) {
			return pki.Token{}, refusef("--token: needed to open the cluster CA sealed in the snapshot; give the cluster's server token")
		}
		if err != nil {
			return pki.Token{}, refusef("--token: the saved one: %v", err)
		}
		return t, nil
	}
	t, err := pki.ParseToken(c.Token)
	if err != nil {
		return pki.Token{}, refusef("--token: %v", err)
	}
	return t, nil
}

// certificatesFromSnapshot opens the CA sealed in the restored data with the token and
// issues this master's certificates from it: on new hosts no master is left to join.
func (c *Config) certificatesFromSnapshot(dataDir string, token pki.Token) error {
	sealed, err := etcdmember.ReadKey(dataDir, pki.SharedKey)
	if err != nil {
		return fmt.Errorf("cluster-reset: %w", err)
	}
	if sealed == nil {
		return refusef("--restore: the snapshot holds no cluster CA (%s); nothing was changed; restore a snapshot of a haagent cluster in secure mode", pki.SharedKey)
	}
	sh, err := pki.OpenShared(token, sealed)
	if err != nil {
		return refusef("--token: it does not open the cluster CA sealed in the snapshot (%v); nothing was changed; give the token of the cluster the snapshot was taken from", err)
	}
	if mine, err := pki.LoadShared(c.Root); err == nil && !mine.CA.Cert.Equal(sh.CA.Cert) {
		return refusef("--root: %s holds another cluster's CA than the snapshot's; nothing was changed; run 'haagent reset --yes' on this host first", c.Root)
	}
	fs, err := pki.Issue(sh, c.Node(), time.Now())
	if err != nil {
		return fmt.Errorf("cluster-reset: issue this master's certificates: %w", err)
	}
	if _, err := node.WriteCredentials(c.Root, fs); err != nil {
		return fmt.Errorf("cluster-reset: write this master's certificates: %w", err)
	}
	return nil
}

func dirHasEntries(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("--data-dir: %w", err)
	}
	return len(ents) > 0, nil
}

func answerNames(as []etcdmember.Answer) string {
	names := make([]string, len(as))
	for i, a := range as {
		names[i] = a.Name
	}
	return strings.Join(names, ", ")
}

func orID(m etcdmember.Member) string {
	if m.Name != "" {
		return m.Name
	}
	return types.ID(m.ID).String()
}
