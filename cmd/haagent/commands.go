package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// command is one entry of the command table. The table makes the cobra tree, so that
// --help, `haagent help CMD`, completion and the man pages all come from it.
type command struct {
	// use is the name, then the arguments as the usage line shows them; words that are
	// not flags or [optional] are the exact positional arguments, e.g. "remove NAME".
	use  string
	help string
	long string
	// flags binds the command's own flags; persistent binds flags that its subcommands
	// share (member's etcd client flags).
	flags, persistent func(fs *pflag.FlagSet)
	// run is nil for a command that only groups subcommands.
	run    func(ctx context.Context, w io.Writer, args []string) error
	sub    []command
	hidden bool
}

// commands is the table of subcommands. The agent itself is the root (see newRoot): it
// runs when no subcommand is named. completion replaces cobra's own, so that an unknown
// shell is bad input like any other.
func commands(a *agent, root **cobra.Command) []command {
	var (
		status       statusCmd
		member       memberCmd
		snapshot     snapshotCmd
		snapshotList snapshotListCmd
		token        tokenCmd
		certs        certsCmd
		reset        resetCmd
		secrets      secretsCmd
		clusterReset clusterResetCmd
		addon        addonsCmd
		upgrades     upgradeCmd
	)
	return []command{
		{use: "version", help: "print the version", run: runVersion},
		{use: "render --role=ROLE", help: "print every file the role would write, touching nothing",
			long: "Render prints every file the role would write, from the same flags and HAAGENT_* variables as the agent, and touches nothing. " +
				"'haagent render --role=ROLE --help' lists the role's flags; haagent(1) lists every role's.",
			flags: a.flags, run: a.render},
		{use: "status", help: "show the local node: role, members, health, flannel config", flags: status.flags, run: status.run},
		{use: "member", help: "list the etcd members, or remove one", persistent: member.etcd.add, sub: []command{
			{use: "list", help: "list the etcd members with their role, health and db size", flags: member.listFlags, run: member.list},
			{use: "remove NAME", help: "remove a member, by name or hex ID", run: member.remove},
		}},
		{use: "snapshot", help: "save an etcd snapshot, restore one into a new data dir, or list the scheduled ones", sub: []command{
			{use: "save FILE", help: "save a snapshot of the local member into FILE", flags: snapshot.etcd.add, run: snapshot.save},
			{use: "restore FILE", help: "restore FILE into a new --data-dir, with etcd's own snapshot library", flags: snapshot.restoreFlags, run: snapshot.restore},
			{use: "list", help: "list the scheduled snapshots in --snapshot-dir: name, time, size, revision, checksum", flags: snapshotList.flags, run: snapshotList.run},
		}},
		{use: "token", help: "make the cluster's server, agent and lb tokens, print them, or rotate the agent or lb token", sub: []command{
			{use: "generate", help: "print a new server, agent and lb token", run: token.generate},
			{use: "show", help: "print this master's server, agent and lb tokens, pinned to the cluster CA", flags: token.showFlags, run: token.show},
			{use: "rotate --agent|--lb", help: "replace the cluster's agent (minions') or lb token; joined nodes keep renewing, new joins need the new one",
				long: "Rotate makes a new agent or lb token and stores it, sealed, in etcd, through the local member: every master's join service " +
					"refuses the old one from then on. Nodes that have joined renew with their client certificates and need nothing. " +
					"In a cluster built with one token, --agent is how the minions and lbs get tokens of their own (the lb token comes with it).",
				flags: token.rotateFlags, run: token.rotate},
		}},
		{use: "certs", help: "list the certificates with their expiry, renew them now, or rotate the cluster CA", sub: []command{
			{use: "check", help: "list the certificates with the CA that signed each, their expiry and renewal date", flags: certs.checkFlags, run: certs.check},
			{use: "rotate-ca", help: "replace the cluster CA on a running cluster, with no downtime",
				long: rotateCALong, flags: certs.rotateFlags, run: certs.rotateCA},
			{use: "renew", help: "renew every certificate of this master now, then list them",
				long:  "Renew reissues every certificate of this master with its identity, read from the same flags and HAAGENT_* variables as the agent.",
				flags: certs.renewFlags, run: certs.renew},
		}},
		{use: "secrets", help: "manage the encryption of Secrets at rest", sub: []command{
			{use: "rotate-key", help: "replace the key that encrypts Secrets in etcd and re-encrypt every Secret with the new one",
				long: rotateLong, flags: secrets.rotateFlags, run: secrets.rotate},
		}},
		{use: "addons", help: "list, put or delete the cluster's add-ons (manifests kept in etcd)", long: addonsLong, persistent: addon.etcd.add, sub: []command{
			{use: "list", help: "list the add-ons with their state", run: addon.list},
			{use: "put NAME FILE", help: "store FILE (- for stdin) as add-on NAME; a master applies it cluster-wide", flags: addon.putFlags, run: addon.put},
			{use: "delete NAME", help: "delete add-on NAME; a master deletes its objects", run: addon.remove},
		}},
		{use: "upgrade", help: "plan a move of the cluster onto the installed Kubernetes and haagent binaries", persistent: upgrades.etcd.add, sub: []command{
			{use: "plan", help: "show each node's versions and the steps of the roll, or the skew rule it breaks (exit 2)",
				long: upgradePlanLong, flags: upgrades.planFlags, run: upgrades.plan},
		}},
		{use: "cluster-reset", help: "after a lost quorum, make this master the only member of its cluster, from its data or a snapshot",
			long: clusterResetLong, flags: clusterReset.flags, run: clusterReset.run},
		{use: "reset", help: "return this host to its freshly installed state (for golden images)", flags: reset.flags, run: reset.run},
		{use: "completion", help: "print the shell completion script for bash, zsh or fish", long: completionLong, sub: []command{
			{use: "bash", help: "print the bash completion script", run: func(_ context.Context, w io.Writer, _ []string) error {
				return (*root).GenBashCompletionV2(w, true)
			}},
			{use: "zsh", help: "print the zsh completion script", run: func(_ context.Context, w io.Writer, _ []string) error {
				return (*root).GenZshCompletion(w)
			}},
			{use: "fish", help: "print the fish completion script", run: func(_ context.Context, w io.Writer, _ []string) error {
				return (*root).GenFishCompletion(w, true)
			}},
		}},
		{use: "gen-reference FILE", help: "write the reference of every flag and command into FILE (make reference runs it)", hidden: true,
			run: func(_ context.Context, _ io.Writer, args []string) error { return writeReference(args[0]) }},
		{use: "gen-man DIR", help: "write the man pages into DIR (make man runs it)", hidden: true,
			run: func(_ context.Context, _ io.Writer, args []string) error { return genMan(args[0]) }},
	}
}

const completionLong = `Completion prints a script that makes the shell complete haagent's commands, flags and
their values. The script asks haagent itself, so it stays right across upgrades.

    bash: source <(haagent completion bash), or save it as /etc/bash_completion.d/haagent
    zsh:  haagent completion zsh > "${fpath[1]}/_haagent"
    fish: haagent completion fish > ~/.config/fish/completions/haagent.fish`

const rootLong = `haagent turns a plain host into an lb, master or minion of an HA Kubernetes control plane.
With no command it runs this host's role, as systemd does: /usr/bin/haagent with
/etc/sysconfig/haagent as its environment.

'haagent --role=ROLE --help' lists the flags of a role. Every flag of every command can
also come from the environment as HAAGENT_ and the flag's name in upper case with dashes
as underscores (HAAGENT_PEERS, HAAGENT_ETCD_CLIENT_PORT); a flag on the command line wins.

Exit codes: 0 ok, 1 failure, 2 bad input, 3 this member was removed from the cluster.`

// stdio is what a run reads and writes besides its arguments; tests replace each part.
type stdio struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

func osStdio() stdio { return stdio{os.Stdout, os.Stderr, os.LookupEnv} }

// run runs the command line args and returns an error that carries the exit code.
func run(ctx context.Context, sio stdio, args []string) error {
	root, ran := newRoot(sio, args)
	// A nil slice would make cobra read os.Args.
	root.SetArgs(append([]string{}, args...))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil || *ran {
		return err
	}
	// Not from a run: cobra refused the input (an argument of its completion command,
	// say). Ours are usage errors already.
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	return usagef("%v; run '%s --help'", err, cmd.CommandPath())
}

// newRoot builds the command tree for args: the role named by --role (or HAAGENT_ROLE)
// decides which flags the agent and render have, so it is found before the parse. ran
// becomes true once a command's own run starts: its errors are its own, everything
// before is bad input.
func newRoot(sio stdio, args []string) (root *cobra.Command, ran *bool) {
	ran = new(bool)
	a := newAgent(roleFromArgs(args, sio.lookupEnv), sio.stderr)
	root = build(command{use: "haagent --role=lb|master|minion", help: "HA Kubernetes control plane agent for plain hosts",
		long: rootLong, flags: a.flags, run: a.run, sub: commands(a, &root)}, sio, ran)
	root.SetOut(sio.stdout)
	root.SetErr(sio.stderr)
	root.SilenceErrors = true // main prints the one line per problem
	root.SilenceUsage = true
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		// The role decides which flags exist: without one, every role flag is unknown.
		if c.Flags().Lookup("role") != nil && a.roleErr != nil {
			return usageError{a.roleErr}
		}
		return usageError{flagError(err)}
	})
	root.SetHelpCommand(helpCommand())
	// Only member's subcommands inherit flags, and those are member's, not global.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "Global Flags:", "Inherited Flags:", 1))
	return root, ran
}

// build makes the cobra command of one table entry and its subcommands.
func build(c command, sio stdio, ran *bool) *cobra.Command {
	cmd := &cobra.Command{Use: c.use, Short: c.help, Long: c.long, Hidden: c.hidden, Args: positional}
	cmd.Flags().SortFlags = false
	cmd.PersistentFlags().SortFlags = false
	if c.persistent != nil {
		c.persistent(cmd.PersistentFlags())
	}
	if c.flags != nil {
		c.flags(cmd.Flags())
	}
	for _, s := range c.sub {
		cmd.AddCommand(build(s, sio, ran))
	}
	run := c.run
	if run == nil {
		run = func(_ context.Context, _ io.Writer, args []string) error { return missingSubcommand(cmd, args) }
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := applyEnv(cmd.Flags(), sio.lookupEnv); err != nil {
			return usageError{err}
		}
		*ran = true
		return run(cmd.Context(), cmd.OutOrStdout(), args)
	}
	for name, values := range flagValues {
		if cmd.Flags().Lookup(name) != nil || cmd.PersistentFlags().Lookup(name) != nil {
			_ = cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	return cmd
}

// flagValues are the values that completion offers for the flags that take a word.
var flagValues = map[string][]string{
	"role":       roleNames,
	"log-level":  {"debug", "info", "warn", "error"},
	"log-format": {"text", "json"},
	"output":     {"text", "json"},
	"systemd":    {"auto", "on", "off"},
}

// positional checks the arguments against the usage line's: "remove NAME" takes one.
func positional(c *cobra.Command, args []string) error {
	var want []string
	for _, w := range strings.Fields(c.Use)[1:] {
		if !strings.HasPrefix(w, "-") && !strings.HasPrefix(w, "[") {
			want = append(want, w)
		}
	}
	switch {
	case len(args) == len(want):
		return nil
	case len(want) == 0 && c.HasAvailableSubCommands():
		return missingSubcommand(c, args)
	case len(want) == 0:
		return usagef("%s: takes no arguments, got %q; run '%s --help'", c.CommandPath(), strings.Join(args, " "), c.CommandPath())
	}
	return usagef("%s: takes %s, got %d arguments; run '%s --help'", c.CommandPath(), strings.Join(want, " "), len(args), c.CommandPath())
}

// missingSubcommand is the error of a command run without one of its subcommands, or
// with one it does not have.
func missingSubcommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		var names []string
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				names = append(names, s.Name())
			}
		}
		return usagef("%s: name a command: %s; run '%s --help'", c.CommandPath(), strings.Join(names, ", "), c.CommandPath())
	}
	hint := ""
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		hint = fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	return usagef("unknown command %q for %s%s; run '%s --help' for the list", args[0], c.CommandPath(), hint, c.CommandPath())
}

// helpCommand is `haagent help [command]`. Unlike cobra's own, an unknown command is
// bad input (exit 2), not a help text.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "show a command's help and flags",
		Args:  cobra.ArbitraryArgs,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			parent, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var cs []cobra.Completion
			for _, s := range parent.Commands() {
				if s.IsAvailableCommand() && strings.HasPrefix(s.Name(), toComplete) {
					cs = append(cs, cobra.CompletionWithDesc(s.Name(), s.Short))
				}
			}
			return cs, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("help: %q is not a command; run 'haagent help' for the list", strings.Join(args, " "))
			}
			target.InitDefaultHelpFlag() // so that its help lists -h, --help
			return target.Help()
		},
	}
}

// flagError rewords pflag's errors so that they name the flag first, like ours do.
func flagError(err error) error {
	// A value that a flag's own type refused (--peers, say) names the flag first, as
	// every other refusal does.
	var invalid *pflag.InvalidValueError
	if errors.As(err, &invalid) {
		return fmt.Errorf("--%s: %q: %w", invalid.GetFlag().Name, invalid.GetValue(), invalid.Unwrap())
	}
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
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		values := []string{v}
		if f.Value.Type() == "stringArray" {
			// A repeatable flag whose values may hold commas (--kubelet-arg) takes several
			// from one variable separated by blanks, which its values can't hold.
			values = strings.Fields(v)
		}
		for _, one := range values {
			if err := fs.Set(f.Name, one); err != nil {
				var invalid *pflag.InvalidValueError
				if errors.As(err, &invalid) {
					err = invalid.Unwrap()
				}
				errs = append(errs, fmt.Errorf("--%s: %s=%q: %v", f.Name, envName(f.Name), v, err))
			}
		}
		_ = fs.SetAnnotation(f.Name, fromEnv, []string{envName(f.Name)})
	})
	return errors.Join(errs...)
}

// fromEnv annotates the flags that applyEnv set from the environment.
const fromEnv = "haagent-from-env"

// onCommandLine lists the flags among names that the command line gave, not the
// environment.
func onCommandLine(fs *pflag.FlagSet, names ...string) []string {
	var given []string
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Changed && f.Annotations[fromEnv] == nil {
			given = append(given, "--"+n)
		}
	}
	return given
}
