// Package atrest keeps Secrets encrypted at rest: their keys live in the sealed shared
// document in etcd beside the CA, every master renders them into the apiserver's
// EncryptionConfiguration and reports once its apiserver runs with them, and Rotate
// replaces the write key one step at a time.
// The document itself, and the reports it waits on, are package shareddoc's.
package atrest

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/trust/pki"
	"github.com/haagent/haagent/trust/shareddoc"
)

// AppliedPrefix is where each master records the keys its apiserver runs with, under
// its name, as Fingerprint gives them.
const AppliedPrefix = "/haagent/atrest/applied/"

// keyPrefix begins every key's name; the number after it grows with each new key, so
// that the newer of two keys is known from the names alone.
const keyPrefix = "key"

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

// Ensure returns the cluster's keys, and makes the first one if the shared document has
// none: a new cluster, or one made before encryption at rest. Of masters that race, one
// wins the transaction and the others read its key.
func Ensure(ctx context.Context, kv clientv3.KV, token pki.Token, lg *slog.Logger) ([]pki.EncryptionKey, error) {
	var keys []pki.EncryptionKey
	err := shareddoc.Steps(ctx, kv, token, lg, func(sh *pki.Shared, started bool) (*pki.Shared, error) {
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
		doc, err := shareddoc.Load(gctx, cli, token)
		cancel()
		if err == nil {
			set(doc.EncryptionKeys)
			watch(ctx, cli, token, doc.Rev, set, lg)
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
