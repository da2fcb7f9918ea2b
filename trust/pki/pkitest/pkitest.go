// Package pkitest serves the cases every client of the masters must pass in tests: a
// master's certificate is accepted only from the master dialled and only while its CA
// is trusted, before, during and after a CA rotation.
package pkitest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/trust/pki"
)

// Dialled is the master the clients dial in the cases; Other is another master, whose
// certificate names 127.0.0.1 too, as every master's does. Both are loopback addresses
// that no integration test uses.
const (
	Dialled = "127.0.0.121"
	Other   = "127.0.0.122"
)

// Case is one server certificate and what a client that trusts Trust must say of it
// when it dials Dialled.
type Case struct {
	Name string
	// Trust is what ca.crt holds.
	Trust []*pki.CA
	// Signer signs the server's certificate and the client's.
	Signer *pki.CA
	// Host is the master named by the server's certificate.
	Host string
	// OK says whether the client accepts the server.
	OK bool
	// Refusal is in the client's error when it refuses the server.
	Refusal string
}

// Check fails t unless err is what c says of a client's attempt.
func (c Case) Check(t testing.TB, client string, err error) {
	t.Helper()
	switch {
	case c.OK && err != nil:
		t.Errorf("%s refused the server: %v", client, err)
	case !c.OK && err == nil:
		t.Errorf("%s accepted the server", client)
	case !c.OK && !strings.Contains(err.Error(), c.Refusal):
		t.Errorf("%s refused the server for another reason than %q: %v", client, c.Refusal, err)
	}
}

// Rotation is a cluster CA (Old) being replaced by another (New).
type Rotation struct{ Old, New *pki.CA }

// NewRotation makes the two CAs.
func NewRotation(t testing.TB) Rotation {
	t.Helper()
	var r Rotation
	var err error
	if r.Old, err = pki.NewCA("haagent-ca-old", time.Now()); err != nil {
		t.Fatal(err)
	}
	if r.New, err = pki.NewCA("haagent-ca-new", time.Now()); err != nil {
		t.Fatal(err)
	}
	return r
}

// Cases are the steps of the rotation in order, as ca.crt goes from Old to both and
// to New.
func (r Rotation) Cases() []Case {
	both := []*pki.CA{r.Old, r.New}
	wrongHost := "not " + Dialled // x509.HostnameError
	unknownCA := "unknown authority"
	return []Case{
		{"before the rotation, the master dialled", []*pki.CA{r.Old}, r.Old, Dialled, true, ""},
		{"before the rotation, another master", []*pki.CA{r.Old}, r.Old, Other, false, wrongHost},
		{"during the rotation, the master dialled, old CA", both, r.Old, Dialled, true, ""},
		{"during the rotation, the master dialled, new CA", both, r.New, Dialled, true, ""},
		{"during the rotation, another master, old CA", both, r.Old, Other, false, wrongHost},
		{"during the rotation, another master, new CA", both, r.New, Other, false, wrongHost},
		{"after the rotation, the master dialled, old CA", []*pki.CA{r.New}, r.Old, Dialled, false, unknownCA},
		{"after the rotation, the master dialled, new CA", []*pki.CA{r.New}, r.New, Dialled, true, ""},
	}
}

// Start makes a rotation, its cases and a root that holds the first case's trust and
// a client identity at etcd-client.crt and .key: what a client under test is made
// from before it goes through the cases (WriteTrust each).
func Start(t testing.TB) (Rotation, []Case, string) {
	t.Helper()
	r := NewRotation(t)
	cases := r.Cases()
	root := t.TempDir()
	WriteTrust(t, cases[0], root, pki.EtcdClientCert, pki.EtcdClientKey)
	return r, cases, root
}

// WriteTrust writes c.Trust to ca.crt under root, and a client certificate from
// c.Signer to certFile and keyFile under root unless certFile is "".
func WriteTrust(t testing.TB, c Case, root, certFile, keyFile string) {
	t.Helper()
	var trust bytes.Buffer
	for _, ca := range c.Trust {
		trust.Write(ca.CertPEM)
	}
	write(t, filepath.Join(root, pki.CACert), trust.Bytes())
	if certFile == "" {
		return
	}
	certPEM, keyPEM, err := c.Signer.Issue(pki.LeafSpec{CommonName: "client", Client: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, certFile), certPEM)
	write(t, filepath.Join(root, keyFile), keyPEM)
}

// ServerTLS is the server side of c: c.Host's certificate from c.Signer, with the
// SANs every master's certificate has. It verifies a client certificate, if the client
// sends one, against either CA of r.
func (r Rotation) ServerTLS(t testing.TB, c Case) *tls.Config {
	t.Helper()
	certPEM, keyPEM, err := c.Signer.Issue(pki.LeafSpec{
		CommonName: "master", Hosts: []string{"127.0.0.1", "localhost", "master", c.Host}, Server: true,
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(r.Old.Cert)
	clients.AddCert(r.New.Cert)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clients,
		MinVersion:   tls.VersionTLS12,
	}
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
