package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/haagent/haagent/base/files"
	"github.com/haagent/haagent/netsetup/masterlist"
	"github.com/haagent/haagent/systemd/nodeconf"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/pki"
)

// The token files a master keeps, relative to --root.
const (
	// TokenFile holds the server token a master runs with.
	TokenFile = "var/lib/haagent/token"
	// AgentTokenFile holds the cluster's agent token as the master last read it from
	// etcd, for 'haagent token show'; absent while the cluster has none.
	AgentTokenFile = "var/lib/haagent/agent-token"
	// LBTokenFile holds the cluster's lb token likewise.
	LBTokenFile = "var/lib/haagent/lb-token"
)

// ErrAgentRunning refuses a reset while haagent runs: it would write everything back
// within seconds, on a deleted data dir.
var ErrAgentRunning = errors.New("haagent.service runs; run 'systemctl disable --now haagent' first")

// Reset is `haagent reset`: it returns a host of any role to its freshly installed
// state, for baking golden images.
type Reset struct {
	Root, DataDir string
	// Systemd is --systemd: auto, on or off.
	Systemd string
	Logger  *slog.Logger
}

// Plan lists what Run deletes: the etcd data dir, then every file haagent rendered
// (as its state file records them), the certificates, the kubeconfigs, the tokens and
// the state itself, under Root. rendered counts the first kind.
func (r Reset) Plan() (paths []string, rendered int, err error) {
	owned := &files.Owned{Root: r.Root, StatePath: files.StateFile}
	made, err := owned.Paths()
	if err != nil {
		return nil, 0, err
	}
	slices.Sort(made)
	paths = []string{r.DataDir}
	for _, p := range made {
		paths = append(paths, filepath.Join(r.Root, p))
	}
	for _, p := range []string{pki.Dir, pki.AdminKubeconfig, pki.ControllerManagerKubeconfig, pki.SchedulerKubeconfig,
		pki.KubeletKubeconfig, pki.ProxyKubeconfig, pki.NetworkPolicyKubeconfig, TokenFile, AgentTokenFile, LBTokenFile,
		files.StateFile, masterlist.File} {
		paths = append(paths, filepath.Join(r.Root, p))
	}
	return paths, len(made), nil
}

// Run stops and disables the kube, flannel and runtime units haagent runs (where
// systemd runs, through reconcile.Retire), then deletes what Plan lists, and returns
// how many of those were rendered files. It refuses, with ErrAgentRunning, while
// haagent.service is active.
func (r Reset) Run(ctx context.Context) (rendered int, err error) {
	paths, rendered, err := r.Plan()
	if err != nil {
		return 0, err
	}
	remove := func() error {
		var errs []error
		for _, p := range paths {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	mgr, err := reconcile.Connect(ctx, r.Systemd, r.Logger)
	if err != nil {
		return 0, fmt.Errorf("--systemd=%s: %w", r.Systemd, err)
	}
	if mgr == nil {
		return rendered, remove()
	}
	defer mgr.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if st, err := mgr.States(ctx, "haagent.service"); err == nil && len(st) == 1 &&
		st[0].ActiveState != "inactive" && st[0].ActiveState != "failed" {
		return 0, fmt.Errorf("%w (it is %s)", ErrAgentRunning, st[0].ActiveState)
	}
	var units []string
	for _, c := range []nodeconf.Config{{Role: "master"}, {Role: "minion"}} {
		for _, u := range nodeconf.Units(c) {
			if u.Name != ".service" && !slices.Contains(units, u.Name) {
				units = append(units, u.Name)
			}
		}
	}
	return rendered, reconcile.Retire(ctx, mgr, units, remove, r.Logger)
}
