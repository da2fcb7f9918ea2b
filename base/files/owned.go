package files

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// Change is one file Apply rewrote or Prune removed.
type Change struct {
	Path string
	// Backup is the backup's path when the file on disk had been edited by hand.
	Backup string
	// Removed is set when Prune removed the file.
	Removed bool
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

// Prune removes what haagent wrote under dir and no longer renders: each file under dir
// that the state lists and keep does not. A file edited by hand is backed up first, as
// Apply does; a file haagent did not write is never touched. A directory under dir
// that is left empty goes too (certs.d/REGISTRY once its hosts.toml is gone); dir stays.
func (o *Owned) Prune(dir string, keep []File) ([]Change, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	state, err := o.load()
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	var stale []string
	for p := range state {
		if strings.HasPrefix(p, prefix) && !slices.ContainsFunc(keep, func(f File) bool { return f.Path == p }) {
			stale = append(stale, p)
		}
	}
	if len(stale) == 0 {
		return nil, nil
	}
	slices.Sort(stale)
	var changes []Change
	for _, p := range stale {
		full := filepath.Join(o.Root, p)
		cur, err := os.ReadFile(full)
		if errors.Is(err, os.ErrNotExist) {
			delete(state, p) // removed already: nothing left to own
			continue
		}
		if err != nil {
			return changes, errors.Join(fmt.Errorf("read %s: %w", full, err), o.save(state))
		}
		ch := Change{Path: p, Removed: true}
		if state[p] != hash(cur) {
			ch.Backup = full + BackupSuffix
			if err := Atomic(ch.Backup, cur, 0o600); err != nil {
				return changes, errors.Join(fmt.Errorf("back up %s: %w", full, err), o.save(state))
			}
		}
		if err := os.Remove(full); err != nil && !errors.Is(err, os.ErrNotExist) {
			return changes, errors.Join(fmt.Errorf("remove %s: %w", full, err), o.save(state))
		}
		delete(state, p)
		changes = append(changes, ch)
		// Up to, not including, dir; a directory that still holds anything (a CA the
		// operator put next to the hosts.toml, a backup) stops the climb.
		d := filepath.Dir(p)
		for ; strings.HasPrefix(d+"/", prefix) && d+"/" != prefix; d = filepath.Dir(d) {
			if os.Remove(filepath.Join(o.Root, d)) != nil {
				break
			}
		}
		if err := syncDir(filepath.Join(o.Root, d)); err != nil {
			return changes, errors.Join(err, o.save(state))
		}
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
