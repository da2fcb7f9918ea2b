package loadbalancer

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// list is the pool's backends now, in configured order. The slice is never changed in
// place, so the caller may range over it without the lock.
func (p *pool) list() []*backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.backends
}

// SetBackends makes hosts (IPs or names, preferred first) the backends of every port
// that balances over Config.Backends; ports whose Config.BackendAddrs names their
// backends keep them. A host that stays keeps its state, counters and connections; a
// new one starts unknown and is checked in the next round, which Run starts at most
// CheckInterval later; a removed one is closed, with its proxied connections, so that
// their clients reconnect to a backend that is still in the list. The order of hosts
// is the new preference order. An empty list is refused: a balancer with nowhere to
// send its clients is worse than one with a stale list.
func (b *Balancer) SetBackends(hosts []string) error {
	if len(hosts) == 0 {
		return errors.New("lb: no backends given; keeping the current ones")
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" {
			return errors.New("lb: empty backend host")
		}
		if seen[h] {
			return fmt.Errorf("lb: backend %s is listed twice", h)
		}
		seen[h] = true
	}
	for _, p := range b.pools {
		if p.fixed {
			continue
		}
		addrs := make([]string, len(hosts))
		for i, h := range hosts {
			addrs[i] = net.JoinHostPort(h, strconv.Itoa(p.port))
		}
		added, removed := b.replaceBackends(p, addrs)
		if len(added) > 0 || len(removed) > 0 {
			b.lg.Info(fmt.Sprintf("port %d: backends now %s", p.port, strings.Join(addrs, ", ")),
				"port", p.port, "added", added, "removed", removed)
		}
	}
	return nil
}

// replaceBackends makes addrs p's backends, keeping those that stay, and closes those
// that go. It returns the addresses added and removed.
func (b *Balancer) replaceBackends(p *pool, addrs []string) (added, removed []string) {
	p.mu.Lock()
	old := map[string]*backend{}
	for _, be := range p.backends {
		old[be.addr] = be
	}
	next := make([]*backend, 0, len(addrs))
	for _, a := range addrs {
		be, ok := old[a]
		if ok {
			delete(old, a)
		} else {
			be = newBackend(a, p.port, &b.cfg, b.met)
			be.pool = p
			added = append(added, a)
		}
		next = append(next, be)
	}
	p.backends = next
	p.mu.Unlock()

	for a, be := range old {
		removed = append(removed, a)
		// Outside the pool's lock: closing takes the backend's own lock.
		be.closeAll()
		b.met.forget(p.port, a)
	}
	slices.Sort(removed)
	return added, removed
}

// forget drops a removed backend's series, so that /metrics does not report a master
// that left the list as down forever.
func (m *Metrics) forget(port int, addr string) {
	l := map[string]string{"port": strconv.Itoa(port), "backend": addr}
	m.up.DeletePartialMatch(l)
	m.active.DeletePartialMatch(l)
	m.total.DeletePartialMatch(l)
	m.bytes.DeletePartialMatch(l)
	m.dial.DeletePartialMatch(l)
	m.transitions.DeletePartialMatch(l)
}
