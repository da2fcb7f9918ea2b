// Package etcdtest runs a one-member etcd on loopback for a unit test, embedded in the
// test's process: for the packages that drive etcd as a client (snapshots, the space
// keeper) and need no haagent around it.
package etcdtest

import (
	"net"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Start runs the member until the test ends and returns a client of it. Each option
// changes etcd's config before the start (a space quota, say). The member list carries
// the client URL the member really listens on, as a defragment by member URL needs.
func Start(t testing.TB, options ...func(*embed.Config)) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	u := func(s string) []url.URL { p, _ := url.Parse(s); return []url.URL{*p} }
	client := "http://" + freeAddr(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = u(client), u(client)
	cfg.ListenPeerUrls = u("http://127.0.0.1:0")
	cfg.AdvertisePeerUrls = u("http://127.0.0.1:2380")
	cfg.InitialCluster = cfg.Name + "=http://127.0.0.1:2380"
	for _, o := range options {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready after 30s")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// freeAddr is a loopback address that nothing listens on, for the member's client URL.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
