package pki

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/haagent/haagent/base/files"
)

func TestDerivedCAsAreTheSameOnEveryMaster(t *testing.T) {
	sh, err := NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadCA(sh.CA.CertPEM, sh.CA.KeyPEM) // another master's copy
	if err != nil {
		t.Fatal(err)
	}
	for _, purpose := range DerivedCANames {
		a, err := sh.CA.Derive(purpose)
		if err != nil {
			t.Fatal(err)
		}
		b, err := again.Derive(purpose)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Key.Equal(b.Key) || a.Cert.Subject.String() != b.Cert.Subject.String() || a.Cert.SerialNumber.Cmp(b.Cert.SerialNumber) != 0 {
			t.Fatalf("%s: two masters derived different CAs", purpose)
		}
		if a.Key.Equal(sh.CA.Key) {
			t.Fatalf("%s has the cluster CA's key", purpose)
		}
		// A certificate one master issues verifies against the other's copy of the CA.
		c, _, err := a.Issue(LeafSpec{CommonName: "m1", Hosts: []string{"127.0.0.1"}, Server: true, Client: true}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := ParseCert(c)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(b.Cert), DNSName: "127.0.0.1"}); err != nil {
			t.Fatalf("%s: %v", purpose, err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(sh.CA.Cert), DNSName: "127.0.0.1"}); err == nil {
			t.Fatalf("%s: its certificate verifies against the cluster CA", purpose)
		}
	}
	other, _ := NewShared(time.Now())
	x, _ := sh.CA.Derive(PeerCAName)
	y, _ := other.CA.Derive(PeerCAName)
	if x.Key.Equal(y.Key) {
		t.Fatal("two clusters derived the same peer CA")
	}
}

func pool(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

// Only masters get a certificate for server authentication from the cluster CA: a
// minion's kubelet serves with one from the kubelet-serving CA, which nothing but the
// apiserver trusts, naming the node and the hosts the issuer let through, nothing else.
func TestOnlyMastersServeWithTheClusterCA(t *testing.T) {
	sh, err := NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	masterNames := []string{"kubernetes", "kubernetes.default.svc", "localhost", "m1", "10.0.0.21", "10.0.0.10", "10.254.0.1", "127.0.0.1"}
	for _, role := range []string{"minion", "lb"} {
		fs, err := Issue(sh, Node{Role: role, Name: "node1", Hosts: []string{"10.0.0.31"}, LB: "10.0.0.10", ServiceIP: "10.254.0.1",
			APIServer: "https://10.0.0.10:6443"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if filepath.Ext(f.Path) != ".crt" || f.Path == CACert {
				continue
			}
			c, err := ParseCert(f.Data)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range masterNames {
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool(sh.CA.Cert), DNSName: name}); err == nil {
					t.Errorf("%s %s verifies as a server for %s", role, f.Path, name)
				}
			}
			if f.Path == KubeletServingCert {
				kubeletCA, _ := sh.CA.Derive(KubeletCAName)
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool(kubeletCA.Cert), DNSName: "10.0.0.31"}); err != nil {
					t.Errorf("the kubelet serving certificate does not verify for its node's address: %v", err)
				}
				if len(c.DNSNames) != 1 || c.DNSNames[0] != "node1" || len(c.IPAddresses) != 1 {
					t.Errorf("the kubelet serving certificate names %v %v, want node1 and 10.0.0.31", c.DNSNames, c.IPAddresses)
				}
			}
		}
	}
}

func TestPeerCertificateIssuer(t *testing.T) {
	sh, err := NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	peerCA, _ := sh.CA.Derive(PeerCAName)
	for _, legacy := range []bool{true, false} {
		fs, err := Issue(sh, Node{Role: "master", Name: "m1", Hosts: []string{"10.0.0.21"}, LegacyPeerCert: legacy}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := files.Apply(root, append(fs, files.File{Path: EtcdPeerTrust, Mode: 0o644,
			Data: append(append([]byte{}, peerCA.CertPEM...), sh.CA.CertPEM...)})); err != nil {
			t.Fatal(err)
		}
		if got := LegacyPeerCert(root, sh.CA); got != legacy {
			t.Fatalf("LegacyPeerCert = %v, want %v", got, legacy)
		}
		if !PeerTrustMixed(root) {
			t.Fatal("a trust file with the cluster CA is not mixed")
		}
	}
	if _, err := files.Apply(root, []files.File{{Path: EtcdPeerTrust, Mode: 0o644, Data: peerCA.CertPEM}}); err != nil {
		t.Fatal(err)
	}
	if PeerTrustMixed(root) {
		t.Fatal("a trust file with the peer CA alone is mixed")
	}
}

// The aggregator's client certificate comes from the front-proxy CA alone: extension
// API servers trust it for that one name, and nothing that trusts the cluster CA takes
// it, nor does the front-proxy trust take any other certificate a node holds.
func TestFrontProxyClientIsTheFrontProxyCAsOnly(t *testing.T) {
	sh, err := NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := Issue(sh, Node{Role: "master", Name: "m1", Hosts: []string{"10.0.0.21"}, APIServer: "https://10.0.0.21:6443"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string][]byte{}
	for _, f := range fs {
		byPath[f.Path] = f.Data
	}
	trust := x509.NewCertPool()
	if !trust.AppendCertsFromPEM(byPath[FrontProxyTrustCert]) {
		t.Fatalf("%s holds no certificate", FrontProxyTrustCert)
	}
	client, err := ParseCert(byPath[FrontProxyClientCert])
	if err != nil {
		t.Fatal(err)
	}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if _, err := client.Verify(x509.VerifyOptions{Roots: trust, KeyUsages: clientAuth}); err != nil {
		t.Errorf("the aggregator's client certificate does not verify against the front-proxy trust: %v", err)
	}
	if client.Subject.CommonName != FrontProxyClientName {
		t.Errorf("its CN is %q, want %q", client.Subject.CommonName, FrontProxyClientName)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool(sh.CA.Cert), KeyUsages: clientAuth}); err == nil {
		t.Error("the aggregator's client certificate verifies against the cluster CA")
	}
	for path, data := range byPath {
		if filepath.Ext(path) != ".crt" || path == FrontProxyClientCert || path == FrontProxyTrustCert {
			continue
		}
		c, err := ParseCert(data)
		if err != nil || c.IsCA {
			continue
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: trust, KeyUsages: clientAuth}); err == nil {
			t.Errorf("%s verifies against the front-proxy trust", path)
		}
	}
}
