package integration

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/procs"
	"github.com/haagent/haagent/trust/pki"
)

// etcdClient is a client of the cluster with m's etcd-client certificate (the root role).
func etcdClient(t *testing.T, c *procs.Cluster, m *procs.Master) *clientv3.Client {
	t.Helper()
	dir := filepath.Join(m.Root, pki.Dir)
	tc, err := transport.TLSInfo{CertFile: filepath.Join(dir, "etcd-client.crt"), KeyFile: filepath.Join(dir, "etcd-client.key"),
		TrustedCAFile: filepath.Join(dir, "ca.crt")}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(c.Endpoints(), ","), TLS: tc, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// legacySeal is how haagent sealed the shared doc before argon2id: AES-256-GCM under an
// unsalted HKDF-SHA256 of the token's secret, nonce || ciphertext.
func legacySeal(t *testing.T, secret string, plaintext []byte) []byte {
	t.Helper()
	const info = "haagent pki in etcd v1"
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, info, 32)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	return aead.Seal(nonce, nonce, plaintext, []byte(info))
}

// TestLegacySealedDocIsResealed: a cluster made before argon2id has its shared doc
// sealed the old way in etcd. An upgraded master opens it and seals it again the new way.
func TestLegacySealedDocIsResealed(t *testing.T) {
	c := newCluster(t)
	c.Masters = c.Masters[:1]
	m1 := c.Masters[0]
	m1.Extra = []string{"--peers=m1=http://127.0.0.21:2380"}
	startReady(t, c)
	tok, err := pki.ParseToken(testToken)
	if err != nil {
		t.Fatal(err)
	}
	cli := etcdClient(t, c, m1)
	get := func() []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, pki.SharedKey)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s: %v", pki.SharedKey, err)
		}
		return resp.Kvs[0].Value
	}
	sealed := get()
	if pki.LegacySeal(sealed) {
		t.Fatal("a new cluster sealed its shared doc the old way")
	}
	doc, err := pki.Open(tok, sealed)
	if err != nil {
		t.Fatal(err)
	}

	// What a cluster made before keeps in etcd; the running master reads it too.
	old := legacySeal(t, tok.Secret, doc)
	if _, err := cli.Put(context.Background(), pki.SharedKey, string(old)); err != nil {
		t.Fatal(err)
	}
	if opened, err := pki.Open(tok, old); err != nil || string(opened) != string(doc) {
		t.Fatalf("the old format does not open: %v", err)
	}
	m1.StopOrKill()
	startReady(t, c)
	err = await.Until(context.Background(), "the shared doc sealed again with argon2id", 20*time.Second, func() error {
		v := get()
		if pki.LegacySeal(v) {
			return fmt.Errorf("still the old seal")
		}
		opened, err := pki.Open(tok, v)
		if err != nil {
			return await.Stop(err)
		}
		if string(opened) != string(doc) {
			return await.Stop(fmt.Errorf("the doc changed on the way:\n%s\nwant\n%s", opened, doc))
		}
		return nil
	}, await.Every(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m1.Logs(), "[ca] sealed the shared doc in etcd again") {
		t.Fatal("the master did not say it sealed the doc again")
	}
}
