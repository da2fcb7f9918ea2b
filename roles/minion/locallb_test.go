package minion

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/netsetup/masterlist"
	"github.com/haagent/haagent/trust/pki"
)

// TestLocalLBConfig checks --lb=local's flags: what Complete reads and Validate says.
func TestLocalLBConfig(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name    string
		lb      string
		masters []string
		saved   string // the saved file's content; "" for none
		want    string // a substring of the error; "" for none
	}{
		{"masters given", LBLocal, []string{"10.0.0.21"}, "", ""},
		{"a saved list and no masters", LBLocal, nil, `{"masters":["10.0.0.22"]}`, ""},
		{"neither", LBLocal, nil, "", "--masters: required with --lb=local (no list saved in /var/lib/haagent/masters.json either)"},
		{"a torn saved list and no masters", LBLocal, nil, `{"masters":`, "--masters: required with --lb=local (the saved list is unusable"},
		{"a torn saved list and masters", LBLocal, []string{"10.0.0.21"}, `{"masters":`, ""},
		{"masters behind an lb host", "10.0.0.10", []string{"10.0.0.21"}, "", "--masters: only with --lb=local"},
		{"a master with a scheme", LBLocal, []string{"https://10.0.0.21"}, "", "--masters: \"https://10.0.0.21\" is not a plain host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			c.Root, c.Name, c.Token, c.LB, c.Masters = t.TempDir(), "w1", token, tt.lb, tt.masters
			if tt.saved != "" {
				if _, err := files.Write(c.Root, files.File{Path: masterlist.File, Mode: 0o644, Data: []byte(tt.saved)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Complete(); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
}

// TestAfterJoin: the check has no result until the CA and flanneld's certificate are
// on disk, then it is the real check.
func TestAfterJoin(t *testing.T) {
	root := t.TempDir()
	built := 0
	a := &afterJoin{build: func() (loadbalancer.Checker, error) {
		if _, err := os.Stat(filepath.Join(root, pki.CACert)); err != nil {
			return nil, err
		}
		built++
		return loadbalancer.CheckerFunc(func(context.Context, string) (loadbalancer.Health, error) {
			return loadbalancer.HealthFailed, errors.New("the real check")
		}), nil
	}}
	if h, err := a.Check(context.Background(), "10.0.0.21:2379"); h != loadbalancer.HealthUnknown || err != nil {
		t.Fatalf("before the join: %v, %v; want unknown and no error", h, err)
	}
	if err := os.MkdirAll(filepath.Join(root, pki.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, pki.CACert), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if h, err := a.Check(context.Background(), "10.0.0.21:2379"); h != loadbalancer.HealthFailed || err == nil {
			t.Fatalf("after the join: %v, %v; want the real check's result", h, err)
		}
	}
	if built != 1 {
		t.Fatalf("built the real check %d times, want once", built)
	}
}

func TestPrintLocalLB(t *testing.T) {
	var b bytes.Buffer
	printLocalLB(&b, LocalLBStatus{Address: "127.0.0.1", Ports: []int{6443, 2379, 9345},
		Masters: masterlist.Status{Masters: []string{"10.0.0.21", "10.0.0.22"}, Source: masterlist.SourceStart,
			Saved: "/var/lib/haagent/masters.json", LastError: "etcd member list: context deadline exceeded"},
		Backends: []loadbalancer.BackendStatus{{Port: 2379, Address: "10.0.0.21:2379", State: loadbalancer.StateHealthy, Since: time.Now()}}})
	for _, want := range []string{
		"node-local lb: 127.0.0.1, ports 6443, 2379, 9345\n",
		"masters: 10.0.0.21, 10.0.0.22 (from the saved list and --masters; the cluster has not answered yet; saved in /var/lib/haagent/masters.json)\n",
		"last question to the cluster failed: etcd member list: context deadline exceeded\n",
		"2379  10.0.0.21:2379  healthy",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
