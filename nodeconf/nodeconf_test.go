package nodeconf

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haagent/haagent/files"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func render(t *testing.T, c Config) []files.File {
	t.Helper()
	fs, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestRenderGolden(t *testing.T) {
	for _, c := range []Config{
		{Role: "master", Name: "centos-master-1", AdvertiseAddress: "10.0.0.21", LB: "10.0.0.10",
			EtcdEndpoints: []string{"https://10.0.0.21:2379"}, ServiceClusterIPRange: "10.254.0.0/16",
			FlannelPrefix: "/kube-centos/network", Root: "/"},
		{Role: "minion", Name: "centos-minion-1", AdvertiseAddress: "10.0.0.31", LB: "10.0.0.10",
			EtcdEndpoints: []string{"https://10.0.0.10:2379"}, ServiceClusterIPRange: "10.254.0.0/16",
			FlannelPrefix: "/kube-centos/network", FlannelIface: "eth1", ContainerRuntime: "containerd", Root: "/"},
	} {
		t.Run(c.Role, func(t *testing.T) {
			var b strings.Builder
			for _, f := range render(t, c) {
				b.WriteString("==> /" + f.Path + " (" + f.Mode.String() + ")\n")
				b.Write(f.Data)
			}
			golden := filepath.Join("testdata", c.Role+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Fatalf("render differs from %s (run go test -update):\n%s", golden, b.String())
			}
		})
	}
}

func TestRenderedFilesFollowTheRules(t *testing.T) {
	c := Config{Role: "master", Name: "m1", AdvertiseAddress: "10.0.0.21", EtcdEndpoints: []string{"https://10.0.0.21:2379"},
		ServiceClusterIPRange: "10.254.0.0/16", FlannelPrefix: "/p", Root: "/srv/root"}
	for _, f := range render(t, c) {
		if !strings.HasPrefix(string(f.Data), Header+"\n") {
			t.Errorf("%s does not start with the header", f.Path)
		}
		for _, gone := range []string{"--api-servers", "--insecure-port", "--insecure-bind-address", "--logtostderr", "--storage-backend=etcd2", "--admission-control="} {
			if strings.Contains(string(f.Data), gone) {
				t.Errorf("%s uses %s, which Kubernetes 1.37 no longer accepts", f.Path, gone)
			}
		}
		if strings.Contains(string(f.Data), "/etc/kubernetes/pki") && !strings.Contains(string(f.Data), "/srv/root/etc/kubernetes/pki") {
			t.Errorf("%s names certificates outside --root", f.Path)
		}
	}
}

func TestUnitFilesOnlyWhereMissing(t *testing.T) {
	root := t.TempDir()
	units := Units(Config{Role: "minion", ContainerRuntime: "containerd"})
	all := UnitFiles(root, units)
	if len(all) != 3 { // flanneld, kubelet, kube-proxy; never the runtime
		t.Fatalf("on an empty root: %d unit files, want 3", len(all))
	}
	pkg := filepath.Join(root, "usr/lib/systemd/system/kubelet.service")
	if err := os.MkdirAll(filepath.Dir(pkg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pkg, []byte("[Service]\nExecStart=/usr/bin/kubelet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range UnitFiles(root, units) {
		if strings.HasSuffix(f.Path, "kubelet.service") {
			t.Fatal("haagent would shadow the distro's kubelet.service")
		}
	}
	for _, f := range all {
		if !strings.Contains(string(f.Data), "EnvironmentFile=-/etc/") {
			t.Errorf("%s reads no EnvironmentFile", f.Path)
		}
	}
}
