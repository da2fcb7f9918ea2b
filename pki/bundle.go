package pki

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net"
	"path"
	"strings"
	"text/template"
	"time"

	"github.com/haagent/haagent/files"
)

// Dir is where certificates live, relative to --root.
const Dir = "etc/kubernetes/pki"

// Paths of the files every role reads, relative to --root.
const (
	CACert        = Dir + "/ca.crt"
	CAKey         = Dir + "/ca.key"
	SAKey         = Dir + "/sa.key"
	SAPub         = Dir + "/sa.pub"
	EtcdPeerCert  = Dir + "/etcd-peer.crt"
	EtcdPeerKey   = Dir + "/etcd-peer.key"
	EtcdServerCrt = Dir + "/etcd-server.crt"
	EtcdServerKey = Dir + "/etcd-server.key"
	// EtcdClientCert is haagent's own etcd client identity (status, flannel seeding, lb checks).
	EtcdClientCert      = Dir + "/etcd-client.crt"
	EtcdClientKey       = Dir + "/etcd-client.key"
	APIServerCert       = Dir + "/apiserver.crt"
	APIServerKey        = Dir + "/apiserver.key"
	APIServerEtcdCert   = Dir + "/apiserver-etcd-client.crt"
	APIServerEtcdKey    = Dir + "/apiserver-etcd-client.key"
	APIServerKubeletCrt = Dir + "/apiserver-kubelet-client.crt"
	APIServerKubeletKey = Dir + "/apiserver-kubelet-client.key"
	FlannelEtcdCert     = Dir + "/flannel-etcd-client.crt"
	FlannelEtcdKey      = Dir + "/flannel-etcd-client.key"
	KubeletClientCert   = Dir + "/kubelet-client.crt"
	KubeletClientKey    = Dir + "/kubelet-client.key"
	// KubeletServingCert is the kubelet's own HTTPS certificate, from the cluster CA, so
	// that the apiserver can verify the kubelet it talks to for logs, exec and port-forward.
	KubeletServingCert = Dir + "/kubelet-server.crt"
	KubeletServingKey  = Dir + "/kubelet-server.key"
	KubeProxyCert      = Dir + "/kube-proxy.crt"
	KubeProxyKey       = Dir + "/kube-proxy.key"

	AdminKubeconfig             = "etc/kubernetes/admin.kubeconfig"
	ControllerManagerKubeconfig = "etc/kubernetes/controller-manager.kubeconfig"
	SchedulerKubeconfig         = "etc/kubernetes/scheduler.kubeconfig"
	KubeletKubeconfig           = "etc/kubernetes/kubelet.kubeconfig"
	ProxyKubeconfig             = "etc/kubernetes/proxy.kubeconfig"
)

// LBCommonName is the lb's identity: its health checks, and its renewals at the join
// service.
const LBCommonName = "haagent-lb"

// Node says who a bundle is for.
type Node struct {
	// Role is lb, master or minion.
	Role string
	Name string
	// Hosts are this node's own addresses (IPs or DNS names), put into its server SANs.
	Hosts []string
	// LB is the lb's address, put into master SANs and minion kubeconfigs; may be empty.
	LB string
	// ServiceIP is the first IP of the service range (the kubernetes Service), for apiserver SANs.
	ServiceIP string
	// APIServer is the URL kubeconfigs on this node point at.
	APIServer string
}

// Issue returns every file the node's role needs: certificates, keys and kubeconfigs.
func Issue(sh *Shared, n Node, now time.Time) ([]files.File, error) {
	b := &bundle{ca: sh.CA, now: now}
	b.add(CACert, 0o644, sh.CA.CertPEM)
	local := append([]string{"127.0.0.1", "localhost", n.Name}, n.Hosts...)
	switch n.Role {
	case "master":
		b.add(CAKey, 0o600, sh.CA.KeyPEM)
		b.add(SAKey, 0o600, sh.SAKeyPEM)
		b.add(SAPub, 0o644, sh.SAPubPEM)
		b.leaf(EtcdPeerCert, EtcdPeerKey, LeafSpec{CommonName: n.Name, Hosts: local, Server: true, Client: true})
		b.leaf(EtcdServerCrt, EtcdServerKey, LeafSpec{CommonName: n.Name, Hosts: append(local, n.LB), Server: true, Client: true})
		b.leaf(EtcdClientCert, EtcdClientKey, LeafSpec{CommonName: "haagent", Client: true})
		b.leaf(FlannelEtcdCert, FlannelEtcdKey, LeafSpec{CommonName: "flannel", Client: true})
		apiHosts := append(append([]string{}, local...), n.LB, n.ServiceIP,
			"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
		b.leaf(APIServerCert, APIServerKey, LeafSpec{CommonName: "kube-apiserver", Hosts: apiHosts, Server: true})
		b.leaf(APIServerEtcdCert, APIServerEtcdKey, LeafSpec{CommonName: "kube-apiserver-etcd-client", Client: true})
		b.leaf(APIServerKubeletCrt, APIServerKubeletKey, LeafSpec{CommonName: "kube-apiserver-kubelet-client",
			Organization: []string{"system:masters"}, Client: true})
		b.kubeconfig(ControllerManagerKubeconfig, n.APIServer, LeafSpec{CommonName: "system:kube-controller-manager", Client: true})
		b.kubeconfig(SchedulerKubeconfig, n.APIServer, LeafSpec{CommonName: "system:kube-scheduler", Client: true})
		admin := n.APIServer
		if n.LB != "" {
			admin = "https://" + net.JoinHostPort(n.LB, "6443")
		}
		b.kubeconfig(AdminKubeconfig, admin, LeafSpec{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Client: true})
	case "minion":
		b.leaf(KubeletClientCert, KubeletClientKey, LeafSpec{CommonName: "system:node:" + n.Name,
			Organization: []string{"system:nodes"}, Client: true})
		b.leaf(KubeletServingCert, KubeletServingKey, LeafSpec{CommonName: "system:node:" + n.Name,
			Organization: []string{"system:nodes"}, Hosts: local, Server: true})
		b.leaf(KubeProxyCert, KubeProxyKey, LeafSpec{CommonName: "system:kube-proxy", Client: true})
		b.leaf(FlannelEtcdCert, FlannelEtcdKey, LeafSpec{CommonName: "flannel", Client: true})
		b.kubeconfig(KubeletKubeconfig, n.APIServer, LeafSpec{CommonName: "system:node:" + n.Name,
			Organization: []string{"system:nodes"}, Client: true})
		b.kubeconfig(ProxyKubeconfig, n.APIServer, LeafSpec{CommonName: "system:kube-proxy", Client: true})
	case "lb":
		b.leaf(EtcdClientCert, EtcdClientKey, LeafSpec{CommonName: LBCommonName, Client: true})
	default:
		return nil, fmt.Errorf("no certificates for role %q", n.Role)
	}
	return b.files, b.err
}

type bundle struct {
	ca    *CA
	now   time.Time
	files []files.File
	err   error
}

func (b *bundle) add(p string, mode uint32, data []byte) {
	b.files = append(b.files, files.File{Path: p, Mode: fsMode(mode), Data: data})
}

func (b *bundle) leaf(certPath, keyPath string, spec LeafSpec) {
	if b.err != nil {
		return
	}
	c, k, err := b.ca.Issue(spec, b.now)
	if err != nil {
		b.err = err
		return
	}
	b.add(certPath, 0o644, c)
	b.add(keyPath, 0o600, k)
}

func (b *bundle) kubeconfig(p, server string, spec LeafSpec) {
	if b.err != nil {
		return
	}
	c, k, err := b.ca.Issue(spec, b.now)
	if err != nil {
		b.err = err
		return
	}
	data, err := Kubeconfig(server, spec.CommonName, b.ca.CertPEM, c, k)
	if err != nil {
		b.err = err
		return
	}
	b.add(p, 0o600, data)
}

var kubeconfigTmpl = template.Must(template.New("kubeconfig").Parse(`# Written by haagent; it is replaced when the certificate is renewed.
apiVersion: v1
kind: Config
clusters:
- name: haagent
  cluster:
    server: {{.Server}}
    certificate-authority-data: {{.CA}}
users:
- name: {{.User}}
  user:
    client-certificate-data: {{.Cert}}
    client-key-data: {{.Key}}
contexts:
- name: {{.User}}@haagent
  context:
    cluster: haagent
    user: {{.User}}
current-context: {{.User}}@haagent
`))

// Kubeconfig renders a kubeconfig with embedded credentials.
func Kubeconfig(server, user string, caPEM, certPEM, keyPEM []byte) ([]byte, error) {
	var buf bytes.Buffer
	enc := base64.StdEncoding.EncodeToString
	err := kubeconfigTmpl.Execute(&buf, map[string]string{
		"Server": server, "User": user, "CA": enc(caPEM), "Cert": enc(certPEM), "Key": enc(keyPEM),
	})
	return buf.Bytes(), err
}

// WithServer returns a kubeconfig that Kubeconfig rendered, pointed at server instead:
// a node that runs its own lb (--lb=local) reaches the apiservers through 127.0.0.1,
// whatever address the master that issued it had in mind.
func WithServer(kubeconfig []byte, server string) ([]byte, error) {
	lines := strings.Split(string(kubeconfig), "\n")
	n := 0
	for i, line := range lines {
		if v, ok := strings.CutPrefix(line, "    server: "); ok && v != "" {
			lines[i] = "    server: " + server
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("kubeconfig has %d server lines, want 1", n)
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// IsKey reports whether a bundle path holds private material (mode 0600).
func IsKey(p string) bool { return path.Ext(p) == ".key" || path.Ext(p) == ".kubeconfig" }

func fsMode(m uint32) fs.FileMode { return fs.FileMode(m) }
