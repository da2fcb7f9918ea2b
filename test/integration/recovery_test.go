package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/haagent/haagent/test/framework/await"
)

// TestScheduledSnapshots runs a master that snapshots every second and keeps two:
// they are listed with their checksums, pruned to two, and the metrics say so.
func TestScheduledSnapshots(t *testing.T) {
	c := newCluster(t)
	m1 := c.Masters[0]
	m1.Extra = []string{"--peers=m1=http://" + m1.IP + ":2380", "--systemd=off", "--snapshot-interval=1s", "--snapshot-retention=2"}
	// A file haagent did not make stays, whatever its name looks like.
	dir := filepath.Join(m1.Root, "var/lib/haagent/snapshots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "haagent-by-hand.db")
	if err := os.WriteFile(foreign, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	startReady(t, c, m1)

	var list []struct {
		Name       string `json:"name"`
		Revision   int64  `json:"revision"`
		ChecksumOK bool   `json:"checksumOK"`
	}
	pruned := func() error {
		out, err := exec.Command(bin, "snapshot", "list", "-o", "json", "--root="+m1.Root).Output()
		if err != nil {
			return fmt.Errorf("snapshot list: %w", err)
		}
		if err := json.Unmarshal(out, &list); err != nil {
			return fmt.Errorf("snapshot list: %w\n%s", err, out)
		}
		if !strings.Contains(m1.Logs(), "[snapshots] pruned") || len(list) != 2 {
			return fmt.Errorf("%d snapshots listed, none pruned yet", len(list))
		}
		return nil
	}
	if err := await.Until(context.Background(), "two snapshots, older ones pruned", 30*time.Second, pruned, await.Every(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if !s.ChecksumOK || s.Revision < 1 || !strings.HasPrefix(s.Name, "haagent-m1-") {
			t.Errorf("snapshot %+v", s)
		}
		if _, err := os.Stat(filepath.Join(dir, s.Name+".sha256")); err != nil {
			t.Errorf("no checksum file: %v", err)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("pruning removed a file haagent did not make: %v", err)
	}
	text, err := exec.Command(bin, "snapshot", "list", "--root="+m1.Root).Output()
	if err != nil || !strings.Contains(string(text), "CHECKSUM") || !strings.Contains(string(text), " ok") {
		t.Fatalf("snapshot list: %v\n%s", err, text)
	}
	metrics, err := httpGet("http://" + m1.StatusAddress() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"haagent_snapshot_failures_total 0", "haagent_snapshot_last_success_timestamp_seconds 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestSnapshotDirInTheWay: a file where the snapshot dir should be fails the start
// with exit 2 naming --snapshot-dir, before anything is written.
func TestSnapshotDirInTheWay(t *testing.T) {
	c := newCluster(t)
	m1 := c.Masters[0]
	if err := os.MkdirAll(filepath.Join(m1.Root, "var/lib"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m1.Root, "var/lib/haagent"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(m1.Args(), "--peers=m1=http://"+m1.IP+":2380", "--systemd=off")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if code := exitOf(err); code != 2 || !strings.Contains(string(out), "--snapshot-dir") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("exit %d, want 2 with one line naming --snapshot-dir:\n%s", code, out)
	}
	if _, err := os.Stat(m1.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused start made the data dir: %v", err)
	}
}

// TestFullEtcdRecoversWithoutAHand fills a 16 MiB quota until etcd raises NOSPACE and
// refuses writes; one master compacts, defragments the followers and then the leader,
// one at a time, and disarms the alarm, and writes through etcdctl work again.
func TestFullEtcdRecoversWithoutAHand(t *testing.T) {
	c := newCluster(t)
	for _, m := range c.Masters {
		m.Extra = []string{"--systemd=off", "--etcd-quota-backend-bytes=16777216"}
	}
	startReady(t, c)
	m1 := c.Masters[0]

	cli := etcdClient(t, c, m1)
	// Overwrite one key: every old revision stays until a compaction, so the db grows.
	val := strings.Repeat("x", 512<<10)
	full := false
	for i := 0; i < 200 && !full; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.Put(ctx, "/fill/big", val)
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrNoSpace):
			full = true
		case err != nil:
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if !full {
		t.Fatal("etcd never raised NOSPACE with a 16 MiB quota")
	}

	if err := await.Until(context.Background(), "etcdctl put to work again", 2*time.Minute, func() error {
		_, err := c.Etcdctl(c.Endpoints(), "put", "/after-nospace", "ok")
		return err
	}, await.Every(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Etcdctl(c.Endpoints(), "alarm", "list"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("alarm list after recovery: %q %v", out, err)
	}

	// One master drove it; its log shows the steps, the followers defragmented before
	// the leader.
	drivers := 0
	for _, m := range c.Masters {
		logs := m.Logs()
		if !strings.Contains(logs, "[space] defragmenting") {
			continue
		}
		drivers++
		var order []string
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, "[space] defragmenting") {
				order = append(order, line)
			}
		}
		if len(order) < 3 {
			t.Fatalf("%s defragmented %d members, want 3:\n%s", m.Name, len(order), strings.Join(order, "\n"))
		}
		first := order[len(order)-3:]
		for i, line := range first {
			if leader := strings.Contains(line, "leader=true"); leader != (i == 2) {
				t.Errorf("defragmentation order is not followers then leader:\n%s", strings.Join(first, "\n"))
			}
		}
		for _, step := range []string{"[space] compacted", "[space] defragmented", "[space] disarmed NOSPACE"} {
			if !strings.Contains(logs, step) {
				t.Errorf("%s's log lacks %q", m.Name, step)
			}
		}
	}
	if drivers != 1 {
		t.Errorf("%d masters drove the recovery, want exactly 1", drivers)
	}

	out, err := exec.Command(bin, "status", "--status-address="+m1.StatusAddress()).Output()
	if err != nil || !strings.Contains(string(out), "etcd alarms: none") || !strings.Contains(string(out), "16 MiB") {
		t.Fatalf("status: %v\n%s", err, out)
	}
}
