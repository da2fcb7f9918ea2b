// Package join owns the token-authenticated join service that masters serve on port
// 9345, and the client that nodes use to fetch their certificates from it.
package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/haagent/haagent/files"
	"github.com/haagent/haagent/pki"
	"github.com/haagent/haagent/statusapi"
)

// DefaultPort is the join service's port on masters (and the lb, which forwards it).
const DefaultPort = 9345

// Request is what a joining node asks for.
type Request struct {
	Role  string   `json:"role"`
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
}

// Response carries the node's files.
type Response struct {
	Files []files.File `json:"files"`
}

// ErrForbidden means a server refused the token.
var ErrForbidden = errors.New("the join service refused the token")

// Issuer signs a node's files; the master role supplies it.
type Issuer func(req Request) ([]files.File, error)

// ServerConfig configures the join service.
type ServerConfig struct {
	Address string
	Token   pki.Token
	// CACert is served on /v1/ca for nodes to pin or trust.
	CACert []byte
	// GetCertificate serves the TLS certificate (reloaded so renewals apply).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Issue          Issuer
	Logger         *slog.Logger
	// FailureBudget is how many wrong tokens one source address may send per FailureWindow.
	FailureBudget int
	FailureWindow time.Duration
}

// Server is the join service.
type Server struct {
	cfg ServerConfig
	ln  net.Listener

	mu       sync.Mutex // guards the fields below
	failures map[string][]time.Time
}

// Listen binds the join port.
func Listen(cfg ServerConfig) (*Server, error) {
	if cfg.FailureBudget == 0 {
		cfg.FailureBudget = 5
	}
	if cfg.FailureWindow == 0 {
		cfg.FailureWindow = time.Minute
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("join service: listen on %s: %w", cfg.Address, err)
	}
	return &Server{cfg: cfg, ln: ln, failures: map[string][]time.Time{}}, nil
}

// Serve blocks until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.cfg.CACert)
	})
	mux.HandleFunc("POST /v1/join", s.handleJoin)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig:         &tls.Config{GetCertificate: s.cfg.GetCertificate, MinVersion: tls.VersionTLS12},
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	if err := statusapi.ServeUntil(ctx, srv, func() error { return srv.ServeTLS(s.ln, "", "") }); err != nil {
		return fmt.Errorf("join service: %w", err)
	}
	return nil
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	src, _, _ := net.SplitHostPort(r.RemoteAddr)
	if s.throttled(src) {
		http.Error(w, "too many attempts", http.StatusTooManyRequests)
		return
	}
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !s.cfg.Token.SecretEqual(secret) {
		s.recordFailure(src)
		s.cfg.Logger.Warn("join refused: wrong token", "from", src)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if req.Role != "master" && req.Role != "minion" && req.Role != "lb" {
		http.Error(w, "unknown role", http.StatusBadRequest)
		return
	}
	fs, err := s.cfg.Issue(req)
	if err != nil {
		s.cfg.Logger.Error("join: issuing certificates failed", "node", req.Name, "role", req.Role, "err", err)
		http.Error(w, "could not issue certificates", http.StatusInternalServerError)
		return
	}
	s.cfg.Logger.Info("join: issued certificates", "node", req.Name, "role", req.Role, "from", src, "files", len(fs))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Response{Files: fs})
}

func (s *Server) recent(src string, now time.Time) []time.Time {
	var kept []time.Time
	for _, t := range s.failures[src] {
		if now.Sub(t) < s.cfg.FailureWindow {
			kept = append(kept, t)
		}
	}
	return kept
}

func (s *Server) throttled(src string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.recent(src, time.Now())
	if len(kept) == 0 {
		delete(s.failures, src) // keeps the map as small as the set of recent offenders
	} else {
		s.failures[src] = kept
	}
	return len(kept) >= s.cfg.FailureBudget
}

func (s *Server) recordFailure(src string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[src] = append(s.recent(src, time.Now()), time.Now())
}

// Fetch asks one server (host:port) for the node's files. It first fetches the CA
// without trusting it, checks it against the token's pin, and only then sends the
// secret over a connection verified against that CA.
func Fetch(ctx context.Context, server string, token pki.Token, req Request) ([]files.File, []byte, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return nil, nil, err
	}
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the CA is checked against the pin below
	}}
	caPEM, err := get(ctx, insecure, "https://"+server+"/v1/ca")
	if err != nil {
		return nil, nil, err
	}
	caCert, err := pki.ParseCert(caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA from %s: %w", server, err)
	}
	if err := token.CheckCA(caCert.Raw); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", server, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	verified := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
	}}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+server+"/v1/join", bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hreq.Header.Set("Authorization", "Bearer "+token.Secret)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := verified.Do(hreq)
	if err != nil {
		return nil, nil, fmt.Errorf("join via %s: %w", server, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden, http.StatusTooManyRequests:
		return nil, nil, fmt.Errorf("%s: %w (%s)", server, ErrForbidden, resp.Status)
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, nil, fmt.Errorf("join via %s: %s: %s", server, resp.Status, strings.TrimSpace(string(b)))
	}
	var out Response
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, nil, fmt.Errorf("join via %s: %w", server, err)
	}
	for _, f := range out.Files {
		if strings.Contains(f.Path, "..") || strings.HasPrefix(f.Path, "/") || !strings.HasPrefix(f.Path, "etc/kubernetes/") {
			return nil, nil, fmt.Errorf("join via %s: refusing file path %q", server, f.Path)
		}
	}
	return out.Files, caPEM, nil
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}
