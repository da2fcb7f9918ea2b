package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/trust/join"
	"github.com/haagent/haagent/trust/pki"
)

const (
	// RenewCheckEvery is how often the certificates are checked against their renewal
	// time, 2/3 of their lifetime: an hour is nothing against a lifetime of a year.
	RenewCheckEvery = time.Hour
	// ObtainTimeout bounds the wait for a join service (the first master's own CA
	// comes after one round of asking the others).
	ObtainTimeout = 5 * time.Minute
	// waitLogEvery paces the warnings while a join service does not answer.
	waitLogEvery = 10 * time.Second
	// TrustCheckEvery is how often a node asks a join service what the cluster trusts
	// (Credentials.Stale), so that it follows a CA rotation within about that.
	TrustCheckEvery = 15 * time.Second
)

// Credentials says how a role gets its certificates; EnsureCredentials and
// RenewCredentials do the rest, the same way for every role.
type Credentials struct {
	// Need are files, relative to the root, that a node holding its credentials has:
	// one missing means getting them all again.
	Need []string
	// Get makes one attempt at the node's files: from a join service (JoinVia), or
	// issued from the CA a master holds. A refused token or a CA that fails the
	// token's pin is final; anything else is tried again.
	Get func(ctx context.Context) ([]files.File, error)
	// Hint ends the error once ObtainTimeout has passed: what the operator can do.
	Hint string
	// Stale, checked every TrustCheckEvery, says why the node must renew now although no
	// certificate is due ("" when it need not): the cluster's CA rotates (TrustChanged).
	// Nil for a master, which follows the rotation in etcd.
	Stale func(ctx context.Context) string
	// Outdated, if set, says why the node's files must be got again although none is
	// missing or due ("" when they needn't): an lb's certificate from before lb names
	// were bound.
	Outdated func() string
}

// EnsureCredentials gets the node's files when one is missing or a certificate is due,
// trying again with backoff for up to ObtainTimeout, and writes them under the root. It
// returns the paths it changed: none when nothing was due.
func (n *Node) EnsureCredentials(ctx context.Context, c Credentials) ([]string, error) {
	why := n.credentialsDue(c.Need, time.Now())
	if why == "" && c.Outdated != nil {
		why = c.Outdated()
	}
	if why == "" {
		return nil, nil
	}
	return n.obtain(ctx, c, why)
}

// obtain gets the node's files for the reason why, as EnsureCredentials says.
func (n *Node) obtain(ctx context.Context, c Credentials, why string) ([]string, error) {
	n.lg.Info("[certificates] getting this node's certificates", "why", why)
	var lastWarn time.Time
	fs, err := backoff.Retry(ctx, func() ([]files.File, error) {
		fs, err := c.Get(ctx)
		if errors.Is(err, join.ErrForbidden) || errors.Is(err, pki.ErrCAMismatch) {
			return nil, backoff.Permanent(err)
		}
		return fs, err
	},
		backoff.WithBackOff(&backoff.ExponentialBackOff{
			InitialInterval: 500 * time.Millisecond, RandomizationFactor: 0.2, Multiplier: 1.5, MaxInterval: 2 * time.Second,
		}),
		backoff.WithMaxElapsedTime(ObtainTimeout),
		backoff.WithNotify(func(err error, next time.Duration) {
			if time.Since(lastWarn) >= waitLogEvery {
				n.lg.Warn("[certificates] waiting for a join service", "err", err)
				lastWarn = time.Now()
			}
		}))
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, join.ErrForbidden) || errors.Is(err, pki.ErrCAMismatch):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("no certificates within %s: %w%s", ObtainTimeout, err, c.Hint)
	}
	changed, err := WriteCredentials(n.cfg.Root, fs)
	if err != nil {
		return nil, err
	}
	n.lg.Info("[certificates] wrote this node's certificates", "changed", len(changed), "dir", filepath.Join(n.cfg.Root, pki.Dir))
	return changed, nil
}

// credentialsDue says why the node needs its files again, or "" when it holds current ones.
func (n *Node) credentialsDue(need []string, now time.Time) string {
	for _, f := range need {
		if _, err := os.Stat(filepath.Join(n.cfg.Root, f)); err != nil {
			return "missing /" + f
		}
	}
	due, err := pki.DueForRenewal(n.cfg.Root, now)
	switch {
	case err != nil:
		return "unreadable: " + err.Error()
	case len(due) > 0:
		return "due for renewal at 2/3 of their lifetime: " + strings.Join(due, ", ")
	}
	return ""
}

// KeepCredentials gets the node's certificates now, when they are missing or due, and
// renews them in g for as long as the node runs.
func (n *Node) KeepCredentials(ctx context.Context, g *errgroup.Group, c Credentials) error {
	if _, err := n.EnsureCredentials(ctx, c); err != nil {
		return err
	}
	g.Go(func() error { return n.RenewCredentials(ctx, c) })
	return nil
}

// RenewCredentials checks the certificates every RenewCheckEvery and gets new ones once
// one is due, or at once when c.Stale says so (checked every TrustCheckEvery); the units
// that read a renewed file restart. A failure is logged and tried again at the next
// check. It returns nil when ctx ends.
func (n *Node) RenewCredentials(ctx context.Context, c Credentials) error {
	t := time.NewTicker(RenewCheckEvery)
	defer t.Stop()
	var stale <-chan time.Time
	if c.Stale != nil {
		st := time.NewTicker(TrustCheckEvery)
		defer st.Stop()
		stale = st.C
	}
	for {
		var changed []string
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			changed, err = n.EnsureCredentials(ctx, c)
		case <-stale:
			why := c.Stale(ctx)
			if why == "" {
				continue
			}
			changed, err = n.obtain(ctx, c, why)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			n.lg.Error("[certificates] renewal failed; trying again at the next check", "in", RenewCheckEvery, "err", err)
		case len(changed) > 0:
			n.FilesChanged(changed)
		}
	}
}

// NodeSecretFile holds a minion's or lb's random node secret, relative to the root:
// the masters bind the node's name to it at the first join. It outlives 'haagent
// reset', so that a reset node may join again with its name.
const NodeSecretFile = "var/lib/haagent/node-secret"

// Renewal names the client certificate, relative to the root, with which a joined
// node renews instead of presenting its token.
type Renewal struct {
	Cert, Key string
}

// JoinVia is a Credentials.Get that asks each of servers (host:port) in turn for the
// node's files. A node that holds an unexpired renew certificate proves itself with it;
// else it sends the token and, unless a master, its node secret, which it keeps once
// the join has succeeded.
func (n *Node) JoinVia(servers []string, token pki.Token, req join.Request, renew *Renewal) func(context.Context) ([]files.File, error) {
	return func(ctx context.Context) ([]files.File, error) {
		cert := n.renewCert(renew, req)
		var secretFile *files.File
		if cert == nil && req.Role != "master" {
			f, err := n.nodeSecret()
			if err != nil {
				return nil, err
			}
			req.NodeSecret, secretFile = string(bytes.TrimSpace(f.Data)), &f
		}
		// A node that has joined verifies the join service with the CAs it trusts, which
		// follow a CA rotation; the token's pin is for the first join.
		var trusted []byte
		if cert != nil {
			trusted, _ = os.ReadFile(filepath.Join(n.cfg.Root, pki.CACert))
		}
		err := errors.New("no join service to ask")
		for _, srv := range servers {
			var fs []files.File
			if fs, _, err = join.Fetch(ctx, srv, token, trusted, cert, req); err == nil {
				how := "the token"
				if cert != nil {
					how = "this node's client certificate"
				}
				n.lg.Info("[certificates] joined: a join service issued this node's certificates", "via", srv, "with", how)
				if secretFile != nil {
					fs = append(fs, *secretFile)
				}
				return fs, nil
			}
			if errors.Is(err, join.ErrForbidden) || errors.Is(err, pki.ErrCAMismatch) {
				return nil, err
			}
			n.lg.Debug("join service not reachable", "server", srv, "err", err)
		}
		return nil, fmt.Errorf("no join service answered on %s: %w", strings.Join(servers, ", "), err)
	}
}

// TrustChanged is a Credentials.Stale for a node that joins through servers: it says
// why the node must renew when the first join service that answers trusts other CAs
// than the node's ca.crt, as while the cluster's CA rotates. What the service says is
// only compared: the renewal verifies the service with the CAs the node trusts.
func (n *Node) TrustChanged(servers []string) func(ctx context.Context) string {
	return func(ctx context.Context) string {
		mine, err := os.ReadFile(filepath.Join(n.cfg.Root, pki.CACert))
		if err != nil {
			return ""
		}
		for _, srv := range servers {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			theirs, err := join.CA(cctx, srv)
			cancel()
			if err != nil {
				n.lg.Debug("join service not reachable", "server", srv, "err", err)
				continue
			}
			if bytes.Equal(bytes.TrimSpace(theirs), bytes.TrimSpace(mine)) {
				return ""
			}
			return fmt.Sprintf("the cluster's CAs changed (%s trusts %s, this node %s): the CA rotates",
				srv, pki.TrustHash(theirs), pki.TrustHash(mine))
		}
		return ""
	}
}

// renewCert is the node's client certificate while it is valid and names the node req
// asks for, or nil: a node whose certificate expired, or names another node or none
// (an lb's from before lb names were bound), joins again with the token.
func (n *Node) renewCert(r *Renewal, req join.Request) *tls.Certificate {
	if r == nil {
		return nil
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(n.cfg.Root, r.Cert), filepath.Join(n.cfg.Root, r.Key))
	if err != nil || c.Leaf == nil || time.Now().After(c.Leaf.NotAfter) {
		return nil
	}
	if role, name := join.CertIdentity(c.Leaf); role != req.Role || name != req.Name {
		return nil
	}
	return &c
}

// nodeSecret returns the node's secret file as it is on disk, or a new one to be
// written with the certificates once a join succeeds: a refused join writes nothing.
func (n *Node) nodeSecret() (files.File, error) {
	f := files.File{Path: NodeSecretFile, Mode: 0o600}
	b, err := os.ReadFile(filepath.Join(n.cfg.Root, NodeSecretFile))
	if err == nil {
		f.Data = b
		return f, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return f, fmt.Errorf("node secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return f, fmt.Errorf("node secret: %w", err)
	}
	f.Data = []byte(hex.EncodeToString(raw) + "\n")
	return f, nil
}

// WriteCredentials writes a node's certificate files under root, keys readable by
// root only, and returns the paths that changed.
func WriteCredentials(root string, fs []files.File) ([]string, error) {
	for i := range fs {
		if pki.IsKey(fs[i].Path) {
			fs[i].Mode = 0o600
		}
	}
	changed, err := files.Apply(root, fs)
	if err != nil {
		return nil, fmt.Errorf("write certificates: %w", err)
	}
	return changed, nil
}
