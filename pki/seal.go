package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// sealInfo binds derived keys to this use, so the same token can't decrypt anything else.
const sealInfo = "haagent pki in etcd v1"

// Seal encrypts plaintext with AES-256-GCM under a key derived from the token's secret
// (HKDF-SHA256), so that etcd snapshots don't carry the CA key in the clear.
// The output is nonce || ciphertext.
func Seal(t Token, plaintext []byte) ([]byte, error) {
	aead, err := aeadFor(t)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plaintext, []byte(sealInfo)), nil
}

// Open reverses Seal; a wrong token fails authentication.
func Open(t Token, sealed []byte) ([]byte, error) {
	aead, err := aeadFor(t)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("sealed value too short")
	}
	nonce, ct := sealed[:aead.NonceSize()], sealed[aead.NonceSize():]
	pt, err := aead.Open(nil, nonce, ct, []byte(sealInfo))
	if err != nil {
		return nil, fmt.Errorf("decrypt with the token: %w (is this the cluster's token?)", err)
	}
	return pt, nil
}

func aeadFor(t Token) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(t.Secret), nil, sealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
