package pki

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
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
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "client-certificate-data:"); ok {
			return base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		}
	}
	return nil, fmt.Errorf("no client-certificate-data")
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
	return due, nil
}

// sharedDoc is the JSON sealed into etcd under SharedKey.
type sharedDoc struct {
	CACert   []byte `json:"caCert"`
	CAKey    []byte `json:"caKey"`
	SAKey    []byte `json:"saKey"`
	SAPub    []byte `json:"saPub"`
	Version  int    `json:"version"`
	IssuedAt string `json:"issuedAt"`
}

// SharedKey is the etcd key holding the sealed shared material.
const SharedKey = "/haagent/pki/shared"

// NewShared makes a new CA and service-account key pair: the first master does this once.
func NewShared(now time.Time) (*Shared, error) {
	ca, err := NewCA("haagent-ca", now)
	if err != nil {
		return nil, err
	}
	saKey, saPub, err := NewServiceAccountKey()
	if err != nil {
		return nil, err
	}
	return &Shared{CA: ca, SAKeyPEM: saKey, SAPubPEM: saPub}, nil
}

// LoadShared reads the shared material from a master's disk.
func LoadShared(root string) (*Shared, error) {
	read := func(p string) ([]byte, error) { return os.ReadFile(filepath.Join(root, p)) }
	caCert, err := read(CACert)
	if err != nil {
		return nil, err
	}
	caKey, err := read(CAKey)
	if err != nil {
		return nil, err
	}
	ca, err := LoadCA(caCert, caKey)
	if err != nil {
		return nil, err
	}
	saKey, err := read(SAKey)
	if err != nil {
		return nil, err
	}
	saPub, err := read(SAPub)
	if err != nil {
		return nil, err
	}
	return &Shared{CA: ca, SAKeyPEM: saKey, SAPubPEM: saPub}, nil
}

// SealShared encrypts the shared material with the token, for etcd.
func SealShared(t Token, sh *Shared) ([]byte, error) {
	doc, err := json.Marshal(sharedDoc{CACert: sh.CA.CertPEM, CAKey: sh.CA.KeyPEM, SAKey: sh.SAKeyPEM, SAPub: sh.SAPubPEM, Version: 1})
	if err != nil {
		return nil, err
	}
	return Seal(t, doc)
}

// OpenShared decrypts what SealShared made.
func OpenShared(t Token, sealed []byte) (*Shared, error) {
	pt, err := Open(t, sealed)
	if err != nil {
		return nil, err
	}
	var d sharedDoc
	if err := json.Unmarshal(pt, &d); err != nil {
		return nil, err
	}
	ca, err := LoadCA(d.CACert, d.CAKey)
	if err != nil {
		return nil, err
	}
	return &Shared{CA: ca, SAKeyPEM: d.SAKey, SAPubPEM: d.SAPub}, nil
}
