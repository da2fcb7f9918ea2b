package reconcile

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/reconcile/reconciletest"
)

// fakeUnits records calls and keeps unit states like systemd would.
func TestReconcile(t *testing.T) {
	root := t.TempDir()
	data := map[string]string{"etc/a": "A1", "etc/b": "B1"}
	render := func() ([]files.File, error) {
		var fs []files.File
		for p, d := range data {
			fs = append(fs, files.File{Path: p, Mode: 0o644, Data: []byte(d)})
		}
		return fs, nil
	}
	fu := &reconciletest.Units{}
	now := time.Unix(1000, 0)
	r := New(Config{
		Render:  render,
		Units:   []Unit{{Name: "one.service", Reads: []string{"etc/a"}}, {Name: "two.service", Reads: []string{"etc/b"}}},
		Owned:   &files.Owned{Root: root, StatePath: "state.json"},
		Manager: fu, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return now },
	})
	ctx := context.Background()

	r.Once(ctx)
	want := []string{"reload", "enable one.service", "enable two.service", "start one.service", "start two.service"}
	if got := fu.Take(); !slices.Equal(got, want) {
		t.Fatalf("first pass: %v, want %v", got, want)
	}

	r.Once(ctx)
	if got := fu.Take(); len(got) != 0 {
		t.Fatalf("a pass with nothing to do made calls: %v", got)
	}

	data["etc/b"] = "B2"
	r.Once(ctx)
	if got := fu.Take(); !slices.Equal(got, []string{"restart two.service"}) {
		t.Fatalf("after b changed: %v, want only two.service restarted", got)
	}

	// A hand edit is reverted, backed up, and only its reader restarts.
	if err := os.WriteFile(filepath.Join(root, "etc/a"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Once(ctx)
	if got := fu.Take(); !slices.Equal(got, []string{"restart one.service"}) {
		t.Fatalf("after a hand edit: %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/a"+files.BackupSuffix)); string(b) != "edited" {
		t.Fatalf("backup = %q", b)
	}
	if r.Status().Reverted != 1 {
		t.Fatalf("reverted = %d", r.Status().Reverted)
	}

	// A unit stopped behind haagent's back is started again; a failing start backs off.
	fu.SetActive("one.service", "failed")
	fu.FailNext("one.service", errors.New("job failed"))
	r.Once(ctx)
	if got := fu.Take(); !slices.Equal(got, []string{"start one.service"}) {
		t.Fatalf("failed unit: %v", got)
	}
	r.Once(ctx)
	if got := fu.Take(); len(got) != 0 {
		t.Fatalf("retried before the backoff passed: %v", got)
	}
	now = now.Add(2 * time.Second)
	r.Once(ctx)
	if got := fu.Take(); !slices.Equal(got, []string{"start one.service"}) {
		t.Fatalf("after the backoff: %v", got)
	}
	st := r.Status()
	if st.Units[0].Active != "active" || st.Units[0].LastError != "" {
		t.Fatalf("status after recovery: %+v", st.Units[0])
	}

	// Files changed outside Render (a renewed certificate) restart their readers.
	r.Changed("etc/b")
	r.Once(ctx)
	if got := fu.Take(); !slices.Equal(got, []string{"restart two.service"}) {
		t.Fatalf("after Changed(etc/b): %v", got)
	}
}

// TestReconcilePrunesStaleMirrors: a registry mirror taken off the flags loses the
// hosts.toml haagent wrote for it (in a dir of Config.PruneDirs), on the next pass;
// the other mirror's stays.
func TestReconcilePrunesStaleMirrors(t *testing.T) {
	root := t.TempDir()
	const certsDir = "etc/containerd/certs.d"
	mirrors := []string{"docker.io", "quay.io"}
	render := func() ([]files.File, error) {
		var fs []files.File
		for _, m := range mirrors {
			fs = append(fs, files.File{Path: certsDir + "/" + m + "/hosts.toml", Data: []byte("server = \"https://" + m + "\"\n"), Mode: 0o644})
		}
		return fs, nil
	}
	r := New(Config{Render: render, Owned: &files.Owned{Root: root, StatePath: "state.json"}, PruneDirs: []string{certsDir},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now})
	quay := filepath.Join(root, certsDir, "quay.io", "hosts.toml")
	docker := filepath.Join(root, certsDir, "docker.io", "hosts.toml")
	r.Once(context.Background())
	if _, err := os.Stat(quay); err != nil {
		t.Fatalf("first pass: %v", err)
	}
	mirrors = mirrors[:1]
	r.Once(context.Background())
	if _, err := os.Stat(filepath.Dir(quay)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("quay.io's mirror was removed, but its certs.d dir is still there (%v)", err)
	}
	if _, err := os.Stat(docker); err != nil {
		t.Errorf("docker.io's hosts.toml: %v", err)
	}
	st := r.Status()
	if slices.Contains(st.ManagedFile, "/"+certsDir+"/quay.io/hosts.toml") || st.LastError != "" {
		t.Errorf("status after the prune: managed %v, error %q", st.ManagedFile, st.LastError)
	}
}

// TestSyncRestartsBeforeItReturns: with Run passing only every hour, Sync after Changed
// returns once the reader of the changed file has been restarted, and a Sync whose
// context ends first says what it waited for.
func TestSyncRestartsBeforeItReturns(t *testing.T) {
	fu := &reconciletest.Units{}
	r := New(Config{
		Render: func() ([]files.File, error) {
			return []files.File{{Path: "etc/a", Mode: 0o644, Data: []byte("A")}}, nil
		},
		Units:   []Unit{{Name: "one.service", Reads: []string{"etc/a", "etc/cert"}}},
		Owned:   &files.Owned{Root: t.TempDir(), StatePath: "state.json"},
		Manager: fu, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Interval: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.FirstPass()
	fu.Take()

	for i := range 3 {
		r.Changed("etc/cert")
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.Sync(sctx)
		scancel()
		if err != nil {
			t.Fatalf("Sync %d: %v", i, err)
		}
		if got := fu.Take(); !slices.Equal(got, []string{"restart one.service"}) {
			t.Fatalf("Sync %d returned after %v, want one.service restarted", i, got)
		}
	}

	cancel()
	<-done
	sctx, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer scancel()
	if err := r.Sync(sctx); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync without Run: %v, want the deadline", err)
	}
}

// TestRetire: a reset stops and disables the units last first, removes their files,
// then has systemd forget them; remove's error comes back.
func TestRetire(t *testing.T) {
	fu := &reconciletest.Units{}
	fu.SetActive("a.service", "active")
	removed := false
	err := Retire(context.Background(), fu, []string{"a.service", "b.service"}, func() error {
		removed = true
		fu.Reload(context.Background()) // marks where remove ran among the calls
		return errors.New("one file would not go")
	}, slog.New(slog.DiscardHandler))
	if err == nil || !removed {
		t.Fatalf("Retire = %v (remove ran: %v), want remove's error", err, removed)
	}
	want := []string{"stop b.service", "disable b.service", "stop a.service", "disable a.service", "reload", "reload"}
	if got := fu.Take(); !slices.Equal(got, want) {
		t.Errorf("calls %v, want %v", got, want)
	}
}
