package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReferenceIsCurrent: docs/reference.md is what the binary says about its flags and
// commands, so that a flag added, renamed or reworded can't leave the docs behind.
func TestReferenceIsCurrent(t *testing.T) {
	var b strings.Builder
	if err := genReference(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", ReferenceFile)
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run make reference", err)
	}
	if string(have) != b.String() {
		t.Fatalf("%s is stale: run make reference and commit it", ReferenceFile)
	}
	for _, want := range []string{"`--role=master`", "`--peers`", "`HAAGENT_PEERS`", "### `haagent upgrade plan [flags]`", "### `haagent member remove NAME`"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the reference has no %s", want)
		}
	}
}
