package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestBadInputExitsTwoWithOneLineNamingTheFlag(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	weakFile := filepath.Join(t.TempDir(), "weak-token")
	if err := os.WriteFile(weakFile, []byte("server:0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(tmp, "data")
	peers := "--peers=m1=http://127.0.0.21:2380,m2=http://127.0.0.22:2380,m3=http://127.0.0.23:2380"
	token := "--token=0123456789abcdef0123456789abcdef"
	base := []string{"--role=master", "--name=m1", "--data-dir=" + dataDir, "--root=" + tmp, "--token=0123456789abcdef0123456789abcdef"}
	// Loopback masters: should a case pass by mistake, the lb it starts stays on this host.
	lb := []string{"--role=lb", "--name=lb1", "--masters=127.0.0.81,127.0.0.82,127.0.0.83", "--root=" + tmp, token}
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
		{"guessable token", append(slices.Clip(base[:4]), peers, "--token=server:0123456789abcdef0123"), "--token"},
		{"guessable token in a file", append(slices.Clip(base[:4]), peers, "--token-file="+weakFile), "--token-file"},
		{"token and token file", append(base, peers, "--token-file="+weakFile), "--token-file"},
		{"missing token file", []string{"--role=minion", "--lb=10.0.0.10", "--token-file=" + file + "/none"}, "--token-file"},
		{"guessable agent token", append(base, peers, "--agent-token=agent:0123456789abcdef0123"), "--agent-token"},
		{"guessable lb token", []string{"--role=lb", "--name=lb1", "--masters=127.0.0.81", "--root=" + tmp, "--token=agent:0123456789abcdef0123"}, "--token"},
		{"bad systemd mode", append(base, peers, "--systemd=maybe"), "--systemd"},
		{"minion without lb", []string{"--role=minion", token}, "--lb"},
		{"node-local lb without masters", []string{"--role=minion", token, "--root=" + tmp, "--lb=local"}, "--masters"},
		{"node-local lb with a master that has a port", []string{"--role=minion", token, "--root=" + tmp, "--lb=local", "--masters=10.0.0.21:6443"}, "--masters"},
		{"node-local lb with a master listed twice", []string{"--role=minion", token, "--root=" + tmp, "--lb=local", "--masters=10.0.0.21,10.0.0.21"}, "--masters"},
		{"masters behind an lb host", []string{"--role=minion", token, "--root=" + tmp, "--lb=10.0.0.10", "--masters=10.0.0.21"}, "--masters"},
		{"node-local lb refreshing too often", []string{"--role=minion", token, "--root=" + tmp, "--lb=local", "--masters=10.0.0.21", "--masters-refresh=10ms"}, "--masters-refresh"},
		{"node-local lb on the status port", []string{"--role=minion", token, "--root=" + tmp, "--lb=local", "--masters=10.0.0.21", "--status-address=127.0.0.1:6443"}, "--status-address"},
		{"minion with a bad runtime", []string{"--role=minion", token, "--lb=10.0.0.10", "--container-runtime=rkt"}, "--container-runtime"},
		{"mirror without a registry", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=http://lb1:5000"}, "--registry-mirror"},
		{"mirror that is no URL", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=docker.io=lb1:5000"}, "--registry-mirror"},
		{"mirror with a path", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=docker.io=http://lb1:5000/v2"}, "--registry-mirror"},
		{"registry mirrored twice", []string{"--role=minion", token, "--lb=10.0.0.10", "--registry-mirror=docker.io=http://a,docker.io=http://b"}, "--registry-mirror"},
		{"bad cgroup driver", []string{"--role=minion", token, "--lb=10.0.0.10", "--cgroup-driver=cgroupv1"}, "--cgroup-driver"},
		{"relative images dir", []string{"--role=minion", token, "--lb=10.0.0.10", "--images-dir=images"}, "--images-dir"},
		{"component flag haagent guarantees", append(base, peers, "--kube-apiserver-arg=etcd-servers=http://10.0.0.9:2379"), "--kube-apiserver-arg"},
		{"component flag of a certificate", []string{"--role=minion", token, "--lb=10.0.0.10", "--kubelet-arg=tls-cert-file=/tmp/x.crt"}, "--kubelet-arg"},
		{"component flag that is no key=value", []string{"--role=minion", token, "--lb=10.0.0.10", "--kube-proxy-arg=profiling"}, "--kube-proxy-arg"},
		{"component flag with a blank", append(base, peers, "--flannel-arg=iface=eth0 eth1"), "--flannel-arg"},
		{"scheduler flag haagent guarantees", append(base, peers, "--kube-scheduler-arg=kubeconfig=/tmp/k"), "--kube-scheduler-arg"},
		{"a master's component flag on a minion", []string{"--role=minion", token, "--lb=10.0.0.10", "--kube-apiserver-arg=v=2"}, "--kube-apiserver-arg"},
		{"unknown command with a suggestion", []string{"stauts"}, "status"},
		{"subcommand missing", []string{"member"}, "list, remove"},
		{"unknown subcommand", []string{"token", "gen"}, "generate"},
		{"argument missing", []string{"member", "remove"}, "NAME"},
		{"argument too many", []string{"version", "now"}, "takes no arguments"},
		{"flag of another subcommand", []string{"member", "remove", "m1", "-o", "json"}, "-o"},
		{"help on no command", []string{"help", "frobnicate"}, "frobnicate"},
		{"help on no subcommand", []string{"help", "member", "frob"}, "member frob"},
		{"completion for no shell", []string{"completion", "tcsh"}, "tcsh"},
		{"completion with an argument", []string{"completion", "bash", "now"}, "now"},
		{"status output", []string{"status", "-o", "yaml"}, "--output"},
		{"restore without a data dir", []string{"snapshot", "restore", file}, "--data-dir"},
		{"snapshot retention of 0", append(base, peers, "--snapshot-retention=0"), "--snapshot-retention"},
		{"negative snapshot interval", append(base, peers, "--snapshot-interval=-1h"), "--snapshot-interval"},
		{"relative snapshot dir", append(base, peers, "--snapshot-dir=snapshots"), "--snapshot-dir"},
		{"snapshot dir under a file", append(base, peers, "--snapshot-dir=/a-file/snapshots"), "--snapshot-dir"},
		{"snapshot dir is a file", append(base, peers, "--snapshot-dir=/a-file"), "--snapshot-dir"},
		{"negative quota", append(base, peers, "--etcd-quota-backend-bytes=-1"), "--etcd-quota-backend-bytes"},
		{"snapshot list of a relative dir", []string{"snapshot", "list", "--snapshot-dir=snapshots"}, "--snapshot-dir"},
		{"snapshot list output", []string{"snapshot", "list", "-o", "yaml"}, "--output"},
		{"CA rotation without a timeout", []string{"certs", "rotate-ca", "--root=" + tmp, "--timeout=0"}, "--timeout"},
		{"CA rotation with a negative timeout", []string{"certs", "rotate-ca", "--root=" + tmp, "--timeout=-5m"}, "--timeout"},
		{"CA rotation skipping no node name", []string{"certs", "rotate-ca", "--root=" + tmp, "--skip=m4,Old_Minion"}, "--skip"},
		{"CA rotation of a cluster without TLS", []string{"certs", "rotate-ca", "--root=" + tmp, "--insecure"}, "--insecure"},
		{"VIP without a prefix length", append(lb, "--vip=10.0.0.10"), "--vip"},
		{"VIP that is IPv6", append(lb, "--vip=fd00::10/64"), "--vip"},
		{"VIP that is its subnet's broadcast", append(lb, "--vip=10.0.0.255/24"), "--vip"},
		{"VIP interface without a VIP", append(lb, "--vip-iface=eth0"), "--vip-iface"},
		{"VIP interface that does not exist", append(lb, "--vip=10.0.0.10/24", "--vip-iface=nosuch0"), "--vip-iface"},
		{"VIP outside its interface's subnet", append(lb, "--vip=10.0.0.10/24", "--vip-iface=lo"), "--vip"},
		{"VIP with an lb bound to one address", append(lb, "--vip=10.0.0.10/24", "--vip-iface=lo", "--listen-address=127.0.0.1"), "--listen-address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), testStdio(nil), tt.args)
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
	err := run(context.Background(), testStdio(nil), []string{"--role=master", "--name=m1", "--peers=m1=http://127.0.0.21:2380",
		"--flannel-network=nope", "--flannel-backend=nope", "--etcd-peer-port=0", "--data-dir=/tmp/x"})
	msg := oneLinePerProblem(err)
	for _, flag := range []string{"--flannel-network", "--flannel-backend", "--etcd-peer-port"} {
		if !strings.Contains(msg, flag) {
			t.Errorf("%s missing from %q", flag, msg)
		}
	}
}

func TestEnvironmentUnderFlags(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	peers := fs.String("peers", "", "")
	name := fs.String("name", "dflt", "")
	port := fs.Int("etcd-client-port", 2379, "")
	env := map[string]string{"HAAGENT_PEERS": "from-env", "HAAGENT_NAME": "env-name", "HAAGENT_ETCD_CLIENT_PORT": "3379"}
	if err := fs.Parse([]string{"--name=flag-name"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs, lookupIn(env)); err != nil {
		t.Fatal(err)
	}
	if *peers != "from-env" || *name != "flag-name" || *port != 3379 {
		t.Fatalf("peers=%q name=%q port=%d; want env for peers and port, the flag for name", *peers, *name, *port)
	}
	// A repeatable flag whose values may hold commas takes several, separated by blanks.
	var args []string
	arr := pflag.NewFlagSet("t", pflag.ContinueOnError)
	arr.StringArrayVar(&args, "kubelet-arg", nil, "")
	if err := applyEnv(arr, lookupIn(map[string]string{"HAAGENT_KUBELET_ARG": " node-labels=a=1,b=2\tmax-pods=200 "})); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(args, []string{"node-labels=a=1,b=2", "max-pods=200"}) {
		t.Fatalf("HAAGENT_KUBELET_ARG gave %q", args)
	}
	bad := pflag.NewFlagSet("t", pflag.ContinueOnError)
	bad.Int("etcd-client-port", 2379, "")
	err := applyEnv(bad, func(k string) (string, bool) { return "many", k == "HAAGENT_ETCD_CLIENT_PORT" })
	if err == nil || !strings.Contains(err.Error(), "HAAGENT_ETCD_CLIENT_PORT") || !strings.Contains(err.Error(), "--etcd-client-port") {
		t.Fatalf("bad env value: err = %v, want one naming the variable and the flag", err)
	}
}

// TestTokenOnCommandLine: a token flag given on the command line is found (to be
// warned about); one from the environment is not.
func TestTokenOnCommandLine(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"on the command line", []string{"--token=x", "--agent-token=y"}, nil, []string{"--token", "--agent-token"}},
		{"from the environment", nil, map[string]string{"HAAGENT_TOKEN": "x", "HAAGENT_AGENT_TOKEN": "y"}, nil},
		{"a file on the command line", []string{"--token-file=/t"}, map[string]string{"HAAGENT_AGENT_TOKEN": "y"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			fs.String("token", "", "")
			fs.String("token-file", "", "")
			fs.String("agent-token", "", "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := applyEnv(fs, lookupIn(tt.env)); err != nil {
				t.Fatal(err)
			}
			if got := onCommandLine(fs, "token", "agent-token"); !slices.Equal(got, tt.want) {
				t.Fatalf("onCommandLine = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSavedWeakToken: a master of a cluster made with a token the flags now refuse
// starts without --token from the token it saved, even as one of several.
func TestSavedWeakToken(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "var/lib/haagent"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/haagent/token"), []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"render", "--role=master", "--name=m1", "--root=" + root, "--data-dir=" + filepath.Join(root, "etcd"),
		"--peers=m1=http://127.0.0.21:2380,m2=http://127.0.0.22:2380,m3=http://127.0.0.23:2380"}
	if _, err := runOut(t, nil, args...); err != nil {
		t.Fatalf("a master with its saved token: %v", err)
	}
	if _, err := runOut(t, nil, append(args, "--token=0123456789abcdef0123")...); exitCode(err) != exitUsage {
		t.Fatalf("the same token as --token: %v, want exit %d", err, exitUsage)
	}
}

// TestEnvironmentThroughCommands runs whole command lines: HAAGENT_ROLE picks the role
// and so its flags, each HAAGENT_<FLAG> sets the flag of the command that runs, and a
// flag on the command line wins.
func TestEnvironmentThroughCommands(t *testing.T) {
	root := t.TempDir()
	env := map[string]string{
		"HAAGENT_ROLE": "master", "HAAGENT_NAME": "m1", "HAAGENT_DATA_DIR": filepath.Join(root, "etcd"),
		"HAAGENT_ROOT": root, "HAAGENT_SYSTEMD": "off", "HAAGENT_SERVICE_CLUSTER_IP_RANGE": "10.96.0.0/12",
	}
	out, err := runOut(t, env, "render")
	if err != nil {
		t.Fatalf("render with the role and its flags from the environment: %v", err)
	}
	if !strings.Contains(out, "--service-cluster-ip-range=10.96.0.0/12") || !strings.Contains(out, filepath.Join(root, "etc/kubernetes")) {
		t.Fatalf("render did not take HAAGENT_SERVICE_CLUSTER_IP_RANGE and HAAGENT_ROOT:\n%s", out)
	}
	out, err = runOut(t, env, "render", "--service-cluster-ip-range=10.100.0.0/16")
	if err != nil || !strings.Contains(out, "10.100.0.0/16") || strings.Contains(out, "10.96.0.0/12") {
		t.Fatalf("the flag did not win over HAAGENT_SERVICE_CLUSTER_IP_RANGE (err %v):\n%s", err, out)
	}
	// The role's flags come with the role from the environment: --role on the command
	// line beats HAAGENT_ROLE, and then the master's flags are unknown.
	if _, err := runOut(t, env, "render", "--role=lb", "--service-cluster-ip-range=10.100.0.0/16"); err == nil ||
		!strings.Contains(err.Error(), "--service-cluster-ip-range") || exitCode(err) != exitUsage {
		t.Fatalf("an lb with a master's flag: %v, want a usage error naming the flag", err)
	}
	// Component flags come from the environment too, several in one variable; a flag
	// haagent sets is replaced, not repeated.
	withArgs := maps.Clone(env)
	withArgs["HAAGENT_KUBE_APISERVER_ARG"] = "authorization-mode=Node,RBAC,ABAC audit-log-maxage=7 profiling=false"
	out, err = runOut(t, withArgs, "render")
	if err != nil || !strings.Contains(out, "--authorization-mode=Node,RBAC,ABAC --allow-privileged=true") ||
		!strings.Contains(out, "--audit-log-maxage=7 --profiling=false\"") ||
		strings.Contains(out, "--authorization-mode=Node,RBAC ") {
		t.Fatalf("render with HAAGENT_KUBE_APISERVER_ARG (err %v):\n%s", err, out)
	}
	withArgs["HAAGENT_KUBE_APISERVER_ARG"] = "etcd-servers=http://10.0.0.9:2379"
	if _, err := runOut(t, withArgs, "render"); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "--kube-apiserver-arg: etcd-servers") {
		t.Fatalf("render with a guarded HAAGENT_KUBE_APISERVER_ARG: %v, want a usage error naming it", err)
	}
	// Subcommands read the environment too.
	if _, err := runOut(t, map[string]string{"HAAGENT_OUTPUT": "yaml"}, "status"); err == nil || !strings.Contains(err.Error(), `--output: "yaml"`) {
		t.Fatalf("status with HAAGENT_OUTPUT=yaml: %v, want the --output error", err)
	}
	empty := t.TempDir()
	if _, err := runOut(t, map[string]string{"HAAGENT_ROOT": empty}, "token", "show"); err == nil || !strings.Contains(err.Error(), empty) {
		t.Fatalf("token show with HAAGENT_ROOT: %v, want an error about %s", err, empty)
	}
	// A bad value in the environment is bad input, like on the command line; help is not
	// spoilt by it.
	bad := map[string]string{"HAAGENT_ROLE": "master", "HAAGENT_ETCD_CLIENT_PORT": "many", "HAAGENT_JOIN_PORT": "x"}
	if _, err := runOut(t, bad); exitCode(err) != exitUsage || strings.Count(oneLinePerProblem(err), "\n") != 1 {
		t.Fatalf("two bad variables: %v, want a usage error with one line for each", err)
	}
	if out, err := runOut(t, bad, "--help"); err != nil || !strings.Contains(out, "--etcd-client-port") {
		t.Fatalf("--help with bad variables: %v\n%s", err, out)
	}
}

// TestRenderNodeLocalMinion renders a minion that runs its own lb: with --masters, or
// with no --masters but a list saved by an earlier run; its kubelet, kube-proxy and
// flanneld point at 127.0.0.1.
func TestRenderNodeLocalMinion(t *testing.T) {
	root := t.TempDir()
	args := []string{"render", "--role=minion", "--lb=local", "--root=" + root, "--token=0123456789abcdef0123456789abcdef", "--name=w1"}
	check := func(out string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		for _, want := range []string{"--master=https://127.0.0.1:6443", "FLANNEL_ETCD_ENDPOINTS=\"https://127.0.0.1:2379\""} {
			if !strings.Contains(out, want) {
				t.Errorf("render lacks %s:\n%s", want, out)
			}
		}
	}
	out, err := runOut(t, nil, append(args, "--masters=10.0.0.21,10.0.0.22")...)
	check(out, err)
	if err := os.MkdirAll(filepath.Join(root, "var/lib/haagent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/haagent/masters.json"), []byte(`{"masters":["10.0.0.22"],"source":"cluster"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runOut(t, nil, args...)
	check(out, err)
}

// TestExitCodes checks that a failure of a command that ran is 1, not bad input.
func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"version"}, exitOK},
		{[]string{"token", "generate"}, exitOK},
		{[]string{"token", "show", "--root=" + t.TempDir()}, exitFailure},
		{[]string{"certs", "check", "--root=" + t.TempDir()}, exitFailure},
		{[]string{"token", "show", "extra"}, exitUsage},
		{[]string{"help", "nothing"}, exitUsage},
	} {
		_, err := runOut(t, nil, tt.args...)
		if code := exitCode(err); code != tt.code {
			t.Errorf("haagent %s: exit %d (%v), want %d", strings.Join(tt.args, " "), code, err, tt.code)
		}
	}
}

// TestHelpOnEveryCommand asks every command for its help three ways (--help, -h and
// `haagent help CMD`): each exits 0 and lists every flag the command takes.
func TestHelpOnEveryCommand(t *testing.T) {
	root, _ := newRoot(testStdio(nil), nil)
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				walk(s, append(slices.Clone(path), s.Name()))
			}
		}
	}
	walk(root, nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	// What each must show besides its own flags, so that the test does not only compare
	// the tree with itself.
	want := map[string][]string{
		"":                 {"--role", "--log-level", "render", "status", "member", "snapshot", "token", "certs", "reset", "completion"},
		"render":           {"--role", "--log-format"},
		"status":           {"--status-address", "-o, --output"},
		"member":           {"--endpoints", "list", "remove"},
		"member list":      {"--endpoints", "--insecure", "-o, --output"},
		"member remove":    {"NAME", "--endpoints", "--etcd-client-port"},
		"snapshot save":    {"FILE", "--endpoints", "--root"},
		"snapshot restore": {"FILE", "--data-dir", "--peers", "--cluster-token"},
		"snapshot list":    {"--snapshot-dir", "--root", "-o, --output"},
		"token":            {"generate", "show", "rotate"},
		"token show":       {"--root"},
		"certs check":      {"--root"},
		"certs renew":      {"--peers", "--root", "--token"},
		"reset":            {"--yes", "--data-dir", "--systemd"},
		"completion":       {"bash", "zsh", "fish"},
	}
	for _, path := range paths {
		name := strings.Join(path, " ")
		for _, how := range [][]string{append(slices.Clone(path), "--help"), append(slices.Clone(path), "-h"), append([]string{"help"}, path...)} {
			t.Run(strings.Join(how, " "), func(t *testing.T) {
				out, err := runOut(t, nil, how...)
				if err != nil {
					t.Fatalf("exit %d: %v", exitCode(err), err)
				}
				if !strings.Contains(out, "Usage:\n  haagent "+name) {
					t.Errorf("no usage line for haagent %s:\n%s", name, out)
				}
				c, _, err := root.Find(path)
				if err != nil {
					t.Fatal(err)
				}
				c.Flags().VisitAll(func(f *pflag.Flag) {
					if !strings.Contains(out, "--"+f.Name+" ") && !strings.Contains(out, "--"+f.Name+"[") {
						t.Errorf("--%s missing", f.Name)
					}
				})
				c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
					if !strings.Contains(out, "--"+f.Name+" ") && !strings.Contains(out, "--"+f.Name+"[") {
						t.Errorf("inherited --%s missing", f.Name)
					}
				})
				for _, w := range want[name] {
					if !strings.Contains(out, w) {
						t.Errorf("%q missing", w)
					}
				}
				if t.Failed() {
					t.Logf("output:\n%s", out)
				}
			})
		}
	}
}

// TestRoleHelpListsTheRoleFlags checks `haagent --role=ROLE --help` and `haagent render
// --role=ROLE --help`, which the packaging test reads to check the sysconfig template:
// each lists the role's own flags, and only its own.
func TestRoleHelpListsTheRoleFlags(t *testing.T) {
	others := map[string]string{"lb": "--lb-policy", "master": "--flannel-network", "minion": "--container-runtime"}
	for _, role := range roleNames {
		r, _ := roles(role)
		fs := pflag.NewFlagSet(role, pflag.ContinueOnError)
		r.addFlags(fs)
		for _, args := range [][]string{{"--role=" + role, "--help"}, {"render", "--role", role, "-h"}} {
			out, err := runOut(t, nil, args...)
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			fs.VisitAll(func(f *pflag.Flag) {
				if !strings.Contains(out, "--"+f.Name) {
					t.Errorf("%v: --%s missing", args, f.Name)
				}
			})
			for other, flag := range others {
				if other != role && strings.Contains(out, flag) {
					t.Errorf("%v: lists %s, a flag of the %s role", args, flag, other)
				}
			}
		}
		// HAAGENT_ROLE names the role as well as --role.
		out, err := runOut(t, map[string]string{"HAAGENT_ROLE": role}, "--help")
		if err != nil || !strings.Contains(out, others[role]) {
			t.Errorf("HAAGENT_ROLE=%s haagent --help: %v, lacks %s", role, err, others[role])
		}
	}
}

// TestCompletion checks the scripts for each shell, and the completions they ask
// haagent for: commands, a role's flags, flag values.
func TestCompletion(t *testing.T) {
	for shell, marker := range map[string]string{"bash": "complete -o default -F __start_haagent haagent", "zsh": "#compdef haagent", "fish": "complete -c haagent"} {
		out, err := runOut(t, nil, "completion", shell)
		if err != nil || !strings.Contains(out, marker) {
			t.Errorf("completion %s: %v; script lacks %q", shell, err, marker)
		}
		if shell == "bash" {
			script := filepath.Join(t.TempDir(), "haagent.bash")
			if err := os.WriteFile(script, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			if b, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
				t.Errorf("bash -n on the completion script: %v\n%s", err, b)
			}
		}
	}
	for _, tt := range []struct {
		env  map[string]string
		args []string
		want []string
	}{
		{nil, []string{"__complete", ""}, []string{"member\t", "snapshot\t", "completion\t"}},
		{nil, []string{"__complete", "member", ""}, []string{"list\t", "remove\t"}},
		{nil, []string{"__complete", "--role", ""}, []string{"lb\n", "master\n", "minion\n"}},
		{nil, []string{"__complete", "--role=master", "--flannel-"}, []string{"--flannel-network\t", "--flannel-backend\t"}},
		{map[string]string{"HAAGENT_ROLE": "lb"}, []string{"__complete", "--lb-p"}, []string{"--lb-ports\t", "--lb-policy\t"}},
		{nil, []string{"__complete", "status", "-o", ""}, []string{"text\n", "json\n"}},
		{nil, []string{"__complete", "help", "sn"}, []string{"snapshot\t"}},
	} {
		out, err := runOut(t, tt.env, tt.args...)
		if err != nil {
			t.Errorf("%v: %v", tt.args, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v (env %v): %q missing from\n%s", tt.args, tt.env, w, out)
			}
		}
	}
}

// TestManPages generates the pages as `make man` does: one per command, and haagent.1
// with every role's flags.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if _, err := runOut(t, map[string]string{"HAAGENT_ROLE": "lb"}, "gen-man", dir); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"haagent.1", "haagent-member-remove.1", "haagent-snapshot-restore.1", "haagent-token-generate.1",
		"haagent-certs-renew.1", "haagent-completion-bash.1", "haagent-render.1", "haagent-reset.1"} {
		if _, err := os.Stat(filepath.Join(dir, page)); err != nil {
			t.Errorf("%s: %v", page, err)
		}
	}
	for _, hidden := range []string{"haagent-gen-man.1", "haagent-help.1"} {
		if _, err := os.Stat(filepath.Join(dir, hidden)); err == nil {
			t.Errorf("%s exists", hidden)
		}
	}
	main, err := os.ReadFile(filepath.Join(dir, "haagent.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range roleNames {
		r, _ := roles(role)
		fs := pflag.NewFlagSet(role, pflag.ContinueOnError)
		r.addFlags(fs)
		fs.VisitAll(func(f *pflag.Flag) {
			// troff escapes the dashes.
			if !strings.Contains(string(main), `\fB--`+f.Name+`\fP`) {
				t.Errorf("haagent.1 lacks --%s of the %s role", f.Name, role)
			}
		})
	}
	// HAAGENT_ROLE of the build does not leak into render's page.
	render, _ := os.ReadFile(filepath.Join(dir, "haagent-render.1"))
	if strings.Contains(string(render), "lb-policy") {
		t.Errorf("haagent-render.1 lists the lb's flags")
	}
}

// testStdio is a run's stdio with output into buffers and env as the whole environment.
func testStdio(env map[string]string) stdio {
	return stdio{&bytes.Buffer{}, &bytes.Buffer{}, lookupIn(env)}
}

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// runOut runs a command line with env as the whole environment and returns its stdout.
func runOut(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), stdio{&out, io.Discard, lookupIn(env)}, args)
	return out.String(), err
}

func TestOneLinePerProblem(t *testing.T) {
	err := usageError{errors.Join(errors.New("--log-level: bad"), errors.Join(errors.New("--peers: bad"), errors.New("--name: bad")))}
	if got, want := oneLinePerProblem(err), "--log-level: bad\nhaagent: --peers: bad\nhaagent: --name: bad"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestClusterResetReadsTheMastersEnvFile: cluster-reset takes the master's
// configuration from --env-file (/etc/sysconfig/haagent), under the environment and the
// flags, so that the operator types one command on the master.
func TestClusterResetReadsTheMastersEnvFile(t *testing.T) {
	root := t.TempDir()
	envFile := filepath.Join(root, "haagent.env")
	conf := "# as the package writes it\nHAAGENT_ROLE=master\nHAAGENT_NAME=m1\nHAAGENT_INSECURE=true\n" +
		"HAAGENT_DATA_DIR=\"" + filepath.Join(root, "etcd") + "\"\nHAAGENT_ROOT=" + root + "\n" +
		// Port 1 answers nothing: no master runs "here".
		"HAAGENT_STATUS_ADDRESS=127.0.0.1:1\n"
	if err := os.WriteFile(envFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	want := func(env map[string]string, args []string, msg string) {
		t.Helper()
		_, err := runOut(t, env, append([]string{"cluster-reset", "--env-file=" + envFile}, args...)...)
		if exitCode(err) != exitUsage || err == nil || !strings.Contains(err.Error(), msg) || strings.Contains(oneLinePerProblem(err), "\n") {
			t.Fatalf("cluster-reset %v with %v: %v, want one line of bad input holding %q", args, env, err, msg)
		}
	}
	want(nil, nil, "--data-dir: "+filepath.Join(root, "etcd")+" holds no etcd member")
	other := filepath.Join(root, "other")
	want(map[string]string{"HAAGENT_DATA_DIR": other}, nil, "--data-dir: "+other+" holds")
	want(map[string]string{"HAAGENT_DATA_DIR": other}, []string{"--data-dir=" + root + "/flag"}, "--data-dir: "+root+"/flag holds")
	want(nil, []string{"--env-file=" + filepath.Join(root, "nosuch")}, "--env-file")
	want(nil, []string{"--role=lb"}, "--role")
	if entries, _ := os.ReadDir(root); len(entries) != 1 {
		t.Fatalf("refused cluster-resets wrote into the root: %v", entries)
	}
}
