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

// Watch calls set with the keys in the shared document, and again each time the
// document changes, until ctx ends (shareddoc.Watch).
func Watch(ctx context.Context, client func() *clientv3.Client, token pki.Token, set func([]pki.EncryptionKey), lg *slog.Logger) {
	shareddoc.Watch(ctx, client, token, func(sh *pki.Shared) { set(sh.EncryptionKeys) }, lg.With("component", "encryption"))
}

// Report records that the named master's apiserver runs with the keys fingerprinted fp.
func Report(ctx context.Context, kv clientv3.KV, name, fp string) error {
	if _, err := kv.Put(ctx, AppliedPrefix+name, fp); err != nil {
		return fmt.Errorf("record in etcd that %s's apiserver runs with keys %s: %w", name, fp, err)
	}
	return nil
}
