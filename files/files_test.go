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
