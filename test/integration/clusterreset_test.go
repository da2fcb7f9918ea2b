package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
)

// clusterReset runs 'haagent cluster-reset' with m's own flags, as an operator would
// with the master's configuration, and no terminal on stdin.
func clusterReset(t *testing.T, m *procs.Master, extra ...string) (code int, stdout, stderr string) {
	t.Helper()
	args := append(append([]string{"cluster-reset"}, m.Args()...), "--env-file=")
	cmd := exec.Command(bin, append(args, extra...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return exitOf(err), out.String(), errb.String()
}

// requireRefused checks a refusal: exit 2, one line on stderr that holds want, and
// nothing on stdout (the plan is printed only once every check has passed).
func requireRefused(t *testing.T, what string, code int, stdout, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != 2 || len(lines) != 1 || !strings.Contains(stderr, want) || stdout != "" {
		t.Fatalf("%s: exit %d, want 2 with one line holding %q:\nstderr: %s\nstdout: %s", what, code, want, stderr, stdout)
	}
}

// treeDigest hashes every path, mode and content under dir, so that a refused command
// is shown to have changed nothing.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %d\n", strings.TrimPrefix(p, dir), fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// wipe makes m a new host: no data dir, no root.
func wipe(t *testing.T, m *procs.Master) {
	t.Helper()
	for _, d := range []string{m.DataDir, m.Root} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
}

var beforeLoss = map[string]string{
	"/before-loss":                 "kept",
	"/registry/pods/default/web":   "a pod",
	"/registry/secrets/default/db": "a secret",
}

func putAll(t *testing.T, c *procs.Cluster, endpoints string) {
	t.Helper()
	for k, v := range beforeLoss {
		if _, err := c.Etcdctl(endpoints, "put", k, v); err != nil {
			t.Fatal(err)
		}
	}
}

func requireAll(t *testing.T, c *procs.Cluster, endpoints string) {
	t.Helper()
	for k, v := range beforeLoss {
		out, err := c.Etcdctl(endpoints, "get", k, "--print-value-only")
		if err != nil || strings.TrimSpace(out) != v {
			t.Fatalf("get %s via %s: %q %v, want %q", k, endpoints, out, err, v)
		}
	}
}

// TestClusterResetAfterQuorumLoss: two of three masters are lost for good; cluster-reset
// on the survivor refuses while it runs and while the others answer, then makes it a
// one-member cluster with all its data; two rebuilt masters join it.
func TestClusterResetAfterQuorumLoss(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	m1, m2, m3 := c.Masters[0], c.Masters[1], c.Masters[2]
	putAll(t, c, c.Endpoints())

	code, out, errOut := clusterReset(t, m1, "--yes")
	requireRefused(t, "cluster-reset while haagent runs", code, out, errOut, "stop it first")

	if code, err := m1.Stop(); err != nil || code != 0 {
		t.Fatalf("stop m1: %d %v", code, err)
	}
	before := treeDigest(t, m1.DataDir)
	code, out, errOut = clusterReset(t, m1, "--yes")
	requireRefused(t, "cluster-reset with the peers healthy", code, out, errOut, "quorum")
	if treeDigest(t, m1.DataDir) != before {
		t.Fatal("a refused cluster-reset changed the data dir")
	}

	// m2 and m3 are gone for good.
	for _, m := range []*procs.Master{m2, m3} {
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut = clusterReset(t, m1)
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); code != 2 || len(lines) != 1 || !strings.Contains(errOut, "--yes") ||
		!strings.Contains(out, "force-new-cluster") || !strings.Contains(out, "m2 (") {
		t.Fatalf("cluster-reset without a terminal or --yes: exit %d, want 2 naming --yes after the plan:\n%s%s", code, out, errOut)
	}
	if treeDigest(t, m1.DataDir) != before {
		t.Fatal("an unconfirmed cluster-reset changed the data dir")
	}
	code, out, errOut = clusterReset(t, m1, "--yes")
	if code != 0 || !strings.Contains(out, "is the only member of etcd cluster") {
		t.Fatalf("cluster-reset --yes: exit %d\n%s%s", code, out, errOut)
	}

	startReady(t, c, m1)
	if _, err := c.Etcdctl(m1.ClientURL(), "put", "/after-reset", "ok"); err != nil {
		t.Fatalf("write after cluster-reset: %v", err)
	}
	requireMembers(t, c, m1.ClientURL(), "m1")
	requireAll(t, c, m1.ClientURL())
	st, err := exec.Command(bin, "status", "--status-address="+m1.StatusAddress()).Output()
	if err != nil || !strings.Contains(string(st), "1 of 3 masters are members; not members: m2, m3") {
		t.Fatalf("status after cluster-reset: %v\n%s", err, st)
	}

	// A lost master that comes back with its old data dir is refused as removed.
	if err := m2.Start(); err != nil {
		t.Fatal(err)
	}
	if code, err := m2.Wait(30 * time.Second); err != nil || code != 3 {
		t.Fatalf("m2 back with its old data dir: exit %d %v, want 3 (removed):\n%s", code, err, m2.LogTail(8))
	}

	// The lost hosts are rebuilt: empty disks, the usual configuration.
	wipe(t, m2)
	wipe(t, m3)
	startReady(t, c, m2, m3)
	requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	requireAll(t, c, m3.ClientURL())
	if out, err := c.Etcdctl(m2.ClientURL(), "get", "/after-reset", "--print-value-only"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("get /after-reset via m2: %q %v", out, err)
	}
}

// TestClusterResetRestoreOntoNewHosts: m1 and m2 are lost; a snapshot is restored on a
// new m1 under a new cluster ID, a new m2 joins it, and m3, left on the old cluster,
// is refused and says so, naming both cluster IDs, until it is reset and rejoins.
// On the way, bad snapshots and a data dir in the way are refused, changing nothing.
func TestClusterResetRestoreOntoNewHosts(t *testing.T) {
	c := newCluster(t)
	startReady(t, c)
	m1, m2, m3 := c.Masters[0], c.Masters[1], c.Masters[2]
	putAll(t, c, c.Endpoints())
	snapDir := t.TempDir()
	snap := filepath.Join(snapDir, "snap.db")
	if _, err := c.Etcdctl(m1.ClientURL(), "snapshot", "save", snap); err != nil {
		t.Fatal(err)
	}
	_, oldID, err := c.MemberList(c.Endpoints())
	if err != nil {
		t.Fatal(err)
	}

	for _, m := range []*procs.Master{m1, m2} {
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
		wipe(t, m)
	}

	// Bad input: a truncated snapshot, one that doesn't match its checksum file, a data
	// dir in the way. Each is refused with one line, and nothing changes.
	b, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(snapDir, "truncated.db")
	corrupt := filepath.Join(snapDir, "corrupt.db")
	sum := sha256.Sum256(b)
	b[len(b)/2] ^= 0xff
	for path, data := range map[string][]byte{truncated: b[:len(b)/3], corrupt: b, corrupt + ".sha256": []byte(hex.EncodeToString(sum[:]) + "  corrupt.db\n")} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := clusterReset(t, m1, "--yes", "--restore="+truncated)
	requireRefused(t, "restore of a truncated snapshot", code, out, errOut, "truncated")
	code, out, errOut = clusterReset(t, m1, "--yes", "--restore="+corrupt)
	requireRefused(t, "restore of a corrupt snapshot", code, out, errOut, "sha256 does not match")
	if err := os.MkdirAll(filepath.Join(m1.DataDir, "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	before := treeDigest(t, filepath.Dir(m1.DataDir))
	code, out, errOut = clusterReset(t, m1, "--yes", "--restore="+snap)
	requireRefused(t, "restore into a data dir that is not empty", code, out, errOut, "--move-data-dir")
	if treeDigest(t, filepath.Dir(m1.DataDir)) != before {
		t.Fatal("a refused restore changed the host")
	}

	code, out, errOut = clusterReset(t, m1, "--yes", "--move-data-dir", "--restore="+snap)
	if code != 0 || !strings.Contains(out, "new etcd cluster") {
		t.Fatalf("cluster-reset --restore: exit %d\n%s%s", code, out, errOut)
	}
	startReady(t, c, m1)
	startReady(t, c, m2)
	requireMembers(t, c, c.Endpoints(m1, m2), "m1", "m2")
	_, newID, err := c.MemberList(c.Endpoints(m1, m2))
	if err != nil {
		t.Fatal(err)
	}
	if newID == oldID {
		t.Fatalf("the restored cluster kept the old cluster ID %x", oldID)
	}
	requireAll(t, c, m2.ClientURL())

	// m3 still runs the old cluster: it and the new ones say so, naming both IDs.
	oldHex, newHex := fmt.Sprintf("%x", oldID), fmt.Sprintf("%x", newID)
	err = await.Until(context.Background(), "m3 and m1 to log the cluster ID mismatch", 30*time.Second, func() error {
		for _, m := range []*procs.Master{m3, m1} {
			var line string
			for _, l := range strings.Split(m.Logs(), "\n") {
				if strings.Contains(l, "[membership] cluster ID mismatch") {
					line = l
				}
			}
			if !strings.Contains(line, oldHex) || !strings.Contains(line, newHex) || !strings.Contains(line, "haagent reset --yes") {
				return fmt.Errorf("%s's log lacks haagent's line on the cluster ID mismatch, naming both IDs and the fix", m.Name)
			}
		}
		return nil
	}, await.Every(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	err = await.Until(context.Background(), "m3's /readyz to name the mismatch", 10*time.Second, func() error {
		body, _ := httpGet("http://" + m3.StatusAddress() + "/readyz")
		if !strings.Contains(body, "cluster ID mismatch") {
			return fmt.Errorf("/readyz: %q", body)
		}
		return nil
	}, await.Every(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m3.Logs(), "which does not list this master") || !strings.Contains(m1.Logs(), "peer m3") {
		t.Fatalf("the mismatch lines don't say which side was left behind:\nm3: %s\nm1: %s", m3.LogTail(5), m1.LogTail(5))
	}

	// The fix the message gives: reset m3 and start it; it joins the restored cluster.
	if _, err := m3.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "reset", "--yes", "--root="+m3.Root, "--data-dir="+m3.DataDir, "--systemd=off").CombinedOutput(); err != nil {
		t.Fatalf("reset m3: %v\n%s", err, out)
	}
	startReady(t, c, m3)
	requireMembers(t, c, c.Endpoints(), "m1", "m2", "m3")
	requireAll(t, c, m3.ClientURL())
}
