package etcdmember

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	etcdutlsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.uber.org/zap"
)

// ErrInUse means a running etcd holds the data dir's database.
var ErrInUse = errors.New("a running etcd holds the data dir")

// HasData reports whether dataDir holds a member: its WAL.
func HasData(dataDir string) bool { return wal.Exist(filepath.Join(dataDir, "member", "wal")) }

func dbPath(dataDir string) string { return filepath.Join(dataDir, "member", "snap", "db") }

// DataDirMembers reads the members that the data dir's database lists, without
// starting etcd. A running etcd holds the database's lock, so it fails with ErrInUse
// then: the read doubles as the check that nothing runs on the data dir.
func DataDirMembers(dataDir string) ([]Member, error) {
	db, err := bolt.Open(dbPath(dataDir), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w (%s)", ErrInUse, dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("read the members in %s: %w", dataDir, err)
	}
	defer db.Close()
	var ms []Member
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("members"))
		if b == nil {
			return errors.New("no members bucket")
		}
		return b.ForEach(func(_, v []byte) error {
			var m Member
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			ms = append(ms, m)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read the members in %s: %w", dataDir, err)
	}
	return ms, nil
}

// peerHTTP is an HTTP client for peers' peer ports, with this member's peer
// certificate in secure mode.
func (s *Server) peerHTTP() (*http.Client, error) {
	hc := &http.Client{Timeout: s.cfg.ProbeTimeout}
	if t := s.cfg.TLS; t != nil {
		info := transport.TLSInfo{CertFile: t.PeerCert, KeyFile: t.PeerKey, TrustedCAFile: t.PeerCA, AllowedCNs: t.PeerAllowedCNs}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("peer TLS: %w", err)
		}
		hc.Transport = &http.Transport{TLSClientConfig: tc}
	}
	return hc, nil
}

// Answer is what a peer said on its peer port.
type Answer struct {
	Name      string
	URL       string
	ClusterID string
	Members   []Member
}

// Reachable asks every member of ms but this one, at once, for its member list on its
// peer port, each bounded by ProbeTimeout, and returns those that answered.
// A new host has no peer certificate yet: it can only tell that something accepts
// connections on a peer port, and counts that as an answer.
func (s *Server) Reachable(ctx context.Context, ms []Member) ([]Answer, error) {
	var hc *http.Client
	if t := s.cfg.TLS; t == nil || fileExists(t.PeerCert) {
		var err error
		if hc, err = s.peerHTTP(); err != nil {
			return nil, err
		}
		defer hc.CloseIdleConnections()
	}
	ch := make(chan *Answer, len(ms))
	n := 0
	for _, m := range ms {
		if m.Name == s.cfg.Name || m.hasPeerURL(s.self.URL.String()) || len(m.PeerURLs) == 0 {
			continue
		}
		n++
		go func(m Member) {
			name := m.Name
			if name == "" {
				name = s.cfg.Peers.NameOf(m.PeerURLs[0])
			}
			for _, u := range m.PeerURLs {
				if hc == nil {
					if err := dialable(ctx, u, s.cfg.ProbeTimeout); err == nil {
						ch <- &Answer{Name: name, URL: u}
						return
					}
					continue
				}
				got, id, err := fetchMembers(ctx, hc, u)
				if err == nil {
					ch <- &Answer{Name: name, URL: u, ClusterID: id, Members: got}
					return
				}
				s.lg.Debug("peer did not answer", "peer", name, "url", u, "err", err)
			}
			ch <- nil
		}(m)
	}
	var out []Answer
	for range n {
		if a := <-ch; a != nil {
			out = append(out, *a)
		}
	}
	return out, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// dialable tells whether something accepts TCP connections at the URL's host:port.
func dialable(ctx context.Context, rawURL string, timeout time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	return c.Close()
}

// PeersAsMembers is the --peers list as members, for probing a cluster that this
// member's data dir does not know.
func (s *Server) PeersAsMembers() []Member {
	ms := make([]Member, len(s.cfg.Peers))
	for i, p := range s.cfg.Peers {
		ms[i] = Member{Name: p.Name, PeerURLs: []string{p.URL.String()}}
	}
	return ms
}

// Outcome is what a one-time start of the member found.
type Outcome struct {
	ClusterID, MemberID string
	// Members are the names of the cluster's members.
	Members  []string
	Revision int64
}

// StartOnce starts etcd on the data dir, with force as the only member of a new
// cluster that keeps all the data (etcd's --force-new-cluster), waits until it serves,
// which a one-member cluster does on its own, and stops it cleanly. The next normal
// start restarts it as that one-member cluster.
func (s *Server) StartOnce(ctx context.Context, force bool) (Outcome, error) {
	ec := s.etcdConfig(plan{mode: ModeRestart, initialCluster: s.cfg.Peers.String(), clusterState: "existing"})
	ec.ForceNewCluster = force
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return Outcome{}, fmt.Errorf("start etcd on %s: %w", s.cfg.DataDir, err)
	}
	defer func() {
		s.stopping.Store(true)
		e.Close()
	}()
	timeout := time.NewTimer(s.cfg.StartTimeout)
	defer timeout.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return Outcome{}, fmt.Errorf("etcd: %w", err)
	case <-e.Server.StopNotify():
		return Outcome{}, fmt.Errorf("etcd on %s stopped before it was ready; see the etcd log lines above", s.cfg.DataDir)
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	case <-timeout.C:
		return Outcome{}, fmt.Errorf("etcd on %s not ready after %s", s.cfg.DataDir, s.cfg.StartTimeout)
	}
	out := Outcome{ClusterID: e.Server.Cluster().ID().String(), MemberID: e.Server.MemberID().String(), Revision: e.Server.KV().Rev()}
	for _, m := range e.Server.Cluster().Members() {
		out.Members = append(out.Members, m.Name)
	}
	return out, nil
}

// Restore writes the snapshot at file into dir, which must not exist, as the data dir
// of this member, the only member of a new cluster. A member's ID and its cluster's are
// hashes of the peer URLs and the bootstrap token, so a token made for this restore
// gives a cluster ID that no cluster had before, and the old cluster's members can't
// mistake it for theirs. It returns the new cluster ID.
func (s *Server) Restore(file, dir string) (string, error) {
	token := fmt.Sprintf("%s-restored-%d", s.cfg.ClusterToken, time.Now().UnixNano())
	initial := s.self.Name + "=" + s.self.URL.String()
	err := etcdutlsnapshot.NewV3(zap.NewNop()).Restore(etcdutlsnapshot.RestoreConfig{
		SnapshotPath:        file,
		Name:                s.cfg.Name,
		OutputDataDir:       dir,
		PeerURLs:            []string{s.self.URL.String()},
		InitialCluster:      initial,
		InitialClusterToken: token,
	})
	if err != nil {
		return "", fmt.Errorf("restore %s into %s: %w", file, dir, err)
	}
	// The cluster ID is not in the database: ask etcd's own membership code, which the
	// restore used, for the ID it gave the cluster.
	urls, err := types.NewURLsMap(initial)
	if err != nil {
		return "", err
	}
	cl, err := membership.NewClusterFromURLsMap(zap.NewNop(), token, urls)
	if err != nil {
		return "", err
	}
	return cl.ID().String(), nil
}

// RestoreInto writes the snapshot at file into cfg.DataDir, which must not exist, as the
// data dir of member cfg.Name of the cluster that cfg.Peers lists, bootstrapped with
// cfg.ClusterToken: etcd's own offline restore, run on each master from the same
// snapshot (the classic way; cluster-reset --restore makes one member instead).
func RestoreInto(file string, cfg Config) error {
	self, ok := cfg.Self()
	if !ok {
		return fmt.Errorf("member %q is not in the peer list %s", cfg.Name, cfg.Peers)
	}
	err := etcdutlsnapshot.NewV3(zap.NewNop()).Restore(etcdutlsnapshot.RestoreConfig{
		SnapshotPath:        file,
		Name:                cfg.Name,
		OutputDataDir:       cfg.DataDir,
		PeerURLs:            []string{self.URL.String()},
		InitialCluster:      cfg.Peers.String(),
		InitialClusterToken: cmp.Or(cfg.ClusterToken, DefaultClusterToken),
	})
	if err != nil {
		return fmt.Errorf("snapshot restore %s into %s: %w", file, cfg.DataDir, err)
	}
	return nil
}

// ReadKey reads key's value from the database in dir, offline: etcd's own store over
// its backend, with nothing listening. It returns nil when the key does not exist.
func ReadKey(dir, key string) ([]byte, error) {
	if _, err := os.Stat(dbPath(dir)); err != nil {
		return nil, err
	}
	be := backend.NewDefaultBackend(zap.NewNop(), dbPath(dir))
	defer be.Close()
	// The store attaches keys to their leases as it loads them; this lessor is never
	// promoted, so it revokes nothing.
	le := lease.NewLessor(zap.NewNop(), be, nil, lease.LessorConfig{MinLeaseTTL: 1})
	defer le.Stop()
	kv := mvcc.New(zap.NewNop(), be, le, mvcc.StoreConfig{})
	defer kv.Close()
	rr, err := kv.Range(context.Background(), []byte(key), nil, mvcc.RangeOptions{})
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", key, dir, err)
	}
	if len(rr.KVs) == 0 {
		return nil, nil
	}
	return rr.KVs[0].Value, nil
}
