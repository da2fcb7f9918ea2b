package pki

import (
	"crypto/x509"
	"testing"
	"time"
)

// TestParseKubeconfig reads back what Kubeconfig writes: the server, a CA that verifies
// a certificate it signed, and the client's own certificate; and refuses a file without
// credentials.
func TestParseKubeconfig(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(LeafSpec{CommonName: "admin", Client: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := Kubeconfig("https://10.0.0.10:6443/", "admin", ca.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	server, tc, err := ParseKubeconfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if server != "https://10.0.0.10:6443" {
		t.Errorf("server %q", server)
	}
	if len(tc.Certificates) != 1 || tc.Certificates[0].Leaf == nil && len(tc.Certificates[0].Certificate) == 0 {
		t.Fatalf("no client certificate: %+v", tc.Certificates)
	}
	leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil || leaf.Subject.CommonName != "admin" {
		t.Fatalf("client certificate %v, %v", leaf, err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the parsed CA does not verify the client certificate: %v", err)
	}
	if _, _, err := ParseKubeconfig([]byte("apiVersion: v1\nkind: Config\n")); err == nil {
		t.Error("a kubeconfig without credentials parsed")
	}
}
