package spacekeeper

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/haagent/haagent/test/framework/await"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestKeeperClearsNOSPACE(t *testing.T) {
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	cfg.QuotaBackendBytes = 4 << 20
	u := func(s string) []url.URL { p, _ := url.Parse(s); return []url.URL{*p} }
	// The member list must carry the real client URL: the keeper defragments by it.
	client := "http://" + freeAddr(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = u(client), u(client)
	cfg.ListenPeerUrls = u("http://127.0.0.1:0")
	cfg.AdvertisePeerUrls = u("http://127.0.0.1:2380")
	cfg.InitialCluster = cfg.Name + "=http://127.0.0.1:2380"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	var logs strings.Builder
	k := New(Config{Client: func() *clientv3.Client { return cli }, Name: "m1", Poll: 20 * time.Millisecond, RetryAfter: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, NewMetrics())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Overwrite one key until etcd is full: every old revision stays until compacted.
	val := strings.Repeat("x", 256<<10)
	full := false
	for i := 0; i < 200 && !full; i++ {
		_, err := cli.Put(context.Background(), "big", val)
		switch {
		case errors.Is(err, rpctypes.ErrNoSpace):
			full = true
		case err != nil:
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("etcd never raised NOSPACE")
	}
	if err := await.Until(context.Background(), "writes to come back", time.Minute, func() error {
		_, err := cli.Put(context.Background(), "after", "ok")
		return err
	}); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	for _, step := range []string{"compacted", "defragmented", "disarmed NOSPACE"} {
		if !strings.Contains(logs.String(), step) {
			t.Errorf("no %q in the log:\n%s", step, logs.String())
		}
	}
}
