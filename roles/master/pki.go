package master

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/haagent/haagent/etcdmember"
	"github.com/haagent/haagent/files"
	"github.com/haagent/haagent/join"
	"github.com/haagent/haagent/pki"
)

// Paths of haagent's own state outside the data dir, relative to --root.
const (
	TokenFile = "var/lib/haagent/token"
	// renewCheckEvery is how often certificates are checked against their renewal time.
	renewCheckEvery = time.Hour
	// joinRetryEvery paces attempts to reach another master's join service.
	joinRetryEvery = 500 * time.Millisecond
)

// TLSFiles are the etcd certificate paths under the root.
func (c *Config) TLSFiles() *etcdmember.TLSFiles {
	p := func(rel string) string { return filepath.Join(c.Root, rel) }
	return &etcdmember.TLSFiles{
		CA:       p(pki.CACert),
		PeerCert: p(pki.EtcdPeerCert), PeerKey: p(pki.EtcdPeerKey),
		ServerCert: p(pki.EtcdServerCrt), ServerKey: p(pki.EtcdServerKey),
		ClientCert: p(pki.EtcdClientCert), ClientKey: p(pki.EtcdClientKey),
	}
}

// Node is how this master appears in its own certificates.
func (c *Config) Node() pki.Node {
	return pki.Node{
		Role: "master", Name: c.Name, Hosts: []string{c.AdvertiseAddress}, LB: c.LB,
		ServiceIP: firstIP(c.ServiceClusterIPRange),
		APIServer: "https://" + net.JoinHostPort(c.AdvertiseAddress, "6443"),
	}
}

func firstIP(cidr string) string {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return ""
	}
	return p.Masked().Addr().Next().String()
}

// loadOrCreateToken returns the token: from the flag, else the one this master saved,
// else (a single master, which may run without one) a new one that it saves.
func (m *Master) loadOrCreateToken() (pki.Token, error) {
	path := filepath.Join(m.cfg.Root, TokenFile)
	if m.cfg.Token != "" {
		t, err := pki.ParseToken(m.cfg.Token)
		if err != nil {
			return pki.Token{}, err
		}
		return t, files.Atomic(path, []byte(t.Secret+"\n"), 0o600)
	}
	if b, err := os.ReadFile(path); err == nil {
		return pki.ParseToken(string(b))
	}
	t, err := pki.GenerateToken()
	if err != nil {
		return pki.Token{}, err
	}
	m.lg.Warn("no --token given: generated one for this single master; 'haagent token show' prints it for the nodes", "file", path)
	return t, files.Atomic(path, []byte(t.Secret+"\n"), 0o600)
}

// ensurePKI makes sure this master holds the cluster CA and its own certificates:
// from disk, from another master's join service, or (the first master in --peers,
// on a fresh cluster with an unpinned token) by creating the CA.
func (m *Master) ensurePKI(ctx context.Context, token pki.Token) (*pki.Shared, error) {
	if sh, err := pki.LoadShared(m.cfg.Root); err == nil {
		if err := token.CheckCA(sh.CA.Cert.Raw); err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(m.cfg.Root, pki.EtcdPeerCert)); err == nil {
			return sh, nil
		}
		// The CA is here but this master's own certificates are not: issue them.
		fs, err := pki.Issue(sh, m.cfg.Node(), time.Now())
		if err != nil {
			return nil, err
		}
		return sh, m.writePKI(fs)
	}
	peers, err := m.cfg.ParsePeers()
	if err != nil {
		return nil, err
	}
	var servers []string
	for _, p := range peers {
		if p.Name != m.cfg.Name {
			servers = append(servers, net.JoinHostPort(p.Host(), strconv.Itoa(m.cfg.JoinPort)))
		}
	}
	if m.cfg.LB != "" {
		servers = append(servers, net.JoinHostPort(m.cfg.LB, strconv.Itoa(m.cfg.JoinPort)))
	}
	first := peers[0].Name == m.cfg.Name
	hasData := wal.Exist(filepath.Join(m.cfg.DataDir, "member", "wal"))
	mayCreate := first && token.CAHash == "" && !hasData

	deadline := time.Now().Add(etcdmember.DefaultStartTimeout)
	lastLog := time.Time{}
	for {
		for _, srv := range servers {
			fs, _, err := join.Fetch(ctx, srv, token, join.Request{Role: "master", Name: m.cfg.Name, Hosts: []string{m.cfg.AdvertiseAddress}})
			if err == nil {
				m.lg.Info("joined: received certificates from another master", "via", srv)
				if err := m.writePKI(fs); err != nil {
					return nil, err
				}
				return pki.LoadShared(m.cfg.Root)
			}
			if errors.Is(err, join.ErrForbidden) || errors.Is(err, pki.ErrCAMismatch) {
				return nil, err
			}
			m.lg.Debug("join service not reachable", "server", srv, "err", err)
		}
		if mayCreate {
			sh, err := pki.NewShared(time.Now())
			if err != nil {
				return nil, err
			}
			fs, err := pki.Issue(sh, m.cfg.Node(), time.Now())
			if err != nil {
				return nil, err
			}
			if err := m.writePKI(fs); err != nil {
				return nil, err
			}
			m.lg.Info("created the cluster CA and service-account keys: this is the first master",
				"ca-sha256", pki.CAHash(sh.CA.Cert.Raw))
			return sh, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no master's join service answered on %v within %s; the first master in --peers (%s) creates the CA, so start it, or give a master that runs",
				servers, etcdmember.DefaultStartTimeout, peers[0].Name)
		}
		if time.Since(lastLog) > 10*time.Second {
			m.lg.Warn("waiting for another master's join service to get the cluster certificates", "servers", servers)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(joinRetryEvery):
		}
	}
}

func (m *Master) writePKI(fs []files.File) error {
	for i := range fs {
		if pki.IsKey(fs[i].Path) {
			fs[i].Mode = 0o600
		}
	}
	changed, err := files.Apply(m.cfg.Root, fs)
	if err != nil {
		return fmt.Errorf("write certificates: %w", err)
	}
	if len(changed) > 0 {
		m.lg.Info("wrote certificates", "count", len(changed), "dir", filepath.Join(m.cfg.Root, pki.Dir))
	}
	return nil
}

// issuer signs the files a joining node asks for.
func (m *Master) issuer(sh *pki.Shared) join.Issuer {
	return func(req join.Request) ([]files.File, error) {
		n := pki.Node{Role: req.Role, Name: req.Name, Hosts: req.Hosts, LB: m.cfg.LB,
			ServiceIP: firstIP(m.cfg.ServiceClusterIPRange)}
		apiHost := m.cfg.AdvertiseAddress
		if req.Role == "master" && len(req.Hosts) > 0 {
			apiHost = req.Hosts[0]
		} else if m.cfg.LB != "" {
			apiHost = m.cfg.LB
		}
		n.APIServer = "https://" + net.JoinHostPort(apiHost, "6443")
		return pki.Issue(sh, n, time.Now())
	}
}

// servingCert reloads the join service's certificate from disk on each handshake, so
// that a renewal applies without a restart.
func (m *Master) servingCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(filepath.Join(m.cfg.Root, pki.EtcdServerCrt), filepath.Join(m.cfg.Root, pki.EtcdServerKey))
	return &c, err
}

// syncShared stores the sealed CA and service-account keys in etcd once, and checks
// that what is stored is our CA.
func (m *Master) syncShared(ctx context.Context, kv clientv3.KV, token pki.Token, sh *pki.Shared) error {
	sealed, err := pki.SealShared(token, sh)
	if err != nil {
		return err
	}
	resp, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(pki.SharedKey), "=", 0)).
		Then(clientv3.OpPut(pki.SharedKey, string(sealed))).
		Else(clientv3.OpGet(pki.SharedKey)).Commit()
	if err != nil {
		return fmt.Errorf("store the sealed CA in etcd: %w", err)
	}
	if resp.Succeeded {
		m.lg.Info("stored the sealed CA and service-account keys in etcd", "key", pki.SharedKey)
		return nil
	}
	stored, err := pki.OpenShared(token, resp.Responses[0].GetResponseRange().Kvs[0].Value)
	if err != nil {
		return fmt.Errorf("the CA stored in etcd can't be opened with this token: %w", err)
	}
	if !stored.CA.Cert.Equal(sh.CA.Cert) {
		return fmt.Errorf("%w: the CA stored in etcd differs from the one on this master", pki.ErrCAMismatch)
	}
	return nil
}

// renewLoop renews this master's certificates at 2/3 of their lifetime.
func (m *Master) renewLoop(ctx context.Context, sh *pki.Shared) {
	t := time.NewTicker(renewCheckEvery)
	defer t.Stop()
	for {
		changed, err := RenewIfDue(m.cfg.Root, sh, m.cfg.Node(), time.Now(), false)
		if err != nil {
			m.lg.Error("certificate renewal failed; retrying in an hour", "err", err)
		} else if len(changed) > 0 {
			m.lg.Info("renewed certificates at 2/3 of their lifetime", "files", len(changed))
			m.certsRenewed(changed)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RenewIfDue reissues a master's leaf certificates when any is due (or always with force).
// etcd and the join service reload certificates from disk, so no restart is needed.
func RenewIfDue(root string, sh *pki.Shared, n pki.Node, now time.Time, force bool) ([]string, error) {
	due, err := pki.DueForRenewal(root, now)
	if err != nil {
		return nil, err
	}
	if len(due) == 0 && !force {
		return nil, nil
	}
	fs, err := pki.Issue(sh, n, now)
	if err != nil {
		return nil, err
	}
	return files.Apply(root, fs)
}
