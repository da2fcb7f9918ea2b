package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haagent/haagent/trust/pki"
)

const (
	// CertWarnBefore is how long before a certificate expires every role warns about it,
	// in its log, its status and /metrics. Leaf certificates renew at 2/3 of their year,
	// about 122 days before they expire, so a warned leaf is one whose renewal failed; the
	// CA, which lasts ten years, warns in its last 120 days.
	CertWarnBefore = 120 * 24 * time.Hour
	// certLogEvery paces the log line of a certificate that stays in warning.
	certLogEvery = 24 * time.Hour
)

// CertWarning is a certificate under the root that expires within CertWarnBefore, or
// has expired.
type CertWarning struct {
	Path     string    `json:"path"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	// DaysLeft is negative once it has expired.
	DaysLeft int `json:"daysLeft"`
}

// certWarnings picks from certs those within CertWarnBefore of their expiry at now.
func certWarnings(certs []pki.CertInfo, now time.Time) []CertWarning {
	var out []CertWarning
	for _, c := range certs {
		if left := c.NotAfter.Sub(now); left < CertWarnBefore {
			out = append(out, CertWarning{Path: c.Path, Subject: c.Subject, NotAfter: c.NotAfter,
				DaysLeft: int(left.Hours()) / 24})
		}
	}
	return out
}

// PrintCertWarnings writes a line per warning, for each role's `haagent status`.
func PrintCertWarnings(w io.Writer, ws []CertWarning) {
	for _, c := range ws {
		if c.DaysLeft < 0 {
			fmt.Fprintf(w, "WARNING: certificate %s (%s) EXPIRED on %s; run 'haagent certs renew'\n", c.Path, c.Subject, c.NotAfter.UTC().Format(time.DateOnly))
			continue
		}
		fmt.Fprintf(w, "WARNING: certificate %s (%s) expires in %d days, on %s; run 'haagent certs renew'\n",
			c.Path, c.Subject, c.DaysLeft, c.NotAfter.UTC().Format(time.DateOnly))
	}
}

// certExpiry reports the certificates under a root: the gauges of /metrics, read at
// each scrape, and the log lines of those in warning.
type certExpiry struct {
	root      string
	lg        *slog.Logger
	now       func() time.Time
	expiresIn *prometheus.Desc
	warning   *prometheus.Desc

	mu sync.Mutex // guards the fields below
	// logged is when each certificate in warning was last logged.
	logged map[string]time.Time
}

func newCertExpiry(root string, lg *slog.Logger, now func() time.Time) *certExpiry {
	return &certExpiry{root: root, lg: lg, now: now, logged: map[string]time.Time{},
		expiresIn: prometheus.NewDesc("haagent_certificate_expires_in_seconds",
			"Seconds until the certificate at path expires (negative once it has).", []string{"path"}, nil),
		warning: prometheus.NewDesc("haagent_certificate_expiry_warning",
			"1 while the certificate at path expires within 120 days (or has expired), else 0.", []string{"path"}, nil),
	}
}

// Describe is prometheus.Collector's.
func (c *certExpiry) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiresIn
	ch <- c.warning
}

// Collect is prometheus.Collector's: it reads the certificates now.
func (c *certExpiry) Collect(ch chan<- prometheus.Metric) {
	certs, err := pki.Inspect(c.root)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.expiresIn, err)
		return
	}
	now := c.now()
	for _, ci := range certs {
		warn := 0.0
		if ci.NotAfter.Sub(now) < CertWarnBefore {
			warn = 1
		}
		ch <- prometheus.MustNewConstMetric(c.expiresIn, prometheus.GaugeValue, ci.NotAfter.Sub(now).Seconds(), ci.Path)
		ch <- prometheus.MustNewConstMetric(c.warning, prometheus.GaugeValue, warn, ci.Path)
	}
}

// logWarnings logs each certificate in warning, once per certLogEvery.
func (c *certExpiry) logWarnings() {
	certs, err := pki.Inspect(c.root)
	if err != nil {
		c.lg.Warn("[certificates] could not read the certificates to check their expiry", "err", err)
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range certWarnings(certs, now) {
		if at, ok := c.logged[w.Path]; ok && now.Sub(at) < certLogEvery {
			continue
		}
		c.logged[w.Path] = now
		c.lg.Warn("[certificates] a certificate expires soon; 'haagent certs renew' renews this node's, 'haagent certs check' lists them",
			"path", w.Path, "subject", w.Subject, "notAfter", w.NotAfter.UTC().Format(time.RFC3339), "daysLeft", w.DaysLeft)
	}
}

// run logs the warnings now, then at every tick, until ctx ends.
func (c *certExpiry) run(ctx context.Context, tick <-chan time.Time) {
	for {
		c.logWarnings()
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
}
