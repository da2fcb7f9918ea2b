package pki

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestSharedKeepsEncryptionKeys checks that the encryption keys survive the seal, in
// their order, and that a document sealed without them opens with none.
func TestSharedKeepsEncryptionKeys(t *testing.T) {
	sh, err := NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok := Token{Secret: strings.Repeat("s", 64)}
	sealed, err := SealShared(tok, sh)
	if err != nil {
		t.Fatal(err)
	}
	back, err := OpenShared(tok, sealed)
	if err != nil || len(back.EncryptionKeys) != 0 {
		t.Fatalf("a document without keys opens with %d keys, err %v", len(back.EncryptionKeys), err)
	}
	sh.EncryptionKeys = []EncryptionKey{{Name: "key2", Secret: bytes.Repeat([]byte{2}, 32)}, {Name: "key1", Secret: bytes.Repeat([]byte{1}, 32)}}
	if sealed, err = SealShared(tok, sh); err != nil {
		t.Fatal(err)
	}
	if back, err = OpenShared(tok, sealed); err != nil {
		t.Fatal(err)
	}
	if len(back.EncryptionKeys) != 2 || back.EncryptionKeys[0].Name != "key2" || !bytes.Equal(back.EncryptionKeys[1].Secret, sh.EncryptionKeys[1].Secret) {
		t.Fatalf("keys after the seal: %+v", back.EncryptionKeys)
	}
}
