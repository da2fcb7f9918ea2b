// Command haagent turns a plain host into an lb, master or minion of an HA Kubernetes
// control plane. Main only parses, validates and runs; each role owns its behaviour.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/haagent/haagent/cluster/roll"
	"github.com/haagent/haagent/embed/etcdmember"
)

// Exit codes; systemd's RestartPreventExitStatus can name exitRemoved.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitRemoved = 3
)

// usageError is bad input: it exits 2 with one line per problem.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, osStdio(), os.Args[1:])
	stop()
	if ex := (*roll.Exec)(nil); errors.As(err, &ex) {
		// The role has stopped: hand the process to the binary the roll names, with the
		// same arguments and environment; argv[0] stays the installed path, which the
		// next binary watches for the install after it. Exec returns only on failure.
		fmt.Fprintf(os.Stderr, "haagent: exec %s (%s)\n", ex.Path, ex.Reason)
		err = fmt.Errorf("exec %s: %w", ex.Path, syscall.Exec(ex.Path, os.Args, os.Environ()))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "haagent: "+oneLinePerProblem(err))
	}
	os.Exit(exitCode(err))
}

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, etcdmember.ErrRemoved):
		return exitRemoved
	default:
		return exitFailure
	}
}

// oneLinePerProblem formats err for stderr. The problems of a joined error (Validate's,
// however deeply joined) each get their own line, as errors.Join puts them.
func oneLinePerProblem(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "\nhaagent: ")
}
