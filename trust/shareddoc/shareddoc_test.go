package shareddoc

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/etcdtest"
	"github.com/haagent/haagent/trust/pki"
)

func newDoc(t *testing.T) (pki.Token, *pki.Shared) {
	t.Helper()
	token, err := pki.GenerateToken(pki.KindServer)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := pki.NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return token, sh
}

// The first Create stores; a second one, as a racing master's, gets the stored
// document back unchanged. Store refuses a write against an old revision, and Steps
// reads again after such a conflict instead of counting it as a step.
func TestCreateStoreSteps(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := context.Background()
	token, sh := newDoc(t)
	if _, err := Load(ctx, cli, token); !errors.Is(err, ErrMissing) {
		t.Fatalf("Load before Create = %v, want ErrMissing", err)
	}
	doc, created, err := Create(ctx, cli, token, sh)
	if err != nil || !created {
		t.Fatalf("first Create = %v, created %v", err, created)
	}
	_, other := newDoc(t)
	again, created, err := Create(ctx, cli, token, other)
	if err != nil || created || !again.CA.Cert.Equal(sh.CA.Cert) || again.Rev != doc.Rev {
		t.Fatalf("second Create = %v, created %v, CA kept %v, rev %d (first %d)", err, created, again.CA.Cert.Equal(sh.CA.Cert), again.Rev, doc.Rev)
	}

	lb, err := pki.GenerateToken(pki.KindLB)
	if err != nil {
		t.Fatal(err)
	}
	doc.LBToken = &lb
	if err := Store(ctx, cli, token, doc.Shared, doc.Rev); err != nil {
		t.Fatalf("Store at the revision read: %v", err)
	}
	if err := Store(ctx, cli, token, doc.Shared, doc.Rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("Store at a stale revision = %v, want ErrConflict", err)
	}

	// A step whose first write loses to another writer is asked again, with what that
	// writer stored.
	steps, raced := 0, false
	err = Steps(ctx, cli, token, slog.New(slog.DiscardHandler), func(sh *pki.Shared, started bool) (*pki.Shared, error) {
		steps++
		if started {
			return nil, nil
		}
		if !raced {
			raced = true
			now, err := Load(ctx, cli, token)
			if err != nil {
				return nil, err
			}
			now.AgentToken = &lb
			if err := Store(ctx, cli, token, now.Shared, now.Rev); err != nil {
				return nil, err
			}
		} else if sh.AgentToken == nil {
			t.Error("the step asked again does not see the other writer's agent token")
		}
		sh.EncryptionKeys = []pki.EncryptionKey{{Name: "key1", Secret: make([]byte, 32)}}
		return sh, nil
	})
	if err != nil || steps != 3 {
		t.Fatalf("Steps = %v after %d calls, want 3 (lost, stored, done)", err, steps)
	}
	final, err := Load(ctx, cli, token)
	if err != nil || final.AgentToken == nil || len(final.EncryptionKeys) != 1 || final.LBToken == nil {
		t.Fatalf("after Steps: %v, agent token %v, keys %d, lb token %v", err, final.AgentToken != nil, len(final.EncryptionKeys), final.LBToken != nil)
	}
}

// Watch applies the document as it is, then each version written after it; one that
// another token sealed is skipped.
func TestWatch(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	token, sh := newDoc(t)
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, func() *clientv3.Client { return cli }, token, func(sh *pki.Shared) {
			mu.Lock()
			defer mu.Unlock()
			name := "none"
			if len(sh.EncryptionKeys) > 0 {
				name = sh.EncryptionKeys[0].Name
			}
			seen = append(seen, name)
		}, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()
	saw := func(want int) {
		t.Helper()
		err := await.Until(ctx, "the watch applying the document's versions", 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(seen) < want {
				return errors.New("not yet")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	doc, _, err := Create(ctx, cli, token, sh)
	if err != nil {
		t.Fatal(err)
	}
	saw(1)
	other, foreign := newDoc(t)
	sealed, err := pki.SealShared(other, foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, pki.SharedKey, string(sealed)); err != nil {
		t.Fatal(err)
	}
	doc.EncryptionKeys = []pki.EncryptionKey{{Name: "key2", Secret: make([]byte, 32)}}
	if _, err := cli.Put(ctx, pki.SharedKey, mustSeal(t, token, doc.Shared)); err != nil {
		t.Fatal(err)
	}
	saw(2)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "none" || seen[1] != "key2" {
		t.Fatalf("applied %v, want [none key2] (the foreign version skipped)", seen)
	}
}

func mustSeal(t *testing.T, token pki.Token, sh *pki.Shared) string {
	t.Helper()
	b, err := pki.SealShared(token, sh)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
