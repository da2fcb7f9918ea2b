package atrest

import (
	"bytes"
	"testing"

	"github.com/haagent/haagent/trust/pki"
)

func keys(names ...string) []pki.EncryptionKey {
	out := make([]pki.EncryptionKey, len(names))
	for i, n := range names {
		out[i] = pki.EncryptionKey{Name: n, Secret: bytes.Repeat([]byte{byte(i)}, 32)}
	}
	return out
}

func TestNext(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    []pki.EncryptionKey
		started bool
		want    Step
		wantErr bool
	}{
		{"a fresh rotation adds a key", keys("key1"), false, StepAdd, false},
		{"added second: promote it", keys("key1", "key2"), false, StepPromote, false},
		{"promoted: rewrite, then remove the old key", keys("key2", "key1"), false, StepRewrite, false},
		{"one key after a step: done", keys("key2"), true, StepDone, false},
		{"numbers compare as numbers", keys("key9", "key10"), true, StepPromote, false},
		{"a resumed rotation carries on after the promotion", keys("key10", "key9"), true, StepRewrite, false},
		{"no key yet", nil, false, 0, true},
		{"three keys are not a rotation", keys("key1", "key2", "key3"), false, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Next(tc.keys, tc.started)
			if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
				t.Fatalf("Next(%s, %v) = %v, %v; want %v (error %v)", Fingerprint(tc.keys), tc.started, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestRotationWalk drives Next and the key changes Rotate makes, as Rotate does, from
// one key to the next, and checks each intermediate list.
func TestRotationWalk(t *testing.T) {
	ks := keys("key1")
	var seen []string
	started := false
	for range 10 {
		step, err := Next(ks, started)
		if err != nil {
			t.Fatal(err)
		}
		if step == StepDone {
			break
		}
		switch step {
		case StepAdd:
			k, err := NewKey(ks)
			if err != nil {
				t.Fatal(err)
			}
			if len(k.Secret) != 32 {
				t.Fatalf("new key has %d bytes, want 32", len(k.Secret))
			}
			ks = []pki.EncryptionKey{ks[0], k}
		case StepPromote:
			ks = []pki.EncryptionKey{ks[1], ks[0]}
		case StepRewrite:
			ks = ks[:1]
		}
		started = true
		seen = append(seen, Fingerprint(ks))
	}
	want := []string{"key1,key2", "key2,key1", "key2"}
	if len(seen) != len(want) {
		t.Fatalf("rotation went through %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("rotation went through %v, want %v", seen, want)
		}
	}
}

func TestNewKeyNames(t *testing.T) {
	for _, tc := range []struct {
		have []pki.EncryptionKey
		want string
	}{
		{nil, "key1"},
		{keys("key1"), "key2"},
		{keys("key7", "key3"), "key8"},
		{keys("hand-made"), "key1"},
	} {
		k, err := NewKey(tc.have)
		if err != nil || k.Name != tc.want {
			t.Errorf("NewKey(%s) = %s, %v; want %s", Fingerprint(tc.have), k.Name, err, tc.want)
		}
	}
	a, _ := NewKey(nil)
	b, _ := NewKey(nil)
	if bytes.Equal(a.Secret, b.Secret) {
		t.Error("two new keys have the same secret")
	}
}
