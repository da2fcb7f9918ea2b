package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
)

// ParseKubeconfig reads what Kubeconfig wrote (one cluster, one user, everything
// embedded): the server's URL and a client TLS config with the CA and the credentials.
func ParseKubeconfig(data []byte) (server string, tc *tls.Config, err error) {
	fields := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ": "); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	dec := func(k string) []byte {
		b, _ := base64.StdEncoding.DecodeString(fields[k])
		return b
	}
	cert, err := tls.X509KeyPair(dec("client-certificate-data"), dec("client-key-data"))
	if err != nil {
		return "", nil, fmt.Errorf("client credentials: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(dec("certificate-authority-data")) || fields["server"] == "" {
		return "", nil, fmt.Errorf("no server or CA: not a kubeconfig that haagent wrote")
	}
	return strings.TrimSuffix(fields["server"], "/"), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
