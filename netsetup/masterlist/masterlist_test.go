package masterlist

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestInitial(t *testing.T) {
	tests := []struct {
		name              string
		seed, saved, want []string
	}{
		{"first start: the flags", []string{"a", "b"}, nil, []string{"a", "b"}},
		{"no flags: the saved list", nil, []string{"b", "c"}, []string{"b", "c"}},
		{"saved first, then what only the flags name", []string{"a", "b"}, []string{"b", "c"}, []string{"b", "c", "a"}},
		{"the same list", []string{"a", "b"}, []string{"a", "b"}, []string{"a", "b"}},
		{"nothing", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Initial(tt.seed, tt.saved); !slices.Equal(got, tt.want) {
				t.Errorf("Initial(%v, %v) = %v, want %v", tt.seed, tt.saved, got, tt.want)
			}
		})
	}
}

func TestNext(t *testing.T) {
	tests := []struct {
		name                 string
		current, hosts, want []string
	}{
		{"the cluster's list replaces seeds it lacks", []string{"a", "x"}, []string{"c", "a", "b"}, []string{"a", "c", "b"}},
		{"a removed master drops out, the order stays", []string{"a", "b", "c"}, []string{"c", "a"}, []string{"a", "c"}},
		{"an empty answer keeps the list", []string{"a"}, nil, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Next(tt.current, tt.hosts); !slices.Equal(got, tt.want) {
				t.Errorf("Next(%v, %v) = %v, want %v", tt.current, tt.hosts, got, tt.want)
			}
		})
	}
}

func TestClientHost(t *testing.T) {
	for in, want := range map[string]string{
		"https://10.0.0.21:2379":  "10.0.0.21",
		"http://master1:2379":     "master1",
		"https://127.0.0.1:2379":  "",
		"https://[::1]:2379":      "",
		"https://0.0.0.0:2379":    "",
		"https://localhost:2379":  "",
		"https://[fd00::21]:2379": "fd00::21",
		"%zz":                     "",
	} {
		if got := clientHost(in); got != want {
			t.Errorf("clientHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	root := t.TempDir()
	if _, err := Load(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of nothing = %v, want ErrNotExist", err)
	}
	if err := Save(root, Saved{Masters: []string{"a", "b"}, Source: SourceCluster}); err != nil {
		t.Fatal(err)
	}
	s, err := Load(root)
	if err != nil || !slices.Equal(s.Masters, []string{"a", "b"}) {
		t.Fatalf("Load = %+v, %v", s, err)
	}
	if err := os.WriteFile(filepath.Join(root, File), []byte(`{"masters":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(root); err == nil {
		t.Error("Load accepted a list with no masters")
	}
	if err := os.WriteFile(filepath.Join(root, File), []byte(`{"masters":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(root); err == nil {
		t.Error("Load accepted a torn file")
	}
}

// TestKeeper runs the keeper against a source the test sets: a failed or empty answer
// keeps the list; an answer replaces it, is applied and saved.
func TestKeeper(t *testing.T) {
	if _, err := New(Config{Root: t.TempDir()}); err == nil {
		t.Fatal("New with no masters at all succeeded")
	}
	root := t.TempDir()
	var applied [][]string
	k, err := New(Config{Root: root, Seed: []string{"a"}, Saved: Saved{Masters: []string{"old"}},
		Apply: func(h []string) error { applied = append(applied, h); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Masters(); !slices.Equal(got, []string{"old", "a"}) {
		t.Fatalf("start list %v, want [old a]", got)
	}
	ctx := context.Background()
	if k.Refresh(ctx) {
		t.Fatal("Refresh without a source answered")
	}
	var answer []string
	var answerErr error
	k.SetSource(func(context.Context) ([]string, error) { return answer, answerErr })

	answerErr = errors.New("no leader")
	if k.Refresh(ctx) || !slices.Equal(k.Masters(), []string{"old", "a"}) || k.Status().LastError == "" {
		t.Fatalf("a failed answer changed the list: %+v", k.Status())
	}
	answerErr = nil
	if k.Refresh(ctx) || !slices.Equal(k.Masters(), []string{"old", "a"}) {
		t.Fatalf("an empty answer changed the list: %+v", k.Status())
	}
	if _, err := os.Stat(filepath.Join(root, File)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saved before the cluster answered: %v", err)
	}

	answer = []string{"c", "a", "b"}
	if !k.Refresh(ctx) {
		t.Fatal("the answer was not taken")
	}
	want := []string{"a", "c", "b"}
	if st := k.Status(); !slices.Equal(st.Masters, want) || st.Source != SourceCluster || st.LastError != "" || st.Updated.IsZero() {
		t.Fatalf("status after the answer: %+v, want masters %v from the cluster", st, want)
	}
	if len(applied) != 1 || !slices.Equal(applied[0], want) {
		t.Fatalf("applied %v, want once %v", applied, want)
	}
	if s, err := Load(root); err != nil || !slices.Equal(s.Masters, want) || s.Source != SourceCluster {
		t.Fatalf("saved %+v, %v; want %v", s, err, want)
	}

	answer = []string{"b", "a"}
	k.Refresh(ctx)
	if s, _ := Load(root); !slices.Equal(s.Masters, []string{"a", "b"}) || len(applied) != 2 {
		t.Fatalf("after c left: saved %v, applied %v", s.Masters, applied)
	}
	k.Refresh(ctx)
	if len(applied) != 2 {
		t.Fatalf("the same answer was applied again: %v", applied)
	}
}
