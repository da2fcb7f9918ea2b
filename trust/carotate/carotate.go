// Package carotate replaces the cluster CA on a running cluster ('haagent certs
// rotate-ca'): the phases it steps through in the sealed shared document, the records
// by which masters and nodes say what they trust, and the wait for every one of them
// before the next phase.
//
// Every component trusts pki.Shared.Trust: the CA that signs, then the other one while
// there is one. The phases, each begun only once every master and node has applied
// the one before:
//
//   - trust: the old CA signs, the new one is trusted beside it everywhere. Masters
//     apply it one at a time and restart their etcd member, which reads the CAs it
//     trusts only at start; nodes renew (through the join service) when what it
//     trusts differs from their ca.crt.
//   - reissue: the new CA signs; every master, one at a time, issues all its leaves
//     again from it, and every node renews. Both CAs are still trusted.
//   - drop: the new CA alone is trusted; masters restart their etcd member once more.
//
// Once the drop is applied everywhere the rotation ends. The CAs derived from the
// cluster CA (etcd peer, kubelet serving) follow it, since their keys come from its key.
package carotate

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

// AppliedPrefix holds, per master, minion or lb name, the pki.TrustHash of the trust it
// applied last: a master writes its own once its files are written and its etcd member
// runs with them; the master that issues a node's files writes the node's.
const AppliedPrefix = "/haagent/ca-rotation/applied/"

// Report records that name applies the trust hashed hash.
func Report(ctx context.Context, kv clientv3.KV, name, hash string) error {
	if _, err := kv.Put(ctx, AppliedPrefix+name, hash); err != nil {
		return fmt.Errorf("record in etcd that %s trusts %s: %w", name, hash, err)
	}
	return nil
}

// Next is the shared document of the next phase after sh's, or nil when sh's rotation
// has ended (started: this run has stepped already, so no rotation means done rather
// than a new one). newCA makes the next CA, at the start.
func Next(sh *pki.Shared, started bool, newCA func() (*pki.CA, error)) (*pki.Shared, error) {
	next := *sh
	switch sh.Phase() {
	case "":
		if started {
			return nil, nil
		}
		ca, err := newCA()
		if err != nil {
			return nil, err
		}
		next.Rotation = &pki.Rotation{Phase: pki.PhaseTrust, Other: ca}
	case pki.PhaseTrust:
		if sh.Rotation.Other == nil {
			return nil, errors.New("the rotation is in its trust phase without a next CA")
		}
		next.CA, next.Rotation = sh.Rotation.Other, &pki.Rotation{Phase: pki.PhaseReissue, Other: sh.CA}
	case pki.PhaseReissue:
		next.Rotation = &pki.Rotation{Phase: pki.PhaseDrop}
	case pki.PhaseDrop:
		next.Rotation = nil
	default:
		return nil, fmt.Errorf("unknown rotation phase %q", sh.Phase())
	}
	return &next, nil
}

// RotateConfig wires Rotate.
type RotateConfig struct {
	Client *clientv3.Client
	// Token is the server token, which seals the shared document.
	Token pki.Token
	// NodesPrefix is where the masters bind minion and lb names: each name there must
	// apply every phase, except those in Skip (nodes gone for good).
	NodesPrefix string
	Skip        []string
	// Check, before a new rotation starts, says why it can't; nil means it can.
	Check func(ctx context.Context) error
	// Timeout bounds each wait for every master and node to apply a phase.
	Timeout time.Duration
	// Poll is how often the wait reads the records.
	Poll   time.Duration
	Logger *slog.Logger
}

// Rotate steps a new CA through the phases, waiting before each until every master
// and node has applied the one before. Run again after an interruption, it carries on
// from the phase in the shared document.
func Rotate(ctx context.Context, rc RotateConfig) error {
	lg := rc.Logger
	return shareddoc.Steps(ctx, rc.Client, rc.Token, lg, func(sh *pki.Shared, started bool) (*pki.Shared, error) {
		if sh.Phase() != "" {
			if err := WaitApplied(ctx, rc, pki.TrustHash(sh.Trust()), "["+sh.Phase()+"]"); err != nil {
				return nil, err
			}
		} else if !started && rc.Check != nil {
			if err := rc.Check(ctx); err != nil {
				return nil, fmt.Errorf("[trust] can't start a CA rotation: %w", err)
			}
		}
		next, err := Next(sh, started, func() (*pki.CA, error) { return pki.NewCA("haagent-ca", time.Now()) })
		if err != nil || next == nil {
			if next == nil && err == nil {
				lg.Info("[done] every master and node trusts the new CA alone, and every leaf comes from it",
					"ca", pki.KeyIDString(sh.CA.Cert.SubjectKeyId), "trust", pki.TrustHash(sh.Trust()))
			}
			return nil, err
		}
		switch next.Phase() {
		case pki.PhaseTrust:
			lg.Info("[trust] every master and node trusts the new CA beside the old one, which still signs",
				"old", pki.KeyIDString(sh.CA.Cert.SubjectKeyId), "new", pki.KeyIDString(next.Rotation.Other.Cert.SubjectKeyId))
		case pki.PhaseReissue:
			lg.Info("[reissue] the new CA signs: every master and node gets its certificates again from it",
				"new", pki.KeyIDString(next.CA.Cert.SubjectKeyId))
		case pki.PhaseDrop:
			lg.Info("[drop] every leaf comes from the new CA: the old one leaves every trust file",
				"old", pki.KeyIDString(sh.Rotation.Other.Cert.SubjectKeyId))
		case "":
			lg.Info("[done] ending the rotation")
		}
		return next, nil
	})
}

// WaitApplied waits until every etcd member's master and every bound node (but those
// in rc.Skip) reports that it applies the trust hashed hash. A master or node that is
// down holds the rotation up: going on would leave it unable to reach the cluster.
func WaitApplied(ctx context.Context, rc RotateConfig, hash, tag string) error {
	err := shareddoc.WaitNone(ctx, rc.Timeout, rc.Poll, func(ctx context.Context) ([]string, error) {
		return Pending(ctx, rc.Client, hash, rc.NodesPrefix, rc.Skip)
	}, func(pending []string) {
		rc.Logger.Info(tag+" waiting for masters and nodes to apply the phase", "trust", hash, "pending", strings.Join(pending, ","))
	})
	if err != nil {
		return fmt.Errorf("%s after %s not every master and node trusts %s: %w; is each of them up? run the rotation again once it is (--skip names a node gone for good)",
			tag, rc.Timeout, hash, err)
	}
	return nil
}

// Pending are the members (by name) and bound nodes, but those in skip, whose latest
// record is not hash, sorted.
func Pending(ctx context.Context, cli *clientv3.Client, hash, nodesPrefix string, skip []string) ([]string, error) {
	return shareddoc.Pending(ctx, cli, shareddoc.Reports{Prefix: AppliedPrefix, Want: hash, NodesPrefix: nodesPrefix, Skip: skip})
}

// Records are the latest records, by name.
func Records(ctx context.Context, kv clientv3.KV) (map[string]string, error) {
	return shareddoc.Records(ctx, kv, AppliedPrefix)
}
