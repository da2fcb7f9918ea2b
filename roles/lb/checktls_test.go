package lb

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/haagent/haagent/embed/loadbalancer"
	"github.com/haagent/haagent/trust/pki"
	"github.com/haagent/haagent/trust/pki/pkitest"
)

// TestChecksVerifyTheMasterDialled: the health checks that checkTLS sets up, made
// before the rotation, follow ca.crt through it and fail a master whose certificate
// names another master.
func TestChecksVerifyTheMasterDialled(t *testing.T) {
	r, cases, root := pkitest.Start(t)
	c := NewConfig()
	c.Root = root
	l := &LB{cfg: c}
	var bc loadbalancer.Config
	if _, err := l.checkTLS(&bc); err != nil {
		t.Fatal(err)
	}
	checks := map[string]loadbalancer.Checker{}
	for _, kind := range []loadbalancer.CheckKind{loadbalancer.CheckAPIServer, loadbalancer.CheckEtcd} {
		check, err := loadbalancer.NewChecker(kind, nil, bc.APIServerTLS, bc.EtcdTLS)
		if err != nil {
			t.Fatal(err)
		}
		checks[string(kind)+" check"] = check
	}

	master := http.NewServeMux()
	master.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	master.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 { // etcd's client-cert-auth
			http.Error(w, `{"health":"false","reason":"no client certificate"}`, http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"health":"true","reason":""}`))
	})
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			pkitest.WriteTrust(t, tc, root, pki.EtcdClientCert, pki.EtcdClientKey)
			ln, err := net.Listen("tcp", net.JoinHostPort(pkitest.Dialled, "0"))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(master)
			srv.Listener.Close()
			srv.Listener, srv.TLS = ln, r.ServerTLS(t, tc)
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refusals
			srv.StartTLS()
			defer srv.Close()
			for name, c := range checks {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				h, err := c.Check(ctx, ln.Addr().String())
				cancel()
				if tc.OK && h != loadbalancer.HealthOK {
					t.Errorf("%s: %s, want ok", name, h)
				}
				tc.Check(t, name, err)
			}
		})
	}
}
