package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	etcdversion "go.etcd.io/etcd/api/v3/version"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/haagent/haagent/cluster/upgrade"
	"github.com/haagent/haagent/trust/pki"
)

// upgradeCmd is `haagent upgrade plan`: the cluster's running versions against the
// installed ones, and what a roll to them does, or the rule it breaks.
type upgradeCmd struct {
	etcd       etcdClientFlags
	to         string
	kubeconfig string
}

const upgradePlanLong = `Plan reads each node's running versions (each master's etcd member and kube-apiserver,
each minion's kubelet) and shows what moving to the installed binaries does, in the
order Kubernetes' version-skew policy needs: etcd (with haagent) on one master at a time,
then every kube-apiserver, then the controller-managers and schedulers, then each
minion, drained first for a new minor. It changes nothing.

It refuses, with exit code 2, a move the rules forbid: a skipped or downgraded minor, a
kubelet newer than an apiserver or more than 3 minors older than the new ones, an etcd
minor jump or downgrade, apiservers already more than one minor apart.`

func (u *upgradeCmd) planFlags(fs *pflag.FlagSet) {
	fs.StringVar(&u.to, "to", "", "the Kubernetes version to plan for (default: the installed kube-apiserver's, /usr/bin/kube-apiserver --version)")
	fs.StringVar(&u.kubeconfig, "kubeconfig", "", "the admin kubeconfig (default: --root's "+pki.AdminKubeconfig+")")
}

func (u *upgradeCmd) plan(ctx context.Context, w io.Writer, _ []string) error {
	to := u.to
	if to == "" {
		v, err := upgrade.InstalledKube(ctx, filepath.Join(u.etcd.root, "usr/bin/kube-apiserver"))
		if err != nil {
			return usagef("--to: no version given, and the installed one is unknown: %v", err)
		}
		to = v
	}
	kubeconfig := u.kubeconfig
	if kubeconfig == "" {
		kubeconfig = filepath.Join(u.etcd.root, pki.AdminKubeconfig)
	}
	kube, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return usagef("--kubeconfig: %v", err)
	}
	cli, err := u.etcd.client()
	if err != nil {
		return fmt.Errorf("upgrade plan: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nodes, err := upgrade.Gather(ctx, cli, kube)
	if err != nil {
		return fmt.Errorf("upgrade plan: %w", err)
	}
	p, err := upgrade.Make(nodes, upgrade.Target{Kube: to, Etcd: etcdversion.Version})
	var refused *upgrade.RefusedError
	if errors.As(err, &refused) {
		return usagef("upgrade plan: %v", err)
	}
	if err != nil {
		return fmt.Errorf("upgrade plan: %w", err)
	}
	upgrade.Print(w, p)
	return nil
}
