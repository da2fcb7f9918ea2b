package pki

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// sealInfo binds derived keys to this use, so the same token can't decrypt anything else.
const sealInfo = "haagent pki in etcd v1"

// sealMagic starts a sealed value whose key comes from argon2id. A value without it is
// from before (nonce || ciphertext, under an unsalted HKDF of the token): Open still
// reads it, Seal no longer writes it. A random nonce starts with the magic once in 2^64.
var sealMagic = []byte("haSeal2\x00")

// The argon2id cost of a new seal: one pass over 64 MiB in 4 lanes, more memory than
// OWASP's first recommendation (46 MiB, one pass), and well under a tenth of a second on
// a master for each Seal or Open, which happen when a master starts and when the shared
// doc changes. The cost is stored in the header, so that a later release may raise it
// and still open what this one sealed.
const (
	argonTime    = 1
	argonMemory  = 64 << 10 // KiB
	argonThreads = 4
	saltLen      = 16
	// Bounds on a header's cost, so that a value tampered with in etcd can't make a
	// master allocate without limit before the authentication fails.
	maxArgonTime   = 16
	maxArgonMemory = 1 << 20 // KiB: 1 GiB
)

// sealHeader is the magic, then time, memory (KiB) and threads, then the salt.
const sealHeaderLen = 8 + 4 + 4 + 1 + saltLen

// Seal encrypts plaintext with AES-256-GCM under a key derived from the token's secret
// with argon2id and a random salt, so that etcd snapshots don't carry the CA key in the
// clear and a weak token costs its guesser dearly. The output is the header (magic,
// argon2id's cost, salt), the nonce, then the ciphertext, which authenticates the header.
func Seal(t Token, plaintext []byte) ([]byte, error) {
	header := make([]byte, sealHeaderLen)
	copy(header, sealMagic)
	binary.BigEndian.PutUint32(header[8:], argonTime)
	binary.BigEndian.PutUint32(header[12:], argonMemory)
	header[16] = argonThreads
	if _, err := rand.Read(header[17:]); err != nil {
		return nil, err
	}
	aead, err := argonAEAD(t, header)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append(header, nonce...)
	return aead.Seal(out, nonce, plaintext, aad(header)), nil
}

// Open reverses Seal, and reads the values sealed before argon2id too; a wrong token
// fails authentication.
func Open(t Token, sealed []byte) ([]byte, error) {
	var aead cipher.AEAD
	var ad []byte
	var err error
	if LegacySeal(sealed) {
		aead, err = hkdfAEAD(t)
		ad = []byte(sealInfo)
	} else {
		if len(sealed) < sealHeaderLen {
			return nil, errors.New("sealed value too short")
		}
		header := sealed[:sealHeaderLen]
		sealed = sealed[sealHeaderLen:]
		aead, err = argonAEAD(t, header)
		ad = aad(header)
	}
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("sealed value too short")
	}
	nonce, ct := sealed[:aead.NonceSize()], sealed[aead.NonceSize():]
	pt, err := aead.Open(nil, nonce, ct, ad)
	if err != nil {
		return nil, fmt.Errorf("decrypt with the token: %w (is this the cluster's token?)", err)
	}
	return pt, nil
}

// LegacySeal says whether sealed is in the format from before argon2id, which the
// masters seal again in the new one.
func LegacySeal(sealed []byte) bool { return !bytes.HasPrefix(sealed, sealMagic) }

func aad(header []byte) []byte { return append([]byte(sealInfo), header...) }

// argonAEAD is the AEAD whose key argon2id derives from the token and the header's
// salt and cost.
func argonAEAD(t Token, header []byte) (cipher.AEAD, error) {
	time, memory, threads := binary.BigEndian.Uint32(header[8:]), binary.BigEndian.Uint32(header[12:]), header[16]
	if time == 0 || time > maxArgonTime || memory < 8*uint32(threads) || memory > maxArgonMemory || threads == 0 {
		return nil, fmt.Errorf("sealed value: argon2id cost out of bounds (time %d, memory %d KiB, threads %d)", time, memory, threads)
	}
	return gcm(argon2.IDKey([]byte(t.Secret), header[17:], time, memory, threads, 32))
}

// hkdfAEAD is the AEAD of the values sealed before argon2id.
func hkdfAEAD(t Token) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(t.Secret), nil, sealInfo, 32)
	if err != nil {
		return nil, err
	}
	return gcm(key)
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
