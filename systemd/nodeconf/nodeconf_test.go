package nodeconf

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/trust/pki"
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
	subnet, err := ParseSubnetEnv([]byte("FLANNEL_NETWORK=172.30.0.0/16\nFLANNEL_SUBNET=172.30.20.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	if err != nil {
		t.Fatal(err)
	}
	minion := Config{Role: "minion", Name: "centos-minion-1", AdvertiseAddress: "10.0.0.31", LB: "10.0.0.10",
		EtcdEndpoints: []string{"https://10.0.0.10:2379"}, ServiceClusterIPRange: "10.254.0.0/16",
		FlannelPrefix: "/kube-centos/network", FlannelIface: "eth1", ContainerRuntime: "containerd", Root: "/",
		CgroupDriver: "cgroupfs", CgroupV1: true, ContainerdMajor: 1, CNIBinDir: "/usr/lib/cni",
		RestrictOOMScoreAdj: true, SandboxImage: DefaultSandboxImage, Subnet: subnet,
		Mirrors: []Mirror{{"docker.io", "http://10.0.0.11:5000"}, {"registry.k8s.io", "http://10.0.0.11:5000"}}}
	v2 := minion
	v2.CgroupDriver, v2.CgroupV1, v2.ContainerdMajor, v2.CNIBinDir, v2.RestrictOOMScoreAdj, v2.Subnet, v2.Mirrors =
		"systemd", false, 2, "/opt/cni/bin", false, nil, nil
	for name, c := range map[string]Config{
		"master": {Role: "master", Name: "centos-master-1", AdvertiseAddress: "10.0.0.21", LB: "10.0.0.10",
			EtcdEndpoints: []string{"https://10.0.0.21:2379"}, ServiceClusterIPRange: "10.254.0.0/16",
			FlannelPrefix: "/kube-centos/network", Root: "/",
			// Mid-rotation: key2 encrypts, key1 still decrypts.
			EncryptionKeys: []pki.EncryptionKey{{Name: "key2", Secret: []byte(strings.Repeat("2", 32))}, {Name: "key1", Secret: []byte(strings.Repeat("1", 32))}}},
		// A cgroup v1 host with Debian's containerd 1.6, mirrors, and flanneld's lease in place.
		"minion": minion,
		// A cgroup v2 host with containerd 2.x, before flanneld has a lease: no CNI config yet.
		"minion-containerd2": v2,
	} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			for _, f := range render(t, c) {
				b.WriteString("==> /" + f.Path + " (" + f.Mode.String() + ")\n")
				b.Write(f.Data)
			}
			golden := filepath.Join("testdata", name+".golden")
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

func TestParseMirror(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io=http://lb1:5000":          "docker.io http://lb1:5000",
		"registry.k8s.io=https://m.example/": "registry.k8s.io https://m.example",
		"lb1:5000=http://10.0.0.11:5000":     "lb1:5000 http://10.0.0.11:5000",
	} {
		m, err := ParseMirror(in)
		if err != nil || m.Registry+" "+m.Endpoint != want {
			t.Errorf("ParseMirror(%q) = %+v, %v; want %s", in, m, err, want)
		}
	}
	for _, bad := range []string{"", "docker.io", "=http://x", "docker.io=", "docker.io=lb1:5000", "docker.io=ftp://x",
		"docker.io=http://x/path", "a/b=http://x", "docker.io=http://"} {
		if m, err := ParseMirror(bad); err == nil {
			t.Errorf("ParseMirror(%q) = %+v, want an error", bad, m)
		}
	}
}

func TestParseSubnetEnv(t *testing.T) {
	s, err := ParseSubnetEnv([]byte("FLANNEL_NETWORK=172.30.0.0/16\nFLANNEL_SUBNET=172.30.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Subnet.Masked().String() != "172.30.7.0/24" || s.MTU != 1450 || s.IPMasq {
		t.Fatalf("parsed %+v", s)
	}
	b, err := cniConfList(s)
	if err != nil {
		t.Fatal(err)
	}
	// Without flanneld's masquerading, the bridge does it.
	if !strings.Contains(string(b), `"ipMasq": true`) || !strings.Contains(string(b), `"subnet": "172.30.7.0/24"`) {
		t.Fatalf("conflist:\n%s", b)
	}
	for _, bad := range []string{
		"",
		"FLANNEL_NETWORK=172.30.0.0/16\nFLANNEL_SUBNET=10.1.0.1/24\nFLANNEL_MTU=1450\n",
		"FLANNEL_NETWORK=172.30.0.0/16\nFLANNEL_SUBNET=172.30.7.1/24\nFLANNEL_MTU=x\n",
	} {
		if _, err := ParseSubnetEnv([]byte(bad)); err == nil {
			t.Errorf("ParseSubnetEnv(%q): want an error", bad)
		}
	}
}

func TestKubeletCgroupV1Setting(t *testing.T) {
	base := Config{Role: "minion", Name: "m", AdvertiseAddress: "10.0.0.31", LB: "10.0.0.10", ContainerRuntime: "containerd", Root: "/"}
	kubelet := func(c Config) string {
		for _, f := range render(t, c) {
			if f.Path == KubeletConfig {
				return string(f.Data)
			}
		}
		t.Fatal("no kubelet config rendered")
		return ""
	}
	v1 := base
	v1.CgroupV1 = true
	if !strings.Contains(kubelet(v1), "\nfailCgroupV1: false\n") {
		t.Errorf("a v1 host does not let the kubelet run")
	}
	v1.FailCgroupV1 = true
	if !strings.Contains(kubelet(v1), "\nfailCgroupV1: true\n") {
		t.Errorf("--fail-cgroup-v1 does not make the kubelet refuse v1")
	}
	if strings.Contains(kubelet(base), "failCgroupV1") {
		t.Errorf("a v2 host gets a cgroup v1 setting")
	}
}
