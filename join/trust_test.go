package join

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haagent/haagent/files"
	"github.com/haagent/haagent/pki"
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
			fs, _, err := Fetch(context.Background(), addr, pinned, nil, req)
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
		"a foreign ca.crt":                 {[]files.File{{Path: pki.CACert, Data: foreign.CertPEM}}, "another CA"},
		"a second CA appended to ca.crt":   {[]files.File{{Path: pki.CACert, Data: append(append([]byte{}, sh.CA.CertPEM...), foreign.CertPEM...)}}, "another CA"},
		"no ca.crt":                        {[]files.File{{Path: pki.KubeletClientCert, Data: []byte("c")}}, "no " + pki.CACert},
		"a path outside etc/kubernetes":    {[]files.File{{Path: pki.CACert, Data: sh.CA.CertPEM}, {Path: "root/.ssh/authorized_keys"}}, "file path"},
		"a kubeconfig trusting another CA": {[]files.File{{Path: pki.CACert, Data: sh.CA.CertPEM}, {Path: pki.KubeletKubeconfig, Data: kubeconfig(t, foreign.CertPEM)}}, "another CA"},
	}
	for what, b := range bundles {
		t.Run("a bundle with "+what+" is refused", func(t *testing.T) {
			addr := (&fakeJoin{}).start(t, sh.CA.CertPEM, master, b.files)
			_, _, err := Fetch(context.Background(), addr, pinned, nil, req)
			if err == nil || !strings.Contains(err.Error(), b.wantErr) {
				t.Fatalf("err = %v, want %q", err, b.wantErr)
			}
		})
	}

	t.Run("the node chooses the modes, not the server", func(t *testing.T) {
		addr := (&fakeJoin{}).start(t, sh.CA.CertPEM, master, good)
		fs, _, err := Fetch(context.Background(), addr, pinned, nil, req)
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
