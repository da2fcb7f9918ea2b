package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/haagent/haagent/pki"
)

// ClusterTLS is a client TLS config for the masters' ports: it trusts the cluster CA
// under root and presents the client certificate certFile and keyFile (relative to
// root), read at each handshake so that a renewed certificate applies without a
// restart. The CA must be on disk already: call it after the join.
func ClusterTLS(root, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(filepath.Join(root, pki.CACert))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no certificate", filepath.Join(root, pki.CACert))
	}
	certFile, keyFile = filepath.Join(root, certFile), filepath.Join(root, keyFile)
	return &tls.Config{
		RootCAs:    pool,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			return &c, err
		},
	}, nil
}
