package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"math/big"
)

// The CAs that the cluster CA's key determines. Each signs for one purpose only, and
// nothing but its own verifier trusts it:
//   - the etcd peer CA signs the masters' peer certificates, and is all that the etcd
//     peer port trusts, so that nothing a minion or an lb holds speaks raft;
//   - the kubelet-serving CA signs the kubelets' serving certificates, and only the
//     apiserver trusts it (for kubelets), so that a kubelet's certificate is never
//     accepted for a master, whatever names it carries;
//   - the front-proxy CA signs the apiservers' aggregator client certificate, and only
//     aggregated API servers (a webhook-style extension such as metrics-server or the
//     conformance suite's sample-apiserver) trust it, for that one name: a client it
//     accepts may say which user it acts for (the request headers), so nothing else may
//     hold a certificate from it.
const (
	PeerCAName       = "haagent-etcd-peer-ca"
	KubeletCAName    = "haagent-kubelet-serving-ca"
	FrontProxyCAName = "haagent-front-proxy-ca"
)

// DerivedCANames is every purpose above: a rotation of the cluster CA replaces each.
var DerivedCANames = []string{PeerCAName, KubeletCAName, FrontProxyCAName}

// Derive returns the CA named purpose whose key is derived from this CA's key
// (HKDF-SHA256), valid as long as this CA. Every master that holds the cluster CA
// computes the same key, so that a cluster made before the CA existed gets it with no
// coordination: the first master to run a new haagent already holds it, and so does
// every other. The certificate's signature may differ from master to master; its key,
// subject and key ID, which verification uses, do not.
func (ca *CA) Derive(purpose string) (*CA, error) {
	secret, err := ca.Key.Bytes()
	if err != nil {
		return nil, fmt.Errorf("derive %s: %w", purpose, err)
	}
	var key *ecdsa.PrivateKey
	// A 256-bit string is not a valid P-256 scalar with probability 2^-32: try the next.
	for i := 0; key == nil; i++ {
		raw, err := hkdf.Key(sha256.New, secret, nil, fmt.Sprintf("haagent derived CA v1 %s %d", purpose, i), 32)
		if err != nil {
			return nil, fmt.Errorf("derive %s: %w", purpose, err)
		}
		if key, err = ecdsa.ParseRawPrivateKey(elliptic.P256(), raw); err != nil && i > 8 {
			return nil, fmt.Errorf("derive %s: %w", purpose, err)
		}
	}
	snRaw, err := hkdf.Key(sha256.New, secret, nil, "haagent derived CA serial v1 "+purpose, 16)
	if err != nil {
		return nil, fmt.Errorf("derive %s: %w", purpose, err)
	}
	sn := new(big.Int).Rsh(new(big.Int).SetBytes(snRaw), 1) // positive, at most 127 bits like serial()
	return selfSigned(purpose, key, sn, ca.Cert.NotBefore, ca.Cert.NotAfter)
}
