package snapshots

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/etcdtest"
)

func TestTakeVerifyPruneList(t *testing.T) {
	cli := etcdtest.Start(t)
	if _, err := cli.Put(context.Background(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "snaps")
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	m := NewMetrics()
	s := New(Config{Dir: dir, Retention: 2, Node: "m1", Client: func() *clientv3.Client { return cli },
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }}, m)
	// Files haagent did not make, and another node's, are never pruned.
	foreign := []string{"notes.db", FileName("m2", now.Add(-time.Hour))}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range foreign {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var taken []Info
	for i := range 3 {
		now = now.Add(time.Duration(i+1) * time.Minute)
		in, err := s.Take(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if in.Revision < 2 || !in.ChecksumOK {
			t.Fatalf("take: %+v", in)
		}
		taken = append(taken, in)
	}
	removed, err := Prune(dir, "m1", 2)
	if err != nil || len(removed) != 1 || removed[0] != taken[0].Path {
		t.Fatalf("prune removed %v (%v), want only %s", removed, err, taken[0].Path)
	}
	for _, f := range foreign {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("prune removed %s, which is not this node's snapshot: %v", f, err)
		}
	}
	if _, err := os.Stat(taken[0].Path + ChecksumSuffix); !os.IsNotExist(err) {
		t.Error("prune left the checksum file of the snapshot it removed")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".part") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
	infos, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var mine []Info
	for _, in := range infos {
		if in.Node == "m1" {
			mine = append(mine, in)
		}
	}
	if len(mine) != 2 || !mine[0].ChecksumOK || !mine[1].ChecksumOK || mine[1].Revision != taken[2].Revision {
		t.Fatalf("list: %+v", mine)
	}

	// Before a restore, Check reads the checksum file too.
	if _, err := Check(mine[1].Path); err != nil {
		t.Fatalf("check of a good snapshot: %v", err)
	}

	// A snapshot changed after it was written shows as bad, and fails verification.
	b, _ := os.ReadFile(mine[1].Path)
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(mine[1].Path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(mine[1].Path); err == nil {
		t.Error("a corrupt snapshot passed verification")
	}
	if _, err := Check(mine[1].Path); err == nil || !strings.Contains(err.Error(), "sha256 does not match") {
		t.Errorf("check of a corrupt snapshot: %v", err)
	}
	if err := os.WriteFile(mine[0].Path, b[:len(b)-100], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(mine[0].Path); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("a truncated snapshot: %v", err)
	}
	infos, _ = List(dir)
	for _, in := range infos {
		if in.Node == "m1" && in.ChecksumOK {
			t.Errorf("list says the changed %s is ok", in.Name)
		}
	}
	if _, err := Prune(dir, "m1", 0); err == nil {
		t.Error("prune with keep 0 did not refuse")
	}
}

func TestRunCountsAFailureAndGoesOn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "in-the-way")
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cli := etcdtest.Start(t)
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Dir: dir, Interval: 10 * time.Millisecond, Retention: 1, Node: "m1",
		Client: func() *clientv3.Client { return cli }, Logger: slog.New(slog.DiscardHandler)}, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if err := await.Until(context.Background(), "two failed snapshots counted", 20*time.Second, func() error {
		select {
		case err := <-done:
			return await.Stop(fmt.Errorf("Run returned %v after a failed snapshot; it must go on", err))
		default:
		}
		if n := value(t, reg, "haagent_snapshot_failures_total"); n < 2 {
			return fmt.Errorf("%v counted", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if value(t, reg, "haagent_snapshot_last_success_timestamp_seconds") != 0 {
		t.Error("a last success time without a success")
	}
}

// value reads one metric as /metrics would serve it.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s not gathered", name)
	return 0
}
