package join

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/trust/pki"
)

// fakeJoin is a join service that serves cert and answers every join with bundle,
// and records every Authorization header and body that reaches it.
type fakeJoin struct {
	mu    sync.Mutex // guards the fields below
	auths []string
	posts int
}

func (f *fakeJoin) start(t *testing.T, caPEM []byte, cert tls.Certificate, bundle []files.File) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(caPEM) })
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.posts++
		if a := r.Header.Get("Authorization"); a != "" {
			f.auths = append(f.auths, a)
		}
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(Response{Files: bundle})
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://")
}

func keyPair(t *testing.T, ca *pki.CA, spec pki.LeafSpec) tls.Certificate {
	t.Helper()
	c, k, err := ca.Issue(spec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestJoinClientTrustsOnlyMasters(t *testing.T) {
	sh, err := pki.NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := pki.GenerateToken(pki.KindAgent)
	pinned := tok.Pinned(sh.CA.Cert.Raw)
	req := Request{Role: "minion", Name: "minion2", Hosts: []string{"127.0.0.1"}, NodeSecret: strings.Repeat("ab", 16)}
	foreign, _ := pki.NewCA("foreign", time.Now())
	good := []files.File{{Path: pki.CACert, Mode: 0o666, Data: sh.CA.CertPEM}, {Path: pki.KubeletClientKey, Mode: 0o666, Data: []byte("k")}}

	// Before the kubelet-serving CA, a minion's kubelet serving certificate came from
	// the cluster CA with the hosts its join asked for: the masters' too.
	nodeCerts := map[string]pki.LeafSpec{
		"an old kubelet serving certificate": {CommonName: "system:node:minion1", Organization: []string{"system:nodes"},
			Hosts: []string{"127.0.0.1", "localhost", "kubernetes"}, Server: true},
		"a kubelet client certificate": {CommonName: "system:node:minion1", Organization: []string{"system:nodes"},
			Hosts: []string{"127.0.0.1"}, Server: true, Client: true},
		"an lb certificate": {CommonName: pki.LBCommonName, Hosts: []string{"127.0.0.1"}, Server: true, Client: true},
	}
	for what, spec := range nodeCerts {
		t.Run("a fake join service with "+what+" gets no secret", func(t *testing.T) {
			f := &fakeJoin{}
			addr := f.start(t, sh.CA.CertPEM, keyPair(t, sh.CA, spec), good)
			fs, _, err := Fetch(context.Background(), addr, pinned, nil, nil, req)
			if err == nil || fs != nil {
				t.Fatalf("the client accepted a node's server: %d files, err %v", len(fs), err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.posts != 0 || len(f.auths) != 0 {
				t.Fatalf("the fake received %d joins and the secrets %q", f.posts, f.auths)
			}
		})
	}

	master := keyPair(t, sh.CA, pki.LeafSpec{CommonName: "m1", Hosts: []string{"127.0.0.1"}, Server: true, Client: true})
	bundles := map[string]struct {
		files   []files.File
		wantErr string
	}{
		"a foreign ca.crt":                 {[]files.File{{Path: pki.CACert, Data: foreign.CertPEM}}, "does not hold the CA"},
		"no ca.crt":                        {[]files.File{{Path: pki.KubeletClientCert, Data: []byte("c")}}, "no " + pki.CACert},
		"a ca.crt with a key in it":        {[]files.File{{Path: pki.CACert, Data: append(append([]byte{}, sh.CA.CertPEM...), sh.CA.KeyPEM...)}}, "not only PEM certificates"},
		"a path outside etc/kubernetes":    {[]files.File{{Path: pki.CACert, Data: sh.CA.CertPEM}, {Path: "root/.ssh/authorized_keys"}}, "file path"},
		"a kubeconfig trusting another CA": {[]files.File{{Path: pki.CACert, Data: sh.CA.CertPEM}, {Path: pki.KubeletKubeconfig, Data: kubeconfig(t, foreign.CertPEM)}}, "trusts other CAs"},
		"a kubeconfig trusting a CA more than ca.crt": {[]files.File{{Path: pki.CACert, Data: sh.CA.CertPEM},
			{Path: pki.KubeletKubeconfig, Data: kubeconfig(t, append(append([]byte{}, sh.CA.CertPEM...), foreign.CertPEM...))}}, "trusts other CAs"},
	}
	for what, b := range bundles {
		t.Run("a bundle with "+what+" is refused", func(t *testing.T) {
			addr := (&fakeJoin{}).start(t, sh.CA.CertPEM, master, b.files)
			_, _, err := Fetch(context.Background(), addr, pinned, nil, nil, req)
			if err == nil || !strings.Contains(err.Error(), b.wantErr) {
				t.Fatalf("err = %v, want %q", err, b.wantErr)
			}
		})
	}

	// A master serves what the cluster trusts: while the CA rotates, the next CA beside
	// the one the server proved itself with (a server that proves it is a master holds
	// the CA key, and could sign with any CA it likes).
	t.Run("while the CA rotates, a ca.crt with a second CA is accepted", func(t *testing.T) {
		both := append(append([]byte{}, sh.CA.CertPEM...), foreign.CertPEM...)
		addr := (&fakeJoin{}).start(t, both, master, []files.File{{Path: pki.CACert, Data: both}, {Path: pki.KubeletKubeconfig, Data: kubeconfig(t, both)}})
		if _, _, err := Fetch(context.Background(), addr, pinned, nil, nil, req); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a node that has joined verifies the server with the CAs it holds, not the token's pin", func(t *testing.T) {
		// The cluster's CA was rotated to foreign: the token's pin is stale.
		next := keyPair(t, foreign, pki.LeafSpec{CommonName: "m1", Hosts: []string{"127.0.0.1"}, Server: true, Client: true})
		bundle := []files.File{{Path: pki.CACert, Data: foreign.CertPEM}}
		addr := (&fakeJoin{}).start(t, foreign.CertPEM, next, bundle)
		if _, _, err := Fetch(context.Background(), addr, pinned, nil, nil, req); !errors.Is(err, pki.ErrCAMismatch) || !strings.Contains(err.Error(), "token show") {
			t.Fatalf("a new node with the old pin: err = %v, want a CA mismatch that says where the new token is", err)
		}
		both := append(append([]byte{}, sh.CA.CertPEM...), foreign.CertPEM...)
		if _, _, err := Fetch(context.Background(), addr, pinned, both, nil, req); err != nil {
			t.Fatalf("a node that trusts both CAs: %v", err)
		}
		if _, _, err := Fetch(context.Background(), addr, pinned, sh.CA.CertPEM, nil, req); err == nil {
			t.Fatal("a node that trusts only the old CA accepted a server of the new one")
		}
	})

	t.Run("the node chooses the modes, not the server", func(t *testing.T) {
		addr := (&fakeJoin{}).start(t, sh.CA.CertPEM, master, good)
		fs, _, err := Fetch(context.Background(), addr, pinned, nil, nil, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if f.Mode != pki.FileMode(f.Path) || f.Mode&0o077 != 0 && pki.IsKey(f.Path) {
				t.Errorf("%s: mode %o", f.Path, f.Mode)
			}
		}
	})
}

func kubeconfig(t *testing.T, caPEM []byte) []byte {
	t.Helper()
	kc, err := pki.Kubeconfig("https://127.0.0.1:6443", "u", caPEM, []byte("c"), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return kc
}
