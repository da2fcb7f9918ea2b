package atrest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haagent/haagent/trust/pki"
)

// clientPair is a throwaway client certificate: the fake apiserver asks for none, but
// the kubeconfig must carry one.
func clientPair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// TestRewriteSecrets runs RewriteSecrets against a fake apiserver: two pages of
// Secrets, one changed since the list (409, skipped), one that first meets an apiserver
// that is restarting (503, retried).
func TestRewriteSecrets(t *testing.T) {
	var mu sync.Mutex // guards the fields below
	puts := map[string]map[string]any{}
	failedOnce := false
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/secrets" && r.URL.Query().Get("continue") == "":
			io.WriteString(w, `{"metadata":{"continue":"page2"},"items":[
				{"metadata":{"name":"a","namespace":"default","resourceVersion":"1"},"data":{"k":"dg=="}},
				{"metadata":{"name":"gone","namespace":"default","resourceVersion":"2"}}]}`)
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/secrets" && r.URL.Query().Get("continue") == "page2":
			io.WriteString(w, `{"metadata":{},"items":[{"metadata":{"name":"b","namespace":"kube-system","resourceVersion":"3"}}]}`)
		case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/secrets/gone"):
			w.WriteHeader(http.StatusConflict)
		case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/secrets/b") && !failedOnce:
			failedOnce = true
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.Method == http.MethodPut:
			var obj map[string]any
			if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			puts[r.URL.Path] = obj
			io.WriteString(w, `{}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	certPEM, keyPEM := clientPair(t)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kc, err := pki.Kubeconfig(srv.URL, "kubernetes-admin", caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := api.RewriteSecrets(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("RewriteSecrets = %d, %v; want 2 rewritten", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	a := puts["/api/v1/namespaces/default/secrets/a"]
	if a == nil || a["kind"] != "Secret" || a["apiVersion"] != "v1" || a["data"].(map[string]any)["k"] != "dg==" {
		t.Errorf("Secret a written back as %v, want it unchanged with its kind and apiVersion", a)
	}
	if puts["/api/v1/namespaces/kube-system/secrets/b"] == nil {
		t.Error("Secret b, behind a 503, was not written back")
	}
}
