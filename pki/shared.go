package pki

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// Shared is what masters hold in common: the CA with its key and the service-account keys.
type Shared struct {
	CA       *CA
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

// sharedDoc is the JSON sealed into etcd under SharedKey.
type sharedDoc struct {
	CACert []byte `json:"caCert"`
	CAKey  []byte `json:"caKey"`
	SAKey  []byte `json:"saKey"`
	SAPub  []byte `json:"saPub"`
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
	d := sharedDoc{CACert: sh.CA.CertPEM, CAKey: sh.CA.KeyPEM, SAKey: sh.SAKeyPEM, SAPub: sh.SAPubPEM,
		EncryptionKeys: sh.EncryptionKeys, Version: 1}
	if sh.AgentToken != nil {
		d.AgentSecret = sh.AgentToken.Secret
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
	if d.AgentSecret != "" {
		sh.AgentToken = &Token{Kind: KindAgent, Secret: d.AgentSecret}
	}
	if d.LBSecret != "" {
		sh.LBToken = &Token{Kind: KindLB, Secret: d.LBSecret}
	}
	return sh, nil
}
