// Package files owns writing haagent's files to disk: atomically (temp file, fsync,
// rename, fsync of the dir), only when their bytes or mode changed, under a root prefix;
// removing the ones it wrote and no longer renders; and the hash that tells two files
// apart (snapshots, binaries).
package files

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// File is one file haagent owns: Path is relative to the root (no leading /).
type File struct {
	Path string
	Mode fs.FileMode
	Data []byte
}

// Apply writes every file under root that differs on disk and returns the paths it changed.
func Apply(root string, fs []File) ([]string, error) {
	var changed []string
	for _, f := range fs {
		did, err := Write(root, f)
		if err != nil {
			return changed, err
		}
		if did {
			changed = append(changed, f.Path)
		}
	}
	return changed, nil
}

// Write writes one file if its bytes or mode differ, and says whether it did.
func Write(root string, f File) (bool, error) {
	full := filepath.Join(root, f.Path)
	if cur, err := os.ReadFile(full); err == nil && bytes.Equal(cur, f.Data) {
		if fi, err := os.Stat(full); err == nil && fi.Mode().Perm() == f.Mode.Perm() {
			return false, nil
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", full, err)
	}
	if err := Atomic(full, f.Data, f.Mode); err != nil {
		return false, err
	}
	return true, nil
}

// Atomic replaces path with data so that a reader sees the old or the new file, never
// half of one, and the change survives a crash.
func Atomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this is a no-op
	if err := tmp.Chmod(mode.Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// SHA256 is the hex SHA-256 of the file at path, read as a stream.
func SHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
