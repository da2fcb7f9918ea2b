package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/base/release"
	"github.com/haagent/haagent/cluster/roll"
	lbrole "github.com/haagent/haagent/roles/lb"
	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/roles/minion"
	"github.com/haagent/haagent/roles/node"
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
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", l.format)
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

// defaultDeps hands a role the agent's logger and Prometheus' default registry.
func defaultDeps(lg *slog.Logger) node.Deps {
	return node.Deps{Logger: lg, Registerer: prometheus.DefaultRegisterer, Gatherer: prometheus.DefaultGatherer}
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
				if prev, ok := roll.Back(cfg.RollDir()); ok {
					// This build failed its roll's gate here; systemd started it again.
					return &roll.Exec{Path: prev, Reason: "this build failed its roll's gate on this master: back to the binary before it"}
				}
				m, err := master.New(cfg, defaultDeps(lg))
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
				m, err := minion.New(cfg, defaultDeps(lg))
				if err != nil {
					return err
				}
				return m.Run(ctx)
			},
			render: cfg.Render,
		}, true
	case "lb":
		cfg := lbrole.NewConfig()
		return role{
			addFlags: cfg.AddFlags,
			prepare:  prepare(cfg, cfg.Preflight),
			name:     func() string { return cfg.Name },
			run: func(ctx context.Context, lg *slog.Logger) error {
				l, err := lbrole.New(cfg, defaultDeps(lg))
				if err != nil {
					return err
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
// flags exist. The last one wins, as in the parse; the environment is the fallback, as
// for every flag.
func roleFromArgs(args []string, lookupEnv func(string) (string, bool)) string {
	role, found := "", false
	for i, a := range args {
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--role="); ok {
			role, found = v, true
		} else if a == "--role" && i+1 < len(args) {
			role, found = args[i+1], true
		}
	}
	if !found {
		role, _ = lookupEnv(envName("role"))
	}
	return role
}

// agent is the root command, which runs the role named by --role, and render, which
// prints that role's files: both take the agent's flags.
type agent struct {
	// name is the role found before the parse; flagRole is --role as parsed.
	name, flagRole string
	role           role
	// roleErr says why name is no role; nil when it is one.
	roleErr error
	log     logFlags
	stderr  io.Writer
	// fs is the agent's flag set, once bound.
	fs *pflag.FlagSet
}

func newAgent(name string, stderr io.Writer) *agent {
	a := &agent{name: name, flagRole: name, stderr: stderr}
	r, ok := roles(name)
	switch {
	case name == "":
		a.roleErr = errors.New("--role: missing; use --role=lb, --role=master or --role=minion (or HAAGENT_ROLE)")
	case !ok:
		a.roleErr = fmt.Errorf("--role: %q is not a role; use lb, master or minion", name)
	default:
		a.role = r
	}
	return a
}

// flags binds --role, the logging flags and, once a role is named, the role's flags.
func (a *agent) flags(fs *pflag.FlagSet) {
	a.fs = fs
	fs.StringVar(&a.flagRole, "role", a.name, "lb, master or minion")
	a.log.add(fs)
	if a.roleErr == nil {
		a.role.addFlags(fs)
	}
}

// prepare checks the parsed flags and fills the role's host defaults; every error is a
// usage error, and the logging flags' are reported with the role's.
func (a *agent) prepare() (*slog.Logger, error) {
	if a.roleErr != nil {
		return nil, usageError{a.roleErr}
	}
	if a.flagRole != a.name {
		return nil, usagef("--role: %q, but %q was taken for it before the parse; give the role once, as --role=ROLE", a.flagRole, a.name)
	}
	lg, logErr := a.log.logger(a.stderr)
	if err := errors.Join(logErr, a.role.prepare()); err != nil {
		return nil, usageError{err}
	}
	return lg, nil
}

func (a *agent) run(ctx context.Context, _ io.Writer, _ []string) error {
	lg, err := a.prepare()
	if err != nil {
		return err
	}
	lg = lg.With("role", a.name, "name", a.role.name())
	// client-go (the add-ons' applier, the NetworkPolicy controller) logs through klog,
	// which is global: its lines go into haagent's log, in its format, not to stderr raw.
	klog.SetSlogLogger(lg.With("component", "client-go"))
	lg.Info("haagent starting", "version", release.Version)
	if given := onCommandLine(a.fs, "token", "agent-token"); len(given) > 0 {
		lg.Warn("a token on the command line is visible to every user of this host (ps, /proc); use --token-file and --agent-token-file, or HAAGENT_TOKEN in /etc/sysconfig/haagent (mode 0600)",
			"flags", strings.Join(given, ", "))
	}
	return a.role.run(ctx, lg)
}

// render prints every file the role would write, and touches nothing.
func (a *agent) render(ctx context.Context, w io.Writer, _ []string) error {
	if _, err := a.prepare(); err != nil {
		return err
	}
	fs, err := a.role.render()
	if err != nil {
		return err
	}
	for _, f := range fs {
		fmt.Fprintf(w, "==> /%s (mode %04o)\n%s", f.Path, f.Mode.Perm(), f.Data)
		if len(f.Data) > 0 && f.Data[len(f.Data)-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
	return nil
}
