// Package rootonly decides what a test that needs root (network namespaces, overlays,
// systemd-nspawn, package installs) does where it can't run: it skips, unless Env is
// "1", as `make test` sets it, where it fails, so that a CI run as another user can't
// pass without the failover and host tests.
package rootonly

import (
	"os"
	"testing"
)

// Env, set to "1", turns every skip of a root-only test into a failure.
const Env = "HAAGENT_REQUIRE_ROOT_TESTS"

// Require stops t unless the process runs as root; why says what needs root.
func Require(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unable(t, why+" needs root: run the tests as root, as make test in CI does")
	}
}

// Unable stops a root-only test that can't run here for reason: t.Skip, or t.Fatal when
// Env is "1".
func Unable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(Env) == "1" {
		t.Fatalf("%s (%s=1: root-only tests must run)", reason, Env)
	}
	t.Skip(reason)
}
