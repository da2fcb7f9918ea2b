package nodeconf

import (
	"maps"
	"strings"
	"testing"
)

func TestParseEnv(t *testing.T) {
	in := "# a comment\n; another\n\nA=1\n B = two \nC=\"quoted value\"\nD='single'\nE=\"unbalanced\nnot a pair\nF=\n"
	got, err := ParseEnv(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "B": "two", "C": "quoted value", "D": "single", "E": "\"unbalanced", "F": ""}
	if !maps.Equal(got, want) {
		t.Errorf("ParseEnv = %q, want %q", got, want)
	}
}
