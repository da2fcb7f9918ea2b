package lb

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/roles/node"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestRenderNginx(t *testing.T) {
	tests := []struct {
		golden string
		mod    func(*Config)
	}{
		{"nginx.conf.golden", func(*Config) {}},
		{"nginx-least-conn.conf.golden", func(c *Config) {
			c.Policy = "least-conn"
			c.Ports = []int{6443, 2379, 9345}
			c.ListenAddress = "fd00::1"
			c.DialTimeout = 500 * time.Millisecond
		}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			c := validConfig()
			tt.mod(c)
			got := RenderNginx(c)
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("RenderNginx differs from %s (run go test -update if intended):\n%s", path, got)
			}
		})
	}
}

func TestNginxDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "1s", 1500 * time.Millisecond: "1500ms", time.Hour: "1h", 2 * time.Minute: "2m", 90 * time.Second: "90s",
	} {
		if got := nginxDuration(d); got != want {
			t.Errorf("nginxDuration(%s) = %s, want %s", d, got, want)
		}
	}
}

type fakeUnits struct{ calls []string }

func (f *fakeUnits) Enable(_ context.Context, units ...string) error {
	f.calls = append(f.calls, "enable "+strings.Join(units, ","))
	return nil
}
func (f *fakeUnits) Start(_ context.Context, unit string) error {
	f.calls = append(f.calls, "start "+unit)
	return nil
}
func (f *fakeUnits) Restart(_ context.Context, unit string) error {
	f.calls = append(f.calls, "restart "+unit)
	return nil
}

func TestRunNginx(t *testing.T) {
	root := t.TempDir()
	c := validConfig()
	c.Impl = ImplNginx
	c.Root = root
	c.StatusAddress = "127.0.0.1:0"
	units := &fakeUnits{}
	for i := range 2 {
		l, err := New(c, node.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		l.Units = units
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		path := filepath.Join(root, NginxConfPath)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), "stream {") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d: %s not written", i, path)
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run %d: Run = %v", i, err)
		}
	}
	// Both runs enable nginx; the first restarts it for the new file, the second finds the
	// file unchanged and only makes sure nginx runs.
	want := []string{"enable " + NginxUnit, "restart " + NginxUnit, "enable " + NginxUnit, "start " + NginxUnit}
	if !slices.Equal(units.calls, want) {
		t.Errorf("unit calls %v, want %v", units.calls, want)
	}
}
