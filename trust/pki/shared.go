package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Shared is what masters hold in common: the CA with its key and the service-account keys.
type Shared struct {
	// CA is the cluster CA that signs: every leaf comes from it, or from a CA derived
	// from it (Derive).
	CA *CA
	// Rotation is a replacement of the cluster CA under way ('haagent certs rotate-ca',
	// package carotate); nil when there is none.
	Rotation *Rotation
	SAKeyPEM []byte
	SAPubPEM []byte
	// AgentToken is the minions' token, unpinned; nil in a cluster built with one
	// legacy token, until 'haagent token rotate --agent' sets it.
	AgentToken *Token
	// LBToken is the lbs' token, unpinned; nil while the cluster has no agent token (the
	// legacy token joins lbs then), or until a master that knows lb tokens adds one.
	LBToken *Token
	// EncryptionKeys are the apiserver's keys for Secrets at rest, the write key first;
	// empty until the first master to find none makes one (see package atrest).
	EncryptionKeys []EncryptionKey
}

// The phases of a CA rotation, in order. What every component trusts is Trust(): the
// CA that signs, then the other one while there is one.
const (
	// PhaseTrust: the old CA signs; the new one is trusted beside it everywhere.
	PhaseTrust = "trust"
	// PhaseReissue: the new CA signs and every leaf is issued again from it; the old
	// one is still trusted.
	PhaseReissue = "reissue"
	// PhaseDrop: the new CA alone is trusted; the rotation ends once every node has
	// dropped the old one.
	PhaseDrop = "drop"
)

// Rotation is a replacement of the cluster CA under way.
type Rotation struct {
	// Phase is PhaseTrust, PhaseReissue or PhaseDrop; "" when read from a master's
	// disk, which holds what it trusts but not the phase.
	Phase string
	// Other is the CA trusted beside CA: the next one before it signs (PhaseTrust), the
	// previous one while the leaves move over (PhaseReissue); nil once dropped.
	Other *CA
}

// TrustedCAs are the cluster CAs every component trusts now: CA, then the rotation's
// other CA if there is one.
func (sh *Shared) TrustedCAs() []*CA {
	out := []*CA{sh.CA}
	if sh.Rotation != nil && sh.Rotation.Other != nil {
		out = append(out, sh.Rotation.Other)
	}
	return out
}

// Trust is what ca.crt holds and kubeconfigs embed: the PEM of TrustedCAs, the CA that
// signs first.
func (sh *Shared) Trust() []byte {
	var b []byte
	for _, ca := range sh.TrustedCAs() {
		b = append(b, ca.CertPEM...)
	}
	return b
}

// Phase is the rotation's phase, "" when none is under way.
func (sh *Shared) Phase() string {
	if sh.Rotation == nil {
		return ""
	}
	return sh.Rotation.Phase
}

// TrustHash names a trust bundle (PEM) in records and logs: what a master or node
// applied, compared with what the shared document wants.
func TrustHash(trust []byte) string {
	sum := sha256.Sum256(trust)
	return hex.EncodeToString(sum[:6])
}

// ParseCerts reads every certificate in PEM data, in order.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// rotationDoc is a Rotation in the sealed document.
type rotationDoc struct {
	Phase     string `json:"phase"`
	OtherCert []byte `json:"otherCert,omitempty"`
	OtherKey  []byte `json:"otherKey,omitempty"`
}

// sharedDoc is the JSON sealed into etcd under SharedKey.
type sharedDoc struct {
	CACert []byte `json:"caCert"`
	CAKey  []byte `json:"caKey"`
	// Rotation is omitted while no CA rotation is under way.
	Rotation *rotationDoc `json:"rotation,omitempty"`
	SAKey    []byte       `json:"saKey"`
	SAPub    []byte       `json:"saPub"`
	// AgentSecret is the agent token's secret; "" while the cluster has none.
	AgentSecret string `json:"agentSecret,omitempty"`
	// LBSecret is the lb token's secret; "" while the cluster has none.
	LBSecret string `json:"lbSecret,omitempty"`
	// EncryptionKeys is omitted by clusters made before encryption at rest.
	EncryptionKeys []EncryptionKey `json:"encryptionKeys,omitempty"`
	Version        int             `json:"version"`
	IssuedAt       string          `json:"issuedAt"`
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

// LoadShared reads the shared material from a master's disk. While a CA rotation is
// under way, ca.crt holds the other CA second and CAOtherKey its key.
func LoadShared(root string) (*Shared, error) {
	read := func(p string) ([]byte, error) { return os.ReadFile(filepath.Join(root, p)) }
	caCert, err := read(CACert)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCerts(caCert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACert, err)
	}
	caKey, err := read(CAKey)
	if err != nil {
		return nil, err
	}
	ca, err := LoadCA(pemCert(certs[0].Raw), caKey)
	if err != nil {
		return nil, err
	}
	var rot *Rotation
	switch otherKey, err := read(CAOtherKey); {
	case err == nil && len(certs) == 2:
		other, err := LoadCA(pemCert(certs[1].Raw), otherKey)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", CAOtherKey, err)
		}
		rot = &Rotation{Other: other}
	case err == nil || len(certs) != 1:
		return nil, fmt.Errorf("%s holds %d certificates and %s is %v: a master holds one CA, or two with the other's key while the CA rotates",
			CACert, len(certs), CAOtherKey, map[bool]string{true: "there", false: "missing"}[err == nil])
	case !errors.Is(err, os.ErrNotExist):
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
	return &Shared{CA: ca, Rotation: rot, SAKeyPEM: saKey, SAPubPEM: saPub}, nil
}

// SealShared encrypts the shared material with the token, for etcd.
func SealShared(t Token, sh *Shared) ([]byte, error) {
	d := sharedDoc{CACert: sh.CA.CertPEM, CAKey: sh.CA.KeyPEM, SAKey: sh.SAKeyPEM, SAPub: sh.SAPubPEM,
		EncryptionKeys: sh.EncryptionKeys, Version: 1}
	if sh.AgentToken != nil {
		d.AgentSecret = sh.AgentToken.Secret
	}
	if r := sh.Rotation; r != nil {
		d.Rotation = &rotationDoc{Phase: r.Phase}
		if r.Other != nil {
			d.Rotation.OtherCert, d.Rotation.OtherKey = r.Other.CertPEM, r.Other.KeyPEM
		}
	}
	if sh.LBToken != nil {
		d.LBSecret = sh.LBToken.Secret
	}
	doc, err := json.Marshal(d)
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
	sh := &Shared{CA: ca, SAKeyPEM: d.SAKey, SAPubPEM: d.SAPub, EncryptionKeys: d.EncryptionKeys}
	if r := d.Rotation; r != nil {
		sh.Rotation = &Rotation{Phase: r.Phase}
		if len(r.OtherCert) > 0 {
			if sh.Rotation.Other, err = LoadCA(r.OtherCert, r.OtherKey); err != nil {
				return nil, fmt.Errorf("the rotation's other CA: %w", err)
			}
		}
	}
	if d.AgentSecret != "" {
		sh.AgentToken = &Token{Kind: KindAgent, Secret: d.AgentSecret}
	}
	if d.LBSecret != "" {
		sh.LBToken = &Token{Kind: KindLB, Secret: d.LBSecret}
	}
	return sh, nil
}
