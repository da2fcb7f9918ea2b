package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/haagent/haagent/base/files"
)

// Dir is where certificates live, relative to --root.
const Dir = "etc/kubernetes/pki"

// Paths of the files every role reads, relative to --root.
const (
	// CACert is what every component trusts for the cluster CA: the CA that signs,
	// and while the CA rotates the other one after it (Shared.Trust).
	CACert = Dir + "/ca.crt"
	// CAKey is the key of the CA that signs, on masters only.
	CAKey = Dir + "/ca.key"
	// CASignerCert is the CA that signs, alone, on masters: the controller-manager signs
	// with it, and takes exactly one certificate.
	CASignerCert = Dir + "/ca-signer.crt"
	// CAOtherKey is, on masters while the CA rotates, the key of the other CA in ca.crt.
	CAOtherKey = Dir + "/ca-other.key"
	SAKey      = Dir + "/sa.key"
	SAPub      = Dir + "/sa.pub"
	// EtcdPeerCert is a master's raft identity, from the etcd peer CA (PeerCAName):
	// from the cluster CA only while its cluster moves over (see Node.LegacyPeerCert).
	EtcdPeerCert = Dir + "/etcd-peer.crt"
	EtcdPeerKey  = Dir + "/etcd-peer.key"
	// EtcdPeerCACert is the etcd peer CA, on masters only.
	EtcdPeerCACert = Dir + "/etcd-peer-ca.crt"
	// EtcdPeerTrust is what the etcd peer port trusts: the peer CA, and the cluster CA
	// (for masters' names only) while the cluster moves over. The master writes it.
	EtcdPeerTrust = Dir + "/etcd-peer-trust.crt"
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
	// KubeletServingCert is the kubelet's own HTTPS certificate, from the kubelet-serving
	// CA (KubeletCAName), so that the apiserver can verify the kubelet it talks to for
	// logs, exec and port-forward, and nothing else accepts it.
	KubeletServingCert = Dir + "/kubelet-server.crt"
	KubeletServingKey  = Dir + "/kubelet-server.key"
	// KubeletCABundle is what the apiserver trusts for kubelets, on masters: the
	// kubelet-serving CA, and the cluster CA, which signed the kubelets' serving
	// certificates before there was one, until they are renewed.
	KubeletCABundle = Dir + "/kubelet-serving-ca.crt"
	// KubeletSignerCert and KubeletSignerKey are the kubelet-serving CA, on masters: the
	// controller-manager signs kubernetes.io/kubelet-serving CSRs with it, so that an
	// approved CSR, too, yields nothing the cluster CA's clients accept as a server.
	KubeletSignerCert = Dir + "/kubelet-serving-signer.crt"
	KubeletSignerKey  = Dir + "/kubelet-serving-signer.key"
	KubeProxyCert     = Dir + "/kube-proxy.crt"
	KubeProxyKey      = Dir + "/kube-proxy.key"
	// FrontProxyTrust is what extension API servers trust for the aggregator's requests,
	// on masters: the front-proxy CA of each trusted cluster CA (FrontProxyTrust). The
	// apiserver publishes it in kube-system/extension-apiserver-authentication.
	FrontProxyTrustCert = Dir + "/front-proxy-ca.crt"
	// FrontProxyClientCert is the apiserver's client certificate for the requests its
	// aggregator proxies to extension API servers, from the front-proxy CA.
	FrontProxyClientCert = Dir + "/front-proxy-client.crt"
	FrontProxyClientKey  = Dir + "/front-proxy-client.key"

	AdminKubeconfig             = "etc/kubernetes/admin.kubeconfig"
	ControllerManagerKubeconfig = "etc/kubernetes/controller-manager.kubeconfig"
	SchedulerKubeconfig         = "etc/kubernetes/scheduler.kubeconfig"
	KubeletKubeconfig           = "etc/kubernetes/kubelet.kubeconfig"
	ProxyKubeconfig             = "etc/kubernetes/proxy.kubeconfig"
	// NetworkPolicyKubeconfig is a minion's NetworkPolicy controller's, as
	// NetworkPolicyUser.
	NetworkPolicyKubeconfig = "etc/kubernetes/network-policy.kubeconfig"
)

// FrontProxyClientName is the aggregator's client certificate's CN, the only name
// extension API servers accept request headers from.
const FrontProxyClientName = "front-proxy-client"

// NetworkPolicyUser is the minions' NetworkPolicy controllers' identity: the
// network-policy add-on lets it list and watch pods, namespaces and NetworkPolicies,
// and nothing else.
const NetworkPolicyUser = "system:haagent:network-policy"

// LBCommonName is the identity that every lb shared before lb names were bound: its
// etcd user keeps no role, and it renews nothing at the join service.
const LBCommonName = "haagent-lb"

// LBNamePrefix starts an lb's own identity, LBNamePrefix + its name: its health
// checks, its part in the VIP's election (its own etcd user) and its renewals at the
// join service, for that name only. The ':' keeps it from ever being a node's name.
const LBNamePrefix = LBCommonName + ":"

// FlannelCommonName is flanneld's etcd identity, on masters and minions.
const FlannelCommonName = "flannel"

// Node says who a bundle is for.
type Node struct {
	// Role is lb, master or minion.
	Role string
	Name string
	// Hosts are this node's own addresses (IPs or DNS names), put into its server SANs.
	// For a minion the issuer has checked them: its kubelet's serving certificate
	// names the node and these, nothing else.
	Hosts []string
	// LB is the lb's address, put into master SANs and minion kubeconfigs; may be empty.
	LB string
	// ServiceIP is the first IP of the service range (the kubernetes Service), for apiserver SANs.
	ServiceIP string
	// APIServer is the URL kubeconfigs on this node point at.
	APIServer string
	// LegacyPeerCert issues a master's etcd peer certificate from the cluster CA, as
	// haagent did before the peer CA: while a member of its cluster may not trust the
	// peer CA yet, a master presents one that every member trusts.
	LegacyPeerCert bool
}

// Issue returns every file the node's role needs: certificates, keys and kubeconfigs.
// Only a master's files carry a certificate for server authentication from the cluster
// CA; a minion's kubelet serves with one from the kubelet-serving CA.
func Issue(sh *Shared, n Node, now time.Time) ([]files.File, error) {
	b := &bundle{ca: sh.CA, trust: sh.Trust(), now: now}
	b.add(CACert, 0o644, b.trust)
	local := append([]string{"127.0.0.1", "localhost", n.Name}, n.Hosts...)
	switch n.Role {
	case "master":
		b.add(CAKey, 0o600, sh.CA.KeyPEM)
		b.add(CASignerCert, 0o644, sh.CA.CertPEM)
		if sh.Rotation != nil && sh.Rotation.Other != nil {
			b.add(CAOtherKey, 0o600, sh.Rotation.Other.KeyPEM)
		}
		b.add(SAKey, 0o600, sh.SAKeyPEM)
		b.add(SAPub, 0o644, sh.SAPubPEM)
		peer, err := IssuePeer(sh, n, now)
		if err != nil {
			return nil, err
		}
		b.files = append(b.files, peer...)
		kubeletTrust, err := KubeletTrust(sh)
		if err != nil {
			return nil, err
		}
		b.add(KubeletCABundle, 0o644, kubeletTrust)
		kubeletCA, err := sh.CA.Derive(KubeletCAName)
		if err != nil {
			return nil, err
		}
		b.add(KubeletSignerCert, 0o644, kubeletCA.CertPEM)
		b.add(KubeletSignerKey, 0o600, kubeletCA.KeyPEM)
		frontProxyTrust, err := FrontProxyTrust(sh)
		if err != nil {
			return nil, err
		}
		b.add(FrontProxyTrustCert, 0o644, frontProxyTrust)
		frontProxyCA, err := sh.CA.Derive(FrontProxyCAName)
		if err != nil {
			return nil, err
		}
		b.leafFrom(frontProxyCA, FrontProxyClientCert, FrontProxyClientKey, LeafSpec{CommonName: FrontProxyClientName, Client: true})
		b.leaf(EtcdServerCrt, EtcdServerKey, LeafSpec{CommonName: n.Name, Hosts: append(local, n.LB), Server: true, Client: true})
		b.leaf(EtcdClientCert, EtcdClientKey, LeafSpec{CommonName: "haagent", Client: true})
		b.leaf(FlannelEtcdCert, FlannelEtcdKey, LeafSpec{CommonName: FlannelCommonName, Client: true})
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
		kubeletCA, err := sh.CA.Derive(KubeletCAName)
		if err != nil {
			return nil, err
		}
		b.leafFrom(kubeletCA, KubeletServingCert, KubeletServingKey, LeafSpec{CommonName: "system:node:" + n.Name,
			Organization: []string{"system:nodes"}, Hosts: append([]string{n.Name}, n.Hosts...), Server: true})
		b.leaf(KubeProxyCert, KubeProxyKey, LeafSpec{CommonName: "system:kube-proxy", Client: true})
		b.leaf(FlannelEtcdCert, FlannelEtcdKey, LeafSpec{CommonName: FlannelCommonName, Client: true})
		b.kubeconfig(KubeletKubeconfig, n.APIServer, LeafSpec{CommonName: "system:node:" + n.Name,
			Organization: []string{"system:nodes"}, Client: true})
		b.kubeconfig(ProxyKubeconfig, n.APIServer, LeafSpec{CommonName: "system:kube-proxy", Client: true})
		b.kubeconfig(NetworkPolicyKubeconfig, n.APIServer, LeafSpec{CommonName: NetworkPolicyUser, Client: true})
	case "lb":
		b.leaf(EtcdClientCert, EtcdClientKey, LeafSpec{CommonName: LBNamePrefix + n.Name, Client: true})
	default:
		return nil, fmt.Errorf("no certificates for role %q", n.Role)
	}
	return b.files, b.err
}

// IssuePeer returns a master's etcd peer certificate and key, and the peer CA's
// certificate: from the peer CA, or from the cluster CA with n.LegacyPeerCert.
func IssuePeer(sh *Shared, n Node, now time.Time) ([]files.File, error) {
	peerCA, err := sh.CA.Derive(PeerCAName)
	if err != nil {
		return nil, err
	}
	b := &bundle{ca: sh.CA, now: now}
	b.add(EtcdPeerCACert, 0o644, peerCA.CertPEM)
	signer := peerCA
	if n.LegacyPeerCert {
		signer = sh.CA
	}
	b.leafFrom(signer, EtcdPeerCert, EtcdPeerKey, LeafSpec{CommonName: n.Name,
		Hosts: append([]string{"127.0.0.1", "localhost", n.Name}, n.Hosts...), Server: true, Client: true})
	return b.files, b.err
}

// KubeletTrust is what the apiserver trusts for kubelets: the kubelet-serving CA of
// each trusted cluster CA, and the cluster CAs themselves, which signed the kubelets'
// serving certificates before there was a kubelet-serving CA, until they are renewed.
func KubeletTrust(sh *Shared) ([]byte, error) {
	b, err := derivedTrust(sh, KubeletCAName)
	if err != nil {
		return nil, err
	}
	return append(b, sh.Trust()...), nil
}

// FrontProxyTrust is what extension API servers trust for the aggregator: the
// front-proxy CA of each trusted cluster CA.
func FrontProxyTrust(sh *Shared) ([]byte, error) { return derivedTrust(sh, FrontProxyCAName) }

// PeerTrust is what the etcd peer port trusts: the peer CA of each trusted cluster
// CA, and with mixed the cluster CA that signs too, for the masters' names only, while
// the cluster moves over to the peer CA.
func PeerTrust(sh *Shared, mixed bool) ([]byte, error) {
	b, err := derivedTrust(sh, PeerCAName)
	if err != nil {
		return nil, err
	}
	if mixed {
		b = append(b, sh.CA.CertPEM...)
	}
	return b, nil
}

// derivedTrust is the CA named purpose derived from each trusted cluster CA, in the
// order of TrustedCAs, so that a CA rotation moves it over as it moves the cluster CA.
func derivedTrust(sh *Shared, purpose string) ([]byte, error) {
	var b []byte
	for _, ca := range sh.TrustedCAs() {
		derived, err := ca.Derive(purpose)
		if err != nil {
			return nil, err
		}
		b = append(b, derived.CertPEM...)
	}
	return b, nil
}

// LegacyPeerCert reports whether the etcd peer certificate under root is signed by
// ca, the cluster CA: a master that ran before the peer CA, or that has not moved over
// yet. false when there is none.
func LegacyPeerCert(root string, ca *CA) bool {
	data, err := os.ReadFile(filepath.Join(root, EtcdPeerCert))
	if err != nil {
		return false
	}
	c, err := ParseCert(data)
	return err == nil && c.CheckSignatureFrom(ca.Cert) == nil
}

// PeerTrustMixed reports whether the etcd peer trust file under root holds the
// cluster CA (ca.crt under root) beside the peer CA: the cluster is moving over, and
// the peer port must accept only masters' names.
func PeerTrustMixed(root string) bool {
	ca, err := os.ReadFile(filepath.Join(root, CACert))
	if err != nil {
		return false
	}
	caCert, err := ParseCert(ca)
	if err != nil {
		return false
	}
	trust, err := os.ReadFile(filepath.Join(root, EtcdPeerTrust))
	if err != nil {
		return false
	}
	for {
		var b *pem.Block
		if b, trust = pem.Decode(trust); b == nil {
			return false
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && c.Equal(caCert) {
			return true
		}
	}
}

// NonMasterNames are the subject CNs of non-masters' certificates from the cluster CA
// that are valid node names too. No master may be named so: while a cluster moves over
// to the peer CA, a master's name is what its etcd peers accept it by.
var NonMasterNames = []string{FlannelCommonName, LBCommonName}

// NonMasterName reports whether a master can't be called name, for the reason
// NonMasterNames says: it is one of them, or an lb's or a kubelet's CN
// (LBNamePrefix..., system:...), which member names, unlike node names, could spell.
func NonMasterName(name string) bool {
	return slices.Contains(NonMasterNames, name) || strings.HasPrefix(name, LBNamePrefix) || strings.HasPrefix(name, "system:")
}

type bundle struct {
	ca *CA
	// trust is the CA data that kubeconfigs embed (Shared.Trust).
	trust []byte
	now   time.Time
	files []files.File
	err   error
}

func (b *bundle) add(p string, mode uint32, data []byte) {
	b.files = append(b.files, files.File{Path: p, Mode: fsMode(mode), Data: data})
}

func (b *bundle) leaf(certPath, keyPath string, spec LeafSpec) {
	b.leafFrom(b.ca, certPath, keyPath, spec)
}

func (b *bundle) leafFrom(ca *CA, certPath, keyPath string, spec LeafSpec) {
	if b.err != nil {
		return
	}
	c, k, err := ca.Issue(spec, b.now)
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
	data, err := Kubeconfig(server, spec.CommonName, b.trust, c, k)
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

// FileMode is the mode a node writes a bundle file with, whatever the server that sent
// it said: keys and kubeconfigs 0600, anything else 0644.
func FileMode(p string) fs.FileMode {
	if IsKey(p) {
		return 0o600
	}
	return 0o644
}

func fsMode(m uint32) fs.FileMode { return fs.FileMode(m) }
