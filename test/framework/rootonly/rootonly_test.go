package rootonly

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// helperEnv makes TestUnableHelper call Unable; TestUnable runs it in a process of its
// own, with and without Env.
const helperEnv = "ROOTONLY_TEST_HELPER"

func TestUnableHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestUnable, in a process of its own")
	}
	Unable(t, "no way to run here")
}

// TestUnable: Unable skips a test, unless Env is 1, where it fails it, saying why.
func TestUnable(t *testing.T) {
	for _, tc := range []struct {
		env      string
		wantFail bool
		want     string
	}{
		{"", false, "--- SKIP: TestUnableHelper"},
		{"0", false, "--- SKIP: TestUnableHelper"},
		{"1", true, "no way to run here (" + Env + "=1: root-only tests must run)"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnableHelper$", "-test.v")
		cmd.Env = append(os.Environ(), helperEnv+"=1", Env+"="+tc.env)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s=%q: failed %v, output:\n%s\nwant failed %v and %q", Env, tc.env, failed, out, tc.wantFail, tc.want)
		}
	}
}
