package lb

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/reconcile/reconciletest"
	"github.com/haagent/haagent/test/framework/await"
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

// TestRunNginx: nginx's config and unit go through the node's reconciler. A running
// nginx is restarted for a new config; a second run with the same config leaves it
// alone; a stopped nginx is started again.
func TestRunNginx(t *testing.T) {
	root := t.TempDir()
	c := validConfig()
	c.Impl = ImplNginx
	c.Root = root
	c.StatusAddress = "127.0.0.1:0"
	units := &reconciletest.Units{LogStates: true}
	path := filepath.Join(root, NginxConfPath)
	for i, tc := range []struct {
		before string // nginx's state as the run starts
		want   []string
	}{
		{"active", []string{"reload", "enable " + NginxUnit, "states", "restart " + NginxUnit}},
		{"active", []string{"reload", "enable " + NginxUnit, "states"}},
		{"inactive", []string{"reload", "enable " + NginxUnit, "states", "start " + NginxUnit}},
	} {
		units.SetActive(NginxUnit, tc.before)
		l, err := New(c, node.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		l.Units = units
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		// The first pass over the units ends with the states read and the action taken.
		err = await.Until(t.Context(), fmt.Sprintf("run %d: the reconciler's first pass over nginx.service", i), 10*time.Second, func() error {
			if n := units.Len(); n < len(tc.want) {
				return fmt.Errorf("%d calls so far", n)
			}
			return nil
		})
		cancel()
		if rerr := <-done; rerr != nil {
			t.Fatalf("run %d: Run = %v", i, rerr)
		}
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(path); err != nil || !strings.Contains(string(b), "stream {") {
			t.Fatalf("run %d: %s not written: %v", i, path, err)
		}
		got := units.Take()
		// A loaded machine may fit a later pass (every 2 s) in before the stop: it only
		// reads the states, since nothing changed.
		for len(got) > len(tc.want) && got[len(got)-1] == "states" {
			got = got[:len(got)-1]
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("run %d (nginx %s): unit calls %v, want %v", i, tc.before, got, tc.want)
		}
	}
}
