package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig(t *testing.T) *Config {
	c := NewConfig()
	c.Name = "n1"
	c.Root = t.TempDir()
	c.StatusAddress = "127.0.0.1:0"
	c.Systemd = reconcile.SystemdOff
	c.Insecure = true
	return &c
}

func TestValidate(t *testing.T) {
	token, err := pki.GenerateToken(pki.KindServer)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name        string
		mod         func(*Config)
		tokenNeeded string
		want        []string
	}{
		{"defaults with a name", func(*Config) {}, "", nil},
		{"token needed", func(*Config) {}, "for the test; pass one", []string{"--token: required for the test; pass one"}},
		{"token needed but insecure", func(c *Config) { c.Insecure = true }, "for the test", nil},
		{"token given", func(c *Config) { c.Token = token.String() }, "for the test", nil},
		{"malformed token", func(c *Config) { c.Token = "short" }, "", []string{"--token: malformed"}},
		{"the server token on a master", func(c *Config) { c.Token = token.String() }, "", nil},
		{"an agent token on a master", func(c *Config) { c.Token = "agent:" + token.Secret }, "", []string{"--token: this is the agent token; masters take the server token"}},
		{"a guessable token", func(c *Config) { c.Token = "server:0123456789abcdef0123" }, "", []string{"--token: the secret has about 80 bits of entropy, fewer than 128"}},
		{"a guessable token from a file", func(c *Config) { c.Token, c.TokenFile = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "/t" }, "", []string{"--token-file: the secret has about 0 bits"}},
		{"all at once", func(c *Config) {
			c.Name, c.JoinPort, c.Root, c.StatusAddress, c.Systemd = "", 0, "rel", "9110", "maybe"
		}, "", []string{"--name:", "--join-port: 0", `--root: "rel"`, `--status-address: "9110"`, `--systemd: "maybe"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			c.Name = "n1"
			tt.mod(&c)
			errs := c.Validate("master", tt.tokenNeeded)
			if len(errs) != len(tt.want) {
				t.Fatalf("Validate = %v; want %d errors", errs, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(errs[i].Error(), w) {
					t.Errorf("error %d = %q; want it to start with %q", i, errs[i], w)
				}
			}
		})
	}
	agent, _ := pki.GenerateToken(pki.KindAgent)
	lb, _ := pki.GenerateToken(pki.KindLB)
	for _, tt := range []struct {
		role string
		tok  pki.Token
		want string
	}{
		{"minion", token, "--token: this is the server token; minions take the agent token from 'haagent token show --kind=agent' on a master"},
		{"lb", token, "--token: this is the server token; lbs take the lb token from 'haagent token show --kind=lb' on a master"},
		{"lb", agent, "--token: this is the agent token; lbs take the lb token from 'haagent token show --kind=lb' on a master"},
		{"minion", lb, "--token: this is the lb token; minions take the agent token from 'haagent token show --kind=agent' on a master"},
		{"master", lb, "--token: this is the lb token; masters take the server token from 'haagent token show --kind=server' on a master"},
		{"lb", lb, ""},
		{"lb", pki.Token{Secret: "a-legacy-cluster-token-0123456789"}, ""},
	} {
		c := NewConfig()
		c.Name, c.Token = "n1", tt.tok.String()
		errs := c.Validate(tt.role, "")
		if tt.want == "" && len(errs) != 0 || tt.want != "" && (len(errs) != 1 || errs[0].Error() != tt.want) {
			t.Errorf("%s with the %s token: %v; want %q", tt.role, tt.tok.Kind, errs, tt.want)
		}
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	tok, _ := pki.GenerateToken(pki.KindAgent)
	if err := os.WriteFile(file, []byte(tok.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, token, file string
		want              string // the error's start, or "" for the token read
	}{
		{"the file", "", file, ""},
		{"no file", tok.String(), "", ""},
		{"both", tok.String(), file, "--token and --token-file: both given"},
		{"a missing file", "", filepath.Join(dir, "none"), "--token-file: open "},
		{"an empty file", "", empty, "--token-file: " + empty + " is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			c.Name, c.Token, c.TokenFile = "n1", tt.token, tt.file
			err := c.Complete()
			switch {
			case tt.want == "" && err != nil:
				t.Fatal(err)
			case tt.want == "" && c.Token != tok.String():
				t.Fatalf("token %q, want %q", c.Token, tok)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n")):
				t.Fatalf("err = %v, want one line starting %q", err, tt.want)
			}
		})
	}
}

// leaf is a certificate file valid from now for a year: not due for renewal.
func leaf(t *testing.T, path string) files.File {
	t.Helper()
	ca, err := pki.NewCA("test-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	crt, _, err := ca.Issue(pki.LeafSpec{CommonName: "n1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return files.File{Path: path, Mode: 0o644, Data: crt}
}

func TestEnsureCredentials(t *testing.T) {
	cfg := testConfig(t)
	n := New(cfg, discard())
	crt := filepath.Join(pki.Dir, "n1.crt")
	key := filepath.Join(pki.Dir, "n1.key")
	var calls atomic.Int32
	creds := Credentials{
		Need: []string{crt},
		Get: func(context.Context) ([]files.File, error) {
			// The first attempt fails as an unreachable join service does: it is retried.
			if calls.Add(1) == 1 {
				return nil, errors.New("connection refused")
			}
			return []files.File{leaf(t, crt), {Path: key, Mode: 0o644, Data: []byte("secret")}}, nil
		},
	}
	changed, err := n.EnsureCredentials(t.Context(), creds)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || !slices.Contains(changed, crt) || !slices.Contains(changed, key) {
		t.Fatalf("after %d calls changed %v", calls.Load(), changed)
	}
	if fi, err := os.Stat(filepath.Join(cfg.Root, key)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key %v, %v: want mode 0600", fi, err)
	}
	// Current certificates: nothing to do, and nobody is asked.
	if changed, err := n.EnsureCredentials(t.Context(), creds); err != nil || len(changed) != 0 || calls.Load() != 2 {
		t.Fatalf("second Ensure: %v, %v after %d calls", changed, err, calls.Load())
	}
}

func TestEnsureCredentialsFinalErrors(t *testing.T) {
	for _, final := range []error{join.ErrForbidden, pki.ErrCAMismatch} {
		t.Run(final.Error(), func(t *testing.T) {
			n := New(testConfig(t), discard())
			var calls atomic.Int32
			_, err := n.EnsureCredentials(t.Context(), Credentials{
				Need: []string{"etc/kubernetes/pki/n1.crt"},
				Get: func(context.Context) ([]files.File, error) {
					calls.Add(1)
					return nil, final
				},
			})
			if !errors.Is(err, final) || calls.Load() != 1 {
				t.Fatalf("err %v after %d calls; want %v at once, since waiting cannot fix it", err, calls.Load(), final)
			}
		})
	}
}

func TestEnsureCredentialsStopsWithCtx(t *testing.T) {
	n := New(testConfig(t), discard())
	ctx, cancel := context.WithCancel(t.Context())
	_, err := n.EnsureCredentials(ctx, Credentials{
		Need: []string{"etc/kubernetes/pki/n1.crt"},
		Get: func(context.Context) ([]files.File, error) {
			cancel()
			return nil, errors.New("connection refused")
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v; want context.Canceled", err)
	}
}

func TestRunStartsReconcilerAfterStart(t *testing.T) {
	cfg := testConfig(t)
	n := New(cfg, discard())
	renewed := filepath.Join(pki.Dir, "renewed.crt")
	// Renewed before the reconciler exists: it must still hear of it.
	n.FilesChanged([]string{renewed})
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- n.Run(ctx, Endpoints{Ready: n.FilesWritten, Status: func(context.Context) (any, error) { return nil, nil }},
			func(ctx context.Context, g *errgroup.Group) error {
				if err := n.FilesWritten(); err == nil {
					t.Error("files written before the reconciler started")
				}
				rec, err := n.StartReconciler(ctx, reconcile.Config{Render: func() ([]files.File, error) {
					return []files.File{{Path: "etc/haagent-test", Mode: 0o644, Data: []byte("x\n")}}, nil
				}})
				if err != nil {
					return err
				}
				g.Go(func() error {
					select {
					case <-rec.FirstPass():
						close(started)
					case <-ctx.Done():
					}
					return nil
				})
				return nil
			})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Run returned %v before the reconciler's first pass", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the reconciler made no pass within 10s after start returned")
	}
	if err := n.FilesWritten(); err != nil {
		t.Error(err)
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Root, "etc/haagent-test")); err != nil || string(b) != "x\n" {
		t.Errorf("node file: %q, %v", b, err)
	}
	if n.FilesStatus() == nil {
		t.Error("no files status once the reconciler runs")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v; want nil", err)
	}
}

func TestRunReturnsStartError(t *testing.T) {
	n := New(testConfig(t), discard())
	boom := errors.New("[test] boom")
	err := n.Run(t.Context(), Endpoints{Ready: func() error { return nil }}, func(context.Context, *errgroup.Group) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v; want %v", err, boom)
	}
}

func TestRunCanceledDuringStartIsClean(t *testing.T) {
	n := New(testConfig(t), discard())
	ctx, cancel := context.WithCancel(t.Context())
	err := n.Run(ctx, Endpoints{Ready: func() error { return nil }}, func(ctx context.Context, _ *errgroup.Group) error {
		cancel()
		<-ctx.Done()
		return fmt.Errorf("[certificates] %w", ctx.Err())
	})
	if err != nil {
		t.Fatalf("Run = %v; want nil: a stop during start is a clean stop", err)
	}
}
