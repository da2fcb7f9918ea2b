package node

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haagent/haagent/test/framework/syncbuf"
	"github.com/haagent/haagent/trust/pki"
)

// TestCertExpiry: a leaf whose renewal failed, 65 days from expiry, warns in the log,
// the status and /metrics; the CA, years away, does not.
func TestCertExpiry(t *testing.T) {
	root := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	// Issued 300 days ago for a year: 65 days left.
	crt, _, err := ca.Issue(pki.LeafSpec{CommonName: "n1", Client: true}, now.Add(-300*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, pki.Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.crt": ca.CertPEM, "n1.crt": crt} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	clock := now
	var log syncbuf.Buffer
	ce := newCertExpiry(root, slog.New(slog.NewTextHandler(&log, nil)), func() time.Time { return clock })

	t.Run("status", func(t *testing.T) {
		certs, err := pki.Inspect(root)
		if err != nil {
			t.Fatal(err)
		}
		ws := certWarnings(certs, clock)
		if len(ws) != 1 || ws[0].Path != "/etc/kubernetes/pki/n1.crt" || ws[0].DaysLeft != 64 && ws[0].DaysLeft != 65 {
			t.Fatalf("warnings %+v, want n1.crt alone with 65 days left", ws)
		}
		var out bytes.Buffer
		PrintCertWarnings(&out, ws)
		if !strings.HasPrefix(out.String(), "WARNING: certificate /etc/kubernetes/pki/n1.crt (CN=n1) expires in 6") || strings.Count(out.String(), "\n") != 1 {
			t.Fatalf("printed %q", out.String())
		}
	})

	t.Run("metrics", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if err := reg.Register(ce); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				got[mf.GetName()+" "+m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		left := got["haagent_certificate_expires_in_seconds /etc/kubernetes/pki/n1.crt"]
		if left < 64*24*3600 || left > 66*24*3600 {
			t.Errorf("n1.crt expires in %v s, want about 65 days", left)
		}
		if got["haagent_certificate_expiry_warning /etc/kubernetes/pki/n1.crt"] != 1 || got["haagent_certificate_expiry_warning /etc/kubernetes/pki/ca.crt"] != 0 {
			t.Errorf("warning states %v, want n1.crt 1 and ca.crt 0", got)
		}
	})

	t.Run("log, once a day", func(t *testing.T) {
		ce.logWarnings()
		ce.logWarnings()
		clock = clock.Add(certLogEvery - time.Minute)
		ce.logWarnings()
		if n := strings.Count(log.String(), "a certificate expires soon"); n != 1 {
			t.Fatalf("%d warnings within a day, want 1:\n%s", n, log.String())
		}
		clock = clock.Add(2 * time.Minute)
		ce.logWarnings()
		if n := strings.Count(log.String(), "path=/etc/kubernetes/pki/n1.crt"); n != 2 {
			t.Fatalf("%d warnings of n1.crt after a day, want 2:\n%s", n, log.String())
		}
		if strings.Contains(log.String(), "ca.crt") {
			t.Fatalf("the CA was warned about:\n%s", log.String())
		}
	})
}
