// Package probe drives etcd as a client would, for the lb tests and benchmark: clients
// that dial through a custom dialer (e.g. from inside a test network namespace), a
// continuous writer that measures the longest time without an acknowledged write,
// a closed-loop load generator, and leader placement.
package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/haagent/haagent/test/framework/await"
)

// DialFunc opens a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer says how a client reaches etcd.
type Dialer struct {
	// Dial opens the connections; nil dials from this process's network namespace.
	Dial DialFunc
	// TLS is the client's TLS config for https endpoints (CA and client certificate);
	// nil for plain http.
	TLS *tls.Config
	// KeepAliveTime and KeepAliveTimeout are the client's gRPC keepalive
	// (clientv3.Config DialKeepAliveTime and DialKeepAliveTimeout); zero sends none.
	// grpc-go raises a time under 10 s to 10 s.
	KeepAliveTime, KeepAliveTimeout time.Duration
}

// Client makes an etcd v3 client for the endpoints (host:port, http:// or https://).
// It never syncs its endpoint list from the cluster, so an lb endpoint stays the
// only one.
func (d Dialer) Client(endpoints ...string) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop(), TLS: d.TLS,
		DialKeepAliveTime: d.KeepAliveTime, DialKeepAliveTimeout: d.KeepAliveTimeout}
	if d.Dial != nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.Dial(ctx, "tcp", addr)
		})}
	}
	return clientv3.New(cfg)
}

// ClientTLS loads a client TLS config from PEM files: the CA that signed the servers'
// certificates, and the client's certificate and key.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	var pems [3][]byte
	for i, f := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pems[i] = b
	}
	tc, err := ClientTLSFromPEM(pems[0], pems[1], pems[2])
	if err != nil {
		return nil, fmt.Errorf("%s, %s, %s: %w", caFile, certFile, keyFile, err)
	}
	return tc, nil
}

// ClientTLSFromPEM is ClientTLS from the files' contents.
func ClientTLSFromPEM(ca, cert, key []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("the CA holds no PEM certificate")
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// AnsweredBy opens a new connection to endpoint (through cli's dialer) and returns the
// member ID that answers a Status call on it: behind an lb, the master it picked.
func AnsweredBy(ctx context.Context, cli *clientv3.Client, endpoint string) (uint64, error) {
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return 0, err
	}
	return st.Header.MemberId, nil
}

// Members maps each endpoint to its member ID and returns the leader's member ID as
// all of them see it; it fails unless they agree.
func Members(ctx context.Context, cli *clientv3.Client, endpoints []string) (map[string]uint64, uint64, error) {
	ids := map[string]uint64{}
	var lead uint64
	for _, ep := range endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			return nil, 0, fmt.Errorf("status of %s: %w", ep, err)
		}
		if st.Leader == 0 || (lead != 0 && st.Leader != lead) {
			return nil, 0, fmt.Errorf("no agreed leader: %s says %x, others %x", ep, st.Leader, lead)
		}
		lead = st.Leader
		ids[ep] = st.Header.MemberId
	}
	return ids, lead, nil
}

// MoveLeader makes the member at endpoint target the leader (endpoints lists every
// member's endpoint), retrying for up to timeout, and returns once all of them agree.
func MoveLeader(ctx context.Context, d Dialer, endpoints []string, target string, timeout time.Duration) error {
	cli, err := d.Client(endpoints...)
	if err != nil {
		return err
	}
	defer cli.Close()
	return await.Until(ctx, "the etcd leader to move to "+target, timeout, func() error {
		return moveLeaderOnce(ctx, cli, d, endpoints, target)
	}, await.Every(100*time.Millisecond))
}

func moveLeaderOnce(ctx context.Context, cli *clientv3.Client, d Dialer, endpoints []string, target string) error {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ids, lead, err := Members(sctx, cli, endpoints)
	if err != nil {
		return err
	}
	want := ids[target]
	if lead == want {
		return nil
	}
	var leaderEP string
	for ep, id := range ids {
		if id == lead {
			leaderEP = ep
		}
	}
	if leaderEP == "" {
		return fmt.Errorf("leader %x is not among %v", lead, endpoints)
	}
	lc, err := d.Client(leaderEP)
	if err != nil {
		return err
	}
	defer lc.Close()
	if _, err := lc.MoveLeader(sctx, want); err != nil {
		return fmt.Errorf("move leader from %s: %w", leaderEP, err)
	}
	_, lead, err = Members(sctx, cli, endpoints)
	if err != nil {
		return err
	}
	if lead != want {
		return fmt.Errorf("leader is %x, not %x yet", lead, want)
	}
	return nil
}

// WriterConfig says how a Writer writes.
type WriterConfig struct {
	// NewClient makes the writer's client; it is called again to reconnect.
	NewClient func() (*clientv3.Client, error)
	// Key is the key written; the value is a counter.
	Key string
	// Timeout bounds one put (default 250 ms).
	Timeout time.Duration
	// Interval is the time between the starts of two puts (default 20 ms). A put
	// starts on every tick while fewer than Timeout/Interval+1 are in flight, so that
	// a stall is measured to about Interval, not to Timeout.
	Interval time.Duration
	// ReconnectAfter, when positive, closes the client and makes a new one (a new
	// connection) after this long without an acknowledged write, as a gRPC keepalive
	// would, only faster: grpc-go allows no keepalive under 10 s.
	ReconnectAfter time.Duration
	// Trace records every put's outcome and the client connection's gRPC states,
	// for Timeline.
	Trace bool
}

// traceEvent is one traced put or gRPC state change.
type traceEvent struct {
	at, sent time.Time // sent: the put's start; zero for a state change
	what     string
}

// Writer puts continuously on one client (one connection) and records when each put
// was acknowledged.
type Writer struct {
	cfg    WriterConfig
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex // guards the fields below
	acks       []time.Time
	fails      int
	reconnects int
	lastErr    error
	trace      []traceEvent
}

// StartWriter starts writing until Stop or ctx ends.
func StartWriter(ctx context.Context, cfg WriterConfig) *Writer {
	if cfg.Timeout == 0 {
		cfg.Timeout = 250 * time.Millisecond
	}
	if cfg.Interval == 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Writer{cfg: cfg, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	return w
}

func (w *Writer) run(ctx context.Context) {
	defer close(w.done)
	var (
		cli    *clientv3.Client
		puts   sync.WaitGroup
		dialed time.Time
		n      int
	)
	defer func() {
		puts.Wait()
		if cli != nil {
			cli.Close()
		}
	}()
	slots := make(chan struct{}, int(w.cfg.Timeout/w.cfg.Interval)+1)
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		progress := started
		w.mu.Lock()
		if len(w.acks) > 0 && w.acks[len(w.acks)-1].After(progress) {
			progress = w.acks[len(w.acks)-1]
		}
		w.mu.Unlock()
		stalled := w.cfg.ReconnectAfter > 0 && time.Since(progress) >= w.cfg.ReconnectAfter &&
			time.Since(dialed) >= w.cfg.ReconnectAfter
		if cli == nil || stalled {
			if cli != nil {
				cli.Close() // its puts in flight fail
				w.mu.Lock()
				w.reconnects++
				w.mu.Unlock()
			}
			var err error
			cli, err = w.cfg.NewClient()
			dialed = time.Now()
			if err != nil {
				cli = nil
				w.fail(err)
				continue
			}
			if w.cfg.Trace {
				go w.traceStates(ctx, cli)
			}
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // as many puts in flight as can be
		}
		n++
		puts.Add(1)
		go func(c *clientv3.Client, n int) {
			defer func() { <-slots; puts.Done() }()
			pctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
			sent := time.Now()
			_, err := c.Put(pctx, w.cfg.Key, strconv.Itoa(n))
			cancel()
			if w.cfg.Trace && ctx.Err() == nil {
				what := "ok"
				if err != nil {
					what = "failed: " + err.Error()
				}
				w.record(traceEvent{at: time.Now(), sent: sent, what: what})
			}
			switch {
			case err == nil:
				w.mu.Lock()
				w.acks = append(w.acks, time.Now()) // under the lock: acks stay sorted
				w.mu.Unlock()
			case ctx.Err() == nil:
				w.fail(err)
			}
		}(cli, n)
	}
}

// traceStates records the gRPC connectivity states of cli's connection until cli
// closes or ctx ends.
func (w *Writer) traceStates(ctx context.Context, cli *clientv3.Client) {
	conn := cli.ActiveConnection()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-cli.Ctx().Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		st := conn.GetState()
		w.record(traceEvent{at: time.Now(), what: "grpc " + st.String()})
		if !conn.WaitForStateChange(ctx, st) {
			return
		}
	}
}

func (w *Writer) record(e traceEvent) {
	w.mu.Lock()
	w.trace = append(w.trace, e)
	w.mu.Unlock()
}

// Timeline renders the traced events between from and to, with times in seconds
// relative to zero; runs of puts with the same outcome are one line.
func (w *Writer) Timeline(zero, from, to time.Time) string {
	w.mu.Lock()
	evs := slices.Clone(w.trace)
	w.mu.Unlock()
	slices.SortStableFunc(evs, func(a, b traceEvent) int { return a.at.Compare(b.at) })
	rel := func(t time.Time) string { return fmt.Sprintf("%+.3f", t.Sub(zero).Seconds()) }
	var b strings.Builder
	for i := 0; i < len(evs); i++ {
		e := evs[i]
		if e.at.Before(from) || e.at.After(to) {
			continue
		}
		if e.sent.IsZero() {
			fmt.Fprintf(&b, "  %s %s\n", rel(e.at), e.what)
			continue
		}
		j := i
		for j+1 < len(evs) && !evs[j+1].sent.IsZero() && evs[j+1].what == e.what && !evs[j+1].at.After(to) {
			j++
		}
		fmt.Fprintf(&b, "  %s..%s %d put(s) %s (sent %s..%s)\n", rel(e.at), rel(evs[j].at), j-i+1, e.what, rel(e.sent), rel(evs[j].sent))
		i = j
	}
	return b.String()
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	w.fails++
	w.lastErr = err
	w.mu.Unlock()
}

// Stop stops writing and waits for the writer to finish.
func (w *Writer) Stop() {
	w.cancel()
	<-w.done
}

// Stats are the writer's counters so far.
func (w *Writer) Stats() (acks, fails, reconnects int, lastErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks), w.fails, w.reconnects, w.lastErr
}

// AwaitAcks waits up to timeout until n more writes than now have been acknowledged.
func (w *Writer) AwaitAcks(ctx context.Context, n int, timeout time.Duration) error {
	start, _, _, _ := w.Stats()
	return await.Until(ctx, fmt.Sprintf("%d acknowledged writes of %s", n, w.cfg.Key), timeout, func() error {
		select {
		case <-w.done:
			return await.Stop(errors.New("the writer stopped"))
		default:
		}
		acks, _, _, lastErr := w.Stats()
		if acks < start+n {
			return fmt.Errorf("%d of %d writes acknowledged (last error: %v)", acks-start, n, lastErr)
		}
		return nil
	}, await.Every(20*time.Millisecond))
}

// Gap is the outcome of AwaitRecovery.
type Gap struct {
	// Longest is the longest time without an acknowledged write after the fault,
	// counted from the last ack before it.
	Longest time.Duration
	// Recovered is false when writes were not steady again before the deadline; then
	// Longest is a lower bound.
	Recovered bool
}

// Recovery says when AwaitRecovery may stop.
type Recovery struct {
	// Steady is how long writes must go on after the last stall (default 1 s).
	Steady time.Duration
	// Stall is the shortest time without an ack that counts as a stall (default 500 ms).
	Stall time.Duration
	// Max bounds the wait after the fault (default 30 s).
	Max time.Duration
}

// AwaitRecovery waits after a fault at time fault until writes have been steady
// again, and returns the longest gap.
func (w *Writer) AwaitRecovery(fault time.Time, r Recovery) Gap {
	if r.Steady == 0 {
		r.Steady = time.Second
	}
	if r.Stall == 0 {
		r.Stall = 500 * time.Millisecond
	}
	if r.Max == 0 {
		r.Max = 30 * time.Second
	}
	var g Gap
	err := await.Until(context.Background(), "writes steady again after the fault", r.Max-time.Since(fault), func() error {
		now := time.Now()
		longest, lastStallEnd, open := w.gaps(fault, now, r.Stall)
		g = Gap{Longest: max(longest, open)}
		if open < r.Stall && now.Sub(lastStallEnd) >= r.Steady && now.Sub(fault) >= r.Steady {
			g = Gap{Longest: longest, Recovered: true}
			return nil
		}
		return fmt.Errorf("longest gap so far %s", g.Longest)
	}, await.Every(20*time.Millisecond))
	if err != nil {
		g.Recovered = false
	}
	return g
}

// gaps returns, over the acks around the fault up to now: the longest closed gap
// (between the last ack before the fault, or the fault, and the acks after it), the
// time the last gap of at least stall ended (the fault if none), and the open gap
// since the last ack.
func (w *Writer) gaps(fault, now time.Time, stall time.Duration) (longest time.Duration, lastStallEnd time.Time, open time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearchFunc(w.acks, fault, func(a, t time.Time) int { return a.Compare(t) })
	prev := fault
	if i > 0 {
		prev = w.acks[i-1]
	}
	lastStallEnd = fault
	for _, a := range w.acks[i:] {
		if g := a.Sub(prev); g > longest {
			longest = g
		}
		if a.Sub(prev) >= stall {
			lastStallEnd = a
		}
		prev = a
	}
	open = now.Sub(prev)
	if open >= stall {
		lastStallEnd = now
	}
	return longest, lastStallEnd, open
}

// LoadResult is what a Load run measured.
type LoadResult struct {
	Puts, Errors int
	Duration     time.Duration
	P50, P99     time.Duration
}

// PerSecond is the acknowledged puts per second.
func (r LoadResult) PerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Puts) / r.Duration.Seconds()
}

// Load runs clients concurrent writers, each with its own client (connection) and one
// put at a time, once each has had one put acknowledged: for warmup uncounted, then
// for d, measuring every acknowledged put's latency.
func Load(ctx context.Context, newClient func() (*clientv3.Client, error), clients int, warmup, d time.Duration) (LoadResult, error) {
	w, err := StartWriters(ctx, newClient, clients)
	if err != nil {
		return LoadResult{}, err
	}
	start := time.Now().Add(warmup)
	end := start.Add(d)
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
	}
	w.Stop()
	return w.Window(start, end), ctx.Err()
}

// Writers is a closed-loop load that runs until stopped: concurrent writers, each with
// its own client (connection) and one put at a time, that record when each put started,
// how long it took and whether it failed, so that the run can be cut into windows
// afterwards (a benchmark that changes the cluster between windows keeps its clients).
type Writers struct {
	clis    []*clientv3.Client
	stop    context.CancelFunc
	wg      sync.WaitGroup
	stopped sync.Once
	puts    [][]put // per writer; read only after Stop
}

type put struct {
	start  time.Time
	lat    time.Duration
	failed bool
}

// StartWriters makes clients clients, has one put of each acknowledged, then starts them
// writing, each to its own key.
func StartWriters(ctx context.Context, newClient func() (*clientv3.Client, error), clients int) (*Writers, error) {
	w := &Writers{puts: make([][]put, clients)}
	value := string(make([]byte, 128))
	for i := range clients {
		c, err := newClient()
		if err != nil {
			w.closeClients()
			return nil, err
		}
		w.clis = append(w.clis, c)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = c.Put(wctx, fmt.Sprintf("load/%d", i), value)
		cancel()
		if err != nil {
			w.closeClients()
			return nil, fmt.Errorf("warm-up put of client %d: %w", i, err)
		}
	}
	ctx, w.stop = context.WithCancel(ctx)
	for i, c := range w.clis {
		w.wg.Go(func() {
			key := fmt.Sprintf("load/%d", i)
			for ctx.Err() == nil {
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				t0 := time.Now()
				_, err := c.Put(pctx, key, value)
				cancel()
				if ctx.Err() != nil {
					return // cut short by Stop: neither a put nor a failure
				}
				w.puts[i] = append(w.puts[i], put{start: t0, lat: time.Since(t0), failed: err != nil})
			}
		})
	}
	return w, nil
}

// Stop ends the writers, waits for them and closes their clients; a second call does
// nothing.
func (w *Writers) Stop() {
	w.stopped.Do(func() {
		w.stop()
		w.wg.Wait()
		w.closeClients()
	})
}

func (w *Writers) closeClients() {
	for _, c := range w.clis {
		c.Close()
	}
}

// Window is what the puts that started in [start, end) measured, over end-start. Call
// it after Stop.
func (w *Writers) Window(start, end time.Time) LoadResult {
	r := LoadResult{Duration: end.Sub(start)}
	var all []time.Duration
	for _, ps := range w.puts {
		for _, p := range ps {
			switch {
			case p.start.Before(start) || !p.start.Before(end):
			case p.failed:
				r.Errors++
			default:
				all = append(all, p.lat)
			}
		}
	}
	r.Puts = len(all)
	slices.Sort(all)
	if len(all) > 0 {
		r.P50 = all[len(all)*50/100]
		r.P99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return r
}
