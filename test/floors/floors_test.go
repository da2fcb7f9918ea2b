// Package floors checks the layering that docs/architecture.md draws: the product's
// folders stand in floors, and no package imports one on a floor above its own.
package floors

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/haagent/haagent/"

// floors, top to bottom, as docs/architecture.md lists them.
var floors = []string{"cmd", "roles", "cluster", "embed", "systemd", "trust", "netsetup", "base"}

func TestNoImportPointsUp(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	floor := func(pkg string) int {
		return slices.Index(floors, strings.SplitN(strings.TrimPrefix(pkg, module), "/", 2)[0])
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if strings.HasPrefix(f[0], module+"test/") {
			continue
		}
		from := floor(f[0])
		if from < 0 {
			t.Errorf("%s is in no floor: put it in one of %v, and in docs/architecture.md", f[0], floors)
			continue
		}
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			checked++
			if to := floor(imp); to < from {
				t.Errorf("%s imports %s, a floor above its own (%s over %s)", f[0], imp, floors[to], floors[from])
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d imports between the product's packages: go list's output is not what this test reads", checked)
	}
}
