package files

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// StateFile is where haagent records what it last wrote, relative to --root.
const StateFile = "var/lib/haagent/files.json"

// BackupSuffix is appended to a hand-edited file's name before haagent replaces it.
const BackupSuffix = ".haagent-bak"

// Owned writes files that haagent owns and an operator might edit. It remembers the
// hash of what it last wrote (in StatePath) so that it tells its own older version,
// which it simply replaces, from a hand edit, which it backs up first.
type Owned struct {
	Root string
	// StatePath is the JSON file of path -> sha256 of the last write, relative to Root.
	StatePath string

	mu sync.Mutex // serialises Apply
}

// Change is one file Apply rewrote.
type Change struct {
	Path string
	// Backup is the backup's path when the file on disk had been edited by hand.
	Backup string
}

// Apply writes every file whose bytes or mode differ and reports what it changed.
func (o *Owned) Apply(fs []File) ([]Change, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	state, err := o.load()
	if err != nil {
		return nil, err
	}
	var changes []Change
	for _, f := range fs {
		full := filepath.Join(o.Root, f.Path)
		cur, rerr := os.ReadFile(full)
		if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return changes, fmt.Errorf("read %s: %w", full, rerr)
		}
		if rerr == nil && string(cur) == string(f.Data) {
			if fi, err := os.Stat(full); err == nil && fi.Mode().Perm() == f.Mode.Perm() {
				state[f.Path] = hash(f.Data)
				continue
			}
		}
		ch := Change{Path: f.Path}
		if rerr == nil && state[f.Path] != hash(cur) && string(cur) != string(f.Data) {
			ch.Backup = full + BackupSuffix
			if err := Atomic(ch.Backup, cur, 0o600); err != nil {
				return changes, fmt.Errorf("back up %s: %w", full, err)
			}
		}
		if err := Atomic(full, f.Data, f.Mode); err != nil {
			return changes, err
		}
		state[f.Path] = hash(f.Data)
		changes = append(changes, ch)
	}
	return changes, o.save(state)
}

// Paths lists every file haagent has written.
func (o *Owned) Paths() ([]string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	state, err := o.load()
	if err != nil {
		return nil, err
	}
	var ps []string
	for p := range state {
		ps = append(ps, p)
	}
	return ps, nil
}

func (o *Owned) load() (map[string]string, error) {
	state := map[string]string{}
	b, err := os.ReadFile(filepath.Join(o.Root, o.StatePath))
	if errors.Is(err, os.ErrNotExist) {
		return state, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &state); err != nil {
		return nil, fmt.Errorf("%s: %w", o.StatePath, err)
	}
	return state, nil
}

func (o *Owned) save(state map[string]string) error {
	b, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return err
	}
	return Atomic(filepath.Join(o.Root, o.StatePath), b, 0o600)
}

func hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
