package minion

import (
	"context"
	"path/filepath"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/netsetup/netpol"
	"github.com/haagent/haagent/trust/pki"
)

// netpolRetry is the pause before the NetworkPolicy controller starts again after it
// failed (nft missing, the API unreachable for long).
const netpolRetry = 10 * time.Second

// networkPolicy runs the NetworkPolicy controller for as long as the minion runs,
// starting it again when it fails: a minion without it still runs pods, and its status
// says why. With --network-policy=false it removes the table instead.
func (m *Minion) networkPolicy(ctx context.Context, g *errgroup.Group) {
	if !m.cfg.NetworkPolicy {
		if err := netpol.Remove(ctx); err != nil {
			m.lg.Debug("[netpol] no table to remove", "err", err)
		}
		return
	}
	g.Go(func() error {
		_, _ = backoff.Retry(ctx, func() (struct{}, error) {
			c, err := netpol.New(netpol.Config{Kubeconfig: filepath.Join(m.cfg.Root, pki.NetworkPolicyKubeconfig), Node: m.cfg.Name, Logger: m.lg})
			if err == nil {
				m.netpol.Store(c)
				err = c.Run(ctx)
			}
			if err != nil && ctx.Err() == nil {
				m.lg.Error("[netpol] NetworkPolicy is not enforced; trying again", "err", err, "in", netpolRetry)
				m.netpolErr.Store(err.Error())
			}
			return struct{}{}, err
		}, backoff.WithBackOff(backoff.NewConstantBackOff(netpolRetry)), backoff.WithMaxElapsedTime(0))
		return nil
	})
}

// networkPolicyStatus is the controller's state for the status document.
func (m *Minion) networkPolicyStatus() *netpol.Status {
	if !m.cfg.NetworkPolicy {
		return nil
	}
	var st netpol.Status
	if c := m.netpol.Load(); c != nil {
		st = c.Status()
	}
	if e, _ := m.netpolErr.Load().(string); e != "" && st.LastError == "" && !st.Synced {
		st.LastError = e
	}
	return &st
}
