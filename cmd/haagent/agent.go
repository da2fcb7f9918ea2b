package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/roles/minion"
	"github.com/haagent/haagent/version"
)

// logFlags are the agent's logging flags, shared by every role.
type logFlags struct {
	level, format string
}

func (l *logFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usagef("--log-level: %q is not one of debug, info, warn, error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format: %q is not text or json", l.format)
}

// roleFromArgs finds --role before the full parse, because the role decides which
// flags exist. The environment is the fallback, as for every flag.
func roleFromArgs(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--role="); ok {
			return v
		}
		if a == "--role" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return os.Getenv(envName("role"))
}

func runAgent(ctx context.Context, args []string) error {
	role := roleFromArgs(args)
	if role == "" {
		return usagef("--role: missing; use --role=lb, --role=master or --role=minion (or HAAGENT_ROLE)")
	}
	if !slices.Contains(roleNames, role) {
		return usagef("--role: %q is not a role; use lb, master or minion", role)
	}
	fs := newFlagSet("haagent --role=" + role)
	fs.String("role", role, "lb, master or minion")
	var lf logFlags
	lf.add(fs)
	help := fs.BoolP("help", "h", false, "show this help")

	switch role {
	case "master":
		cfg := master.NewConfig()
		cfg.AddFlags(fs)
		if err := parseFlags(fs, args); err != nil || *help {
			return helpOr(fs, *help, err)
		}
		lg, err := lf.logger(os.Stderr)
		if err != nil {
			return err
		}
		if err := cfg.Complete(); err != nil {
			return usageError{err}
		}
		if err := cfg.Validate(); err != nil {
			return usageError{err}
		}
		if err := cfg.Preflight(); err != nil {
			return usageError{err}
		}
		lg = lg.With("role", role, "name", cfg.Name)
		lg.Info("haagent starting", "version", version.Version)
		m, err := master.New(cfg, lg, prometheus.DefaultGatherer)
		if err != nil {
			return err
		}
		return m.Run(ctx)
	case "minion":
		cfg := minion.NewConfig()
		cfg.AddFlags(fs)
		if err := parseFlags(fs, args); err != nil || *help {
			return helpOr(fs, *help, err)
		}
		lg, err := lf.logger(os.Stderr)
		if err != nil {
			return err
		}
		if err := cfg.Complete(); err != nil {
			return usageError{err}
		}
		if err := cfg.Validate(); err != nil {
			return usageError{err}
		}
		lg = lg.With("role", role, "name", cfg.Name)
		lg.Info("haagent starting", "version", version.Version)
		return minion.New(cfg, lg, prometheus.DefaultGatherer).Run(ctx)
	default:
		return usagef("--role: %s is not available in this build yet; use master or minion", role)
	}
}

// helpOr prints the role's flags for --help, or passes a parse error on.
func helpOr(fs *pflag.FlagSet, help bool, err error) error {
	if err != nil {
		return err
	}
	fmt.Printf("Usage of %s:\n%s", fs.Name(), fs.FlagUsages())
	return nil
}
