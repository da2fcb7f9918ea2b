package etcdmember

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
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
// (name and host are then the same, and the port is defaultPort). With defaultPort 0
// an entry with no port keeps none, for PeersValue.Resolve to fill.
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
		return Peer{Name: entry, URL: url.URL{Scheme: scheme, Host: hostPort(entry, defaultPort)}}, nil
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
		return Peer{Name: name, URL: url.URL{Scheme: u.Scheme, Host: hostPort(host, defaultPort)}}, nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return Peer{}, fmt.Errorf("entry %q: port %q is not in 1-65535", entry, port)
	}
	return Peer{Name: name, URL: url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(host, port)}}, nil
}

// hostPort is host:port, or host alone (bracketed if IPv6) when port is 0.
func hostPort(host string, port int) string {
	if port != 0 {
		return net.JoinHostPort(host, strconv.Itoa(port))
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// PeersValue is the --peers flag, a pflag.Value: Set parses the list, once. Two things
// depend on other flags, which may come later on the command line: the port of an
// entry that names none, and the scheme (a secure cluster's peers speak https whatever
// the operator wrote, so that classic http:// lists keep working). Resolve settles
// both.
type PeersValue struct {
	list Peers
}

// Set parses s; its error says what the flag takes.
func (v *PeersValue) Set(s string) error {
	ps, err := ParsePeers(s, "http", 0)
	if err != nil {
		return fmt.Errorf("%w; use name=http://ip:2380,... or host1,host2,host3", err)
	}
	v.list = ps
	return nil
}

// String is the list as given, in --initial-cluster form.
func (v *PeersValue) String() string { return v.list.String() }

// Type names the flag's value in --help.
func (v *PeersValue) Type() string { return "peers" }

// IsSet reports whether a list was given.
func (v *PeersValue) IsSet() bool { return len(v.list) > 0 }

// Resolve is the list with every URL's scheme set to scheme, and defaultPort where an
// entry named no port.
func (v *PeersValue) Resolve(scheme string, defaultPort int) Peers {
	ps := slices.Clone(v.list)
	for i := range ps {
		ps[i].URL.Scheme = scheme
		if ps[i].URL.Port() == "" {
			ps[i].URL.Host = net.JoinHostPort(ps[i].URL.Hostname(), strconv.Itoa(defaultPort))
		}
	}
	return ps
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
