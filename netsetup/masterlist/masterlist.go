// Package masterlist keeps a node's list of masters current from the cluster and saved
// on disk, so that a node that runs its own lb (a minion with --lb=local) follows the
// masters as they come and go, and starts again while the masters it was first given
// are gone. It owns the merge rule of a saved list and --masters.
package masterlist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haagent/haagent/base/files"
)

// File is where the list is saved, relative to the root.
const File = "var/lib/haagent/masters.json"

// DefaultInterval is how often the list is asked of the cluster. Masters change
// rarely and a stale entry costs nothing but a failing health check, while every
// minion asks: 10 s keeps a thousand minions at 100 light requests a second.
const DefaultInterval = 10 * time.Second

// Sources of a list.
const (
	// SourceCluster is etcd's member list, as the cluster itself gave it.
	SourceCluster = "cluster"
	// SourceStart is the list a node starts with: saved and --masters merged.
	SourceStart = "start"
)

// Saved is the document in File.
type Saved struct {
	// Masters are hosts (IPs or names), preferred first.
	Masters []string `json:"masters"`
	// Source says where the list came from: SourceCluster.
	Source string `json:"source"`
	// Updated is when the cluster gave this list.
	Updated time.Time `json:"updated"`
}

// Load reads the saved list under root. A missing file is an error that wraps
// os.ErrNotExist; a list with no masters is an error, since it can't be used.
func Load(root string) (Saved, error) {
	p := filepath.Join(root, File)
	b, err := os.ReadFile(p)
	if err != nil {
		return Saved{}, err
	}
	var s Saved
	if err := json.Unmarshal(b, &s); err != nil {
		return Saved{}, fmt.Errorf("%s: %w", p, err)
	}
	if len(s.Masters) == 0 {
		return Saved{}, fmt.Errorf("%s lists no masters", p)
	}
	return s, nil
}

// Save writes s under root atomically (temp file, fsync, rename, fsync of the dir).
func Save(root string, s Saved) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	_, err = files.Write(root, files.File{Path: File, Mode: 0o644, Data: append(b, '\n')})
	return err
}

// Initial is the list a node starts with: the saved list, in its order, then each
// entry of seed (--masters) that it lacks. Neither hides the other: a stale saved
// list can't make a node ignore the masters it is told about now, and a --masters
// written at install time can't make it forget where the cluster went since. The
// first answer of the cluster then replaces both (see Next).
func Initial(seed, saved []string) []string {
	out := slices.Clone(saved)
	for _, h := range seed {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// Next is the list after the cluster answered with hosts: exactly those hosts. Hosts
// already listed keep their order, so that the primary stays the primary; new ones
// follow in the cluster's order. An empty answer keeps current: a node never drops
// every master.
func Next(current, hosts []string) []string {
	if len(hosts) == 0 {
		return current
	}
	var out []string
	for _, h := range current {
		if slices.Contains(hosts, h) {
			out = append(out, h)
		}
	}
	for _, h := range hosts {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// Source asks the cluster for its masters: hosts, in any order.
type Source func(ctx context.Context) ([]string, error)

// EtcdMembers is a Source that reads etcd's member list through cli, a linearizable
// read, so that a member cut off from the quorum can't answer with an old list.
// Every master runs one member, so the members' client URLs name the masters; a
// member added but not started yet has none and is left out until it runs.
func EtcdMembers(cli *clientv3.Client) Source {
	return func(ctx context.Context) ([]string, error) {
		resp, err := cli.MemberList(ctx)
		if err != nil {
			return nil, fmt.Errorf("etcd member list: %w", err)
		}
		var hosts []string
		for _, m := range resp.Members {
			for _, u := range m.ClientURLs {
				if h := clientHost(u); h != "" && !slices.Contains(hosts, h) {
					hosts = append(hosts, h)
				}
			}
		}
		return hosts, nil
	}
}

// clientHost is the host of a member's client URL, or "" for a loopback or
// unspecified one, which names no master from another host.
func clientHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	h := u.Hostname()
	if ip := net.ParseIP(h); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) || h == "localhost" || h == "" {
		return ""
	}
	return h
}

// Config says how a Keeper keeps the list.
type Config struct {
	// Root prefixes File.
	Root string
	// Seed is --masters; Saved is what Load read at start (zero if nothing).
	Seed  []string
	Saved Saved
	// Interval is the time between two questions to the cluster (default
	// DefaultInterval).
	Interval time.Duration
	// Timeout bounds one question (default 5 s).
	Timeout time.Duration
	// Source asks the cluster; set it with SetSource once the node can (it may need
	// the certificates of the join, which goes through the lb that uses this list).
	// Apply receives every new list, e.g. the lb's SetBackends.
	Apply  func(hosts []string) error
	Logger *slog.Logger
}

// Status is the list as `haagent status` shows it.
type Status struct {
	Masters []string `json:"masters"`
	// Source is SourceCluster once the cluster answered, else SourceStart.
	Source string `json:"source"`
	// Updated is when the cluster last answered (zero before).
	Updated time.Time `json:"updated,omitzero"`
	// Saved is the file the list is saved in.
	Saved string `json:"saved"`
	// LastError is the last failed question, cleared by an answer.
	LastError string `json:"lastError,omitempty"`
}

// Keeper keeps the list.
type Keeper struct {
	cfg Config
	lg  *slog.Logger

	mu     sync.Mutex // guards the fields below
	source Source
	st     Status
}

// New makes a keeper whose list is Initial(cfg.Seed, cfg.Saved.Masters); it starts
// nothing. It fails when that list is empty: a node given no masters and holding no
// saved list has nowhere to go.
func New(cfg Config) (*Keeper, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	list := Initial(cfg.Seed, cfg.Saved.Masters)
	if len(list) == 0 {
		return nil, errors.New("no masters: none given and none saved")
	}
	k := &Keeper{cfg: cfg, lg: cfg.Logger, st: Status{Masters: list, Source: SourceStart, Saved: filepath.Join("/", File)}}
	return k, nil
}

// Masters is the list now.
func (k *Keeper) Masters() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.st.Masters)
}

// Status is the list and where it came from.
func (k *Keeper) Status() Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.st
	st.Masters = slices.Clone(st.Masters)
	return st
}

// SetSource gives the keeper its way to ask the cluster; Run waits for it.
func (k *Keeper) SetSource(s Source) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.source = s
}

// Run asks the cluster at once, then every Interval, until ctx ends; it returns nil
// then. A failed question keeps the list and is logged once per change of error.
func (k *Keeper) Run(ctx context.Context) error {
	t := time.NewTicker(k.cfg.Interval)
	defer t.Stop()
	for {
		k.Refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh asks the cluster once and applies and saves a changed list. It reports
// whether the cluster answered.
func (k *Keeper) Refresh(ctx context.Context) bool {
	k.mu.Lock()
	src := k.source
	k.mu.Unlock()
	if src == nil {
		return false
	}
	qctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	hosts, err := src(qctx)
	cancel()
	if ctx.Err() != nil {
		return false
	}
	if err == nil && len(hosts) == 0 {
		err = errors.New("the cluster listed no masters")
	}
	if err != nil {
		k.mu.Lock()
		first := k.st.LastError != err.Error()
		k.st.LastError = err.Error()
		k.mu.Unlock()
		if first {
			k.lg.Warn("[masters] could not ask the cluster for its masters; keeping the list", "masters", k.Masters(), "err", err)
		}
		return false
	}

	k.mu.Lock()
	prev := k.st.Masters
	next := Next(prev, hosts)
	changed := !slices.Equal(prev, next)
	wasCluster := k.st.Source == SourceCluster
	k.st.Masters, k.st.Source, k.st.Updated, k.st.LastError = next, SourceCluster, time.Now(), ""
	k.mu.Unlock()

	if changed {
		var added, removed []string
		for _, h := range next {
			if !slices.Contains(prev, h) {
				added = append(added, h)
			}
		}
		for _, h := range prev {
			if !slices.Contains(next, h) {
				removed = append(removed, h)
			}
		}
		k.lg.Info("[masters] the cluster's masters changed", "masters", strings.Join(next, ","), "added", added, "removed", removed)
		if k.cfg.Apply != nil {
			if err := k.cfg.Apply(next); err != nil {
				k.lg.Error("[masters] could not apply the new list", "err", err)
			}
		}
	}
	if changed || !wasCluster || !slices.Equal(k.cfg.Saved.Masters, next) {
		if err := Save(k.cfg.Root, Saved{Masters: next, Source: SourceCluster, Updated: time.Now().UTC()}); err != nil {
			k.lg.Error("[masters] could not save the list; a restart starts from the one saved before and --masters", "file", filepath.Join(k.cfg.Root, File), "err", err)
		} else {
			k.cfg.Saved.Masters = next
		}
	}
	return true
}
