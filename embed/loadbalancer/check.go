package loadbalancer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"syscall"
)

// Checker probes one backend once.
type Checker interface {
	// Check probes addr (host:port). ctx carries the check timeout. The error says
	// why when the result is not HealthOK; wrap ErrUnreachable when no TCP connection
	// could be opened.
	Check(ctx context.Context, addr string) (Health, error)
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func(ctx context.Context, addr string) (Health, error)

// Check calls f.
func (f CheckerFunc) Check(ctx context.Context, addr string) (Health, error) { return f(ctx, addr) }

// NewChecker makes the check of the given kind.
func NewChecker(kind CheckKind, d *net.Dialer, apiserverTLS, etcdTLS TLSFunc) (Checker, error) {
	switch kind {
	case CheckTCP:
		return NewTCPChecker(d), nil
	case CheckAPIServer:
		return NewAPIServerChecker(d, apiserverTLS), nil
	case CheckEtcd:
		return NewEtcdChecker(d, etcdTLS), nil
	}
	return nil, fmt.Errorf("unknown check %q", kind)
}

// NewTCPChecker passes when a TCP connection opens; it closes it at once.
func NewTCPChecker(d *net.Dialer) Checker {
	if d == nil {
		d = &net.Dialer{}
	}
	return CheckerFunc(func(ctx context.Context, addr string) (Health, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return classify(fmt.Errorf("%w: %w", ErrUnreachable, err))
		}
		c.Close()
		return HealthOK, nil
	})
}

// NewAPIServerChecker passes when https://addr/readyz answers 200, verifying the
// serving cert with the config tc gives for addr's host. With a nil tc it does not
// verify the serving cert.
func NewAPIServerChecker(d *net.Dialer, tc TLSFunc) Checker {
	if tc == nil {
		tc = func(string) (*tls.Config, error) {
			return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}, nil //nolint:gosec // see doc
		}
	}
	return &httpChecker{
		scheme: "https",
		path:   "/readyz",
		client: newCheckClient(d, tc),
		judge: func(code int, body []byte) error {
			if code != http.StatusOK {
				return fmt.Errorf("/readyz: %d %s", code, firstLine(body))
			}
			return nil
		},
	}
}

// NewEtcdChecker passes when addr's GET /health answers 200 with {"health":"true"}.
// It uses https with the config tc gives for addr's host when tc is set, else plain
// http. etcd answers the check with a linearizable read, so a member cut off from the
// quorum fails it.
func NewEtcdChecker(d *net.Dialer, tc TLSFunc) Checker {
	scheme := "http"
	if tc != nil {
		scheme = "https"
	}
	return &httpChecker{
		scheme: scheme,
		path:   "/health",
		client: newCheckClient(d, tc),
		judge: func(code int, body []byte) error {
			var h struct {
				Health string `json:"health"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(body, &h); err != nil {
				return fmt.Errorf("/health: %d, malformed reply %q: %v", code, firstLine(body), err)
			}
			if h.Health != "true" || code != http.StatusOK {
				return fmt.Errorf("/health: %d health=%q reason=%q", code, h.Health, h.Reason)
			}
			return nil
		},
	}
}

// newCheckClient makes a client that opens a fresh connection for every check, so
// that each check also proves the backend still accepts connections, and no idle
// connection outlives the balancer. Its https connections use the config tc gives at
// that dial for the host dialled.
func newCheckClient(d *net.Dialer, tc TLSFunc) *http.Client {
	if d == nil {
		d = &net.Dialer{}
	}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	if tc != nil {
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialTLS(ctx, d, tc, network, addr)
		}
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// dialTLS is what http.Transport does for https, with the config tc gives for the
// host: when that config names no server, the host is the name checked.
func dialTLS(ctx context.Context, d *net.Dialer, tc TLSFunc, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cfg, err := tc(host)
	if err != nil {
		return nil, fmt.Errorf("TLS config for %s: %w", host, err)
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

type httpChecker struct {
	scheme, path string
	client       *http.Client
	judge        func(code int, body []byte) error
}

func (c *httpChecker) Check(ctx context.Context, addr string) (Health, error) {
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectDone: func(_, _ string, err error) {
			if err == nil {
				connected.Store(true)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme+"://"+addr+c.path, nil)
	if err != nil {
		return HealthFailed, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if !connected.Load() {
			err = fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		return classify(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return classify(fmt.Errorf("%s: reading the reply: %w", c.path, err))
	}
	if err := c.judge(resp.StatusCode, body); err != nil {
		return HealthFailed, err
	}
	return HealthOK, nil
}

// classify turns a check error into a result: failures of this host, like running
// out of file descriptors, say nothing about the backend.
func classify(err error) (Health, error) {
	for _, local := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, local) {
			return HealthUnknown, err
		}
	}
	return HealthFailed, err
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
