package pki

import (
	"bytes"
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
	// Path is the file, with "#2" for the second certificate of a bundle, and so on.
	Path     string    `json:"path"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	RenewAt  time.Time `json:"renewAt"`
	IsCA     bool      `json:"isCA"`
	// KeyID is the certificate's own key ID (KeyIDString); SignedBy the issuer's
	// common name and key ID: a leaf and the CA that signed it show the same key ID.
	KeyID    string `json:"keyID"`
	SignedBy string `json:"signedBy"`
}

// KeyIDString is the short form of a key ID that 'haagent certs check' prints.
func KeyIDString(id []byte) string {
	if len(id) > 4 {
		id = id[:4]
	}
	return fmt.Sprintf("%x", id)
}

// Inspect lists the certificates under root: every certificate of every .crt in Dir
// and the client certificate embedded in every kubeconfig haagent writes.
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
		certs, err := ParseCerts(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		for i, c := range certs {
			path := "/" + rel
			if i > 0 {
				path += fmt.Sprintf("#%d", i+1)
			}
			signedBy := c.Issuer.CommonName + " " + KeyIDString(c.AuthorityKeyId)
			if len(c.AuthorityKeyId) == 0 || bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
				signedBy = "itself"
			}
			out = append(out, CertInfo{Path: path, Subject: c.Subject.String(), NotAfter: c.NotAfter, RenewAt: RenewAt(c), IsCA: c.IsCA,
				KeyID: KeyIDString(c.SubjectKeyId), SignedBy: signedBy})
		}
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
