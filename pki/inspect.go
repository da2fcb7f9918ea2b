package pki

import (
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// RenewAt is when a certificate is due for renewal: at 2/3 of its lifetime.
func RenewAt(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3)
}

// CertInfo is one certificate found on disk.
type CertInfo struct {
	Path     string    `json:"path"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	RenewAt  time.Time `json:"renewAt"`
	IsCA     bool      `json:"isCA"`
}

// Inspect lists the certificates under root: every .crt in Dir and the client
// certificate embedded in every kubeconfig haagent writes.
func Inspect(root string) ([]CertInfo, error) {
	var out []CertInfo
	crts, _ := filepath.Glob(filepath.Join(root, Dir, "*.crt"))
	kcs, _ := filepath.Glob(filepath.Join(root, "etc/kubernetes", "*.kubeconfig"))
	for _, p := range append(crts, kcs...) {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(p, ".kubeconfig") {
			if data, err = kubeconfigCert(data); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
		}
		c, err := ParseCert(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, CertInfo{Path: "/" + rel, Subject: c.Subject.String(), NotAfter: c.NotAfter, RenewAt: RenewAt(c), IsCA: c.IsCA})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func kubeconfigCert(data []byte) ([]byte, error) {
	return kubeconfigData(data, "client-certificate-data")
}

// KubeconfigCA is the CA certificate (PEM) that a kubeconfig Kubeconfig rendered trusts.
func KubeconfigCA(data []byte) ([]byte, error) {
	return kubeconfigData(data, "certificate-authority-data")
}

// kubeconfigData decodes the first base64 field named field in a kubeconfig.
func kubeconfigData(data []byte, field string) ([]byte, error) {
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		}
	}
	return nil, fmt.Errorf("no %s", field)
}

// DueForRenewal reports whether any leaf certificate under root has passed its renewal time.
func DueForRenewal(root string, now time.Time) ([]string, error) {
	infos, err := Inspect(root)
	if err != nil {
		return nil, err
	}
	var due []string
	for _, ci := range infos {
		if !ci.IsCA && !now.Before(ci.RenewAt) {
			due = append(due, ci.Path)
		}
	}
	if servingFromClusterCA(root) {
		due = append(due, "/"+KubeletServingCert+" (from the cluster CA)")
	}
	return due, nil
}

// servingFromClusterCA reports whether a kubelet's serving certificate was issued by
// the cluster CA, as before the kubelet-serving CA: it is renewed at once.
func servingFromClusterCA(root string) bool {
	read := func(p string) *x509.Certificate {
		data, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return nil
		}
		c, _ := ParseCert(data)
		return c
	}
	ca, serving := read(CACert), read(KubeletServingCert)
	return ca != nil && serving != nil && serving.CheckSignatureFrom(ca) == nil
}
