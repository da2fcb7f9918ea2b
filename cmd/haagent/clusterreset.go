package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/systemd/nodeconf"
)

// DefaultEnvFile is the master's environment as systemd gives it to the agent.
const DefaultEnvFile = "/etc/sysconfig/haagent"

// clusterResetCmd is `haagent cluster-reset`: it reads the master's own flags,
// HAAGENT_* variables and /etc/sysconfig/haagent, so that the operator types one
// command on the master, with haagent stopped.
type clusterResetCmd struct {
	cfg         *master.Config
	fs          *pflag.FlagSet
	role        string
	log         logFlags
	envFile     string
	restore     string
	moveDataDir bool
	yes         bool
	stdin       *os.File
}

const clusterResetLong = `Cluster-reset makes this master the only member of its etcd cluster again, for the
day a quorum is lost for good. Stop haagent on this host first.

Without --restore it keeps this master's data (etcd's force-new-cluster): run it on the
master that survived when the others are gone. It refuses while a quorum of the old
cluster still answers on its peer ports, so it can't split a working cluster.

With --restore=FILE it restores a snapshot (haagent's scheduled ones, checked against
their .sha256 file, or etcdctl's) into the data dir of a new master under a new cluster
ID, and takes this master's certificates from the CA sealed in it. Masters still on the
old cluster are refused and say so; 'haagent reset --yes' on them, then start them.

Either way it prints what it will do and asks for confirmation unless --yes is given.
Afterwards start haagent here, then the other masters with empty data dirs: they join
with their usual configuration.

It reads the master's configuration as the agent does: flags, HAAGENT_* variables and,
under both, the file --env-file (/etc/sysconfig/haagent).`

func (c *clusterResetCmd) flags(fs *pflag.FlagSet) {
	c.cfg, c.fs, c.stdin = master.NewConfig(), fs, os.Stdin
	fs.BoolVar(&c.yes, "yes", false, "go ahead without asking; needed when there is no terminal to ask on")
	fs.StringVar(&c.restore, "restore", "", "restore this snapshot file under a new cluster ID, on a new master, instead of keeping the data dir's data")
	fs.BoolVar(&c.moveDataDir, "move-data-dir", false, "with --restore: rename a data dir that is not empty to DIR.before-restore-TIME instead of refusing")
	fs.StringVar(&c.envFile, "env-file", DefaultEnvFile, "the master's HAAGENT_* environment file, read under the flags and the environment (empty: none)")
	fs.StringVar(&c.role, "role", "master", "only master: cluster-reset takes the master's flags, so that its command line can be reused")
	c.log.add(fs)
	c.cfg.AddFlags(fs)
}

func (c *clusterResetCmd) run(ctx context.Context, w io.Writer, _ []string) error {
	if c.role != "master" {
		return usagef("--role: %q; cluster-reset runs on a master", c.role)
	}
	if err := c.applyEnvFile(); err != nil {
		return err
	}
	if err := c.cfg.Complete(); err != nil {
		return usageError{err}
	}
	if err := c.cfg.Validate(); err != nil {
		return usageError{err}
	}
	lg, err := c.log.logger(os.Stderr)
	if err != nil {
		return usageError{err}
	}
	err = master.ClusterReset(ctx, c.cfg, lg, master.ResetOptions{
		Restore: c.restore, MoveDataDir: c.moveDataDir, Out: w,
		Confirm: func(plan []string) error { return c.confirm(w, plan) },
	})
	var r master.Refusal
	if errors.As(err, &r) {
		return usageError{err}
	}
	return err
}

// applyEnvFile sets the flags that neither the command line nor the environment set
// from the env file, as systemd's EnvironmentFile would give them to the agent.
func (c *clusterResetCmd) applyEnvFile() error {
	if c.envFile == "" {
		return nil
	}
	f, err := os.Open(c.envFile)
	if errors.Is(err, os.ErrNotExist) && !c.fs.Changed("env-file") {
		return nil
	}
	if err != nil {
		return usagef("--env-file: %v; name the master's environment file, or --env-file= for none", err)
	}
	defer f.Close()
	vars, err := nodeconf.ParseEnv(f)
	if err != nil {
		return fmt.Errorf("--env-file: %w", err)
	}
	if err := applyEnv(c.fs, func(k string) (string, bool) { v, ok := vars[k]; return v, ok }); err != nil {
		return usagef("--env-file %s: %v", c.envFile, err)
	}
	return nil
}

// confirm prints the plan and, unless --yes, asks for "yes" on the terminal.
func (c *clusterResetCmd) confirm(w io.Writer, plan []string) error {
	fmt.Fprintln(w, "cluster-reset will:")
	for i, step := range plan {
		fmt.Fprintf(w, "  %d. %s\n", i+1, step)
	}
	if c.yes {
		return nil
	}
	if _, err := unix.IoctlGetTermios(int(c.stdin.Fd()), unix.TCGETS); err != nil {
		return usagef("--yes: there is no terminal to confirm on; nothing was changed; read the plan above and run again with --yes")
	}
	fmt.Fprint(w, "Type yes to go on: ")
	answer, _ := bufio.NewReader(c.stdin).ReadString('\n')
	if strings.TrimSpace(answer) != "yes" {
		return usagef("cluster-reset: not confirmed; nothing was changed")
	}
	return nil
}
