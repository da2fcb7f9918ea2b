// Package statusapi serves a node's health and metrics endpoints: /healthz, /readyz,
// /metrics and /status (the JSON that `haagent status` prints).
package statusapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddress is where the endpoints listen unless --status-address says otherwise.
const DefaultAddress = "127.0.0.1:9110"

// Config says what the endpoints report.
type Config struct {
	// Address is host:port to listen on.
	Address string
	// Ready returns nil when the node is ready to serve.
	Ready func() error
	// Status returns the role's status document for /status.
	Status func(ctx context.Context) (any, error)
	// Gatherer supplies /metrics.
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
}

// Server is the status HTTP server.
type Server struct {
	cfg Config
	ln  net.Listener
}

// Listen binds the address now, so that a port clash fails start-up rather than later.
func Listen(cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("status endpoint: listen on %s (--status-address): %w", cfg.Address, err)
	}
	return &Server{cfg: cfg, ln: ln}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve blocks until ctx ends, then shuts down and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.cfg.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		doc, err := s.cfg.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := ServeUntil(ctx, srv, func() error { return srv.Serve(s.ln) }); err != nil {
		return fmt.Errorf("status endpoint %s: %w", s.cfg.Address, err)
	}
	return nil
}

// ServeUntil runs serve (srv's Serve or ServeTLS) until ctx ends, then shuts srv down
// within 2 s. A clean shutdown returns nil.
func ServeUntil(ctx context.Context, srv *http.Server, serve func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// Fetch GETs a node's /status document; `haagent status` uses it.
func Fetch(ctx context.Context, address string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+address+"/status", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no haagent answers on %s (is it running? is --status-address right?): %w", address, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b [512]byte
		n, _ := resp.Body.Read(b[:])
		return fmt.Errorf("haagent on %s: %s: %s", address, resp.Status, bytes.TrimSpace(b[:n]))
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
