package atrest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/trust/pki"
	"github.com/haagent/haagent/trust/shareddoc"
)

// Step is what a rotation does next, read from the key list alone, so that a rotation
// cut short resumes where it stopped.
type Step int

const (
	// StepAdd adds a new key second: every apiserver can read it, none writes with it.
	StepAdd Step = iota
	// StepPromote puts the new key first: every apiserver writes with it.
	StepPromote
	// StepRewrite rewrites every Secret with the new key, then removes the old one.
	StepRewrite
	// StepDone ends the rotation.
	StepDone
)

func (s Step) String() string {
	return [...]string{"add", "promote", "rewrite", "done"}[s]
}

// Next is the rotation's state machine. keys are the shared document's, the write key
// first; started says this run has already made a step, so that one key means done
// rather than a new rotation.
func Next(keys []pki.EncryptionKey, started bool) (Step, error) {
	switch len(keys) {
	case 0:
		return 0, errors.New("the cluster has no encryption key yet: a master makes one when it starts")
	case 1:
		if started {
			return StepDone, nil
		}
		return StepAdd, nil
	case 2:
		if keyNumber(keys[0].Name) < keyNumber(keys[1].Name) {
			return StepPromote, nil
		}
		return StepRewrite, nil
	}
	return 0, fmt.Errorf("the cluster has %d encryption keys (%s); a rotation expects one or two", len(keys), Fingerprint(keys))
}

// RotateConfig wires Rotate.
type RotateConfig struct {
	Client *clientv3.Client
	Token  pki.Token
	// RewriteSecrets rewrites every Secret through the apiserver and returns how many.
	RewriteSecrets func(ctx context.Context) (int, error)
	// Timeout bounds each wait for every master's apiserver to run with the new keys.
	Timeout time.Duration
	// Poll is how often the wait reads the masters' reports.
	Poll   time.Duration
	Logger *slog.Logger
}

// Rotate replaces the write key: it adds a new key that every apiserver can read,
// promotes it to the write key, rewrites every Secret with it, and removes the old key,
// waiting before each step until every master's apiserver runs with the keys of the step
// before. Run again after an interruption, it carries on from the key list in etcd.
func Rotate(ctx context.Context, rc RotateConfig) error {
	lg := rc.Logger
	return shareddoc.Steps(ctx, rc.Client, rc.Token, lg, func(sh *pki.Shared, started bool) (*pki.Shared, error) {
		keys := sh.EncryptionKeys
		if err := WaitApplied(ctx, rc.Client, Fingerprint(keys), rc.Timeout, rc.Poll, lg); err != nil {
			return nil, err
		}
		step, err := Next(keys, started)
		if err != nil {
			return nil, err
		}
		switch step {
		case StepDone:
			lg.Info("[done] every master encrypts Secrets with the new key; the old key is gone", "keys", Fingerprint(keys))
			return nil, nil
		case StepAdd:
			k, err := NewKey(keys)
			if err != nil {
				return nil, err
			}
			sh.EncryptionKeys = []pki.EncryptionKey{keys[0], k}
			lg.Info("[add] adding a new key that every apiserver can read but none writes with yet", "new", k.Name, "write", keys[0].Name)
		case StepPromote:
			sh.EncryptionKeys = []pki.EncryptionKey{keys[1], keys[0]}
			lg.Info("[promote] making the new key the write key", "write", keys[1].Name, "old", keys[0].Name)
		case StepRewrite:
			lg.Info("[rewrite] rewriting every Secret through the apiserver with the new key", "write", keys[0].Name)
			n, err := rc.RewriteSecrets(ctx)
			if err != nil {
				return nil, fmt.Errorf("[rewrite] %w; run the rotation again to carry on", err)
			}
			sh.EncryptionKeys = keys[:1]
			lg.Info("[remove] rewrote the Secrets; removing the old key", "secrets", n, "removed", keys[1].Name)
		}
		return sh, nil
	})
}

// WaitApplied waits until every etcd member's master reports that its apiserver runs
// with the keys fingerprinted fp. A master that is down holds the rotation up until it
// is back or removed with 'haagent member remove': its apiserver would otherwise come
// back unable to read the Secrets.
func WaitApplied(ctx context.Context, cli *clientv3.Client, fp string, timeout, poll time.Duration, lg *slog.Logger) error {
	err := shareddoc.WaitNone(ctx, timeout, poll, func(ctx context.Context) ([]string, error) {
		return shareddoc.Pending(ctx, cli, shareddoc.Reports{Prefix: AppliedPrefix, Want: fp})
	}, func(pending []string) {
		lg.Info("[wait] waiting for the apiservers to run with the keys", "keys", fp, "masters", strings.Join(pending, ","))
	})
	if err != nil {
		return fmt.Errorf("[wait] after %s the apiservers don't all run with keys %s: %w; is every master up? run the rotation again once it is",
			timeout, fp, err)
	}
	return nil
}
