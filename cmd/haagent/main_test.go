package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestBadInputExitsTwoWithOneLineNamingTheFlag(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(tmp, "data")
	peers := "--peers=m1=http://127.0.0.21:2380,m2=http://127.0.0.22:2380,m3=http://127.0.0.23:2380"
	token := "--token=0123456789abcdef0123"
	base := []string{"--role=master", "--name=m1", "--data-dir=" + dataDir, "--root=" + tmp, "--token=0123456789abcdef0123"}
	tests := []struct {
		name string
		args []string
		flag string
	}{
		{"unknown role", []string{"--role=worker"}, "--role"},
		{"missing role", []string{"--name=m1"}, "--role"},
		{"malformed peers", append(base, "--peers=m1=http//x"), "--peers"},
		{"peers with a bad port", append(base, "--peers=m1=http://10.0.0.1:70000"), "--peers"},
		{"duplicate names", append(base, "--peers=m1=http://127.0.0.21:2380,m1=http://127.0.0.22:2380"), "--peers"},
		{"duplicate URLs", append(base, "--peers=m1=http://127.0.0.21:2380,m2=http://127.0.0.21:2380"), "--peers"},
		{"name not in peers", []string{"--role=master", "--name=m9", "--data-dir=" + dataDir, peers, token}, "--name"},
		{"advertise address not matching", append(base, peers, "--advertise-address=127.0.0.99"), "--advertise-address"},
		{"bad CIDR", append(base, peers, "--flannel-network=172.30.0.0/33"), "--flannel-network"},
		{"CIDR with host bits", append(base, peers, "--flannel-network=172.30.0.1/16"), "--flannel-network"},
		{"subnet length out of range", append(base, peers, "--flannel-subnet-len=8"), "--flannel-subnet-len"},
		{"subnet length too long", append(base, peers, "--flannel-subnet-len=31"), "--flannel-subnet-len"},
		{"unknown backend", append(base, peers, "--flannel-backend=carrier-pigeon"), "--flannel-backend"},
		{"data dir under a file", []string{"--role=master", "--name=m1", peers, token, "--data-dir=" + file + "/etcd"}, "--data-dir"},
		{"data dir is a file", []string{"--role=master", "--name=m1", peers, token, "--data-dir=" + file}, "--data-dir"},
		{"relative data dir", []string{"--role=master", "--name=m1", peers, token, "--data-dir=etcd"}, "--data-dir"},
		{"unknown flag", append(base, "--masters=a,b"), "--masters"},
		{"bad log level", append(base, peers, "--log-level=loud"), "--log-level"},
		{"bad port", append(base, peers, "--etcd-client-port=0"), "--etcd-client-port"},
		{"unknown command", []string{"frobnicate"}, "frobnicate"},
		{"missing token with several masters", []string{"--role=master", "--name=m1", peers, "--data-dir=" + dataDir}, "--token"},
		{"malformed token", append(base, peers, "--token=short"), "--token"},
		{"bad systemd mode", append(base, peers, "--systemd=maybe"), "--systemd"},
		{"minion without lb", []string{"--role=minion", token}, "--lb"},
		{"minion with a bad runtime", []string{"--role=minion", token, "--lb=10.0.0.10", "--container-runtime=rkt"}, "--container-runtime"},
		{"mirror without a registry", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=http://lb1:5000"}, "--registry-mirror"},
		{"mirror that is no URL", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=docker.io=lb1:5000"}, "--registry-mirror"},
		{"mirror with a path", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=docker.io=http://lb1:5000/v2"}, "--registry-mirror"},
		{"registry mirrored twice", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=docker.io=http://a,docker.io=http://b"}, "--registry-mirror"},
		{"bad cgroup driver", []string{"--role=minion", token, "--lb=10.0.0.10", "--cgroup-driver=cgroupv1"}, "--cgroup-driver"},
		{"relative images dir", []string{"--role=minion", token, "--lb=10.0.0.10", "--images-dir=images"}, "--images-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("run(%q) = %v, want a usage error", tt.args, err)
			}
			if code := exitCode(err); code != exitUsage {
				t.Fatalf("exit code %d, want %d", code, exitUsage)
			}
			msg := oneLinePerProblem(err)
			if strings.Count(msg, "\n") != 0 {
				t.Fatalf("message spans lines: %q", msg)
			}
			if !strings.Contains(msg, tt.flag) {
				t.Fatalf("message %q does not name %s", msg, tt.flag)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("bad input created %s", dataDir)
			}
			entries, _ := os.ReadDir(tmp)
			if len(entries) != 1 {
				t.Fatalf("bad input wrote into the root: %v", entries)
			}
		})
	}
}

func TestManyProblemsAreAllReported(t *testing.T) {
	err := run(context.Background(), []string{"--role=master", "--name=m1", "--peers=m1=http://127.0.0.21:2380",
		"--flannel-network=nope", "--flannel-backend=nope", "--etcd-peer-port=0", "--data-dir=/tmp/x"})
	msg := oneLinePerProblem(err)
	for _, flag := range []string{"--flannel-network", "--flannel-backend", "--etcd-peer-port"} {
		if !strings.Contains(msg, flag) {
			t.Errorf("%s missing from %q", flag, msg)
		}
	}
}

func TestEnvironmentUnderFlags(t *testing.T) {
	fs := newFlagSet("t")
	peers := fs.String("peers", "", "")
	name := fs.String("name", "dflt", "")
	port := fs.Int("etcd-client-port", 2379, "")
	env := map[string]string{"HAAGENT_PEERS": "from-env", "HAAGENT_NAME": "env-name", "HAAGENT_ETCD_CLIENT_PORT": "3379"}
	if err := fs.Parse([]string{"--name=flag-name"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if *peers != "from-env" || *name != "flag-name" || *port != 3379 {
		t.Fatalf("peers=%q name=%q port=%d; want env for peers and port, the flag for name", *peers, *name, *port)
	}
	bad := newFlagSet("t")
	bad.Int("etcd-client-port", 2379, "")
	err := applyEnv(bad, func(k string) (string, bool) { return "many", k == "HAAGENT_ETCD_CLIENT_PORT" })
	if err == nil || !strings.Contains(err.Error(), "HAAGENT_ETCD_CLIENT_PORT") || !strings.Contains(err.Error(), "--etcd-client-port") {
		t.Fatalf("bad env value: err = %v, want one naming the variable and the flag", err)
	}
	var _ *pflag.FlagSet = bad
}
