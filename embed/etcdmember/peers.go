package etcdmember

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Peer is one etcd member as the operator listed it in --peers.
type Peer struct {
	Name string
	// URL is the member's peer URL: scheme://host:port with no path.
	URL url.URL
}

// Host is the host part of the peer URL, without brackets for IPv6.
func (p Peer) Host() string { return p.URL.Hostname() }

// Peers is the static member list, in the operator's order.
type Peers []Peer

// String renders the list in etcd's --initial-cluster form, which ParsePeers accepts back.
func (ps Peers) String() string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Name + "=" + p.URL.String()
	}
	return strings.Join(parts, ",")
}

// ByName returns the peer with the given name.
func (ps Peers) ByName(name string) (Peer, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

// NameOf returns the name listed for a peer URL, or "" when it is not listed.
func (ps Peers) NameOf(peerURL string) string {
	for _, p := range ps {
		if p.URL.String() == peerURL {
			return p.Name
		}
	}
	return ""
}

// ParsePeers reads a --peers value. Each comma-separated entry is either
// name=scheme://host:port, as in etcd's --initial-cluster, or a bare host
// (name and host are then the same, and the port is defaultPort).
func ParsePeers(s string, scheme string, defaultPort int) (Peers, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty list")
	}
	var ps Peers
	names := map[string]bool{}
	urls := map[string]bool{}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, fmt.Errorf("empty entry in %q", s)
		}
		p, err := parsePeer(entry, scheme, defaultPort)
		if err != nil {
			return nil, err
		}
		if names[p.Name] {
			return nil, fmt.Errorf("duplicate name %q", p.Name)
		}
		if urls[p.URL.String()] {
			return nil, fmt.Errorf("duplicate peer URL %q", p.URL.String())
		}
		names[p.Name], urls[p.URL.String()] = true, true
		ps = append(ps, p)
	}
	return ps, nil
}

func parsePeer(entry, scheme string, defaultPort int) (Peer, error) {
	name, rawURL, hasName := strings.Cut(entry, "=")
	if !hasName {
		if err := checkHost(entry); err != nil {
			return Peer{}, fmt.Errorf("entry %q: %w", entry, err)
		}
		u := url.URL{Scheme: scheme, Host: net.JoinHostPort(entry, strconv.Itoa(defaultPort))}
		return Peer{Name: entry, URL: u}, nil
	}
	if err := checkName(name); err != nil {
		return Peer{}, fmt.Errorf("entry %q: %w", entry, err)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return Peer{}, fmt.Errorf("entry %q: bad URL: %w", entry, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Peer{}, fmt.Errorf("entry %q: URL scheme must be http or https", entry)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return Peer{}, fmt.Errorf("entry %q: URL must be scheme://host:port with nothing after the port", entry)
	}
	host, port := u.Hostname(), u.Port()
	if err := checkHost(host); err != nil {
		return Peer{}, fmt.Errorf("entry %q: %w", entry, err)
	}
	if port == "" {
		port = strconv.Itoa(defaultPort)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return Peer{}, fmt.Errorf("entry %q: port %q is not in 1-65535", entry, port)
	}
	return Peer{Name: name, URL: url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(host, port)}}, nil
}

func checkName(name string) error {
	if name == "" {
		return errors.New("empty member name")
	}
	for _, r := range name {
		if r <= ' ' || r == ',' || r == '=' || r > '~' {
			return fmt.Errorf("member name %q may hold only printable ASCII without spaces, ',' or '='", name)
		}
	}
	return nil
}

// checkHost accepts an IP literal or a DNS name (RFC 1123 labels).
func checkHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host %q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q is not an IP address or a DNS name", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("host %q is not an IP address or a DNS name", h)
			}
		}
	}
	return nil
}
