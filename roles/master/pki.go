package master

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/embed/etcdmember"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/trust/carotate"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
	"github.com/haagent/haagent/trust/shareddoc"
)

// The token files this master keeps, relative to --root (package node, whose reset
// deletes them).
const (
	TokenFile      = node.TokenFile
	AgentTokenFile = node.AgentTokenFile
	LBTokenFile    = node.LBTokenFile
)

// NodesPrefix is where masters keep, per minion or lb name, the hash of the node secret
// of the node that first joined with it.
const NodesPrefix = "/haagent/nodes/"

// agentState is the cluster's agent and lb tokens as this master knows them: tok is
// nil in a legacy cluster, which has none, and lb while the cluster has none.
type agentState struct{ tok, lb *pki.Token }

// TLSFiles are the etcd certificate paths under the root. While the peer trust file
// holds the cluster CA (the cluster moves over to the peer CA), the peer port accepts
// only the names of the masters in --peers.
func (c *Config) TLSFiles() *etcdmember.TLSFiles {
	p := func(rel string) string { return filepath.Join(c.Root, rel) }
	t := &etcdmember.TLSFiles{
		CA: p(pki.CACert), PeerCA: p(pki.EtcdPeerTrust),
		PeerCert: p(pki.EtcdPeerCert), PeerKey: p(pki.EtcdPeerKey),
		ServerCert: p(pki.EtcdServerCrt), ServerKey: p(pki.EtcdServerKey),
		ClientCert: p(pki.EtcdClientCert), ClientKey: p(pki.EtcdClientKey),
	}
	if _, err := os.Stat(t.PeerCA); err != nil {
		t.PeerCA = t.CA // a master that an older haagent set up, before its first start with the peer CA
	}
	if t.PeerCA == t.CA || pki.PeerTrustMixed(c.Root) {
		for _, peer := range c.PeerList() {
			t.PeerAllowedCNs = append(t.PeerAllowedCNs, peer.Name)
		}
	}
	return t
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
		return t, pki.WriteTokenFile(path, t.Unpinned())
	}
	if t, err := pki.ReadTokenFile(path); !errors.Is(err, os.ErrNotExist) {
		return t, err
	}
	t, err := pki.GenerateToken(pki.KindServer)
	if err != nil {
		return pki.Token{}, err
	}
	m.lg.Warn("no --token given: generated a server token for this single master; 'haagent token show' prints the tokens for the nodes", "file", path)
	return t, pki.WriteTokenFile(path, t)
}

// certificates loads or makes the token, then makes sure this master holds the cluster
// CA and its own current certificates, which g renews.
func (m *Master) certificates(ctx context.Context, g *errgroup.Group) (pki.Token, *pki.Shared, error) {
	token, err := m.loadOrCreateToken()
	if err != nil {
		return pki.Token{}, nil, fmt.Errorf("token: %w", err)
	}
	creds, err := m.credentials(token)
	if err == nil {
		err = m.node.KeepCredentials(ctx, g, creds)
	}
	if err != nil {
		return pki.Token{}, nil, err
	}
	shared, err := pki.LoadShared(m.cfg.Root)
	if err != nil {
		return pki.Token{}, nil, fmt.Errorf("the cluster CA: %w", err)
	}
	m.checkPin(token, shared)
	m.shared.Store(shared)
	return token, shared, nil
}

// credentials is how a master gets its certificates: a master that holds the CA issues
// its own; one that doesn't asks another master's join service (or the lb's); and the
// first master in --peers, on a fresh cluster with an unpinned token, creates the CA
// once no other master has answered.
func (m *Master) credentials(token pki.Token) (node.Credentials, error) {
	peers := m.cfg.PeerList()
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
	fetch := m.node.JoinVia(servers, token, join.Request{Role: "master", Name: m.cfg.Name, Hosts: []string{m.cfg.AdvertiseAddress}}, nil)
	return node.Credentials{
		// A master from before the front-proxy CA gets its files again, from the CA it
		// holds, before its apiserver is told to read them.
		Need: []string{pki.EtcdPeerCert, pki.FrontProxyClientCert},
		Get: func(ctx context.Context) ([]files.File, error) {
			if sh, err := pki.LoadShared(m.cfg.Root); err == nil {
				n := m.cfg.Node()
				n.LegacyPeerCert = pki.LegacyPeerCert(m.cfg.Root, sh.CA)
				return pki.Issue(sh, n, time.Now())
			}
			fs, err := fetch(ctx)
			if err == nil || !mayCreate || errors.Is(err, join.ErrForbidden) || errors.Is(err, pki.ErrCAMismatch) {
				return fs, err
			}
			sh, err := pki.NewShared(time.Now())
			if err != nil {
				return nil, err
			}
			m.lg.Info("[certificates] created the cluster CA and service-account keys: this is the first master",
				"ca-sha256", pki.CAHash(sh.CA.Cert.Raw))
			return pki.Issue(sh, m.cfg.Node(), time.Now())
		},
		Hint: fmt.Sprintf("; the first master in --peers (%s) creates the CA, so start it, or give a master that runs", peers[0].Name),
	}, nil
}

// serveJoin starts the join service in g, which hands the nodes that come after their
// certificates.
func (m *Master) serveJoin(ctx context.Context, g *errgroup.Group, token pki.Token, shared *pki.Shared) error {
	js, err := join.Listen(join.ServerConfig{
		Address: net.JoinHostPort(m.cfg.ListenAddress, strconv.Itoa(m.cfg.JoinPort)),
		Token:   token, AgentToken: m.agentToken, LBToken: m.lbToken, Bind: m.bindNode, MasterNames: m.masterNames,
		Trust: func() []byte { return m.shared.Load().Trust() }, GetCertificate: m.servingCert,
		Issue: m.issuer(), Logger: m.lg.With("component", "join"), Metrics: m.metrics.join,
	})
	if err != nil {
		return err
	}
	g.Go(func() error { return js.Serve(ctx) })
	return nil
}

// issuer signs the files a joining node asks for, with the CA this master holds now.
// A minion's kubelet serving certificate names the node and, of the addresses it asks
// for, those that nodeHosts lets through. While the CA rotates, it records what trust
// a minion or lb got (carotate.Report).
func (m *Master) issuer() join.Issuer {
	return func(req join.Request, from string) ([]files.File, error) {
		if req.Role == "lb" {
			// The lb's certificate is its etcd user: it must exist before the lb uses it.
			if err := m.ensureLBUser(req.Name); err != nil {
				return nil, err
			}
		}
		sh := m.shared.Load()
		hosts := req.Hosts
		if req.Role != "master" {
			var dropped []string
			bind := func(addr string, proven bool) error { return m.bindAddress(addr, req.Name, proven) }
			if hosts, dropped = m.nodeHosts(req.Hosts, from, bind); len(dropped) > 0 {
				m.lg.Warn("[join] left out of the node's serving certificate: a name other than the node's, a master's, the lb's or a service address, or one that another node holds",
					"node", req.Name, "from", from, "hosts", dropped)
			}
		}
		n := pki.Node{Role: req.Role, Name: req.Name, Hosts: hosts, LB: m.cfg.LB,
			ServiceIP: firstIP(m.cfg.ServiceClusterIPRange),
			// Another master gets a peer certificate that this one would present.
			LegacyPeerCert: pki.LegacyPeerCert(m.cfg.Root, sh.CA)}
		apiHost := m.cfg.AdvertiseAddress
		if req.Role == "master" && len(req.Hosts) > 0 {
			apiHost = req.Hosts[0]
		} else if m.cfg.LB != "" {
			apiHost = m.cfg.LB
		}
		n.APIServer = "https://" + net.JoinHostPort(apiHost, "6443")
		fs, err := pki.Issue(sh, n, time.Now())
		if err != nil || req.Role == "master" {
			return fs, err
		}
		if want := m.want.Load(); want != nil && want.Phase() != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := carotate.Report(ctx, m.member.Client(), req.Name, pki.TrustHash(sh.Trust())); err != nil {
				return nil, err
			}
		}
		return fs, nil
	}
}

// nodeHosts keeps, of the hosts a minion or lb asks to be named in its serving
// certificate, the IP addresses that are no master's, lb's or service address and
// that bind ties to this node: proven when the request came from that address, else
// first come (a node that joins through an lb can't prove its address, which the lb
// does not pass on), as node names are. It returns the rest as dropped.
func (m *Master) nodeHosts(hosts []string, from string, bind func(addr string, proven bool) error) (kept, dropped []string) {
	src, srcErr := netip.ParseAddr(from)
	for _, h := range hosts {
		a, err := netip.ParseAddr(h)
		if err != nil || a.IsUnspecified() || m.isControlPlaneAddr(a) {
			dropped = append(dropped, h)
			continue
		}
		a = a.Unmap()
		if err := bind(a.String(), srcErr == nil && a == src.Unmap()); err != nil {
			if !errors.Is(err, join.ErrNameTaken) {
				m.lg.Warn("[join] could not bind a node address", "address", a, "err", err)
			}
			dropped = append(dropped, h)
			continue
		}
		kept = append(kept, h)
	}
	return kept, dropped
}

// NodeAddressesPrefix is where masters keep, per address a minion's serving
// certificate names, the node it belongs to.
const NodeAddressesPrefix = "/haagent/node-addresses/"

// bindAddress ties addr to node: a node that proves the address (its request came
// from it) takes it; else the first node to ask for it keeps it, and join.ErrNameTaken
// refuses another.
func (m *Master) bindAddress(addr, node string, proven bool) error {
	cli := m.member.Client()
	if cli == nil {
		return errors.New("etcd is not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := NodeAddressesPrefix + addr
	if proven {
		_, err := cli.Put(ctx, key, node)
		return err
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, node)).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("bind the node address %s: %w", addr, err)
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); !resp.Succeeded && (len(kvs) != 1 || string(kvs[0].Value) != node) {
		return join.ErrNameTaken
	}
	return nil
}

// isControlPlaneAddr reports whether a is a master's address in --peers, the lb's
// (--lb) or in the service range: no minion's certificate may name it.
func (m *Master) isControlPlaneAddr(a netip.Addr) bool {
	a = a.Unmap()
	if p, err := netip.ParsePrefix(m.cfg.ServiceClusterIPRange); err == nil && p.Contains(a) {
		return true
	}
	if lb, err := netip.ParseAddr(m.cfg.LB); err == nil && lb.Unmap() == a {
		return true
	}
	for _, p := range m.cfg.PeerList() {
		if h, err := netip.ParseAddr(p.Host()); err == nil && h.Unmap() == a {
			return true
		}
	}
	return false
}

// servingCert reloads the join service's certificate from disk on each handshake, so
// that a renewal applies without a restart.
func (m *Master) servingCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(filepath.Join(m.cfg.Root, pki.EtcdServerCrt), filepath.Join(m.cfg.Root, pki.EtcdServerKey))
	return &c, err
}

// ensureLBUser adds the etcd user of the lb called name (LBUser).
func (m *Master) ensureLBUser(name string) error {
	cli := m.member.Client()
	if cli == nil {
		return errors.New("etcd is not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return etcdmember.EnsureUser(ctx, cli, LBUser(name), m.lg)
}

// syncShared stores the sealed CA and service-account keys in etcd once, and checks
// that what is stored is our CA. The master that stores them first gives a cluster
// whose server token has a kind an agent token too (--agent-token, or a new one) and
// an lb token; a cluster made with one legacy token gets neither until 'haagent token
// rotate --agent'. A cluster that has an agent token but no lb token (made before lb
// tokens) gets one from the first master to start with this haagent (addLBToken).
func (m *Master) syncShared(ctx context.Context, kv clientv3.KV, token pki.Token, sh *pki.Shared) error {
	if sh.AgentToken == nil {
		agent, err := m.newAgentToken(token)
		if err != nil {
			return err
		}
		sh.AgentToken = agent
	}
	if sh.AgentToken != nil && sh.LBToken == nil {
		lb, err := m.newLBToken()
		if err != nil {
			return err
		}
		sh.LBToken = lb
	}
	doc, created, err := shareddoc.Create(ctx, kv, token, sh)
	if err != nil {
		return err
	}
	if created {
		m.lg.Info("[ca] stored the sealed CA and service-account keys in etcd", "key", pki.SharedKey, "agent-token", sh.AgentToken != nil)
		return m.setAgent(sh.AgentToken, sh.LBToken)
	}
	stored := doc.Shared
	// While the CA rotates, this master may hold either CA until its turn comes.
	if !slices.ContainsFunc(stored.TrustedCAs(), func(ca *pki.CA) bool { return ca.Cert.Equal(sh.CA.Cert) }) {
		return fmt.Errorf("%w: the CA stored in etcd differs from the one on this master", pki.ErrCAMismatch)
	}
	// One write at most, against the revision read: adding an lb token seals the new
	// way too, so a legacy seal is resealed on its own only when nothing is added.
	if doc.Legacy && (stored.AgentToken == nil || stored.LBToken != nil) {
		m.reseal(ctx, kv, token, doc)
	}
	if m.cfg.AgentToken != "" && (stored.AgentToken == nil || !stored.AgentToken.SecretEqual(sh.AgentToken.Secret)) {
		m.lg.Warn("[ca] --agent-token differs from the cluster's agent token, which is kept; 'haagent token rotate --agent' changes it")
	}
	if want, err := m.newLBToken(); err == nil && m.cfg.LBToken != "" && stored.LBToken != nil && !stored.LBToken.SecretEqual(want.Secret) {
		m.lg.Warn("[ca] --lb-token differs from the cluster's lb token, which is kept; 'haagent token rotate --lb' changes it")
	}
	if stored.AgentToken != nil && stored.LBToken == nil {
		if stored.LBToken, err = m.newLBToken(); err != nil {
			return err
		}
		if err := addLBToken(ctx, kv, token, doc); err != nil {
			return err
		}
		m.lg.Info("[ca] the cluster had no lb token: stored one; lbs join with it from now on ('haagent token show --kind=lb')")
	}
	return m.setAgent(stored.AgentToken, stored.LBToken)
}

// addLBToken stores the shared doc with the lb token it was given, unless the doc
// changed since it was read (another master added one, or a rotation ran): then it
// takes the stored one.
func addLBToken(ctx context.Context, kv clientv3.KV, token pki.Token, doc shareddoc.Doc) error {
	err := shareddoc.Store(ctx, kv, token, doc.Shared, doc.Rev)
	if !errors.Is(err, shareddoc.ErrConflict) {
		if err != nil {
			return fmt.Errorf("store an lb token in etcd: %w", err)
		}
		return nil
	}
	now, err := shareddoc.Load(ctx, kv, token)
	if err != nil {
		return fmt.Errorf("store an lb token in etcd: %w", err)
	}
	if now.LBToken == nil {
		return fmt.Errorf("store an lb token in etcd: %s changed meanwhile; restart to try again", pki.SharedKey)
	}
	doc.LBToken = now.LBToken
	return nil
}

// reseal stores the shared doc again, sealed with the argon2id key, in place of the one
// a haagent from before sealed under an unsalted HKDF of the token, unless another
// master changed it since it was read. A failure is logged: the next start tries
// again, and the old seal still opens.
func (m *Master) reseal(ctx context.Context, kv clientv3.KV, token pki.Token, doc shareddoc.Doc) {
	switch err := shareddoc.Store(ctx, kv, token, doc.Shared, doc.Rev); {
	case errors.Is(err, shareddoc.ErrConflict):
		return // another master changed it, and sealed it the new way
	case err != nil:
		m.lg.Warn("[ca] could not seal the shared doc in etcd again with argon2id; the next start tries again", "key", pki.SharedKey, "err", err)
		return
	}
	m.lg.Info("[ca] sealed the shared doc in etcd again, with a salted argon2id key instead of the former HKDF", "key", pki.SharedKey)
}

// newAgentToken is the agent token a new cluster starts with: --agent-token, a new one,
// or none for a cluster made with one legacy token.
func (m *Master) newAgentToken(server pki.Token) (*pki.Token, error) {
	if m.cfg.AgentToken != "" {
		t, err := pki.ParseToken(m.cfg.AgentToken)
		if err != nil {
			return nil, fmt.Errorf("--agent-token: %w", err)
		}
		t = t.Unpinned()
		t.Kind = pki.KindAgent
		return &t, nil
	}
	if server.Kind == pki.KindLegacy {
		return nil, nil
	}
	t, err := pki.GenerateToken(pki.KindAgent)
	return &t, err
}

// newLBToken is the lb token a cluster starts with: --lb-token, or a new one.
func (m *Master) newLBToken() (*pki.Token, error) {
	if m.cfg.LBToken != "" {
		t, err := pki.ParseToken(m.cfg.LBToken)
		if err != nil {
			return nil, fmt.Errorf("--lb-token: %w", err)
		}
		t = t.Unpinned()
		t.Kind = pki.KindLB
		return &t, nil
	}
	t, err := pki.GenerateToken(pki.KindLB)
	return &t, err
}

// setAgent makes tok the agent token and lb the lb token that the join service checks,
// and keeps them in AgentTokenFile and LBTokenFile for 'haagent token show'.
func (m *Master) setAgent(tok, lb *pki.Token) error {
	err := errors.Join(keepToken(filepath.Join(m.cfg.Root, AgentTokenFile), tok), keepToken(filepath.Join(m.cfg.Root, LBTokenFile), lb))
	prev := m.agent.Swap(&agentState{tok: tok, lb: lb})
	if prev != nil && tok != nil && (prev.tok == nil || !prev.tok.SecretEqual(tok.Secret)) {
		m.lg.Info("[join] the agent token changed: joins with the previous one are refused from now on")
	}
	if prev != nil && lb != nil && (prev.lb == nil || !prev.lb.SecretEqual(lb.Secret)) {
		m.lg.Info("[join] the lb token changed: lb joins with the previous one are refused from now on")
	}
	if err != nil {
		return fmt.Errorf("keep the tokens: %w", err)
	}
	return nil
}

// keepToken writes tok to path (0600), or removes path when tok is nil.
func keepToken(path string, tok *pki.Token) error {
	if tok == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return pki.WriteTokenFile(path, *tok)
}

// agentToken is join.ServerConfig.AgentToken.
func (m *Master) agentToken() (*pki.Token, bool) {
	st := m.agent.Load()
	if st == nil {
		return nil, false
	}
	return st.tok, true
}

// lbToken is join.ServerConfig.LBToken.
func (m *Master) lbToken() *pki.Token {
	if st := m.agent.Load(); st != nil {
		return st.lb
	}
	return nil
}

// watchShared follows the sealed shared doc in etcd, so that an agent token that
// 'haagent token rotate --agent' stores on any master applies to this master's join
// service at once, and a CA rotation's phase reaches followRotation.
func (m *Master) watchShared(ctx context.Context, token pki.Token) error {
	shareddoc.Watch(ctx, m.member.Client, token, func(sh *pki.Shared) {
		m.setWant(sh)
		if err := m.setAgent(sh.AgentToken, sh.LBToken); err != nil {
			m.lg.Error("[join] could not keep the tokens of the shared document", "err", err)
		}
	}, m.lg.With("component", "join"))
	return nil
}

// masterNames is join.ServerConfig.MasterNames: the names in --peers and those of the
// etcd members, which may differ after a member was replaced or added by hand.
func (m *Master) masterNames(ctx context.Context) ([]string, error) {
	var names []string
	for _, p := range m.cfg.PeerList() {
		names = append(names, p.Name)
	}
	cli := m.member.Client()
	if cli == nil {
		return nil, errors.New("etcd is not ready")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the etcd members: %w", err)
	}
	for _, mb := range list.Members {
		if mb.Name != "" {
			names = append(names, mb.Name)
		}
	}
	return names, nil
}

// bindNode is join.ServerConfig.Bind: the first node to join with a name keeps it.
func (m *Master) bindNode(ctx context.Context, name, secretHash string) error {
	cli := m.member.Client()
	if cli == nil {
		return errors.New("etcd is not ready")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	key := NodesPrefix + name
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, secretHash)).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("bind the node name %s: %w", name, err)
	}
	if resp.Succeeded {
		m.lg.Info("[join] bound a node name to its node secret", "node", name, "key", key)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && subtle.ConstantTimeCompare(kvs[0].Value, []byte(secretHash)) == 1 {
		return nil
	}
	return join.ErrNameTaken
}

// Reissue issues every certificate of a master from the CA it holds, now, and writes
// them under root. etcd and the join service reload certificates from disk, so no
// restart is needed.
func Reissue(root string, sh *pki.Shared, n pki.Node, now time.Time) ([]string, error) {
	n.LegacyPeerCert = pki.LegacyPeerCert(root, sh.CA)
	fs, err := pki.Issue(sh, n, now)
	if err != nil {
		return nil, err
	}
	return node.WriteCredentials(root, fs)
}
