// Package etcdmember owns this host's etcd member: it decides whether to bootstrap, join,
// restart or replace, runs etcd inside the haagent process, promotes a learner once it
// has caught up, and notices when the cluster has removed it or a peer is in another
// cluster. For cluster-reset it starts the member once as a new one-member cluster, or
// restores a snapshot into a data dir under a new cluster ID. It also owns --peers as a
// flag value, removing a member (Remove), the offline restore of a snapshot on each
// master (RestoreInto), and applying an etcd auth policy that it is given.
package etcdmember

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/storage/wal"
)

// Defaults for Config; the timeouts are sized for a LAN, where etcd's own defaults
// (100 ms heartbeat, 1 s election) already hold.
const (
	DefaultClientPort        = 2379
	DefaultPeerPort          = 2380
	DefaultClusterToken      = "etcd-cluster"
	DefaultHeartbeatInterval = 100 * time.Millisecond
	DefaultElectionTimeout   = 1000 * time.Millisecond
	DefaultProbeTimeout      = 700 * time.Millisecond
	DefaultStartTimeout      = 5 * time.Minute
	DefaultPromoteTimeout    = 5 * time.Minute

	// removedMarker is left in the data dir once the cluster has removed this member,
	// so that a restart fails fast instead of looping against peers that refuse it.
	removedMarker = "haagent-removed"
)

// ErrRemoved means the cluster removed this member. The data dir is kept; the member
// can only come back as a new member, after the operator moves the data dir away.
var ErrRemoved = errors.New("this member was removed from the etcd cluster")

// Config is the local member's configuration.
type Config struct {
	// Name is this member's name; it must be one of Peers.
	Name string
	// Peers is the static member list; this member's peer URL is the one listed for Name.
	Peers Peers
	// ListenHost is the IP that the client and peer ports bind to ("0.0.0.0" for all).
	ListenHost string
	// AdvertiseHost is the IP or host name that other members and clients reach us at.
	AdvertiseHost string
	// ClientPort is etcd's client port.
	ClientPort int
	// DataDir holds the member's WAL and database. It is never deleted by haagent.
	DataDir string
	// ClusterToken tells clusters apart during bootstrap; the same on every member.
	ClusterToken string
	// HeartbeatInterval and ElectionTimeout are raft's timings.
	HeartbeatInterval, ElectionTimeout time.Duration
	// ProbeTimeout bounds each request to a peer while deciding how to start.
	ProbeTimeout time.Duration
	// StartTimeout bounds the wait for the member to become ready (it needs a quorum).
	StartTimeout time.Duration
	// PromoteTimeout bounds the wait for a learner to catch up and be promoted.
	PromoteTimeout time.Duration
	// ClusterCheckInterval is how often the member asks its peers which cluster they
	// are in. New fills every zero duration, port and token with its Default.
	ClusterCheckInterval time.Duration
	// QuotaBackendBytes is etcd's space quota in bytes, past which it raises its NOSPACE
	// alarm and refuses writes; 0 is etcd's default (2 GiB).
	QuotaBackendBytes int64
	// CompactionRetention is how much history the member keeps: while it leads, it
	// compacts to the revision of that long ago, that often; 0 is
	// DefaultCompactionRetention.
	CompactionRetention time.Duration
	// TLS, when set, makes every etcd URL https with mutual TLS; nil is plain http.
	TLS *TLSFiles
	// EtcdLogLevel is the lowest level of etcd's own log lines that are passed on.
	EtcdLogLevel slog.Level
	Logger       *slog.Logger
}

// TLSFiles are the certificate files etcd serves and connects with.
type TLSFiles struct {
	// CA is what the client port trusts, and clients trust it for.
	CA string
	// PeerCA is what the peer port trusts, and this member trusts its peers for.
	PeerCA string
	// PeerAllowedCNs, when set, are the only subject CNs accepted on the peer port and
	// from peers: the masters' names, while PeerCA holds the cluster CA too.
	PeerAllowedCNs        []string
	PeerCert, PeerKey     string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

func (c Config) scheme() string {
	if c.TLS != nil {
		return "https"
	}
	return "http"
}

// ClientTLS is the TLS config for haagent's own etcd clients; nil in plain mode.
func (c Config) ClientTLS() (*tls.Config, error) {
	if c.TLS == nil {
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: c.TLS.ClientCert, KeyFile: c.TLS.ClientKey, TrustedCAFile: c.TLS.CA}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client TLS: %w", err)
	}
	return cfg, nil
}

// withDefaults fills what the caller left zero.
func (c Config) withDefaults() Config {
	c.ClientPort = cmp.Or(c.ClientPort, DefaultClientPort)
	c.ClusterToken = cmp.Or(c.ClusterToken, DefaultClusterToken)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, DefaultHeartbeatInterval)
	c.ElectionTimeout = cmp.Or(c.ElectionTimeout, DefaultElectionTimeout)
	c.ProbeTimeout = cmp.Or(c.ProbeTimeout, DefaultProbeTimeout)
	c.StartTimeout = cmp.Or(c.StartTimeout, DefaultStartTimeout)
	c.PromoteTimeout = cmp.Or(c.PromoteTimeout, DefaultPromoteTimeout)
	c.ClusterCheckInterval = cmp.Or(c.ClusterCheckInterval, DefaultClusterCheckInterval)
	c.CompactionRetention = cmp.Or(c.CompactionRetention, DefaultCompactionRetention)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Self returns this member's entry in Peers.
func (c Config) Self() (Peer, bool) { return c.Peers.ByName(c.Name) }

// LocalClientURL is where a client on this host reaches the member.
func (c Config) LocalClientURL() string {
	host := c.ListenHost
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return c.scheme() + "://" + net.JoinHostPort(host, strconv.Itoa(c.ClientPort))
}

// Server runs the local etcd member.
type Server struct {
	cfg   Config
	self  Peer
	lg    *slog.Logger
	ready chan struct{}

	stopping atomic.Bool // set when haagent stops etcd on purpose
	// restart carries Restart's requests to Run, each with the channel to answer on.
	restart chan chan error
	// foreign is the last cluster ID mismatch with a peer (watchClusterIDs).
	foreign atomic.Pointer[string]

	mu     sync.Mutex // guards the fields below
	etcd   *embed.Etcd
	client *clientv3.Client
	mode   Mode
}

// New checks cfg and prepares a Server; it starts nothing.
func New(cfg Config) (*Server, error) {
	self, ok := cfg.Self()
	if !ok {
		return nil, fmt.Errorf("member %q is not in the peer list %s", cfg.Name, cfg.Peers)
	}
	cfg = cfg.withDefaults()
	return &Server{cfg: cfg, self: self, lg: cfg.Logger, ready: make(chan struct{}), restart: make(chan chan error)}, nil
}

// Ready is closed once the member has joined a cluster that has a leader.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Client is a client of the local member; it is nil before Ready.
func (s *Server) Client() *clientv3.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// Mode is how the member came up; empty before Ready.
func (s *Server) Mode() Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// Healthy reports whether the member serves and its cluster has a leader.
func (s *Server) Healthy() error {
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	select {
	case <-s.ready:
	default:
		return s.withForeign(errors.New("etcd member not ready"))
	}
	if e == nil {
		return errors.New("etcd member restarting")
	}
	if e.Server.Leader() == types.ID(raftNone) {
		return s.withForeign(errors.New("etcd cluster has no leader"))
	}
	return nil
}

const raftNone = 0

// AuthEnabled reports whether etcd's authentication is on, as this member has applied
// it; known is false while the member does not run.
func (s *Server) AuthEnabled() (enabled, known bool) {
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	if e == nil {
		return false, false
	}
	return e.Server.AuthStore().IsAuthEnabled(), true
}

// hasLeader reports whether the running member knows a leader.
func (s *Server) hasLeader() bool {
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	return e != nil && e.Server.Leader() != types.ID(raftNone)
}

// withForeign adds a cluster ID mismatch with a peer, the likely reason, to err.
func (s *Server) withForeign(err error) error {
	if f := s.ForeignCluster(); f != "" {
		return fmt.Errorf("%w: %s", err, f)
	}
	return err
}

// Run starts the member and blocks until ctx ends (then it stops etcd and returns nil)
// or etcd fails. It returns an error wrapping ErrRemoved when the cluster removed us.
// Restart stops and starts the member in between.
func (s *Server) Run(ctx context.Context) error {
	if b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, removedMarker)); err == nil {
		return fmt.Errorf("%w (%s); the data dir %s is kept: to rejoin as a new member, move it away and start again",
			ErrRemoved, strings.TrimSpace(string(b)), s.cfg.DataDir)
	}
	haveData := wal.Exist(filepath.Join(s.cfg.DataDir, "member", "wal"))
	var view []Member
	if !haveData {
		view = s.probePeers(ctx)
	}
	p := decide(s.self, s.cfg.Peers, haveData, view)
	s.lg.Info("[start] starting etcd member", "mode", p.mode, "name", s.cfg.Name, "peer-url", s.self.URL.String(),
		"initial-cluster", p.initialCluster, "data-dir", s.cfg.DataDir)
	if p.mode == ModeJoin {
		if err := s.makeRoom(ctx, &p); err != nil {
			return err
		}
	}
	var restarted chan error
	for {
		again, err := s.runOnce(ctx, p, restarted)
		if again == nil {
			if restarted != nil && err != nil {
				restarted <- err
			}
			return err
		}
		// The member has data now, whatever it started as.
		p, restarted = decide(s.self, s.cfg.Peers, true, nil), again
		s.lg.Info("[restart] restarting the etcd member, which reads the CAs it trusts only at start", "mode", p.mode)
	}
}

// Restart stops the running member and starts it again, so that it reads its TLS
// files anew (etcd reads the CAs it trusts only at start); a master does it one member
// at a time. It returns once the member is ready again, or an error if it does not
// come back (then Run fails too).
func (s *Server) Restart(ctx context.Context) error {
	select {
	case <-s.ready:
	default:
		return errors.New("the etcd member is not running yet")
	}
	done := make(chan error, 1)
	select {
	case s.restart <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runOnce runs etcd once with plan p, like Run. It tells restarted, when set, that the
// member is ready again. It returns a reply channel when Restart asks for a new start,
// after it stopped etcd.
func (s *Server) runOnce(ctx context.Context, p plan, restarted chan error) (chan error, error) {
	e, err := embed.StartEtcd(s.etcdConfig(p))
	if err != nil {
		return nil, fmt.Errorf("start etcd (%s): %w", p.mode, err)
	}
	s.stopping.Store(false)
	s.mu.Lock()
	s.etcd, s.mode = e, p.mode
	s.mu.Unlock()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); s.watchClusterIDs(watchCtx, e) }()
	defer func() {
		stopWatch()
		<-watched
		s.stopping.Store(true)
		s.mu.Lock()
		s.etcd = nil
		s.mu.Unlock()
		e.Close()
	}()

	if err := s.awaitReady(ctx, e); err != nil || ctx.Err() != nil {
		return nil, err
	}
	cli, err := s.newClient([]string{s.cfg.LocalClientURL()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	if e.Server.IsLearner() {
		if err := s.promote(ctx, e); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	s.client = cli
	s.mu.Unlock()
	if restarted != nil {
		restarted <- nil
		s.lg.Info("[restart] etcd member ready again", "id", e.Server.MemberID().String(), "leader", e.Server.Leader().String())
	} else {
		close(s.ready)
		s.lg.Info("[health] etcd member ready", "mode", p.mode, "id", e.Server.MemberID().String(), "leader", e.Server.Leader().String())
	}

	select {
	case <-ctx.Done():
		s.lg.Info("stopping etcd member")
		return nil, nil
	case err := <-e.Err():
		return nil, s.failed(ctx, e, err)
	case <-e.Server.StopNotify():
		return nil, s.stoppedByItself(ctx, e)
	case again := <-s.restart:
		s.lg.Info("[restart] stopping the etcd member to start it again")
		return again, nil
	}
}

// failed explains an error from etcd's listeners. A member that its peers refuse as
// removed stops at once, and its listeners fail with "server is stopping" before the
// stop is seen: give the stop a moment, so that it is reported as the removal it is.
func (s *Server) failed(ctx context.Context, e *embed.Etcd, err error) error {
	select {
	case <-e.Server.StopNotify():
		return s.stoppedByItself(ctx, e)
	case <-time.After(2 * time.Second):
		return fmt.Errorf("etcd: %w", err)
	}
}

// awaitReady waits for the member to publish itself, which needs a quorum, and logs
// what it waits for every 10 s so that a stuck bootstrap is visible.
func (s *Server) awaitReady(ctx context.Context, e *embed.Etcd) error {
	deadline := time.NewTimer(s.cfg.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-e.Server.ReadyNotify():
			return nil
		case <-ctx.Done():
			return nil
		case err := <-e.Err():
			return s.failed(ctx, e, err)
		case <-e.Server.StopNotify():
			return s.stoppedByItself(ctx, e)
		case <-tick.C:
			attrs := []any{"peers", s.cfg.Peers.String()}
			if f := s.ForeignCluster(); f != "" {
				attrs = append(attrs, "likely-cause", f)
			}
			s.lg.Warn("[health] waiting for etcd to reach a quorum of its peers", attrs...)
		case <-deadline.C:
			return s.withForeign(fmt.Errorf("etcd member not ready after %s: no quorum among %s; check that a majority of masters run and reach each other's peer port",
				s.cfg.StartTimeout, s.cfg.Peers))
		}
	}
}

// stoppedByItself explains an etcd stop that haagent did not ask for. etcd stops itself
// when it applies its own removal, or when peers refuse it as a removed member.
func (s *Server) stoppedByItself(ctx context.Context, e *embed.Etcd) error {
	id := e.Server.MemberID()
	removed := false
	if rc, ok := e.Server.Cluster().(*membership.RaftCluster); ok && rc.IsIDRemoved(id) {
		removed = true
	} else if view := s.probePeers(ctx); len(view) > 0 {
		removed = true
		for _, m := range view {
			if types.ID(m.ID) == id {
				removed = false
			}
		}
	}
	if !removed {
		return fmt.Errorf("etcd member %s stopped unexpectedly; see the etcd log lines above", id)
	}
	note := fmt.Sprintf("member %s (%s) removed, noticed at %s", id, s.cfg.Name, time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(s.cfg.DataDir, removedMarker), []byte(note+"\n"), 0o600); err != nil {
		s.lg.Error("could not mark the data dir as removed", "err", err)
	}
	return fmt.Errorf("%w (%s); the data dir %s is kept: to rejoin as a new member, move it away and start again",
		ErrRemoved, note, s.cfg.DataDir)
}

// DefaultCompactionRetention keeps a little less history than kube-apiserver's own
// compactor would (every 5 min, to the revision of the round before), which can't run on
// a cluster with auth: etcd 3.7 allows Compact to root only, and the apiserver's user is
// not root. A continue token or a watch's resourceVersion then expires within 8 min,
// inside the 10 min that Kubernetes' conformance suite waits for it.
const DefaultCompactionRetention = 4 * time.Minute

func (s *Server) etcdConfig(p plan) *embed.Config {
	ec := embed.NewConfig()
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = cmp.Or(s.cfg.CompactionRetention, DefaultCompactionRetention).String()
	ec.Name = s.cfg.Name
	ec.Dir = s.cfg.DataDir
	ec.InitialCluster = p.initialCluster
	ec.ClusterState = p.clusterState
	ec.InitialClusterToken = s.cfg.ClusterToken
	ec.TickMs = uint(s.cfg.HeartbeatInterval / time.Millisecond)
	ec.QuotaBackendBytes = s.cfg.QuotaBackendBytes
	ec.ElectionMs = uint(s.cfg.ElectionTimeout / time.Millisecond)
	peerPort := s.self.URL.Port()
	ec.ListenPeerUrls = []url.URL{{Scheme: s.self.URL.Scheme, Host: net.JoinHostPort(s.cfg.ListenHost, peerPort)}}
	ec.AdvertisePeerUrls = []url.URL{s.self.URL}
	clientPort := strconv.Itoa(s.cfg.ClientPort)
	ec.ListenClientUrls = []url.URL{{Scheme: s.cfg.scheme(), Host: net.JoinHostPort(s.cfg.ListenHost, clientPort)}}
	ec.AdvertiseClientUrls = []url.URL{{Scheme: s.cfg.scheme(), Host: net.JoinHostPort(s.cfg.AdvertiseHost, clientPort)}}
	if t := s.cfg.TLS; t != nil {
		ec.PeerTLSInfo = transport.TLSInfo{CertFile: t.PeerCert, KeyFile: t.PeerKey, TrustedCAFile: t.PeerCA, ClientCertAuth: true,
			AllowedCNs: t.PeerAllowedCNs}
		ec.ClientTLSInfo = transport.TLSInfo{CertFile: t.ServerCert, KeyFile: t.ServerKey, TrustedCAFile: t.CA, ClientCertAuth: true}
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(s.lg, s.cfg.EtcdLogLevel, &s.stopping))
	return ec
}

// probePeers asks every other peer, at once, for the membership it knows on its peer port.
// That port answers before the member is ready, so concurrent bootstraps see each other.
// It returns the view that bestView picks, or nil if no peer answered.
func (s *Server) probePeers(ctx context.Context) []Member {
	answers, err := s.Reachable(ctx, s.PeersAsMembers())
	if err != nil {
		s.lg.Error("probing the peers", "err", err)
		return nil
	}
	return bestView(answers)
}

// bestView picks, among the peers' answers, the view of a cluster whose quorum
// answered, then the one that lists the most started members. After a cluster-reset
// --restore, a master left on the old cluster still answers with all the old members
// started; the restored cluster is the one that can take a new member.
func bestView(answers []Answer) []Member {
	var best []Member
	bestQuorum, bestStarted := false, -1
	for _, a := range answers {
		voters, started, alive := 0, 0, 0
		for _, m := range a.Members {
			if !m.IsLearner {
				voters++
			}
			if m.started() {
				started++
			}
		}
		for _, b := range answers {
			if b.ClusterID == a.ClusterID {
				alive++
			}
		}
		quorum := voters > 0 && alive >= voters/2+1
		if quorum && !bestQuorum || quorum == bestQuorum && started > bestStarted {
			best, bestQuorum, bestStarted = a.Members, quorum, started
		}
	}
	return best
}

// fetchMembers asks a peer for the members it knows, and returns them with the cluster
// ID the peer's etcd puts in every answer on its peer port.
func fetchMembers(ctx context.Context, hc *http.Client, peerURL string) ([]Member, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, peerURL+"/members", nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s/members: %s", peerURL, resp.Status)
	}
	var ms []Member
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		return nil, "", fmt.Errorf("GET %s/members: %w", peerURL, err)
	}
	return ms, resp.Header.Get("X-Etcd-Cluster-ID"), nil
}

// makeRoom removes stale members that stand in our place and adds us as a learner.
// It retries while the cluster can't take the change yet (no leader, a learner catching up).
func (s *Server) makeRoom(ctx context.Context, p *plan) error {
	cli, err := s.newClient(p.clientURLs)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	for _, m := range p.remove {
		err := retry(ctx, s.lg, "remove stale member "+types.ID(m.ID).String(), func(ctx context.Context) error {
			_, err := cli.MemberRemove(ctx, m.ID)
			if isEtcdError(err, rpctypes.ErrMemberNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("replace stale member %s (%s): %w", types.ID(m.ID), m.Name, err)
		}
		s.lg.Warn("[membership] removed stale member that held this node's name or peer URL; this node rejoins fresh",
			"id", types.ID(m.ID).String(), "name", m.Name, "peer-urls", m.PeerURLs)
	}
	selfURL := s.self.URL.String()
	return retry(ctx, s.lg, "add as learner", func(ctx context.Context) error {
		resp, err := cli.MemberAddAsLearner(ctx, []string{selfURL})
		if err == nil {
			s.lg.Info("[membership] added to the cluster as a learner", "id", types.ID(resp.Member.ID).String())
			// Another master may have joined since the probe: etcd checks the initial
			// cluster against the membership, so take it from the add's answer.
			p.initialCluster = initialCluster(fromPB(resp.Members), s.self, s.cfg.Peers)
			return nil
		}
		if !isEtcdError(err, rpctypes.ErrPeerURLExist) {
			return err
		}
		// An earlier attempt added us but died before etcd wrote its data dir: take that place.
		list, lerr := cli.MemberList(ctx)
		if lerr != nil {
			return lerr
		}
		for _, m := range list.Members {
			for _, u := range m.PeerURLs {
				if u == selfURL && len(m.ClientURLs) == 0 {
					p.initialCluster = initialCluster(fromPB(list.Members), s.self, s.cfg.Peers)
					return nil
				}
			}
		}
		return err
	})
}

// fromPB converts etcd's member list.
func fromPB(ms []*etcdserverpb.Member) []Member {
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner}
	}
	return out
}

// promote turns this learner into a voting member once the leader says it is in sync.
func (s *Server) promote(ctx context.Context, e *embed.Etcd) error {
	var others []string
	for _, m := range e.Server.Cluster().Members() {
		if m.ID != e.Server.MemberID() {
			others = append(others, m.ClientURLs...)
		}
	}
	cli, err := s.newClient(others)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PromoteTimeout)
	defer cancel()
	id := uint64(e.Server.MemberID())
	err = retry(ctx, s.lg, "promote learner", func(ctx context.Context) error {
		_, err := cli.MemberPromote(ctx, id)
		if isEtcdError(err, rpctypes.ErrMemberNotLearner) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("promote learner %s: %w", e.Server.MemberID(), err)
	}
	s.lg.Info("[membership] promoted from learner to voting member", "id", e.Server.MemberID().String())
	return nil
}

// isEtcdError tells whether err, from clientv3, is etcd's typed error target. The
// client converts gRPC errors with rpctypes.Error already; converting again covers an
// error that came through a path that did not.
func isEtcdError(err, target error) bool {
	return err != nil && errors.Is(rpctypes.Error(err), target)
}

func (s *Server) newClient(endpoints []string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("no client URL to reach the cluster at")
	}
	tc, err := s.cfg.ClientTLS()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tc,
		DialTimeout: 2 * time.Second,
		Logger:      newZapLogger(s.lg, slog.LevelError, &s.stopping),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}

// retry runs op until it succeeds or ctx ends, backing off from 100 ms to 2 s, each
// attempt bounded by 3 s, and logs every fifth failure so that a stuck change shows.
func retry(ctx context.Context, lg *slog.Logger, what string, op func(context.Context) error) error {
	attempts := 0
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempts++
		opCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		last = op(opCtx)
		return struct{}{}, last
	},
		backoff.WithBackOff(&backoff.ExponentialBackOff{
			InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.2, Multiplier: 2, MaxInterval: 2 * time.Second,
		}),
		// ctx bounds the retries: the callers give it their own timeout.
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, _ time.Duration) {
			if attempts%5 == 0 {
				lg.Info("still retrying", "what", what, "attempt", attempts, "err", err)
			}
		}))
	if err != nil {
		// err is ctx's; last says why the cluster refused.
		return fmt.Errorf("%s: gave up after %d attempts (%v): %w", what, attempts, err, last)
	}
	return nil
}
