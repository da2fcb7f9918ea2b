package loadbalancer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func hostPort(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	return strings.TrimPrefix(strings.TrimPrefix(srv.URL, "https://"), "http://")
}

func TestAPIServerChecker(t *testing.T) {
	var ready = map[string]int{"/readyz": http.StatusOK}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, ok := ready[r.URL.Path]
		if !ok {
			code = http.StatusNotFound
		}
		w.WriteHeader(code)
		if code != http.StatusOK {
			fmt.Fprint(w, "[-]etcd failed: reason withheld\nreadyz check failed\n")
		}
	}))
	defer srv.Close()
	ca := x509.NewCertPool()
	ca.AddCert(srv.Certificate())
	otherCA := x509.NewCertPool() // trusts nothing: every httptest server shares one cert

	unready := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "[-]etcd failed: reason withheld", http.StatusInternalServerError)
	}))
	defer unready.Close()

	tests := []struct {
		name       string
		ca         *x509.CertPool // nil: unverified
		serverName string         // "": the host dialled
		addr       string
		want       Health
		wantErr    string
	}{
		{"ready, verified", ca, "", hostPort(t, srv), HealthOK, ""},
		{"ready, unverified", nil, "", hostPort(t, srv), HealthOK, ""},
		{"wrong CA", otherCA, "", hostPort(t, srv), HealthFailed, "certificate"},
		// httptest's certificate names 127.0.0.1 and example.com, not 127.0.0.2.
		{"wrong name", ca, "127.0.0.2", hostPort(t, srv), HealthFailed, "not 127.0.0.2"},
		{"not ready", nil, "", hostPort(t, unready), HealthFailed, "/readyz: 500 [-]etcd failed"},
		{"unreachable", nil, "", closedAddr(t), HealthFailed, "unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			var tc TLSFunc
			if tt.ca != nil {
				tc = staticTLS(&tls.Config{RootCAs: tt.ca, ServerName: tt.serverName, MinVersion: tls.VersionTLS12})
			}
			h, err := NewAPIServerChecker(nil, tc).Check(ctx, tt.addr)
			checkResult(t, h, err, tt.want, tt.wantErr)
		})
	}
}

func TestEtcdChecker(t *testing.T) {
	handler := func(code int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, body)
		}
	}
	healthy := httptest.NewServer(handler(200, `{"health":"true","reason":""}`))
	defer healthy.Close()
	noLeader := httptest.NewServer(handler(503, `{"health":"false","reason":"RAFT NO LEADER"}`))
	defer noLeader.Close()
	malformed := httptest.NewServer(handler(200, `<html>ok</html>`))
	defer malformed.Close()
	oldStyle := httptest.NewServer(handler(200, `{"health": true}`)) // a bool is not etcd's format
	defer oldStyle.Close()
	stall := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stall:
		}
	}))
	defer slow.Close()
	defer close(stall)
	tlsHealthy := httptest.NewTLSServer(handler(200, `{"health":"true","reason":""}`))
	defer tlsHealthy.Close()

	tests := []struct {
		name    string
		checker Checker
		addr    string
		want    Health
		wantErr string
	}{
		{"healthy", NewEtcdChecker(nil, nil), hostPort(t, healthy), HealthOK, ""},
		{"no leader", NewEtcdChecker(nil, nil), hostPort(t, noLeader), HealthFailed, `503 health="false" reason="RAFT NO LEADER"`},
		{"malformed", NewEtcdChecker(nil, nil), hostPort(t, malformed), HealthFailed, "malformed reply"},
		{"health as a bool", NewEtcdChecker(nil, nil), hostPort(t, oldStyle), HealthFailed, "malformed reply"},
		{"timeout", NewEtcdChecker(nil, nil), hostPort(t, slow), HealthFailed, "deadline exceeded"},
		{"unreachable", NewEtcdChecker(nil, nil), closedAddr(t), HealthFailed, "unreachable"},
		{"tls", NewEtcdChecker(nil, staticTLS(tlsHealthy.Client().Transport.(*http.Transport).TLSClientConfig)), hostPort(t, tlsHealthy), HealthOK, ""},
		{"plain http to tls", NewEtcdChecker(nil, nil), hostPort(t, tlsHealthy), HealthFailed, "/health: 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			h, err := tt.checker.Check(ctx, tt.addr)
			checkResult(t, h, err, tt.want, tt.wantErr)
			if tt.name == "timeout" && errors.Is(err, ErrUnreachable) {
				t.Errorf("a backend that accepted the connection is marked unreachable: %v", err)
			}
		})
	}
}

func TestTCPChecker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h, err := NewTCPChecker(nil).Check(t.Context(), ln.Addr().String())
	checkResult(t, h, err, HealthOK, "")
	h, err = NewTCPChecker(nil).Check(t.Context(), closedAddr(t))
	checkResult(t, h, err, HealthFailed, "refused")
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("refused connect not unreachable: %v", err)
	}
}

func TestDefaultCheckKind(t *testing.T) {
	for port, want := range map[int]CheckKind{6443: CheckAPIServer, 2379: CheckEtcd, 9345: CheckTCP, 80: CheckTCP} {
		if got := DefaultCheckKind(port); got != want {
			t.Errorf("DefaultCheckKind(%d) = %s, want %s", port, got, want)
		}
	}
}

func checkResult(t *testing.T, h Health, err error, want Health, wantErr string) {
	t.Helper()
	if h != want {
		t.Errorf("health %s (%v), want %s", h, err, want)
	}
	if wantErr == "" && err != nil {
		t.Errorf("unexpected error %v", err)
	}
	if wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
		t.Errorf("error %v, want it to contain %q", err, wantErr)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// staticTLS gives tc for every host.
func staticTLS(tc *tls.Config) TLSFunc {
	return func(string) (*tls.Config, error) { return tc, nil }
}
