package master

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/trust/carotate"
	"github.com/haagent/haagent/trust/pki"
)

// A master follows a CA rotation (package carotate) from the shared document: when
// what the document trusts differs from what this master holds, it waits for its turn
// (every master before it in --peers applies the phase first, so that one etcd member
// and one set of kube units restart at a time), writes every file of its bundle from
// the document, restarts its etcd member if the CAs it trusts changed (etcd reads them
// only at start), and records the phase as applied. Its join service serves the new
// trust and signs with the new CA from then on.

// rotationCheckEvery paces the wait for this master's turn.
const rotationCheckEvery = 2 * time.Second

// CAStatus is the CA part of a master's /status.
type CAStatus struct {
	// KeyID is the key ID of the CA that signs, as 'haagent certs check' prints it.
	KeyID string `json:"keyID"`
	// Trust is the pki.TrustHash of what this master trusts.
	Trust string `json:"trust"`
	// Phase is the rotation's phase in the shared document, "" when none is under way.
	Phase string `json:"phase,omitempty"`
	// Pending are the masters and nodes that have not applied the phase yet.
	Pending []string `json:"pending,omitempty"`
}

// setWant hands the rotation follower the shared document as etcd holds it.
func (m *Master) setWant(sh *pki.Shared) {
	m.want.Store(sh)
	select {
	case m.wantCh <- struct{}{}:
	default:
	}
}

// followRotation applies each phase of a CA rotation when this master's turn comes,
// until ctx ends. A failure is logged and tried again.
func (m *Master) followRotation(ctx context.Context) error {
	tick := time.NewTicker(rotationCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.wantCh:
		case <-tick.C:
		}
		if err := m.rotationStep(ctx); err != nil && ctx.Err() == nil {
			m.lg.Warn("[ca] could not apply the CA rotation's phase; trying again", "err", err)
		}
	}
}

// rotationStep applies the shared document's trust if it is this master's turn, and
// records what this master applies.
func (m *Master) rotationStep(ctx context.Context) error {
	want, have := m.want.Load(), m.shared.Load()
	if want == nil || have == nil {
		return nil
	}
	hash := pki.TrustHash(want.Trust())
	cli := m.member.Client()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	records, err := carotate.Records(rctx, cli)
	cancel()
	if err != nil {
		return err
	}
	if bytes.Equal(have.Trust(), want.Trust()) {
		if want.Phase() != "" && records[m.cfg.Name] != hash {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return carotate.Report(rctx, cli, m.cfg.Name, hash)
		}
		return nil
	}
	if wait := m.before(records, hash); wait != "" {
		m.lg.Debug("[ca] waiting for the masters before this one to apply the CA rotation's phase", "phase", want.Phase(), "waiting-for", wait)
		return nil
	}
	m.lg.Info("[ca] applying the CA rotation's phase: this master's turn", "phase", want.Phase(), "trust", hash,
		"signs", pki.KeyIDString(want.CA.Cert.SubjectKeyId))
	changed, restart, err := m.applyShared(want)
	m.node.FilesChanged(changed) // on an error too: what was written must reach its readers
	if err != nil {
		return err
	}
	if restart {
		// The apiserver reads this member alone, and a request it serves while the
		// member restarts waits for it, past the lbs' patience with an apiserver that
		// fails /readyz. So the apiserver stops first: /readyz fails at once, the lbs
		// send new requests to the other masters, and what it serves finishes while the
		// member still answers. The reconciler starts it again, with the phase's files.
		if err := m.node.StopUnit(ctx, apiserverUnit); err != nil {
			m.lg.Warn("[ca] could not stop the apiserver before the etcd member's restart", "err", err)
		}
		m.lg.Info("[ca] restarting the etcd member, which reads the CAs it trusts only at start", "phase", want.Phase())
		if err := m.member.Restart(ctx); err != nil {
			return fmt.Errorf("restart the etcd member: %w", err)
		}
	}
	// The kube units that read the new files restart now, and the phase counts as
	// applied only once this master's apiserver is ready again: the next master's
	// restarts never overlap this one's, so the lbs always have two apiservers to send
	// requests to.
	if err := m.awaitUnitsRestarted(ctx); err != nil {
		return err
	}
	rctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := carotate.Report(rctx, m.member.Client(), m.cfg.Name, hash); err != nil {
		return err
	}
	m.lg.Info("[ca] applied the CA rotation's phase", "phase", want.Phase(), "trust", hash)
	return nil
}

// unitsRestartTimeout bounds the wait for the kube units to restart with a phase's
// files and for the apiserver to be ready again; an apiserver starts in seconds, or
// in a minute on a loaded host.
const unitsRestartTimeout = 3 * time.Minute

// awaitUnitsRestarted makes the reconciler restart the units that read the files just
// written, and waits until the apiserver answers /readyz, with the CAs this master now
// trusts. Without systemd no unit is managed, and there is nothing to wait for.
func (m *Master) awaitUnitsRestarted(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, unitsRestartTimeout)
	defer cancel()
	if err := m.node.SyncFiles(ctx); err != nil {
		return fmt.Errorf("restart the kube units with the phase's files: %w", err)
	}
	if err := m.awaitAPIServerReady(ctx); err != nil {
		return fmt.Errorf("waited %s for this master's apiserver to be ready after its restart with the phase's files: %w", unitsRestartTimeout, err)
	}
	return nil
}

// awaitAPIServerReady waits until this master's apiserver answers /readyz, with the CAs
// this master trusts, until ctx ends. Without systemd no unit is managed, and there is
// nothing to wait for.
func (m *Master) awaitAPIServerReady(ctx context.Context) error {
	if st := m.node.FilesStatus(); st == nil || !st.Systemd {
		return nil
	}
	trust, err := node.ClusterTrust(m.cfg.Root)
	if err != nil {
		return err
	}
	check := loadbalancer.NewAPIServerChecker(nil, trust.For)
	addr := net.JoinHostPort(m.cfg.AdvertiseAddress, "6443")
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := check.Check(cctx, addr)
		return struct{}{}, err
	}, backoff.WithBackOff(&backoff.ConstantBackOff{Interval: 250 * time.Millisecond}), backoff.WithMaxElapsedTime(0))
	if err != nil {
		return fmt.Errorf("this master's apiserver ready: %w", err)
	}
	m.lg.Info("this master's apiserver is ready")
	return nil
}

// before names a master before this one in --peers that has not applied hash, or "".
func (m *Master) before(records map[string]string, hash string) string {
	for _, p := range m.cfg.PeerList() {
		if p.Name == m.cfg.Name {
			return ""
		}
		if records[p.Name] != hash {
			return p.Name
		}
	}
	return ""
}

// applyShared writes every file of this master's bundle from sh: its trust, the CA
// that signs and every leaf issued from it now. It returns the files it changed, for
// the units that read them (on an error too), and whether the CAs that etcd trusts changed, which takes
// a restart of the member.
func (m *Master) applyShared(sh *pki.Shared) (changed []string, restart bool, err error) {
	root := m.cfg.Root
	read := func(p string) []byte { b, _ := os.ReadFile(filepath.Join(root, p)); return b }
	beforeCA, beforePeer := read(pki.CACert), read(pki.EtcdPeerTrust)
	mixed := pki.PeerTrustMixed(root)
	n := m.cfg.Node()
	n.LegacyPeerCert = pki.LegacyPeerCert(root, m.shared.Load().CA)
	fs, err := pki.Issue(sh, n, time.Now())
	if err != nil {
		return nil, false, err
	}
	changed, err = node.WriteCredentials(root, fs)
	if err != nil {
		return nil, false, err
	}
	if sh.Rotation == nil || sh.Rotation.Other == nil {
		if err := os.Remove(filepath.Join(root, pki.CAOtherKey)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return changed, false, fmt.Errorf("remove the other CA's key: %w", err)
		}
	}
	peerTrust, err := pki.PeerTrust(sh, mixed)
	if err == nil {
		err = files.Atomic(filepath.Join(root, pki.EtcdPeerTrust), peerTrust, 0o644)
	}
	if err != nil {
		return changed, false, fmt.Errorf("etcd peer trust: %w", err)
	}
	m.shared.Store(sh)
	return changed, !sameCerts(beforeCA, read(pki.CACert)) || !sameCerts(beforePeer, peerTrust), nil
}

// sameCerts reports whether two PEM bundles hold the same certificates, in any order.
func sameCerts(a, b []byte) bool {
	ca, errA := pki.ParseCerts(a)
	cb, errB := pki.ParseCerts(b)
	if errA != nil || errB != nil || len(ca) != len(cb) {
		return false
	}
	for _, c := range ca {
		if !slices.ContainsFunc(cb, c.Equal) {
			return false
		}
	}
	return true
}

// caStatus is the CA part of /status.
func (m *Master) caStatus(ctx context.Context) *CAStatus {
	have := m.shared.Load()
	if have == nil {
		return nil
	}
	st := &CAStatus{KeyID: pki.KeyIDString(have.CA.Cert.SubjectKeyId), Trust: pki.TrustHash(have.Trust())}
	want := m.want.Load()
	if want == nil || want.Phase() == "" {
		return st
	}
	st.Phase = want.Phase()
	if pending, err := carotate.Pending(ctx, m.member.Client(), pki.TrustHash(want.Trust()), NodesPrefix, nil); err == nil {
		st.Pending = pending
	}
	return st
}

// checkPin warns when the token pins none of the CAs this master holds: after 'haagent
// certs rotate-ca', a pinned token in the master's configuration pins the old CA. The
// CA on disk is what the master trusts; the pin is for the first join.
func (m *Master) checkPin(token pki.Token, sh *pki.Shared) {
	for _, ca := range sh.TrustedCAs() {
		if token.CheckCA(ca.Cert.Raw) == nil {
			return
		}
	}
	m.lg.Warn("[certificates] the token pins a CA this master no longer holds (was the CA rotated?); " +
		"put the token from 'haagent token show' in this master's configuration")
}
