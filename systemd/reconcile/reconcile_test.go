package reconcile

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/systemdbus"
)

// fakeUnits records calls and keeps unit states like systemd would.
type fakeUnits struct {
	mu       sync.Mutex
	calls    []string
	active   map[string]string
	failNext map[string]error
}

func (f *fakeUnits) Reload(context.Context) error { f.log("reload"); return nil }
func (f *fakeUnits) Enable(_ context.Context, us ...string) error {
	for _, u := range us {
		f.log("enable " + u)
	}
	return nil
}
func (f *fakeUnits) Start(_ context.Context, u string) error   { return f.run("start", u) }
func (f *fakeUnits) Restart(_ context.Context, u string) error { return f.run("restart", u) }
func (f *fakeUnits) Stop(_ context.Context, u string) error {
	f.log("stop " + u)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[u] = "inactive"
	return nil
}
func (f *fakeUnits) States(_ context.Context, us ...string) ([]systemdbus.UnitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []systemdbus.UnitState
	for _, u := range us {
		st := f.active[u]
		if st == "" {
			st = "inactive"
		}
		out = append(out, systemdbus.UnitState{Name: u, LoadState: "loaded", ActiveState: st})
	}
	return out, nil
}
func (f *fakeUnits) log(s string) { f.mu.Lock(); f.calls = append(f.calls, s); f.mu.Unlock() }
func (f *fakeUnits) run(verb, u string) error {
	f.log(verb + " " + u)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext[u]; err != nil {
		delete(f.failNext, u)
		f.active[u] = "failed"
		return err
	}
	f.active[u] = "active"
	return nil
}
func (f *fakeUnits) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

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
	fu := &fakeUnits{active: map[string]string{}, failNext: map[string]error{}}
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
	if got := fu.take(); !slices.Equal(got, want) {
		t.Fatalf("first pass: %v, want %v", got, want)
	}

	r.Once(ctx)
	if got := fu.take(); len(got) != 0 {
		t.Fatalf("a pass with nothing to do made calls: %v", got)
	}

	data["etc/b"] = "B2"
	r.Once(ctx)
	if got := fu.take(); !slices.Equal(got, []string{"restart two.service"}) {
		t.Fatalf("after b changed: %v, want only two.service restarted", got)
	}

	// A hand edit is reverted, backed up, and only its reader restarts.
	if err := os.WriteFile(filepath.Join(root, "etc/a"), []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Once(ctx)
	if got := fu.take(); !slices.Equal(got, []string{"restart one.service"}) {
		t.Fatalf("after a hand edit: %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/a"+files.BackupSuffix)); string(b) != "edited" {
		t.Fatalf("backup = %q", b)
	}
	if r.Status().Reverted != 1 {
		t.Fatalf("reverted = %d", r.Status().Reverted)
	}

	// A unit stopped behind haagent's back is started again; a failing start backs off.
	fu.mu.Lock()
	fu.active["one.service"] = "failed"
	fu.failNext["one.service"] = errors.New("job failed")
	fu.mu.Unlock()
	r.Once(ctx)
	if got := fu.take(); !slices.Equal(got, []string{"start one.service"}) {
		t.Fatalf("failed unit: %v", got)
	}
	r.Once(ctx)
	if got := fu.take(); len(got) != 0 {
		t.Fatalf("retried before the backoff passed: %v", got)
	}
	now = now.Add(2 * time.Second)
	r.Once(ctx)
	if got := fu.take(); !slices.Equal(got, []string{"start one.service"}) {
		t.Fatalf("after the backoff: %v", got)
	}
	st := r.Status()
	if st.Units[0].Active != "active" || st.Units[0].LastError != "" {
		t.Fatalf("status after recovery: %+v", st.Units[0])
	}

	// Files changed outside Render (a renewed certificate) restart their readers.
	r.Changed("etc/b")
	r.Once(ctx)
	if got := fu.take(); !slices.Equal(got, []string{"restart two.service"}) {
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
	fu := &fakeUnits{active: map[string]string{}, failNext: map[string]error{}}
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
	fu.take()

	for i := range 3 {
		r.Changed("etc/cert")
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.Sync(sctx)
		scancel()
		if err != nil {
			t.Fatalf("Sync %d: %v", i, err)
		}
		if got := fu.take(); !slices.Equal(got, []string{"restart one.service"}) {
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
