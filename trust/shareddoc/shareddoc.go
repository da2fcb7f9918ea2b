// Package shareddoc owns the sealed shared document in etcd (pki.SharedKey: the CA,
// the service-account keys, the agent and lb tokens, the keys for Secrets at rest, a
// CA rotation's phase): the one way to create it, read it, and change it without
// losing another writer's change (Create, Load, Store, Steps). It also owns the reports
// by which masters and nodes say which version of it they apply (Records, Pending,
// WaitNone), which the rotations of the encryption keys (atrest) and of the CA
// (carotate) wait on.
package shareddoc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/trust/pki"
)

// ErrConflict says the shared document changed between a read and a write (Store).
var ErrConflict = errors.New("the shared document in etcd changed meanwhile")

// Doc is the shared document as etcd holds it.
type Doc struct {
	*pki.Shared
	// Rev is the key's ModRevision, for Store.
	Rev int64
	// Legacy is set when the stored seal is the one a haagent from before argon2id made.
	Legacy bool
}

// Create stores sh as the shared document unless there is one already; either way it
// returns the document that etcd then holds, and whether it was sh. Of masters that
// race on a new cluster, one wins and the others open its document.
func Create(ctx context.Context, kv clientv3.KV, token pki.Token, sh *pki.Shared) (Doc, bool, error) {
	sealed, err := pki.SealShared(token, sh)
	if err != nil {
		return Doc{}, false, fmt.Errorf("seal the shared document: %w", err)
	}
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(pki.SharedKey), "=", 0)).
		Then(clientv3.OpPut(pki.SharedKey, string(sealed))).
		Else(clientv3.OpGet(pki.SharedKey)).Commit()
	if err != nil {
		return Doc{}, false, fmt.Errorf("store %s in etcd: %w", pki.SharedKey, err)
	}
	if resp.Succeeded {
		return Doc{Shared: sh, Rev: resp.Header.Revision}, true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return Doc{}, false, fmt.Errorf("store %s in etcd: it was there, and is gone", pki.SharedKey)
	}
	stored, err := pki.OpenShared(token, kvs[0].Value)
	if err != nil {
		return Doc{}, false, fmt.Errorf("the %s stored in etcd can't be opened with this token: %w", pki.SharedKey, err)
	}
	return Doc{Shared: stored, Rev: kvs[0].ModRevision, Legacy: pki.LegacySeal(kvs[0].Value)}, false, nil
}

// ErrMissing says etcd holds no shared document yet.
var ErrMissing = fmt.Errorf("%s is not in etcd yet: a master stores it when it starts", pki.SharedKey)

// Load reads and opens the shared document.
func Load(ctx context.Context, kv clientv3.KV, token pki.Token) (Doc, error) {
	resp, err := kv.Get(ctx, pki.SharedKey)
	if err != nil {
		return Doc{}, fmt.Errorf("read %s from etcd: %w", pki.SharedKey, err)
	}
	if len(resp.Kvs) == 0 {
		return Doc{}, ErrMissing
	}
	sh, err := pki.OpenShared(token, resp.Kvs[0].Value)
	if err != nil {
		return Doc{}, fmt.Errorf("open %s with this master's token: %w", pki.SharedKey, err)
	}
	return Doc{Shared: sh, Rev: resp.Kvs[0].ModRevision, Legacy: pki.LegacySeal(resp.Kvs[0].Value)}, nil
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
		doc, err := Load(ctx, kv, token)
		if err != nil {
			return err
		}
		next, err := step(doc.Shared, started)
		if err != nil || next == nil {
			return err
		}
		switch err := Store(ctx, kv, token, next, doc.Rev); {
		case errors.Is(err, ErrConflict):
			lg.Warn("the shared document changed meanwhile (another master or rotation wrote it); reading it again")
			continue
		case err != nil:
			return err
		}
		started = true
	}
}

// Watch calls apply with the shared document as etcd holds it, and again with each
// version written after it, until ctx ends. A broken watch (compaction, a lost leader,
// a restart of the local member, whose client client() then returns anew) starts over
// from a read, a second later so that a lost quorum does not make it spin. A version
// that token can't open is logged and skipped.
func Watch(ctx context.Context, client func() *clientv3.Client, token pki.Token, apply func(*pki.Shared), lg *slog.Logger) {
	open := func(value []byte) {
		sh, err := pki.OpenShared(token, value)
		if err != nil {
			lg.Error("the shared document in etcd can't be opened with this master's token", "err", err)
			return
		}
		apply(sh)
	}
	for ctx.Err() == nil {
		cli := client()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cli.Get(rctx, pki.SharedKey)
		cancel()
		if err == nil {
			if len(resp.Kvs) == 1 {
				open(resp.Kvs[0].Value)
			}
			wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range cli.Watch(wctx, pki.SharedKey, clientv3.WithRev(resp.Header.Revision+1)) {
				if err := wr.Err(); err != nil {
					lg.Warn("the watch of the shared document broke; reading it again", "err", err)
					break
				}
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypePut {
						open(ev.Kv.Value)
					}
				}
			}
			stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Reports say who must report what for a step to be applied: every etcd member's
// master, by name, and every name bound under NodesPrefix (when set) but those in Skip,
// each with Want as its latest record under Prefix.
type Reports struct {
	Prefix, Want string
	NodesPrefix  string
	Skip         []string
}

// Records are the latest records under prefix, by name.
func Records(ctx context.Context, kv clientv3.KV, prefix string) (map[string]string, error) {
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the reports under %s: %w", prefix, err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
	}
	return out, nil
}

// Pending are the names, sorted, whose latest record is not r.Want; a member not
// started yet is named by its ID.
func Pending(ctx context.Context, cli *clientv3.Client, r Reports) ([]string, error) {
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the etcd members: %w", err)
	}
	applied, err := Records(ctx, cli, r.Prefix)
	if err != nil {
		return nil, err
	}
	var pending []string
	for _, m := range ml.Members {
		if m.Name == "" {
			pending = append(pending, fmt.Sprintf("%x (not started)", m.ID))
		} else if applied[m.Name] != r.Want {
			pending = append(pending, m.Name)
		}
	}
	if r.NodesPrefix != "" {
		nodes, err := cli.Get(ctx, r.NodesPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, fmt.Errorf("read the nodes' names: %w", err)
		}
		for _, kv := range nodes.Kvs {
			name := strings.TrimPrefix(string(kv.Key), r.NodesPrefix)
			if applied[name] != r.Want && !slices.Contains(r.Skip, name) {
				pending = append(pending, name)
			}
		}
	}
	slices.Sort(pending)
	return pending, nil
}

// WaitNone reads pending every poll until it is empty, for up to timeout, and calls
// waiting each time the list changes. On timeout the error names who is still pending.
func WaitNone(ctx context.Context, timeout, poll time.Duration, pending func(context.Context) ([]string, error), waiting func([]string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(poll)
	defer t.Stop()
	var said []string
	for {
		names, err := pending(ctx)
		if err == nil && len(names) == 0 {
			return nil
		}
		if err == nil && !slices.Equal(names, said) {
			waiting(names)
			said = names
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("pending: %s", strings.Join(names, ", "))
			}
			return err
		case <-t.C:
		}
	}
}
