package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/haagent/haagent/base/files"
)

// tokenPrefix marks a pinned token, as k3s's K10 does: K10<sha256 of the CA cert>::<secret>.
const tokenPrefix = "K10"

// Kind says what a token may obtain from the join service. It is part of the token's
// text (server:<secret>, agent:<secret>, lb:<secret>), so that a token given to the wrong role is
// caught when the flags are parsed, not after a round trip to a master.
type Kind string

const (
	// KindLegacy is a token without a kind, from before there were two: while the
	// cluster has no agent token it works for every role.
	KindLegacy Kind = ""
	// KindServer is the masters' token: it obtains the master bundle, CA key included,
	// and its secret seals the shared material in etcd.
	KindServer Kind = "server"
	// KindAgent is the minions' token: it obtains only the joining minion's own
	// certificates.
	KindAgent Kind = "agent"
	// KindLB is the lbs' token: it obtains only the joining lb's own certificate, whose
	// etcd user takes part in the VIP's election. Minions never hold it, so nothing a
	// minion holds can make an lb.
	KindLB Kind = "lb"
)

// minSecretLen is the shortest secret ParseToken reads: a cluster made before
// MinSecretBits keeps the token it was made with. The flags ask for more (SecretBits).
const minSecretLen = 16

// MinSecretBits is the least estimated entropy of a secret an operator gives in a
// flag: the seal key of the CA in etcd comes from the server token's secret, so an etcd
// snapshot must not be worth brute-forcing. 'haagent token generate' makes 256 bits.
const MinSecretBits = 128

// SecretBits estimates the entropy of a secret from its length and the characters it
// draws from: 4 bits a character for hex, else log2 of the size of the classes it uses
// (digits, lower case, upper case, '-_.'). A secret of fewer than 8 distinct
// characters counts as drawn from those alone, so "aaaa..." is worth nothing. It is an
// upper bound for a secret a person chose, and exact for a random one.
func SecretBits(secret string) int {
	var digit, lower, upper, sym, hexOnly = false, false, false, false, true
	distinct := map[rune]bool{}
	for _, r := range secret {
		distinct[r] = true
		switch {
		case r >= '0' && r <= '9':
			digit = true
		case r >= 'a' && r <= 'z':
			lower = true
			hexOnly = hexOnly && r <= 'f'
		case r >= 'A' && r <= 'Z':
			upper = true
			hexOnly = hexOnly && r <= 'F'
		default:
			sym, hexOnly = true, false
		}
	}
	pool := 0
	for _, c := range []struct {
		used bool
		size int
	}{{digit, 10}, {lower, 26}, {upper, 26}, {sym, 3}} {
		if c.used {
			pool += c.size
		}
	}
	if hexOnly && !(lower && upper) && (lower || upper) {
		pool = 16
	}
	if len(distinct) < 8 {
		pool = min(pool, len(distinct))
	}
	if pool < 2 {
		return 0
	}
	return int(float64(len(secret)) * math.Log2(float64(pool)))
}

// Token is a cluster secret of one kind, optionally pinned to the cluster CA.
type Token struct {
	// CAHash is the hex SHA-256 of the CA certificate's DER, or "" when unpinned.
	CAHash string
	Kind   Kind
	Secret string
}

// GenerateToken returns a new unpinned token of kind k with a 256-bit secret.
func GenerateToken(k Kind) (Token, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Token{}, fmt.Errorf("generate token: %w", err)
	}
	return Token{Kind: k, Secret: hex.EncodeToString(b)}, nil
}

// ParseToken accepts a secret, optionally preceded by its kind (server:, agent:, lb:) and
// optionally pinned: K10<64 hex>::[kind:]<secret>. A secret with no kind is a legacy token.
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
	if kind, secret, ok := strings.Cut(t.Secret, ":"); ok {
		switch Kind(kind) {
		case KindServer, KindAgent, KindLB:
			t.Kind, t.Secret = Kind(kind), secret
		default:
			return Token{}, fmt.Errorf("unknown token kind %q: a token is [K10<sha256>::]server:<secret>, agent:<secret> or lb:<secret>", kind)
		}
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

// String is the token's text form: kind:secret, pinned when CAHash is known.
func (t Token) String() string {
	s := t.Secret
	if t.Kind != KindLegacy {
		s = string(t.Kind) + ":" + s
	}
	if t.CAHash == "" {
		return s
	}
	return tokenPrefix + t.CAHash + "::" + s
}

// Pinned returns t pinned to the CA certificate der.
func (t Token) Pinned(caDER []byte) Token {
	t.CAHash = CAHash(caDER)
	return t
}

// Unpinned returns t without its pin: the form a master keeps on disk.
func (t Token) Unpinned() Token {
	t.CAHash = ""
	return t
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

// ReadTokenFile reads the token saved in path (as WriteTokenFile writes it, or by hand
// with a trailing newline). An absent file is an error that wraps os.ErrNotExist.
func ReadTokenFile(path string) (Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Token{}, err
	}
	t, err := ParseToken(string(b))
	if err != nil {
		return Token{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// WriteTokenFile saves t in path, mode 0600, atomically.
func WriteTokenFile(path string, t Token) error {
	return files.Atomic(path, []byte(t.String()+"\n"), 0o600)
}
