package node

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/haagent/haagent/trust/pki"
	"github.com/haagent/haagent/trust/pki/pkitest"
)

// TestClientTLSChecksTheMasterDialled: one ClientTLS, made before the rotation, follows
// ca.crt through it, and refuses a certificate that names another master, both as a
// tls.Config (For) and as gRPC credentials (GRPC), whose handshake goes through
// grpc-go's own TLS.
func TestClientTLSChecksTheMasterDialled(t *testing.T) {
	r, cases, root := pkitest.Start(t)
	c, err := ClusterTLS(root, pki.EtcdClientCert, pki.EtcdClientKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			pkitest.WriteTrust(t, tc, root, pki.EtcdClientCert, pki.EtcdClientKey)
			sc := r.ServerTLS(t, tc)
			sc.NextProtos = []string{"h2"} // grpc-go requires ALPN
			addr := handshakeServer(t, sc)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()

			host, _, _ := net.SplitHostPort(addr)
			cfg, err := c.For(host)
			if err != nil {
				t.Fatal(err)
			}
			d := tls.Dialer{Config: cfg}
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				conn.Close()
			}
			tc.Check(t, "For", err)

			raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conn, _, err = c.GRPC().ClientHandshake(ctx, addr, raw)
			if err == nil {
				conn.Close()
			}
			tc.Check(t, "GRPC", err)
		})
	}
}

func TestClusterTrustNeedsTheCA(t *testing.T) {
	if _, err := ClusterTrust(t.TempDir()); err == nil {
		t.Fatal("ClusterTrust without ca.crt: no error")
	}
}

// handshakeServer serves TLS handshakes with sc on pkitest.Dialled until the test ends.
func handshakeServer(t *testing.T, sc *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", net.JoinHostPort(pkitest.Dialled, "0"), sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}
