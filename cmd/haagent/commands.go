package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
)

// command is one subcommand; the agent itself runs when no subcommand is named.
type command struct {
	name    string
	args    string
	summary string
	run     func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"version", "", "print the version", runVersion},
		{"render", "--role=ROLE [flags]", "print every file the role would write, touching nothing", runRender},
		{"status", "[-o json]", "show the local node: role, members, health, flannel config", runStatus},
		{"member", "list | remove NAME", "list the etcd members, or remove one", runMember},
		{"snapshot", "save FILE | restore FILE --data-dir DIR", "save an etcd snapshot, or restore one into a new data dir", runSnapshot},
		{"token", "generate | show", "make a new cluster token, or print this master's token pinned to the CA", runToken},
		{"certs", "check | renew", "list the certificates with their expiry, or renew them now", runCerts},
		{"reset", "[--yes]", "return this host to its freshly installed state (for golden images)", runReset},
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		for _, c := range commands() {
			if c.name == args[0] {
				return c.run(ctx, args[1:])
			}
		}
		return usagef("unknown command %q; run 'haagent --help' for the list", args[0])
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		printHelp(os.Stdout)
		return nil
	}
	return runAgent(ctx, args)
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "Usage:")
	fmt.Fprintln(w, "  haagent --role=lb|master|minion [flags]    run this host's role (see 'haagent --role=ROLE --help')")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  haagent %s %s\t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nEvery flag can also come from the environment as HAAGENT_<FLAG>, e.g. HAAGENT_PEERS; a flag on the command line wins.")
}

// newFlagSet makes a flag set whose parse errors come back to us instead of being printed.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	return fs
}

// parseFlags parses args, then lays the environment under them.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{flagError(err)}
	}
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		return usageError{err}
	}
	return nil
}

// flagError rewords pflag's errors so that they name the flag first, like ours do.
func flagError(err error) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "unknown flag: "); ok {
		return fmt.Errorf("%s: unknown flag; run with --help to list the flags", rest)
	}
	return err
}

// envName is the environment variable that carries a flag: HAAGENT_ + upper snake case.
func envName(flag string) string {
	return "HAAGENT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its HAAGENT_ variable.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Sprintf("--%s: %s=%q: %v", f.Name, envName(f.Name), v, err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\nhaagent: "))
	}
	return nil
}
