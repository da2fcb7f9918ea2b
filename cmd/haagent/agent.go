package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/haagent/haagent/files"
	"github.com/haagent/haagent/reconcile"
	lbrole "github.com/haagent/haagent/roles/lb"
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

// role is one entry of the role table: how to bind its flags, check them, run it and
// render its files.
type role struct {
	addFlags func(fs *pflag.FlagSet)
	// prepare fills host-dependent defaults and validates; its errors are usage errors.
	prepare func() error
	name    func() string
	run     func(ctx context.Context, lg *slog.Logger) error
	render  func() ([]files.File, error)
}

// roleConfig is what every role's Config does: fill host defaults, then check purely.
type roleConfig interface {
	Complete() error
	Validate() error
}

// prepare completes and validates c, then runs the role's own checks that touch the host.
func prepare(c roleConfig, preflight ...func() error) func() error {
	return func() error {
		if err := c.Complete(); err != nil {
			return err
		}
		if err := c.Validate(); err != nil {
			return err
		}
		for _, f := range preflight {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	}
}

func roles(name string) (role, bool) {
	switch name {
	case "master":
		cfg := master.NewConfig()
		return role{
			addFlags: cfg.AddFlags,
			prepare:  prepare(cfg, cfg.Preflight),
			name:     func() string { return cfg.Name },
			run: func(ctx context.Context, lg *slog.Logger) error {
				m, err := master.New(cfg, lg, prometheus.DefaultGatherer)
				if err != nil {
					return err
				}
				return m.Run(ctx)
			},
			render: cfg.Render,
		}, true
	case "minion":
		cfg := minion.NewConfig()
		return role{
			addFlags: cfg.AddFlags,
			prepare:  prepare(cfg),
			name:     func() string { return cfg.Name },
			run: func(ctx context.Context, lg *slog.Logger) error {
				return minion.New(cfg, lg, prometheus.DefaultGatherer).Run(ctx)
			},
			render: cfg.Render,
		}, true
	case "lb":
		cfg := lbrole.NewConfig()
		return role{
			addFlags: cfg.AddFlags,
			prepare:  prepare(cfg),
			name:     func() string { return cfg.Name },
			run: func(ctx context.Context, lg *slog.Logger) error {
				l, err := lbrole.New(cfg, lg, prometheus.DefaultGatherer, prometheus.DefaultRegisterer)
				if err != nil {
					return err
				}
				if cfg.Impl == lbrole.ImplNginx {
					// nginx mode hands the balancing to nginx.service, which haagent restarts on change.
					mgr, err := reconcile.Connect(ctx, reconcile.SystemdAuto, lg)
					if err != nil {
						return err
					}
					if mgr != nil {
						defer mgr.Close()
						l.Units = mgr
					}
				}
				return l.Run(ctx)
			},
			render: func() ([]files.File, error) {
				return []files.File{lbrole.NginxFile(cfg)}, nil
			},
		}, true
	}
	return role{}, false
}

var roleNames = []string{"lb", "master", "minion"}

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

// parseRole builds the role's flag set, parses args and the environment, and checks the
// result. help is true when the operator asked for --help (the usage was printed).
func parseRole(cmd string, args []string, lf *logFlags) (r role, help bool, err error) {
	name := roleFromArgs(args)
	if name == "" {
		return r, false, usagef("--role: missing; use --role=lb, --role=master or --role=minion (or HAAGENT_ROLE)")
	}
	r, ok := roles(name)
	if !ok {
		return r, false, usagef("--role: %q is not a role; use lb, master or minion", name)
	}
	fs := newFlagSet(cmd + " --role=" + name)
	fs.String("role", name, "lb, master or minion")
	lf.add(fs)
	wantHelp := fs.BoolP("help", "h", false, "show this help")
	r.addFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return r, false, err
	}
	if *wantHelp {
		fmt.Printf("Usage of %s:\n%s", fs.Name(), fs.FlagUsages())
		return r, true, nil
	}
	if err := r.prepare(); err != nil {
		return r, false, usageError{err}
	}
	return r, false, nil
}

func runAgent(ctx context.Context, args []string) error {
	var lf logFlags
	r, help, err := parseRole("haagent", args, &lf)
	if err != nil || help {
		return err
	}
	lg, err := lf.logger(os.Stderr)
	if err != nil {
		return err
	}
	role := roleFromArgs(args)
	lg = lg.With("role", role, "name", r.name())
	lg.Info("haagent starting", "version", version.Version)
	return r.run(ctx, lg)
}

// runRender prints every file the role would write, and touches nothing.
func runRender(ctx context.Context, args []string) error {
	var lf logFlags
	r, help, err := parseRole("haagent render", args, &lf)
	if err != nil || help {
		return err
	}
	fs, err := r.render()
	if err != nil {
		return err
	}
	for _, f := range fs {
		fmt.Printf("==> /%s (mode %04o)\n%s", f.Path, f.Mode.Perm(), f.Data)
		if len(f.Data) > 0 && f.Data[len(f.Data)-1] != '\n' {
			fmt.Println()
		}
	}
	return nil
}
