package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc/credentials"

	"github.com/haagent/haagent/trust/pki"
)

// ClientTLS makes the client TLS configs for the masters' ports, one per dial: each
// trusts the cluster CAs in ca.crt as the file is at that dial, checks that the
// server's certificate names the host dialled, and presents the client certificate (if
// any) as its files are at that handshake. So a renewed certificate or a rotated CA
// applies without a restart, and verification is crypto/tls's own, with RootCAs and
// ServerName.
type ClientTLS struct {
	caFile, certFile, keyFile string
}

// ClusterTLS is a ClientTLS that trusts the cluster CAs under root and presents the
// client certificate certFile and keyFile (relative to root). The CA must be on disk
// already: call it after the join.
func ClusterTLS(root, certFile, keyFile string) (*ClientTLS, error) {
	c, err := ClusterTrust(root)
	if err != nil {
		return nil, err
	}
	c.certFile, c.keyFile = filepath.Join(root, certFile), filepath.Join(root, keyFile)
	return c, nil
}

// ClusterTrust is a ClientTLS that trusts the cluster CAs under root and presents no
// client certificate.
func ClusterTrust(root string) (*ClientTLS, error) {
	c := &ClientTLS{caFile: filepath.Join(root, pki.CACert)}
	if _, err := c.roots(); err != nil {
		return nil, err
	}
	return c, nil
}

// For is the config to dial host (an IP or a DNS name, without the port) with.
func (c *ClientTLS) For(host string) (*tls.Config, error) {
	roots, err := c.roots()
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}
	if c.certFile != "" {
		certFile, keyFile := c.certFile, c.keyFile
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("client certificate %s: %w", certFile, err)
			}
			return &cert, nil
		}
	}
	return tc, nil
}

// GRPC is c as gRPC transport credentials, for etcd's clientv3: pass
// grpc.WithTransportCredentials(c.GRPC()) in clientv3.Config.DialOptions, which
// clientv3 applies after its own credentials, and leave clientv3.Config.TLS nil. Each
// connection gets For the host of its endpoint.
func (c *ClientTLS) GRPC() credentials.TransportCredentials { return grpcTLS{c} }

func (c *ClientTLS) roots() (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(c.caFile)
	if err != nil {
		return nil, fmt.Errorf("cluster CAs: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster CAs: %s holds no certificate", c.caFile)
	}
	return pool, nil
}

// grpcTLS hands each client handshake to grpc-go's own TLS credentials, made from For
// the authority's host.
type grpcTLS struct{ c *ClientTLS }

func (g grpcTLS) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	host, _, err := net.SplitHostPort(authority)
	if err != nil {
		host = authority // no port
	}
	tc, err := g.c.For(host)
	if err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("TLS to %s: %w", authority, err)
	}
	return credentials.NewTLS(tc).ClientHandshake(ctx, authority, raw)
}

func (grpcTLS) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("node.ClientTLS: client credentials only")
}

func (grpcTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (g grpcTLS) Clone() credentials.TransportCredentials { return g }

// OverrideServerName is deprecated in grpc-go and unused: the name checked is always
// the endpoint's host.
func (grpcTLS) OverrideServerName(string) error {
	return errors.New("node.ClientTLS: the server name is the endpoint's host")
}
