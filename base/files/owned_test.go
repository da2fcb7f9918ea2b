package files

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestOwnedPrune: the hosts.toml of a mirror that is no longer rendered goes, with its
// directory once empty; what is still rendered, what haagent never wrote, and a
// directory that holds someone else's file stay; a hand-edited one is backed up first.
func TestOwnedPrune(t *testing.T) {
	root := t.TempDir()
	o := &Owned{Root: root, StatePath: "var/lib/haagent/files.json"}
	const dir = "etc/containerd/certs.d"
	hosts := func(reg string) File {
		return File{Path: dir + "/" + reg + "/hosts.toml", Mode: 0o644, Data: []byte("# " + reg + "\n")}
	}
	exists := func(rel string) bool {
		_, err := os.Lstat(filepath.Join(root, rel))
		return err == nil
	}
	write := func(rel, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, rel), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all := []File{hosts("docker.io"), hosts("quay.io"), hosts("ghcr.io"), hosts("lb1:5000"),
		{Path: "etc/containerd/config.toml", Mode: 0o644, Data: []byte("version = 3\n")}}
	if _, err := o.Apply(all); err != nil {
		t.Fatal(err)
	}
	write(dir+"/foreign.io/hosts.toml", "written by the operator\n") // never haagent's
	write(dir+"/quay.io/ca.crt", "the operator's CA\n")              // beside one of haagent's
	write(dir+"/lb1:5000/hosts.toml", "edited by hand\n")            // haagent's, edited

	// Only docker.io is still rendered (config.toml is outside dir and must not matter).
	keep := []File{hosts("docker.io"), all[4]}
	ch, err := o.Prune(dir, keep)
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, c := range ch {
		if !c.Removed {
			t.Errorf("%s: a change from Prune that is not a removal", c.Path)
		}
		removed = append(removed, c.Path)
	}
	want := []string{dir + "/ghcr.io/hosts.toml", dir + "/lb1:5000/hosts.toml", dir + "/quay.io/hosts.toml"}
	if !slices.Equal(removed, want) {
		t.Fatalf("pruned %v, want %v", removed, want)
	}
	for _, c := range ch {
		edited := c.Path == dir+"/lb1:5000/hosts.toml"
		if (c.Backup != "") != edited {
			t.Errorf("%s: backup %q; want one only for the hand-edited file", c.Path, c.Backup)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, dir, "lb1:5000/hosts.toml"+BackupSuffix)); string(b) != "edited by hand\n" {
		t.Errorf("the hand edit's backup holds %q", b)
	}
	for rel, want := range map[string]bool{
		dir + "/docker.io/hosts.toml":  true, // still rendered
		"etc/containerd/config.toml":   true, // outside dir
		dir + "/foreign.io/hosts.toml": true, // not haagent's
		dir + "/quay.io/ca.crt":        true, // not haagent's
		dir + "/quay.io":               true, // still holds the CA
		dir + "/quay.io/hosts.toml":    false,
		dir + "/lb1:5000":              true, // holds the backup
		dir + "/lb1:5000/hosts.toml":   false,
		dir + "/ghcr.io":               false, // emptied
		dir:                            true,
	} {
		if got := exists(rel); got != want {
			t.Errorf("%s exists: %v, want %v", rel, got, want)
		}
	}
	paths, err := o.Paths()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	if wantPaths := []string{dir + "/docker.io/hosts.toml", "etc/containerd/config.toml"}; !slices.Equal(paths, wantPaths) {
		t.Errorf("owned after prune: %v, want %v", paths, wantPaths)
	}

	// Nothing left to prune: no changes. A mirror added back is written again.
	if ch, err := o.Prune(dir, keep); err != nil || len(ch) != 0 {
		t.Errorf("second prune: %+v, %v; want nothing", ch, err)
	}
	if ch, err := o.Apply([]File{hosts("ghcr.io")}); err != nil || len(ch) != 1 || !exists(dir+"/ghcr.io/hosts.toml") {
		t.Errorf("re-adding ghcr.io: %+v, %v", ch, err)
	}
}
