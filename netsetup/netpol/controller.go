package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/knftables"
)

// User is the identity the minions' policy controllers read the API as (the
// network-policy add-on lets it list and watch pods, namespaces and NetworkPolicies,
// nothing else).
const User = "system:haagent:network-policy"

// settle is how long the controller waits after a change for the ones that come with
// it (a Deployment's pods) before it writes the table.
const settle = 200 * time.Millisecond

// Config is what the controller needs.
type Config struct {
	// Kubeconfig is the controller's own kubeconfig (User).
	Kubeconfig string
	// Node is this node's name.
	Node   string
	Logger *slog.Logger
}

// Controller keeps the node's table in step with the API.
type Controller struct {
	cfg Config
	lg  *slog.Logger
	nft knftables.Interface

	mu sync.Mutex // guards the field below
	st Status
}

// Status is the controller's last pass, for `haagent status`.
type Status struct {
	// Synced is whether the controller has read the API's pods, namespaces and policies.
	Synced bool `json:"synced"`
	// IsolatedPods are the local pods a policy isolates.
	IsolatedPods int       `json:"isolatedPods"`
	Written      time.Time `json:"written,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
}

// Status returns the controller's last pass.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

func (c *Controller) setStatus(f func(*Status)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.st)
}

// New prepares a controller; it fails when nftables can't be used here.
func New(cfg Config) (*Controller, error) {
	nft, err := knftables.New(knftables.InetFamily, Table, knftables.EmulateDestroy)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Controller{cfg: cfg, lg: cfg.Logger.With("part", "netpol"), nft: nft}, nil
}

// Remove deletes the table, for a node where policies are turned off.
func Remove(ctx context.Context) error {
	nft, err := knftables.New(knftables.InetFamily, Table, knftables.EmulateDestroy)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tx := nft.NewTransaction()
	tx.Destroy(&knftables.Table{})
	return nft.Run(ctx, tx)
}

// Run watches the API and rewrites the table after each change, until ctx ends. The
// table stays when it returns: a restarting agent leaves the pods as isolated as they
// were.
func (c *Controller) Run(ctx context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("netpol: kubeconfig %s: %w", c.cfg.Kubeconfig, err)
	}
	rc.UserAgent = "haagent-netpol"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("netpol: %w", err)
	}
	f := informers.NewSharedInformerFactory(cs, 0)
	pods, nss, pols := f.Core().V1().Pods(), f.Core().V1().Namespaces(), f.Networking().V1().NetworkPolicies()
	changed := make(chan struct{}, 1)
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify(changed) },
		UpdateFunc: func(any, any) { notify(changed) },
		DeleteFunc: func(any) { notify(changed) },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), pols.Informer()} {
		if _, err := inf.AddEventHandler(kick); err != nil {
			return fmt.Errorf("netpol: %w", err)
		}
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	c.lg.Info("[netpol] waiting for the API's pods, namespaces and NetworkPolicies")
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("netpol: %v never synced", typ)
		}
	}
	c.setStatus(func(st *Status) { st.Synced = true })
	notify(changed)
	var last string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(settle):
		}
		in := Input{Node: c.cfg.Node}
		var err error
		if in.Pods, err = pods.Lister().List(labels.Everything()); err == nil {
			if in.Namespaces, err = nss.Lister().List(labels.Everything()); err == nil {
				in.Policies, err = pols.Lister().List(labels.Everything())
			}
		}
		if err != nil {
			return fmt.Errorf("netpol: list: %w", err)
		}
		rules := Compute(in)
		tx := c.nft.NewTransaction()
		Fill(tx, rules)
		if s := tx.String(); s != last {
			if err := c.nft.Run(ctx, tx); err != nil {
				c.lg.Error("[netpol] write the nftables table", "err", err)
				c.setStatus(func(st *Status) { st.LastError = err.Error() })
				notifyLater(ctx, changed, 5*time.Second)
				continue
			}
			last = s
			c.setStatus(func(st *Status) { st.IsolatedPods, st.Written, st.LastError = len(rules), time.Now().UTC(), "" })
			c.lg.Info("[netpol] table written", "isolated pods", len(rules))
		}
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func notifyLater(ctx context.Context, ch chan struct{}, d time.Duration) {
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(d):
			notify(ch)
		}
	}()
}
