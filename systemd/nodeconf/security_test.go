package nodeconf

import (
	"slices"
	"strings"
	"testing"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/trust/pki"
)

// TestEncryptionNeedsKeys checks that a master without keys (--insecure, or 'haagent
// render' without etcd) gets neither the file nor the flag, which would keep its
// apiserver from starting, and that with keys the file is private and read by the
// apiserver's unit, with the audit policy.
func TestEncryptionNeedsKeys(t *testing.T) {
	c := Config{Role: "master", Name: "m1", AdvertiseAddress: "10.0.0.21", EtcdEndpoints: []string{"https://10.0.0.21:2379"},
		ServiceClusterIPRange: "10.254.0.0/16", FlannelPrefix: "/p", Root: "/"}
	find := func(fs []files.File, path string) *files.File {
		for i := range fs {
			if fs[i].Path == path {
				return &fs[i]
			}
		}
		return nil
	}
	fs := render(t, c)
	if find(fs, EncryptionConfig) != nil || strings.Contains(string(find(fs, APIServer).Data), "--encryption-provider-config") {
		t.Error("a master without keys is rendered with encryption at rest")
	}
	if find(fs, AuditPolicy) == nil || !strings.Contains(string(find(fs, APIServer).Data), "--audit-log-path="+AuditLog) {
		t.Error("a master is rendered without the audit log")
	}
	c.EncryptionKeys = []pki.EncryptionKey{{Name: "key1", Secret: make([]byte, 32)}}
	fs = render(t, c)
	f := find(fs, EncryptionConfig)
	if f == nil || f.Mode != 0o600 || !strings.Contains(string(find(fs, APIServer).Data), "--encryption-provider-config=/"+EncryptionConfig) {
		t.Fatalf("a master with keys: encryption config %v", f)
	}
	for _, u := range Units(c) {
		if u.Name == "kube-apiserver.service" && !(slices.Contains(u.Reads, EncryptionConfig) && slices.Contains(u.Reads, AuditPolicy)) {
			t.Errorf("kube-apiserver is not restarted when its encryption config or audit policy changes: reads %v", u.Reads)
		}
	}
}
