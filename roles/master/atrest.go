package master

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/atrest"
	"github.com/haagent/haagent/trust/pki"
)

// apiserverUnit is the unit that reads the encryption config.
const apiserverUnit = "kube-apiserver.service"

// keyState is what this master knows of the keys for Secrets at rest: the keys in etcd,
// which it renders, and what it last rendered, which it reports once the apiserver has
// been restarted with it.
type keyState struct {
	cfg *Config

	mu       sync.Mutex // guards the fields below
	keys     []pki.EncryptionKey
	rendered string

	// applied carries the fingerprint of the keys the apiserver runs with to the
	// reporter; it holds the latest only.
	applied chan string
}

// encryption makes sure the cluster has a key for Secrets at rest, then, in g, follows
// the keys in etcd and reports which ones this master's apiserver runs with, for
// 'haagent secrets rotate-key'. The reconciler renders with the returned state and tells
// it of each pass.
func (m *Master) encryption(ctx context.Context, g *errgroup.Group, token pki.Token) (*keyState, error) {
	cli := m.member.Client()
	var keys []pki.EncryptionKey
	if err := m.untilStored(ctx, "the encryption key", func(ctx context.Context) error {
		var err error
		keys, err = atrest.Ensure(ctx, cli, token, m.lg)
		return err
	}); err != nil {
		return nil, err
	}
	ks := &keyState{cfg: m.cfg, keys: keys, applied: make(chan string, 1)}
	g.Go(func() error {
		atrest.Watch(ctx, m.member.Client, token, ks.set, m.lg)
		return nil
	})
	g.Go(func() error {
		last := ""
		for {
			var fp string
			select {
			case <-ctx.Done():
				return nil
			case fp = <-ks.applied:
			}
			if fp == last {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := atrest.Report(rctx, m.member.Client(), m.cfg.Name, fp)
			cancel()
			if err != nil {
				// The reconciler's next pass offers it again.
				m.lg.Warn("[encryption] could not report the apiserver's keys", "err", err)
				continue
			}
			last = fp
			m.lg.Info("[encryption] the apiserver runs with the keys for Secrets at rest", "keys", fp)
		}
	})
	m.lg.Info("[encryption] Secrets are encrypted at rest", "keys", atrest.Fingerprint(keys))
	return ks, nil
}

func (k *keyState) set(keys []pki.EncryptionKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if atrest.Fingerprint(keys) != atrest.Fingerprint(k.keys) {
		k.keys = keys
	}
}

// render is the master's Render with the current keys.
func (k *keyState) render() ([]files.File, error) {
	c := k.cfg.NodeConfig()
	k.mu.Lock()
	c.EncryptionKeys = k.keys
	k.rendered = atrest.Fingerprint(k.keys)
	k.mu.Unlock()
	return nodeconf.Files(c)
}

// passed hands the reporter what the last render wrote, once the apiserver is active
// after the pass: the reconciler restarts it when the encryption config changes, and
// the restart of a Type=notify unit is done only once the apiserver serves.
func (k *keyState) passed(st reconcile.Status) {
	for _, u := range st.Units {
		if u.Name == apiserverUnit && st.Systemd && (u.Active != "active" || u.LastError != "") {
			return
		}
	}
	k.mu.Lock()
	fp := k.rendered
	k.mu.Unlock()
	select {
	case <-k.applied:
	default:
	}
	select {
	case k.applied <- fp:
	default:
	}
}
