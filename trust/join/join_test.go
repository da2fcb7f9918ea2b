package join

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/trust/pki"
)

func startServer(t *testing.T, tok pki.Token) (addr string, sh *pki.Shared) {
	t.Helper()
	return startServerWith(t, tok, func(*ServerConfig) {})
}

// startServerWith starts a join service whose config edit may change.
func startServerWith(t *testing.T, tok pki.Token, edit func(*ServerConfig)) (addr string, sh *pki.Shared) {
	t.Helper()
	now := time.Now()
	sh, err := pki.NewShared(now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := sh.CA.Issue(pki.LeafSpec{CommonName: "m1", Hosts: []string{"127.0.0.1"}, Server: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		Address: "127.0.0.1:0", Token: tok, Trust: func() []byte { return sh.CA.CertPEM },
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil },
		Issue: func(req Request, _ string) ([]files.File, error) {
			return pki.Issue(sh, pki.Node{Role: req.Role, Name: req.Name, Hosts: req.Hosts, APIServer: "https://127.0.0.1:6443"}, time.Now())
		},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		FailureBudget: 3,
	}
	edit(&cfg)
	srv, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv.ln.Addr().String(), sh
}

func TestJoin(t *testing.T) {
	tok, _ := pki.GenerateToken(pki.KindServer)
	addr, sh := startServer(t, tok)
	ctx := context.Background()
	req := Request{Role: "minion", Name: "minion1", Hosts: []string{"10.0.0.31"}}

	t.Run("right token, unpinned", func(t *testing.T) {
		fs, ca, err := Fetch(ctx, addr, tok, nil, nil, req)
		if err != nil {
			t.Fatal(err)
		}
		if string(ca) != string(sh.CA.CertPEM) || len(fs) == 0 {
			t.Fatalf("got %d files", len(fs))
		}
		for _, f := range fs {
			if f.Path == pki.CAKey {
				t.Fatal("a minion received the CA key")
			}
		}
	})
	t.Run("right token, pinned to the right CA", func(t *testing.T) {
		if _, _, err := Fetch(ctx, addr, tok.Pinned(sh.CA.Cert.Raw), nil, nil, req); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("CA mismatch", func(t *testing.T) {
		other, _ := pki.NewCA("other", time.Now())
		_, _, err := Fetch(ctx, addr, tok.Pinned(other.Cert.Raw), nil, nil, req)
		if !errors.Is(err, pki.ErrCAMismatch) {
			t.Fatalf("err = %v, want a CA mismatch", err)
		}
	})
	t.Run("wrong token is refused, then rate-limited, and the right one still joins", func(t *testing.T) {
		wrong, _ := pki.GenerateToken(pki.KindServer)
		for i := range 3 {
			_, _, err := Fetch(ctx, addr, wrong, nil, nil, req)
			if !errors.Is(err, ErrForbidden) || strings.Contains(err.Error(), "429") {
				t.Fatalf("attempt %d: err = %v, want forbidden", i, err)
			}
		}
		// The budget is spent: this address's refusals are 429 now...
		_, _, err := Fetch(ctx, addr, wrong, nil, nil, req)
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "429") {
			t.Fatalf("after 3 failures: err = %v, want 429", err)
		}
		// ...but a request that proves what it asks for is never throttled.
		if _, _, err := Fetch(ctx, addr, tok, nil, nil, req); err != nil {
			t.Fatalf("the right token after 3 failures from the same address: %v", err)
		}
	})
}
