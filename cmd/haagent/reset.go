package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/reconcile"
)

// resetCmd is `haagent reset`: it returns a host to its freshly installed state, for
// baking golden images.
type resetCmd struct {
	node.Reset
	yes bool
}

func (r *resetCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&r.Root, "root", master.DefaultRoot, "as for the agent")
	fs.StringVar(&r.DataDir, "data-dir", master.DefaultDataDir, "the master's etcd data dir")
	fs.BoolVar(&r.yes, "yes", false, "really delete: the etcd data dir, the certificates and every file haagent rendered")
	fs.StringVar(&r.Systemd, "systemd", reconcile.SystemdAuto, "stop the managed units: auto, on or off")
}

func (r *resetCmd) run(ctx context.Context, w io.Writer, _ []string) error {
	if !r.yes {
		paths, _, err := r.Plan()
		if err != nil {
			return err
		}
		fmt.Fprintln(w, "haagent reset would stop the kube and flannel units and delete:")
		fmt.Fprintln(w, "  "+paths[0]+" (the etcd data dir)")
		for _, p := range paths[1:] {
			fmt.Fprintln(w, "  "+p)
		}
		return usagef("--yes: required to delete anything; run 'haagent reset --yes' to reset this host")
	}
	r.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	rendered, err := r.Run(ctx)
	if errors.Is(err, node.ErrAgentRunning) {
		return usagef("reset: %v", err)
	} else if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	fmt.Fprintf(w, "reset: removed %s, the certificates and %d rendered files; this host is ready to bake\n", r.DataDir, rendered)
	return nil
}
