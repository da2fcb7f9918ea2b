package loadbalancer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
func NewChecker(kind CheckKind, d *net.Dialer, apiserverCA *x509.CertPool, etcdTLS *tls.Config) (Checker, error) {
	switch kind {
	case CheckTCP:
		return NewTCPChecker(d), nil
	case CheckAPIServer:
		return NewAPIServerChecker(d, apiserverCA), nil
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

// NewAPIServerChecker passes when https://addr/readyz answers 200. With a nil ca it
// does not verify the serving cert.
func NewAPIServerChecker(d *net.Dialer, ca *x509.CertPool) Checker {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca, InsecureSkipVerify: ca == nil} //nolint:gosec // see doc
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
// It uses https when tc is set, else plain http. etcd answers the check with a
// linearizable read, so a member cut off from the quorum fails it.
func NewEtcdChecker(d *net.Dialer, tc *tls.Config) Checker {
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
// connection outlives the balancer.
func newCheckClient(d *net.Dialer, tc *tls.Config) *http.Client {
	if d == nil {
		d = &net.Dialer{}
	}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:       d.DialContext,
			TLSClientConfig:   tc,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
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
