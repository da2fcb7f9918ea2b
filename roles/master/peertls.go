package master

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/trust/pki"
)

// Only masters speak raft: the etcd peer port trusts the etcd peer CA, which signs
// the masters' peer certificates and nothing else. A cluster made before the peer CA
// moves over while its masters roll one at a time, in three states per master:
//
//   - mixed: the master presents a peer certificate from the cluster CA, which every
//     member trusts, and its peer port trusts the cluster CA and the peer CA, but only
//     for the names of the masters in --peers (no non-master holds a certificate from
//     the cluster CA with a master's name: pki.NonMasterName);
//   - once every member records that it runs with the peer CA trusted, the master
//     presents a certificate from the peer CA (etcd reads it per handshake: no restart);
//   - once every member records that it presents one, the master drops the cluster CA
//     from its trust file, which etcd reads at start: at its next restart its peer port
//     trusts the peer CA alone.
//
// A new cluster, and a master that joins one that has moved over, start in the last
// state. Each master records what it presents under PeerTLSPrefix.

// PeerTLSPrefix holds, per member name, which CA signed the peer certificate that
// member presents: presentsClusterCA or presentsPeerCA. A member that records
// anything trusts the peer CA.
const PeerTLSPrefix = "/haagent/peer-tls/"

const (
	presentsClusterCA = "cluster-ca"
	presentsPeerCA    = "peer-ca"
	// peerTLSCheckEvery paces the checks while a move is under way.
	peerTLSCheckEvery = 5 * time.Second
)

// preparePeerTrust writes what the etcd peer port will trust, before etcd starts: the
// peer CA, and the cluster CA too while this master presents a certificate from it or
// its trust file still holds it. It then refreshes tls, which etcd reads at start.
func (m *Master) preparePeerTrust(sh *pki.Shared) error {
	mixed := pki.LegacyPeerCert(m.cfg.Root, sh.CA) || pki.PeerTrustMixed(m.cfg.Root)
	trust, err := pki.PeerTrust(sh, mixed)
	if err != nil {
		return err
	}
	if err := files.Atomic(filepath.Join(m.cfg.Root, pki.EtcdPeerTrust), trust, 0o644); err != nil {
		return fmt.Errorf("etcd peer trust: %w", err)
	}
	*m.etcdTLS = *m.cfg.TLSFiles()
	if mixed {
		m.lg.Info("[peer-tls] the etcd peer port trusts the peer CA, and the cluster CA for the masters' names only, until every master has moved over",
			"names", m.etcdTLS.PeerAllowedCNs)
	}
	return nil
}

// peerMove says what a master does next: present a peer-CA certificate (every
// member records that it trusts the peer CA), or drop the cluster CA from its peer
// trust (every member presents a peer-CA certificate). members are the etcd
// members' names ("" for one not started yet); records map a name to what it presents.
func peerMove(members []string, records map[string]string, legacy, mixed bool) (present, drop bool) {
	all := func(ok func(string) bool) bool {
		for _, name := range members {
			r, found := records[name]
			if name == "" || !found || !ok(r) {
				return false
			}
		}
		return len(members) > 0
	}
	present = legacy && all(func(string) bool { return true })
	drop = mixed && !legacy && all(func(r string) bool { return r == presentsPeerCA })
	return present, drop
}

// movePeerTLS records what this master presents on the peer port, and takes the steps
// of peerMove as the other members take theirs. It returns once this master presents a
// peer-CA certificate and trusts nothing else at its next start.
func (m *Master) movePeerTLS(ctx context.Context) error {
	tick := time.NewTicker(peerTLSCheckEvery)
	defer tick.Stop()
	recorded := ""
	for {
		sh := m.shared.Load()
		legacy, mixed := pki.LegacyPeerCert(m.cfg.Root, sh.CA), pki.PeerTrustMixed(m.cfg.Root)
		done, err := m.peerTLSStep(ctx, sh, legacy, mixed, &recorded)
		if err != nil {
			m.lg.Warn("[peer-tls] could not take the next step to the etcd peer CA; trying again", "err", err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// peerTLSStep is one round of movePeerTLS; recorded is what this master last recorded.
func (m *Master) peerTLSStep(ctx context.Context, sh *pki.Shared, legacy, mixed bool, recorded *string) (done bool, err error) {
	cli := m.member.Client()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	presents := presentsPeerCA
	if legacy {
		presents = presentsClusterCA
	}
	if *recorded != presents {
		if _, err := cli.Put(ctx, PeerTLSPrefix+m.cfg.Name, presents); err != nil {
			return false, fmt.Errorf("record the peer certificate: %w", err)
		}
		*recorded = presents
	}
	if !legacy && !mixed {
		return true, nil
	}
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return false, fmt.Errorf("list the members: %w", err)
	}
	resp, err := cli.Get(ctx, PeerTLSPrefix, clientv3.WithPrefix())
	if err != nil {
		return false, fmt.Errorf("read the members' peer certificates: %w", err)
	}
	names := make([]string, len(ml.Members))
	for i, mb := range ml.Members {
		names[i] = mb.Name
	}
	records := map[string]string{}
	for _, kv := range resp.Kvs {
		records[string(kv.Key[len(PeerTLSPrefix):])] = string(kv.Value)
	}
	present, drop := peerMove(names, records, legacy, mixed)
	switch {
	case present:
		n := m.cfg.Node()
		fs, err := pki.IssuePeer(sh, n, time.Now())
		if err == nil {
			_, err = node.WriteCredentials(m.cfg.Root, fs)
		}
		if err != nil {
			return false, fmt.Errorf("issue a peer certificate from the peer CA: %w", err)
		}
		m.lg.Info("[peer-tls] every member trusts the etcd peer CA: this master presents a peer certificate from it now")
	case drop:
		trust, err := pki.PeerTrust(sh, false)
		if err == nil {
			err = files.Atomic(filepath.Join(m.cfg.Root, pki.EtcdPeerTrust), trust, 0o644)
		}
		if err != nil {
			return false, fmt.Errorf("drop the cluster CA from the peer trust: %w", err)
		}
		m.lg.Info("[peer-tls] every member presents a peer-CA certificate: the cluster CA leaves this master's etcd peer port at its next restart")
		return true, nil
	}
	return false, nil
}

// PeerMoveDone says why a CA rotation can't start while the cluster moves over to the
// etcd peer CA (a member presents a cluster-CA peer certificate); nil once it has.
func PeerMoveDone(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Get(ctx, PeerTLSPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read the members' peer certificates: %w", err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) != presentsPeerCA {
			return fmt.Errorf("%s still presents a peer certificate from the cluster CA: let the move to the etcd peer CA finish first",
				string(kv.Key[len(PeerTLSPrefix):]))
		}
	}
	return nil
}
