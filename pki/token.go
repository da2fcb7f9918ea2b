package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// tokenPrefix marks a pinned token, as k3s's K10 does: K10<sha256 of the CA cert>::<secret>.
const tokenPrefix = "K10"

// minSecretLen keeps secrets long enough to resist guessing through the rate limit.
const minSecretLen = 16

// Token is the shared cluster secret, optionally pinned to the cluster CA.
type Token struct {
	// CAHash is the hex SHA-256 of the CA certificate's DER, or "" when unpinned.
	CAHash string
	Secret string
}

// GenerateToken returns a new unpinned token with a 256-bit secret.
func GenerateToken() (Token, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("generate token: %w", err)
	}
	return Token{Secret: hex.EncodeToString(b)}, nil
}

// ParseToken accepts a bare secret or the pinned form K10<64 hex>::<secret>.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	var t Token
	if rest, ok := strings.CutPrefix(s, tokenPrefix); ok && strings.Contains(rest, "::") {
		hash, secret, _ := strings.Cut(rest, "::")
		if hash != "" {
			if len(hash) != 64 {
				return Token{}, errors.New("the CA pin must be 64 hex digits (K10<sha256>::<secret>)")
			}
			if _, err := hex.DecodeString(hash); err != nil {
				return Token{}, errors.New("the CA pin is not hex (K10<sha256>::<secret>)")
			}
		}
		t = Token{CAHash: strings.ToLower(hash), Secret: secret}
	} else {
		t = Token{Secret: s}
	}
	if len(t.Secret) < minSecretLen {
		return Token{}, fmt.Errorf("the secret must be at least %d characters", minSecretLen)
	}
	for _, r := range t.Secret {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return Token{}, errors.New("the secret may hold only letters, digits, '-', '_' and '.'")
		}
	}
	return t, nil
}

// String is the token's text form: pinned when CAHash is known.
func (t Token) String() string {
	if t.CAHash == "" {
		return t.Secret
	}
	return tokenPrefix + t.CAHash + "::" + t.Secret
}

// Pinned returns t pinned to the CA certificate der.
func (t Token) Pinned(caDER []byte) Token {
	return Token{CAHash: CAHash(caDER), Secret: t.Secret}
}

// CAHash is the pin of a CA certificate.
func CAHash(caDER []byte) string {
	sum := sha256.Sum256(caDER)
	return hex.EncodeToString(sum[:])
}

// CheckCA refuses a CA that doesn't match the pin. An unpinned token accepts any CA.
func (t Token) CheckCA(caDER []byte) error {
	if t.CAHash == "" {
		return nil
	}
	if got := CAHash(caDER); subtle.ConstantTimeCompare([]byte(got), []byte(t.CAHash)) != 1 {
		return fmt.Errorf("%w: the token pins %s but the cluster presented %s", ErrCAMismatch, t.CAHash[:12], got[:12])
	}
	return nil
}

// ErrCAMismatch means the cluster's CA is not the one the token pins.
var ErrCAMismatch = errors.New("cluster CA does not match the token")

// SecretEqual compares secrets in constant time.
func (t Token) SecretEqual(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1
}
