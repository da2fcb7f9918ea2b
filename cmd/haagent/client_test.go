package main

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/haagent/haagent/trust/pki"
	"github.com/haagent/haagent/trust/pki/pkitest"
)

// TestEtcdClientChecksTheMemberDialled: the etcd client config of the commands, made
// before the rotation, follows ca.crt through it and refuses a member whose
// certificate names another master.
func TestEtcdClientChecksTheMemberDialled(t *testing.T) {
	r, cases, root := pkitest.Start(t)
	f := etcdClientFlags{root: root, endpoints: "https://" + net.JoinHostPort(pkitest.Dialled, "2379")}
	cfg, err := f.config()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			pkitest.WriteTrust(t, tc, root, pki.EtcdClientCert, pki.EtcdClientKey)
			ep := "https://" + statusServer(t, r.ServerTLS(t, tc))
			cfg := cfg
			cfg.Endpoints = []string{ep}
			cli, err := clientv3.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			// Not waiting for a connection, the call fails with the handshake's error.
			_, err = pb.NewMaintenanceClient(cli.ActiveConnection()).Status(ctx, &pb.StatusRequest{}, grpc.WaitForReady(false))
			tc.Check(t, "the etcd client", err)
		})
	}
}

// statusServer serves etcd's Status, with sc, on pkitest.Dialled until the test ends.
func statusServer(t *testing.T, sc *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(pkitest.Dialled, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(sc)))
	pb.RegisterMaintenanceServer(srv, statusOnly{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

type statusOnly struct {
	pb.UnimplementedMaintenanceServer
}

func (statusOnly) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Version: "3.7.3"}, nil
}
