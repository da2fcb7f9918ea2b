// Package atrest keeps Secrets encrypted at rest: their keys live in the sealed shared
// document in etcd beside the CA, every master renders them into the apiserver's
// EncryptionConfiguration and reports once its apiserver runs with them, and Rotate
// replaces the write key one step at a time.
//
// It also owns what every change of the shared document goes through: reading and
// writing it (Load, Store), changing it in steps (Steps), and the reports by which
// masters and nodes say which step they applied (Reports, Pending, WaitNone), which
// the CA rotation (package carotate) uses too.
package atrest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/trust/pki"
)

// AppliedPrefix is where each master records the keys its apiserver runs with, under
// its name, as Fingerprint gives them.
const AppliedPrefix = "/haagent/atrest/applied/"

// keyPrefix begins every key's name; the number after it grows with each new key, so
// that the newer of two keys is known from the names alone.
const keyPrefix = "key"

// ErrConflict says the shared document changed between a read and a write (Store).
var ErrConflict = errors.New("the shared document in etcd changed meanwhile")

// NewKey makes a random 32-byte secretbox key named after the newest of existing.
func NewKey(existing []pki.EncryptionKey) (pki.EncryptionKey, error) {
	n := 0
	for _, k := range existing {
		n = max(n, keyNumber(k.Name))
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return pki.EncryptionKey{}, fmt.Errorf("new encryption key: %w", err)
	}
	return pki.EncryptionKey{Name: keyPrefix + strconv.Itoa(n+1), Secret: secret}, nil
}

// keyNumber is 0 for a name that isn't keyN.
func keyNumber(name string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(name, keyPrefix))
	if err != nil || !strings.HasPrefix(name, keyPrefix) {
		return 0
	}
	return n
}

// Fingerprint names a key list in its order, without its secrets: "key2,key1".
func Fingerprint(keys []pki.EncryptionKey) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return strings.Join(names, ",")
}

// Load reads and opens the shared document, with its revision for Store.
func Load(ctx context.Context, kv clientv3.KV, token pki.Token) (*pki.Shared, int64, error) {
	resp, err := kv.Get(ctx, pki.SharedKey)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s from etcd: %w", pki.SharedKey, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%s is not in etcd yet: a master stores it when it starts", pki.SharedKey)
	}
	sh, err := pki.OpenShared(token, resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s with this master's token: %w", pki.SharedKey, err)
	}
	return sh, resp.Kvs[0].ModRevision, nil
}

// Store writes sh if the document is still at revision rev, else returns ErrConflict.
func Store(ctx context.Context, kv clientv3.KV, token pki.Token, sh *pki.Shared, rev int64) error {
	sealed, err := pki.SealShared(token, sh)
	if err != nil {
		return fmt.Errorf("seal the shared document: %w", err)
	}
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(pki.SharedKey), "=", rev)).
		Then(clientv3.OpPut(pki.SharedKey, string(sealed))).Commit()
	if err != nil {
		return fmt.Errorf("write %s to etcd: %w", pki.SharedKey, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// Steps drives a change of the shared document that may take several writes (a
// rotation): each round loads the document and asks step for the next one to store,
// until step returns nil. started tells step whether one of its documents has been
// stored yet in this run. A write that lost to another (ErrConflict) is not a step:
// the document is read again and step asked again.
func Steps(ctx context.Context, kv clientv3.KV, token pki.Token, lg *slog.Logger,
	step func(sh *pki.Shared, started bool) (*pki.Shared, error)) error {
	started := false
	for {
		sh, rev, err := Load(ctx, kv, token)
		if err != nil {
			return err
		}
		next, err := step(sh, started)
		if err != nil || next == nil {
			return err
		}
		switch err := Store(ctx, kv, token, next, rev); {
		case errors.Is(err, ErrConflict):
			lg.Warn("the shared document changed meanwhile (another master or rotation wrote it); reading it again")
			continue
		case err != nil:
			return err
		}
		started = true
	}
}

// Ensure returns the cluster's keys, and makes the first one if the shared document has
// none: a new cluster, or one made before encryption at rest. Of masters that race, one
// wins the transaction and the others read its key.
func Ensure(ctx context.Context, kv clientv3.KV, token pki.Token, lg *slog.Logger) ([]pki.EncryptionKey, error) {
	var keys []pki.EncryptionKey
	err := Steps(ctx, kv, token, lg, func(sh *pki.Shared, started bool) (*pki.Shared, error) {
		keys = sh.EncryptionKeys
		if started || len(keys) > 0 {
			return nil, nil
		}
		k, err := NewKey(nil)
		if err != nil {
			return nil, err
		}
		lg.Info("[encryption] making the cluster's first key for Secrets at rest", "key", k.Name)
		sh.EncryptionKeys = []pki.EncryptionKey{k}
		return sh, nil
	})
	return keys, err
}

// Watch reads the shared document, calls set with its keys, and again each time they
// change, until ctx ends. A broken watch is resumed from a fresh read, with the client
// that client returns then (the local member's, which a restart of it replaces).
func Watch(ctx context.Context, client func() *clientv3.Client, token pki.Token, set func([]pki.EncryptionKey), lg *slog.Logger) {
	for {
		cli := client()
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		sh, rev, err := Load(gctx, cli, token)
		cancel()
		if err == nil {
			set(sh.EncryptionKeys)
			watch(ctx, cli, token, rev, set, lg)
		}
		// A pause, so that a lost quorum does not make this spin.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// watch calls set for each change of the document after revision rev, until the watch
// breaks or ctx ends.
func watch(ctx context.Context, cli *clientv3.Client, token pki.Token, rev int64, set func([]pki.EncryptionKey), lg *slog.Logger) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range cli.Watch(wctx, pki.SharedKey, clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			lg.Warn("[encryption] the watch of the shared document broke; reading it again", "err", err)
			return
		}
		for _, ev := range resp.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			sh, err := pki.OpenShared(token, ev.Kv.Value)
			if err != nil {
				lg.Error("[encryption] the shared document can't be opened with this master's token", "err", err)
				continue
			}
			set(sh.EncryptionKeys)
		}
	}
}

// Report records that the named master's apiserver runs with the keys fingerprinted fp.
func Report(ctx context.Context, kv clientv3.KV, name, fp string) error {
	if _, err := kv.Put(ctx, AppliedPrefix+name, fp); err != nil {
		return fmt.Errorf("record in etcd that %s's apiserver runs with keys %s: %w", name, fp, err)
	}
	return nil
}
