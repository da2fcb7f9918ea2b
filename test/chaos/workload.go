package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WorkloadConfig says what the clients do.
type WorkloadConfig struct {
	// NewClient makes a client (one connection through the front end under test); it
	// is called again to reconnect.
	NewClient func() (*clientv3.Client, error)
	// Clients is how many clients run at once, each one operation at a time.
	Clients int
	// Keys is how many registers they share; few keys make clients collide, which is
	// what exposes a stale read.
	Keys int
	// OpTimeout bounds one operation; a write not answered by then has an unknown
	// outcome.
	OpTimeout time.Duration
	// Prefix is put before every key, so that runs never share registers.
	Prefix string
}

// Workload is clients running operations and recording them.
type Workload struct {
	cfg   WorkloadConfig
	start time.Time

	mu      sync.Mutex // guards the fields below
	history []Op
	nextID  int
	errs    map[string]int
}

// NewWorkload prepares a workload; Run starts it. Its clock starts now: the
// history's times and Elapsed count from here.
func NewWorkload(cfg WorkloadConfig) *Workload {
	return &Workload{cfg: cfg, start: time.Now(), errs: map[string]int{}}
}

// Elapsed is the time on the history's clock, to place faults on it.
func (w *Workload) Elapsed() time.Duration { return time.Since(w.start) }

// Run runs the clients until ctx ends and waits for their last operations.
func (w *Workload) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range w.cfg.Clients {
		wg.Go(func() { w.client(ctx, i) })
	}
	wg.Wait()
}

// History returns the operations recorded so far.
func (w *Workload) History() []Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Op(nil), w.history...)
}

// Errors counts the failed operations by error text, for the report.
func (w *Workload) Errors() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.errs {
		out[k] = v
	}
	return out
}

// newClientID gives every client a fresh ID at start and after each unknown outcome:
// porcupine's visualization draws one row per ID, and an open-ended operation would
// otherwise overlap the same client's next ones.
func (w *Workload) newClientID() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.nextID
	w.nextID++
	return id
}

func (w *Workload) record(op Op, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.history = append(w.history, op)
	if err != nil {
		w.errs[errText(err)]++
	}
}

func (w *Workload) countErr(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs[errText(err)]++
}

func errText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline exceeded"
	}
	s := err.Error()
	if len(s) > 160 {
		s = s[:160]
	}
	return s
}

// reconnectAfter is how many failed operations in a row make a client drop its
// connection and dial again through the front end, as a gRPC keepalive would, only
// sooner (grpc-go allows no keepalive under 10 s).
const reconnectAfter = 2

// errorPause is the pause after a failed operation. Errors that come back at once (no
// leader) would otherwise turn into thousands of open-ended writes, each of which the
// checker must try at every later point.
const errorPause = 100 * time.Millisecond

func (w *Workload) client(ctx context.Context, n int) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(n)))
	id := w.newClientID()
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			cli.Close()
		}
	}()
	failures, seq := 0, 0
	last := map[string]string{} // the last value this client read or wrote, per key
	for ctx.Err() == nil {
		if cli == nil || failures >= reconnectAfter {
			if cli != nil {
				cli.Close()
			}
			var err error
			if cli, err = w.cfg.NewClient(); err != nil {
				w.countErr(fmt.Errorf("new client: %w", err))
				cli = nil
				pause(ctx, errorPause)
				continue
			}
			failures = 0
		}
		key := fmt.Sprintf("%sk%d", w.cfg.Prefix, rng.IntN(w.cfg.Keys))
		in := Input{Kind: Get, Key: key}
		switch r := rng.IntN(10); {
		case r < 4:
		case r < 8 || last[key] == "":
			seq++
			in = Input{Kind: Put, Key: key, Value: fmt.Sprintf("c%d-%d", n, seq)}
		default:
			seq++
			in = Input{Kind: CAS, Key: key, Value: fmt.Sprintf("c%d-%d", n, seq), Expect: last[key]}
		}
		op, err := w.do(cli, id, in)
		if err != nil {
			failures++
			if op.Output.Unknown {
				w.record(op, err)
				id = w.newClientID()
			} else {
				w.countErr(err)
			}
			pause(ctx, errorPause)
			continue
		}
		failures = 0
		w.record(op, nil)
		switch {
		case in.Kind == Get:
			last[key] = op.Output.Value
		case in.Kind == Put || op.Output.Swapped:
			last[key] = in.Value
		}
	}
}

// do runs one operation. On an error, a read is simply not recorded (it changed
// nothing), a write is recorded with an unknown outcome unless etcd refused it before
// taking it in (no leader), and Output.Unknown says which.
func (w *Workload) do(cli *clientv3.Client, id int, in Input) (Op, error) {
	// The operation's own deadline, not the run's: a run that ends mid-operation must
	// not turn a write that would have been answered into an unknown one needlessly.
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.OpTimeout)
	defer cancel()
	op := Op{Client: id, Input: in, Call: time.Since(w.start)}
	var err error
	switch in.Kind {
	case Get:
		var resp *clientv3.GetResponse
		if resp, err = cli.Get(ctx, in.Key); err == nil && len(resp.Kvs) > 0 {
			op.Output.Value = string(resp.Kvs[0].Value)
		}
	case Put:
		_, err = cli.Put(ctx, in.Key, in.Value)
	case CAS:
		var resp *clientv3.TxnResponse
		resp, err = cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Value(in.Key), "=", in.Expect)).
			Then(clientv3.OpPut(in.Key, in.Value)).Commit()
		if err == nil {
			op.Output.Swapped = resp.Succeeded
		}
	}
	op.Return = time.Since(w.start)
	if err != nil {
		// etcd answers "no leader" from its gRPC interceptor, before the request
		// reaches raft: that write certainly did not happen.
		op.Output.Unknown = in.Kind != Get && !errors.Is(err, rpctypes.ErrNoLeader)
		return op, fmt.Errorf("%s: %w", in.Kind, err)
	}
	return op, nil
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
