// Package vip owns an lb's virtual IP: it elects one holder among the lbs through the
// masters' etcd (clientv3/concurrency, no consensus code of its own), adds the address
// on the holder with a kernel lifetime that the holder renews while its lease lives,
// announces it with gratuitous ARP, takes it away by a deadline when the holder loses
// its lease, hangs or is cut off, and releases it at once on a clean stop.
//
// Fencing, in the order the deadlines fall after the holder's last acknowledged
// keepalive, sent at s and received by etcd at r >= s:
//
//   - the holder drops the address itself at s + HoldFor (1.2 s) unless a later keepalive
//     was acknowledged, and it renews the kernel lifetime only after a keepalive whose
//     acknowledgement came within MaxAckDelay, so a frozen holder's kernel drops the
//     address by s + MaxAckDelay + 1.25 s (lifetimeSeconds);
//   - a standby that finds the holder's lease with less than 1 s left (etcd reports
//     whole seconds, so r + 1 s has passed) waits FenceWait more and revokes it: that is
//     at r + 1.6 s at the earliest, after both of the holder's deadlines;
//   - etcd itself expires the lease at r + TTL (2 s, etcd's minimum with a 1 s election
//     timeout) and reaps it within 0.5 s, should no standby be there to revoke it.
//
// If etcd has no leader that can commit anything, the holder keeps the VIP as long as
// it has proof that nobody else can take it. The proof is a majority of the members
// each either refusing the connection (its process is down), or answering that it has
// no leader, that its leader is one of those that refuse, or, while a majority answers,
// that its leader is one that does not answer the holder at all. The last is the etcd
// leader's own death or blackhole, seen from a holder that still reaches the others:
// they name the lost leader until their election timeout, and the holder's keepalives,
// which they forward to it, fail. A holder that is cut off gets no answer from a
// majority and drops the VIP by its deadline. The proof is renewed with every
// keepalive round, and each lasts HoldFor: a leader elected after it extends every
// lease by etcd's election timeout plus the TTL on promotion (lessor.Promote), so no
// standby sees the holder's lease near its end for at least that long, and by then the
// holder renews through the new leader.
//
// A standby that wins does not add the VIP while another host answers ARP for it
// (address conflict detection, as RFC 5227 probes before using an address): it waits,
// holding its lease, until the address is free. The deadlines above are what keep two
// holders apart; the probe makes sure that a timing assumption broken by a paused or
// partitioned host does not put the address on two links at once.
package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// KeyPrefix is where the elections live in etcd, one per VIP below it; the lb's etcd
// user may read and write under it and nowhere else (master.NewAuthPolicy).
const KeyPrefix = "/haagent/vip/"

// Timings. They follow from etcd's lease minimum (TTL) and the kernel's lifetime
// granularity; the package doc derives the order of the deadlines.
const (
	// TTL is the election lease's TTL, the fallback when no standby revokes it.
	TTL = 2 * time.Second
	// KeepAliveEvery is how often the holder renews its lease with a keepalive of its
	// own, whose send time starts its deadline.
	KeepAliveEvery = 200 * time.Millisecond
	// keepAliveTimeout bounds one quorum probe, lease lookup or revoke.
	keepAliveTimeout = 300 * time.Millisecond
	// maxInflight keepalives of the holder may wait for their acknowledgement at once,
	// each up to HoldFor (a later one extends nothing): on a loaded host whose etcd
	// answers in 400 ms, keepalives sent every KeepAliveEvery still extend the deadline
	// in turn, where one at a time, cut at a shorter timeout, would let it lapse.
	maxInflight = 4
	// probeAfter is how long without an acknowledged keepalive (counted from its send)
	// before each new keepalive goes with a quorum probe.
	probeAfter = 2 * KeepAliveEvery
	// HoldFor is how long after sending its last acknowledged keepalive the holder
	// keeps the VIP: short of a standby's earliest revoke (1.6 s), with room for an
	// etcd slowed by a loaded host, which would otherwise make the VIP move.
	HoldFor = 1200 * time.Millisecond
	// MaxAckDelay is the slowest acknowledgement after which the holder still renews
	// the kernel lifetime.
	MaxAckDelay = 200 * time.Millisecond
	// PollEvery is how often a standby looks at the holder's lease.
	PollEvery = 100 * time.Millisecond
	// FenceWait is how long a standby waits, after seeing the holder's lease under
	// 1 s, before it revokes it: past the kernel's end of a frozen holder's address
	// (at most MaxAckDelay + 1.25 s after its last acknowledged send, 1.45 s).
	FenceWait = 600 * time.Millisecond
	// retryEvery spaces the terms after a failed one, doubling up to maxRetryEvery
	// while they keep failing at once.
	retryEvery    = 200 * time.Millisecond
	maxRetryEvery = 5 * time.Second
)

// Config is what the VIP needs.
type Config struct {
	// Address is the VIP with the prefix length it gets on the interface.
	Address netip.Prefix
	// Interface carries the VIP; FindInterface checks it.
	Interface string
	// Name is this host's name, the value of its election key.
	Name string
	// Endpoints are the masters' etcd client URLs.
	Endpoints []string
	// Credentials are the lb's etcd client identity and the CAs it trusts
	// (node.ClientTLS.GRPC); nil talks plain http.
	Credentials credentials.TransportCredentials
	Logger      *slog.Logger
	// Metrics, when set, are kept up to date.
	Metrics *Metrics
}

// Status is the VIP as this host sees it, for /status.
type Status struct {
	Address   string `json:"address"`
	Interface string `json:"interface"`
	// Holder is the name of the lb holding the VIP, empty when none is known.
	Holder string `json:"holder"`
	// Holding is whether this host holds it.
	Holding bool `json:"holding"`
	// Since is when the current holder took it, as this host saw it.
	Since *time.Time `json:"since,omitempty"`
	// Takeovers counts the times this host took the VIP.
	Takeovers uint64 `json:"takeovers"`
	// RetryAt is set while this host is between terms, out of the election: it can't
	// take the VIP before then.
	RetryAt   *time.Time `json:"retry_at,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

// VIP is one host's part in holding a virtual IP.
type VIP struct {
	cfg    Config
	lg     *slog.Logger
	prefix string

	mu        sync.Mutex // guards the fields below
	host      *host
	holding   bool
	holder    string
	since     time.Time
	takeovers uint64
	retryAt   time.Time
	lastErr   string
	garpStop  chan struct{}
	// memberIDs maps each endpoint to its member's ID, as learnt from its answers.
	memberIDs map[string]uint64
	// members holds one connection per member (index of Config.Endpoints) for the
	// quorum probe: a Status on a connection that is already up answers in a round
	// trip, where a new connection's TLS handshake may not fit a loaded host's probe.
	members []pb.MaintenanceClient
}

// New prepares the VIP; it touches nothing.
func New(cfg Config) *VIP {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &VIP{cfg: cfg, lg: lg.With("vip", cfg.Address.Addr().String()), prefix: KeyPrefix + cfg.Address.Addr().String() + "/",
		memberIDs: map[string]uint64{}}
}

// Status reports the VIP as this host sees it.
func (v *VIP) Status() Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := Status{Address: v.cfg.Address.String(), Interface: v.cfg.Interface, Holder: v.holder,
		Holding: v.holding, Takeovers: v.takeovers, LastError: v.lastErr}
	if !v.since.IsZero() {
		s := v.since
		st.Since = &s
	}
	if !v.retryAt.IsZero() {
		r := v.retryAt
		st.RetryAt = &r
	}
	return st
}

// Run takes part in the election until ctx ends; a holder then releases the VIP at
// once (address removed, election resigned, lease revoked). It returns an error only
// when it can't start.
func (v *VIP) Run(ctx context.Context) error {
	h, err := newHost(v.cfg.Interface, v.cfg.Address)
	if err != nil {
		return fmt.Errorf("[vip] %w", err)
	}
	// A run that was killed may have left the address (its lifetime ends it within
	// seconds); this run answers for it only once it has won.
	if err := h.del(); err != nil {
		return fmt.Errorf("[vip] %w", err)
	}
	v.mu.Lock()
	v.host = h
	v.mu.Unlock()
	var creds []grpc.DialOption
	if v.cfg.Credentials != nil {
		// clientv3 applies DialOptions after its own credentials.
		creds = append(creds, grpc.WithTransportCredentials(v.cfg.Credentials))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: v.cfg.Endpoints, Context: ctx, Logger: zap.NewNop(), DialOptions: creds,
		DialTimeout: 2 * time.Second, DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: time.Second,
	})
	if err != nil {
		return fmt.Errorf("[vip] etcd client for %v: %w", v.cfg.Endpoints, err)
	}
	defer cli.Close()
	for _, ep := range v.cfg.Endpoints {
		mc, err := clientv3.New(clientv3.Config{
			Endpoints: []string{ep}, Context: ctx, Logger: zap.NewNop(),
			DialTimeout: 2 * time.Second, DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: time.Second,
			// A member that comes back is probed again within a second, not after
			// gRPC's default reconnect backoff of up to two minutes.
			DialOptions: append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: time.Second,
			})}, creds...),
		})
		if err != nil {
			return fmt.Errorf("[vip] etcd client for %s: %w", ep, err)
		}
		defer mc.Close()
		v.members = append(v.members, pb.NewMaintenanceClient(mc.ActiveConnection()))
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { v.observe(ctx, cli) })
	wg.Go(func() { v.learnMembers(ctx) })
	v.lg.Info("[vip] campaigning", "interface", v.cfg.Interface, "name", v.cfg.Name, "key", v.prefix)
	wait := retryEvery
	for ctx.Err() == nil {
		start := time.Now()
		err := v.term(ctx, cli)
		if ctx.Err() != nil {
			break
		}
		v.setErr(err)
		// A term that ends at once (etcd unreachable, or a permission missing on
		// masters not yet upgraded) is retried less and less often; one that lasted
		// starts the backoff anew. Status shows the wait (RetryAt): a standby in it
		// can't take the VIP.
		if time.Since(start) > maxRetryEvery {
			wait = retryEvery
		}
		v.lg.Warn("[vip] term ended; campaigning again", "err", err, "in", wait)
		v.setRetryAt(time.Now().Add(wait))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		v.setRetryAt(time.Time{})
		wait = min(2*wait, maxRetryEvery)
	}
	return nil
}

// term is one lease's life: campaign, hold, and release.
func (v *VIP) term(ctx context.Context, cli *clientv3.Client) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(int(TTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	el := concurrency.NewElection(sess, v.prefix)
	defer func() {
		// The address goes first: from the revoke on, a standby may take it.
		v.drop("term ended")
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if el.Key() != "" {
			if err := el.Resign(rctx); err != nil {
				v.lg.Debug("[vip] resign", "err", err)
			}
		}
		sess.Orphan()
		if _, err := cli.Revoke(rctx, sess.Lease()); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			v.lg.Debug("[vip] revoke own lease", "err", err)
		}
	}()
	if err := v.campaign(ctx, cli, sess, el); err != nil {
		return err
	}
	return v.hold(ctx, cli, sess, el)
}

// campaign waits to win the election, fencing a holder that is past its deadlines.
func (v *VIP) campaign(ctx context.Context, cli *clientv3.Client, sess *concurrency.Session, el *concurrency.Election) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	})
	wg.Go(func() { v.fenceStale(cctx, cli, sess.Lease()) })
	if err := el.Campaign(cctx, v.cfg.Name); err != nil {
		select {
		case <-sess.Done():
			return errors.New("lease lost while campaigning")
		default:
		}
		return fmt.Errorf("campaign: %w", err)
	}
	return nil
}

// fenceStale revokes the lease of a holder that has passed both of its deadlines (see
// the package doc), so that a dead or cut-off holder is replaced about 0.5 s before
// etcd would expire its lease, and 0.5 s of reaping sooner still.
func (v *VIP) fenceStale(ctx context.Context, cli *clientv3.Client, own clientv3.LeaseID) {
	t := time.NewTicker(PollEvery)
	defer t.Stop()
	var stale clientv3.LeaseID
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, keepAliveTimeout)
		id, holder, err := v.leaderLease(pctx, cli)
		var ttl *clientv3.LeaseTimeToLiveResponse
		if err == nil && id != own && id != clientv3.NoLease {
			ttl, err = cli.TimeToLive(pctx, id)
		}
		if err != nil || id == own || id == clientv3.NoLease || ttl.TTL != 0 {
			// TTL -1 is a lease already gone; 1 or more is one that its holder renews.
			cancel()
			stale = clientv3.NoLease
			continue
		}
		now := time.Now()
		if stale != id {
			stale, since = id, now
			cancel()
			continue
		}
		if now.Sub(since) < FenceWait {
			cancel()
			continue
		}
		cancel()
		// Not cut short by the win that the revoke itself brings about.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keepAliveTimeout)
		_, err = cli.Revoke(rctx, id)
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			v.lg.Warn("[vip] revoke the lease of a holder past its deadline", "holder", holder, "err", err)
			continue
		}
		v.lg.Info("[vip] revoked the lease of a holder past its deadline", "holder", holder, "lease", fmt.Sprintf("%x", int64(id)))
		stale = clientv3.NoLease
	}
}

// leaderLease is the holder's lease and name: the oldest key of the election.
func (v *VIP) leaderLease(ctx context.Context, cli *clientv3.Client) (clientv3.LeaseID, string, error) {
	resp, err := cli.Get(ctx, v.prefix, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return clientv3.NoLease, "", err
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease), string(resp.Kvs[0].Value), nil
}

// claim is the winner's last step before it adds the VIP: it checks that its lease is
// alive (a keepalive whose send time starts the deadline it returns) and that its key is
// the one it created, and it waits, renewing its lease, while another host answers ARP
// for the VIP (see the package doc).
func (v *VIP) claim(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID, el *concurrency.Election) (time.Time, error) {
	waiting := false
	for {
		r := v.keepAlive(ctx, cli, id)
		if r.err != nil {
			return time.Time{}, fmt.Errorf("won, but the lease did not renew: %w", r.err)
		}
		gctx, cancel := context.WithTimeout(ctx, keepAliveTimeout)
		resp, err := cli.Get(gctx, el.Key())
		cancel()
		if err != nil {
			return time.Time{}, fmt.Errorf("won, but the election key is unreadable: %w", err)
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != el.Rev() {
			return time.Time{}, errors.New("won, but the election key is gone")
		}
		mac, err := v.host.claimant()
		if err != nil {
			// Without ARP the announcement fails too; the deadlines still fence.
			v.lg.Warn("[vip] could not probe whether the VIP is free; taking it", "err", err)
		}
		deadline := r.sent.Add(HoldFor)
		if mac == nil {
			if time.Now().After(deadline) {
				return time.Time{}, errors.New("won, but too late to hold: etcd is slow")
			}
			if waiting {
				v.lg.Info("[vip] the VIP is free now")
			}
			return deadline, nil
		}
		if !waiting {
			v.lg.Warn("[vip] won, but another host answers ARP for the VIP: waiting until it lets go", "mac", mac.String())
			waiting = true
		}
		v.setErr(fmt.Errorf("won, but %s answers ARP for the VIP", mac))
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(KeepAliveEvery):
		}
	}
}

// kaResult is one keepalive of the holder.
type kaResult struct {
	sent, acked time.Time
	err         error
}

// hold keeps the VIP while the lease lives and the keepalives come back in time.
func (v *VIP) hold(ctx context.Context, cli *clientv3.Client, sess *concurrency.Session, el *concurrency.Election) error {
	id := sess.Lease()
	deadline, err := v.claim(ctx, cli, id, el)
	if err != nil {
		return err
	}
	if err := v.take(deadline); err != nil {
		return err
	}

	results := make(chan kaResult, maxInflight)
	proofs := make(chan time.Time, 1) // the start of a probe that proved etcd leaderless; zero if it did not
	inflight, probing := 0, false
	tick := time.NewTicker(KeepAliveEvery)
	defer tick.Stop()
	lapse := time.NewTimer(time.Until(deadline))
	defer lapse.Stop()
	leaderless, failing := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lapse.C:
			return fmt.Errorf("no keepalive acknowledged for one sent in the last %s", HoldFor)
		case <-tick.C:
			if inflight < maxInflight {
				inflight++
				go func() { results <- v.keepAlive(ctx, cli, id) }()
			}
			// Without a recent acknowledgement, each round also looks for the proof
			// that nobody can take the VIP, so that it comes well within HoldFor.
			if !probing && (leaderless || time.Since(deadline.Add(-HoldFor)) > probeAfter) {
				probing = true
				go func() {
					start := time.Now()
					if !v.leaderless(ctx, cli) {
						start = time.Time{}
					}
					proofs <- start
				}()
			}
		case start := <-proofs:
			probing = false
			if start.IsZero() {
				continue
			}
			// Nobody can win an election or revoke a lease without a leader, and a
			// leader elected later extends every lease; see the package doc.
			if !leaderless {
				v.lg.Warn("[vip] etcd has no leader that can commit, as a majority of its members show: keeping the VIP")
				leaderless = true
			}
			if d := start.Add(HoldFor); d.After(deadline) {
				deadline = d
			}
			v.renew(deadline)
			lapse.Reset(time.Until(deadline))
		case r := <-results:
			inflight--
			if time.Now().After(deadline) {
				return fmt.Errorf("no keepalive acknowledged for one sent in the last %s", HoldFor)
			}
			switch {
			case r.err == nil:
				// Acknowledgements may come out of order: the latest send counts.
				if d := r.sent.Add(HoldFor); d.After(deadline) {
					deadline = d
				}
				if leaderless {
					v.lg.Info("[vip] etcd has a leader again")
					leaderless = false
				}
				if r.acked.Sub(r.sent) <= MaxAckDelay {
					v.renew(deadline)
				}
			case errors.Is(r.err, rpctypes.ErrLeaseNotFound):
				return fmt.Errorf("lease lost: %w", r.err)
			case !failing:
				// The first of a streak says why; the deadline's end says the rest.
				v.lg.Info("[vip] keepalive failed; holding until the deadline", "err", r.err, "deadline_in", time.Until(deadline).Round(time.Millisecond))
			}
			failing = r.err != nil
			lapse.Reset(time.Until(deadline))
		}
	}
}

// keepAlive renews the lease once. Its send time is what a deadline counts from.
func (v *VIP) keepAlive(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID) kaResult {
	r := kaResult{sent: time.Now()}
	kctx, cancel := context.WithTimeout(ctx, HoldFor)
	_, r.err = cli.KeepAliveOnce(kctx, id)
	cancel()
	r.acked = time.Now()
	return r
}

// leaderless is the holder's proof that nobody can take the VIP (see the package doc):
// a majority of the members either refuse the connection (their process is down), or
// answer that they have no leader, or that their leader is one of the members that
// refuse, or, with a majority answering, one that does not answer at all; and none
// names a leader that answers. A member that does not answer is no proof by itself:
// the holder may be the one cut off.
func (v *VIP) leaderless(ctx context.Context, cli *clientv3.Client) bool {
	answers := make([]answer, len(v.cfg.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range v.cfg.Endpoints {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, keepAliveTimeout)
			defer cancel()
			u, err := url.Parse(ep)
			if err != nil {
				return
			}
			var d net.Dialer
			c, err := d.DialContext(pctx, "tcp", u.Host)
			if errors.Is(err, syscall.ECONNREFUSED) {
				answers[i].refused = true
				return
			}
			if err != nil {
				return
			}
			c.Close()
			st, err := v.members[i].Status(pctx, &pb.StatusRequest{})
			if err != nil && pctx.Err() == nil {
				// Its own connection is down or waiting to reconnect (a member that has
				// just come back): ask over a new one.
				if s, nerr := cli.Status(pctx, ep); nerr == nil {
					st, err = (*pb.StatusResponse)(s), nil
				}
			}
			if err == nil && st.Header != nil {
				answers[i].id, answers[i].leader = st.Header.MemberId, st.Leader
			}
		})
	}
	wg.Wait()
	v.mu.Lock()
	defer v.mu.Unlock()
	return provesLeaderless(v.cfg.Endpoints, answers, v.memberIDs)
}

// answer is one member's reply to the quorum probe.
type answer struct {
	// refused: the connection was refused, so the member's process is down.
	refused bool
	// id is the member's ID, leader the leader it names; id is 0 if it did not answer.
	id, leader uint64
}

// provesLeaderless decides the quorum probe: answers[i] is endpoints[i]'s, and ids maps
// endpoints to member IDs, learnt earlier; it records the IDs of this probe's answers.
// A member's leader counts as gone when its process refuses connections, or, while a
// majority of the members answer, when it does not answer: its ID must be known
// either way, or the member naming it vetoes.
func provesLeaderless(endpoints []string, answers []answer, ids map[string]uint64) bool {
	down, silent := map[uint64]bool{}, map[uint64]bool{}
	answered := 0
	for i, a := range answers {
		if a.id != 0 {
			ids[endpoints[i]] = a.id
			answered++
			continue
		}
		if id := ids[endpoints[i]]; id != 0 {
			if a.refused {
				down[id] = true
			} else {
				silent[id] = true
			}
		}
	}
	majority := len(endpoints)/2 + 1
	proof := 0
	for _, a := range answers {
		switch {
		case a.refused:
			proof++
		case a.id == 0:
		case a.leader == 0 || down[a.leader]:
			proof++
		case silent[a.leader] && answered >= majority:
			proof++
		default:
			return false
		}
	}
	return proof >= majority
}

// learnMembers records each endpoint's member ID while etcd is healthy, so that a
// later proof of a leaderless etcd can tell that a member's leader is one of the
// members that are down.
func (v *VIP) learnMembers(ctx context.Context) {
	for ctx.Err() == nil {
		missing := 0
		for i, ep := range v.cfg.Endpoints {
			v.mu.Lock()
			known := v.memberIDs[ep] != 0
			v.mu.Unlock()
			if known {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := v.members[i].Status(pctx, &pb.StatusRequest{})
			cancel()
			if err != nil || st.Header == nil {
				missing++
				continue
			}
			v.mu.Lock()
			v.memberIDs[ep] = st.Header.MemberId
			v.mu.Unlock()
		}
		if missing == 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// errLate is a take or renew that came after the holder's deadline: the process was
// paused between its check and the change.
var errLate = errors.New("past the holder's deadline")

// take adds the VIP after a win and announces it, unless deadline has passed.
func (v *VIP) take(deadline time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if time.Now().After(deadline) {
		return fmt.Errorf("take the VIP: %w", errLate)
	}
	if err := v.host.put(); err != nil {
		return err
	}
	now := time.Now()
	v.holding, v.holder, v.since = true, v.cfg.Name, now
	v.takeovers++
	v.lastErr = ""
	if m := v.cfg.Metrics; m != nil {
		m.holding.Set(1)
		m.since.Set(float64(now.UnixNano()) / 1e9)
		m.takeovers.Inc()
	}
	stop := make(chan struct{})
	v.garpStop = stop
	h := v.host
	go func() {
		if err := h.announce(stop); err != nil {
			v.lg.Warn("[vip] announce", "err", err)
		}
	}()
	v.lg.Info("[vip] took the VIP", "interface", v.cfg.Interface, "takeovers", v.takeovers)
	return nil
}

// renew extends the kernel lifetime of the held VIP (and adds it back, should
// something have removed it), unless deadline has passed: checked again right before
// the change, so that only a pause of microseconds could slip between.
func (v *VIP) renew(deadline time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.holding || time.Now().After(deadline) {
		return
	}
	if err := v.host.put(); err != nil {
		v.lg.Warn("[vip] renew the address's lifetime", "err", err)
	}
}

// drop removes the VIP if this host holds it.
func (v *VIP) drop(why string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.holding {
		return
	}
	if v.garpStop != nil {
		close(v.garpStop)
		v.garpStop = nil
	}
	err := v.host.del()
	v.holding = false
	if v.holder == v.cfg.Name {
		v.holder, v.since = "", time.Time{}
	}
	if m := v.cfg.Metrics; m != nil {
		m.holding.Set(0)
		m.since.Set(0)
	}
	if err != nil {
		v.lg.Error("[vip] drop the VIP", "why", why, "err", err)
		return
	}
	v.lg.Info("[vip] dropped the VIP", "why", why)
}

func (v *VIP) setRetryAt(at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.retryAt = at
}

func (v *VIP) setErr(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		v.lastErr = err.Error()
	}
}

// observe follows who holds the VIP, for Status and the log: on every change of the
// election's keys, and once a second besides, so that a lookup that failed (etcd busy or
// electing when this lb started) is not left standing until the next change.
func (v *VIP) observe(ctx context.Context, cli *clientv3.Client) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ctx.Err() == nil {
		wch := cli.Watch(clientv3.WithRequireLeader(ctx), v.prefix, clientv3.WithPrefix())
		v.refreshHolder(ctx, cli)
	watch:
		for {
			select {
			case _, ok := <-wch:
				if !ok {
					break watch
				}
			case <-t.C:
			}
			v.refreshHolder(ctx, cli)
		}
		select {
		case <-ctx.Done():
		case <-time.After(retryEvery):
		}
	}
}

func (v *VIP) refreshHolder(ctx context.Context, cli *clientv3.Client) {
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	_, holder, err := v.leaderLease(gctx, cli)
	cancel()
	if err != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if holder == v.holder || (v.holding && holder != v.cfg.Name) {
		// While this host holds the VIP, only its own term decides.
		return
	}
	v.holder = holder
	v.since = time.Now()
	if holder == "" {
		v.since = time.Time{}
	}
	v.lg.Info("[vip] holder changed", "holder", holder)
}
