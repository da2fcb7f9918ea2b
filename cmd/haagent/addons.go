package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/haagent/haagent/cluster/addons"
)

// addonsCmd is `haagent addons list|put|delete`: the add-ons in etcd, through the
// local member, so that every master applies the same ones.
type addonsCmd struct {
	etcd    etcdClientFlags
	timeout time.Duration
}

const addonsLong = `The add-ons are manifests kept in etcd, so every master has the same ones: one master
at a time applies them with server-side apply (field manager "haagent"), labels every
object addons.haagent.io/name=NAME, applies them again every 30 s, and deletes the
objects a manifest no longer holds. The built-in ones (coredns) are rendered by haagent;
a manifest put under a built-in's name replaces it, and a master's --disable=coredns
removes it. 'haagent status' and 'haagent addons list' show each one's state.`

func (a *addonsCmd) putFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&a.timeout, "timeout", 2*time.Minute, "how long to wait for the manifest to be applied (0: don't wait)")
}

// list prints the add-ons' states.
func (a *addonsCmd) list(ctx context.Context, w io.Writer, _ []string) error {
	cli, err := a.etcd.client()
	if err != nil {
		return fmt.Errorf("addons list: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	states, err := addons.States(ctx, cli)
	if err != nil {
		return fmt.Errorf("addons list: %w", err)
	}
	addons.Print(w, states)
	return nil
}

// put stores FILE ("-": stdin) as add-on NAME, once it parses, then waits for its state.
func (a *addonsCmd) put(ctx context.Context, w io.Writer, args []string) error {
	name, file := args[0], args[1]
	if err := addons.CheckName(name); err != nil {
		return usagef("NAME: %v", err)
	}
	if a.timeout < 0 {
		return usagef("--timeout: %s is negative", a.timeout)
	}
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return usagef("FILE: %v", err)
	}
	if _, err := addons.Parse(name, data); err != nil {
		return usagef("FILE %s: %v", file, err)
	}
	cli, err := a.etcd.client()
	if err != nil {
		return fmt.Errorf("addons put: %w", err)
	}
	defer cli.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = addons.Put(pctx, cli, name, data)
	cancel()
	if err != nil {
		return fmt.Errorf("addons put %s: %w", name, err)
	}
	fmt.Fprintf(w, "add-on %s stored (%d bytes)\n", name, len(data))
	if a.timeout == 0 {
		return nil
	}
	st, err := addons.WaitHash(ctx, cli, name, addons.Hash(data), a.timeout)
	if err != nil {
		return fmt.Errorf("addons put %s: %w", name, err)
	}
	addons.Print(w, []addons.State{st})
	if st.Phase != addons.PhaseApplied {
		return fmt.Errorf("add-on %s: %s", name, st.Phase)
	}
	return nil
}

// remove deletes add-on NAME's manifest; the applying master deletes its objects.
func (a *addonsCmd) remove(ctx context.Context, w io.Writer, args []string) error {
	name := args[0]
	if err := addons.CheckName(name); err != nil {
		return usagef("NAME: %v", err)
	}
	cli, err := a.etcd.client()
	if err != nil {
		return fmt.Errorf("addons delete: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	deleted, err := addons.Delete(ctx, cli, name)
	if err != nil {
		return fmt.Errorf("addons delete %s: %w", name, err)
	}
	if !deleted {
		return usagef("NAME: no add-on %q was put ('haagent addons list' shows them; a built-in is removed with --disable)", name)
	}
	fmt.Fprintf(w, "add-on %s deleted; the applying master deletes its objects\n", name)
	return nil
}
