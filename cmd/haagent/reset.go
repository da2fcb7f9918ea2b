package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/netsetup/masterlist"
	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/pki"
)

// resetCmd is `haagent reset`: it returns a host to its freshly installed state, for
// baking golden images.
type resetCmd struct {
	root, dataDir, mode string
	yes                 bool
}

func (r *resetCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&r.root, "root", master.DefaultRoot, "as for the agent")
	fs.StringVar(&r.dataDir, "data-dir", master.DefaultDataDir, "the master's etcd data dir")
	fs.BoolVar(&r.yes, "yes", false, "really delete: the etcd data dir, the certificates and every file haagent rendered")
	fs.StringVar(&r.mode, "systemd", reconcile.SystemdAuto, "stop the managed units: auto, on or off")
}

func (r *resetCmd) run(ctx context.Context, w io.Writer, _ []string) error {
	owned := &files.Owned{Root: r.root, StatePath: files.StateFile}
	rendered, err := owned.Paths()
	if err != nil {
		return err
	}
	slices.Sort(rendered)
	doomed := append([]string{}, rendered...)
	for _, p := range []string{pki.Dir, pki.AdminKubeconfig, pki.ControllerManagerKubeconfig, pki.SchedulerKubeconfig,
		pki.KubeletKubeconfig, pki.ProxyKubeconfig, pki.NetworkPolicyKubeconfig, master.TokenFile, master.AgentTokenFile, master.LBTokenFile, files.StateFile, masterlist.File} {
		doomed = append(doomed, p)
	}
	if !r.yes {
		fmt.Fprintln(w, "haagent reset would stop the kube and flannel units and delete:")
		fmt.Fprintln(w, "  "+r.dataDir+" (the etcd data dir)")
		for _, p := range doomed {
			fmt.Fprintln(w, "  "+filepath.Join(r.root, p))
		}
		return usagef("--yes: required to delete anything; run 'haagent reset --yes' to reset this host")
	}
	lg := slog.New(slog.NewTextHandler(os.Stderr, nil))
	mgr, err := reconcile.Connect(ctx, r.mode, lg)
	if err != nil {
		return fmt.Errorf("--systemd=%s: %w", r.mode, err)
	}
	if mgr != nil {
		defer mgr.Close()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		// A running agent would write everything back within seconds, on a deleted data dir.
		if st, err := mgr.States(sctx, "haagent.service"); err == nil && len(st) == 1 &&
			st[0].ActiveState != "inactive" && st[0].ActiveState != "failed" {
			return usagef("reset: haagent.service is %s; run 'systemctl disable --now haagent' first", st[0].ActiveState)
		}
		var units []string
		for _, c := range []nodeconf.Config{{Role: "master"}, {Role: "minion"}} {
			for _, u := range nodeconf.Units(c) {
				if u.Name != ".service" && !slices.Contains(units, u.Name) {
					units = append(units, u.Name)
				}
			}
		}
		states, err := mgr.States(sctx, units...)
		if err != nil {
			return err
		}
		for _, u := range slices.Backward(states) {
			if u.LoadState != "loaded" {
				continue // this role never had it
			}
			if err := mgr.Stop(sctx, u.Name); err != nil {
				lg.Warn("stop unit", "unit", u.Name, "err", err)
			}
			if err := mgr.Disable(sctx, u.Name); err != nil {
				lg.Warn("disable unit", "unit", u.Name, "err", err)
			}
		}
		defer func() {
			// The unit files haagent installed are gone: let systemd forget them.
			if err := mgr.Reload(sctx); err != nil {
				lg.Warn("daemon-reload", "err", err)
			}
		}()
	}
	var errs []error
	for _, p := range doomed {
		if err := os.RemoveAll(filepath.Join(r.root, p)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(r.dataDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	fmt.Fprintf(w, "reset: removed %s, the certificates and %d rendered files; this host is ready to bake\n", r.dataDir, len(rendered))
	return nil
}
