package carotate

import (
	"bytes"
	"testing"
	"time"

	"github.com/haagent/haagent/trust/pki"
)

// The phases step old → trust (old signs, both trusted) → reissue (new signs, both
// trusted) → drop (new alone) → none, and what is trusted changes at every step, so
// that every node sees each one. The tokens and the encryption keys ride along, through
// every phase and its argon2id seal.
func TestNextStepsThroughThePhases(t *testing.T) {
	sh, err := pki.NewShared(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	agent, _ := pki.GenerateToken(pki.KindAgent)
	lb, _ := pki.GenerateToken(pki.KindLB)
	keys := []pki.EncryptionKey{{Name: "key1", Secret: bytes.Repeat([]byte{1}, 32)}}
	sh.AgentToken, sh.LBToken, sh.EncryptionKeys = &agent, &lb, keys
	old := sh.CA
	newCA, err := pki.NewCA("haagent-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mk := func() (*pki.CA, error) { return newCA, nil }
	want := []struct {
		phase string
		signs *pki.CA
		trust []*pki.CA
	}{
		{pki.PhaseTrust, old, []*pki.CA{old, newCA}},
		{pki.PhaseReissue, newCA, []*pki.CA{newCA, old}},
		{pki.PhaseDrop, newCA, []*pki.CA{newCA}},
		{"", newCA, []*pki.CA{newCA}},
	}
	seen := map[string]bool{pki.TrustHash(sh.Trust()): true}
	for i, w := range want {
		next, err := Next(sh, i > 0, mk)
		if err != nil || next == nil {
			t.Fatalf("step %d: %v, %v", i, next, err)
		}
		if next.Phase() != w.phase || next.CA != w.signs {
			t.Fatalf("step %d: phase %q, signer %v; want %q", i, next.Phase(), next.CA.Cert.Subject, w.phase)
		}
		var trust []byte
		for _, ca := range w.trust {
			trust = append(trust, ca.CertPEM...)
		}
		if !bytes.Equal(next.Trust(), trust) {
			t.Fatalf("step %d (%s): trust is not %d CAs, the signer first", i, w.phase, len(w.trust))
		}
		// The drop and the end trust the same; every other step trusts something new.
		if h := pki.TrustHash(next.Trust()); seen[h] && w.phase != "" {
			t.Fatalf("step %d (%s): the trust did not change", i, w.phase)
		}
		seen[pki.TrustHash(next.Trust())] = true
		// The phase survives the sealed document.
		tok, _ := pki.GenerateToken(pki.KindServer)
		sealed, err := pki.SealShared(tok, next)
		if err != nil {
			t.Fatal(err)
		}
		opened, err := pki.OpenShared(tok, sealed)
		if err != nil || opened.Phase() != w.phase || !bytes.Equal(opened.Trust(), next.Trust()) {
			t.Fatalf("step %d: sealed and opened: %v, phase %q", i, err, opened.Phase())
		}
		if pki.LegacySeal(sealed) {
			t.Fatalf("step %d (%s): sealed the old way, not with argon2id", i, w.phase)
		}
		if opened.AgentToken == nil || *opened.AgentToken != agent || opened.LBToken == nil || *opened.LBToken != lb ||
			len(opened.EncryptionKeys) != 1 || !bytes.Equal(opened.EncryptionKeys[0].Secret, keys[0].Secret) {
			t.Fatalf("step %d (%s): agent token %v, lb token %v, %d encryption keys; want them kept", i, w.phase,
				opened.AgentToken, opened.LBToken, len(opened.EncryptionKeys))
		}
		sh = next
	}
	if next, err := Next(sh, true, mk); next != nil || err != nil {
		t.Fatalf("after the end: %v, %v; want done", next, err)
	}
}
