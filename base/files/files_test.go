package files

import (
	"os"
	"path/filepath"
	"testing"
)

func TestApplyWritesOnlyChanges(t *testing.T) {
	root := t.TempDir()
	fs := []File{
		{Path: "etc/kubernetes/pki/ca.crt", Mode: 0o644, Data: []byte("cert")},
		{Path: "etc/kubernetes/pki/ca.key", Mode: 0o600, Data: []byte("key")},
	}
	changed, err := Apply(root, fs)
	if err != nil || len(changed) != 2 {
		t.Fatalf("first apply: changed %v, %v", changed, err)
	}
	for _, f := range fs {
		fi, err := os.Stat(filepath.Join(root, f.Path))
		if err != nil || fi.Mode().Perm() != f.Mode {
			t.Fatalf("%s: mode %v, %v; want %v", f.Path, fi.Mode().Perm(), err, f.Mode)
		}
	}
	changed, err = Apply(root, fs)
	if err != nil || len(changed) != 0 {
		t.Fatalf("second apply rewrote %v, %v", changed, err)
	}
	if err := os.Chmod(filepath.Join(root, fs[1].Path), 0o644); err != nil {
		t.Fatal(err)
	}
	fs[0].Data = []byte("cert2")
	changed, err = Apply(root, fs)
	if err != nil || len(changed) != 2 {
		t.Fatalf("apply after a content and a mode change: %v, %v", changed, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "etc/kubernetes/pki/.*tmp*"))
	if len(leftovers) != 0 {
		t.Fatalf("temp files left behind: %v", leftovers)
	}
}

func TestOwnedBacksUpHandEditsOnly(t *testing.T) {
	root := t.TempDir()
	o := &Owned{Root: root, StatePath: "var/lib/haagent/files.json"}
	f := File{Path: "etc/kubernetes/apiserver", Mode: 0o644, Data: []byte("v1\n")}
	if ch, err := o.Apply([]File{f}); err != nil || len(ch) != 1 || ch[0].Backup != "" {
		t.Fatalf("first write: %+v, %v", ch, err)
	}
	// haagent's own newer version replaces its older one without a backup.
	f.Data = []byte("v2\n")
	if ch, err := o.Apply([]File{f}); err != nil || len(ch) != 1 || ch[0].Backup != "" {
		t.Fatalf("own update: %+v, %v", ch, err)
	}
	// A hand edit is backed up, then replaced.
	full := filepath.Join(root, f.Path)
	if err := os.WriteFile(full, []byte("edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ch, err := o.Apply([]File{f})
	if err != nil || len(ch) != 1 || ch[0].Backup != full+BackupSuffix {
		t.Fatalf("hand edit: %+v, %v", ch, err)
	}
	if b, _ := os.ReadFile(full + BackupSuffix); string(b) != "edited by hand\n" {
		t.Fatalf("backup holds %q", b)
	}
	if b, _ := os.ReadFile(full); string(b) != "v2\n" {
		t.Fatalf("file holds %q after apply", b)
	}
	if ch, err := o.Apply([]File{f}); err != nil || len(ch) != 0 {
		t.Fatalf("nothing changed but Apply reported %+v, %v", ch, err)
	}
}
