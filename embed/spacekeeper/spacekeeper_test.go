package spacekeeper

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/etcdtest"
)

func TestKeeperClearsNOSPACE(t *testing.T) {
	cli := etcdtest.Start(t, func(cfg *embed.Config) { cfg.QuotaBackendBytes = 4 << 20 })

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
