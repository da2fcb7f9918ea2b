package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/test/framework/rootonly"
	"github.com/haagent/haagent/trust/pki"
)

// beforePeerCA is the last haagent whose etcd peer port trusted the cluster CA.
const beforePeerCA = "727bba4"

// oldBinary builds haagent at rev from this repository's history.
func oldBinary(t *testing.T, rev string) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git: %v", err)
	}
	repo := strings.TrimSpace(string(top))
	if exec.Command("git", "-C", repo, "cat-file", "-e", rev+"^{commit}").Run() != nil {
		// make test runs on a full clone: there, a missing commit fails the test.
		rootonly.Unable(t, fmt.Sprintf("commit %s is not in this clone (shallow?); the upgrade needs it", rev))
	}
	src, out := t.TempDir(), filepath.Join(t.TempDir(), "haagent-"+rev)
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", repo, rev, src))
	if b, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v: %s", rev, err, b)
	}
	build := exec.Command("go", "build", "-o", out, "./cmd/haagent")
	build.Dir, build.Env = src, append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build haagent %s: %v: %s", rev, err, b)
	}
	return out
}

// A cluster made before the peer CA moves over while its masters roll one at a time,
// twice, with a quorum all along; afterwards its peer port trusts the peer CA alone.
func TestPeerCAUpgradeRollsWithoutLosingQuorum(t *testing.T) {
	oldBin := oldBinary(t, beforePeerCA)
	dir := t.TempDir()
	old, cur := procs.NewCluster(oldBin, dir, 3), procs.NewCluster(bin, dir, 3) // the same hosts, two binaries
	old.Secure(serverToken)
	cur.Secure(serverToken)
	t.Cleanup(func() {
		old.StopAll()
		cur.StopAll()
		if t.Failed() {
			for _, m := range cur.Masters {
				t.Logf("--- log of %s ---\n%s", m.Name, m.LogTail(60))
			}
		}
	})
	startReady(t, old)
	all := cur.Endpoints()
	n := 0
	// roll restarts master i from running to next, writing through the other two while
	// it is down (a quorum without it), and checks that all three are healthy after.
	roll := func(i int, running, next *procs.Master) {
		t.Helper()
		if _, err := running.Stop(); err != nil {
			t.Fatalf("stop %s: %v", running.Name, err)
		}
		var others []*procs.Master
		for j, m := range cur.Masters {
			if j != i {
				others = append(others, m)
			}
		}
		n++
		if _, err := cur.Etcdctl(cur.Endpoints(others...), "put", fmt.Sprintf("/roll/%d", n), "x"); err != nil {
			t.Fatalf("no quorum while %s is down: %v", running.Name, err)
		}
		startReady(t, cur, next)
		err := await.Until(context.Background(), "all three members healthy", 30*time.Second, func() error {
			if h, err := cur.HealthyCount(all); h != 3 {
				return fmt.Errorf("%d healthy: %v", h, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sh, err := pki.LoadShared(cur.Masters[0].Root)
	if err != nil {
		t.Fatal(err)
	}

	// The upgrade: each master in turn runs the new haagent.
	for i := range cur.Masters {
		roll(i, old.Masters[i], cur.Masters[i])
	}
	// Once all run it, each presents a peer-CA certificate and drops the cluster CA
	// from its trust, for its next start.
	err = await.Until(context.Background(), "every master to present a peer-CA certificate and drop the cluster CA", 60*time.Second, func() error {
		for _, m := range cur.Masters {
			if pki.LegacyPeerCert(m.Root, sh.CA) || pki.PeerTrustMixed(m.Root) {
				return fmt.Errorf("%s has not moved over", m.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Until they restart, the cluster CA is still trusted for the masters' names only.
	m1, m2 := cur.Masters[0], cur.Masters[1]
	legacyM2 := mustIssue(t, sh.CA, pki.LeafSpec{CommonName: "m2", Hosts: []string{"127.0.0.1", "127.0.0.22"}, Server: true, Client: true})
	flannel := mustIssue(t, sh.CA, pki.LeafSpec{CommonName: pki.FlannelCommonName, Client: true})
	if err := handshake(flannel, m1.IP+":2380"); err == nil {
		t.Fatal("during the move, a flannel certificate completed a handshake on the peer port")
	}
	// The second roll: every master restarts once more, with the peer CA alone.
	for i, m := range cur.Masters {
		roll(i, m, m)
	}
	if err := handshake(legacyM2, m1.IP+":2380"); err == nil {
		t.Fatal("after the move, a cluster-CA certificate with a master's name completed a handshake on the peer port")
	}
	peer, err := tls.LoadX509KeyPair(filepath.Join(m2.Root, pki.EtcdPeerCert), filepath.Join(m2.Root, pki.EtcdPeerKey))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+m1.IP+":2380/members", nil)
	if code, err := peerDo(identity{"m2's peer certificate", peer}, req); err != nil || code != http.StatusOK {
		t.Fatalf("m2's peer certificate on m1's peer port: %d %v", code, err)
	}
}
