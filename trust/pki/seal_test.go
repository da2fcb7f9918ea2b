package pki

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// legacySealed is "a CA sealed before argon2id" sealed by haagent before this change
// (nonce || AES-GCM under an unsalted HKDF-SHA256 of the secret) with the secret
// "legacy-token-0123456789": what a cluster made before keeps in etcd.
const legacySealed = "7e1cca069f0909ba3af925439214ebd9ebf713cb39ef57c2e3643095fc16516db448f8e7f90467cae8ac8cfb9f99741bd592d2e091179d"

func TestSealFormats(t *testing.T) {
	tok := Token{Secret: "legacy-token-0123456789"}
	old, _ := hex.DecodeString(legacySealed)

	t.Run("the format from before is read", func(t *testing.T) {
		if !LegacySeal(old) {
			t.Fatal("LegacySeal = false for a value sealed before argon2id")
		}
		pt, err := Open(tok, old)
		if err != nil || string(pt) != "a CA sealed before argon2id" {
			t.Fatalf("Open = %q, %v", pt, err)
		}
		if _, err := Open(Token{Secret: "another-token-0123456789"}, old); err == nil {
			t.Fatal("another token opened the legacy value")
		}
	})

	sealed, err := Seal(tok, []byte("the CA"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the new format is written: argon2id's cost and a salt in the header", func(t *testing.T) {
		if LegacySeal(sealed) || !bytes.HasPrefix(sealed, []byte("haSeal2\x00")) {
			t.Fatalf("Seal wrote no argon2id header: %x", sealed[:16])
		}
		if tm, mem, th := binary.BigEndian.Uint32(sealed[8:]), binary.BigEndian.Uint32(sealed[12:]), sealed[16]; tm != 1 || mem != 64<<10 || th != 4 {
			t.Fatalf("cost time=%d memory=%d threads=%d, want 1, 65536 KiB, 4", tm, mem, th)
		}
		again, err := Seal(tok, []byte("the CA"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(sealed[17:sealHeaderLen], again[17:sealHeaderLen]) {
			t.Fatal("two seals share a salt")
		}
		pt, err := Open(tok, sealed)
		if err != nil || string(pt) != "the CA" {
			t.Fatalf("Open = %q, %v", pt, err)
		}
	})

	t.Run("a wrong token or a changed header is refused", func(t *testing.T) {
		if _, err := Open(Token{Secret: "another-token-0123456789"}, sealed); err == nil || !strings.Contains(err.Error(), "decrypt") {
			t.Fatalf("wrong token: %v", err)
		}
		for _, tt := range []struct {
			name string
			edit func(b []byte)
			want string
		}{
			{"salt", func(b []byte) { b[20] ^= 1 }, "decrypt"},
			{"more passes", func(b []byte) { binary.BigEndian.PutUint32(b[8:], 2) }, "decrypt"},
			{"a cost out of bounds", func(b []byte) { binary.BigEndian.PutUint32(b[12:], 1<<30) }, "out of bounds"},
			{"no threads", func(b []byte) { b[16] = 0 }, "out of bounds"},
			{"cut short", nil, "too short"},
		} {
			b := bytes.Clone(sealed)
			if tt.edit != nil {
				tt.edit(b)
			} else {
				b = b[:sealHeaderLen+4]
			}
			if _, err := Open(tok, b); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
			}
		}
	})
}
