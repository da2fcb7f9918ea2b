package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/netlab"
	"github.com/haagent/haagent/test/framework/probe"
)

// netBench is what every benchmark in network namespaces stands on: a lab of bare
// namespaces (no systemd hosts), its nodes in the order they were asked for, a scratch
// dir, and the haagent binary by its absolute path, which ip netns exec must find.
type netBench struct {
	lab   *hosts.Lab
	nodes []*netlab.Node
	dir   string
	bin   string
}

// newNetBench makes the lab for the benchmark called what: the nodes given as name=IP
// pairs (an empty subnet is hosts' default), then masters m1..mN (named prefix+"m1"...)
// at masterIPs. Close undoes all of it.
func newNetBench(what, bin string, subnet netip.Prefix, logf func(string, ...any), prefix string, masterIPs []string, pairs ...string) (*netBench, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the %s benchmark runs in network namespaces: run it as root", what)
	}
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	lab, err := hosts.NewLabWith(context.Background(), hosts.LabOptions{NetworkOnly: true, Subnet: subnet, Logf: logf})
	if err != nil {
		return nil, err
	}
	nb := &netBench{lab: lab, bin: bin}
	for i, ip := range masterIPs {
		pairs = append(pairs, fmt.Sprintf("%sm%d=%s", prefix, i+1, ip))
	}
	if nb.nodes, err = lab.AddNodes(context.Background(), pairs...); err != nil {
		return nil, errors.Join(err, nb.Close())
	}
	if nb.dir, err = os.MkdirTemp("", "haagent-bench-"+what); err != nil {
		return nil, errors.Join(err, nb.Close())
	}
	return nb, nil
}

// masters are the nodes made for masterIPs, the last ones.
func (nb *netBench) masters(n int) []*netlab.Node { return nb.nodes[len(nb.nodes)-n:] }

// Close tears the lab down and removes the scratch dir.
func (nb *netBench) Close() error {
	if nb.dir != "" {
		os.RemoveAll(nb.dir)
	}
	return nb.lab.Teardown()
}

// memberID is the etcd member ID of the member at ep, asked of the cluster at eps
// through d, for the benchmarks that move the leader onto the primary.
func memberID(ctx context.Context, d probe.Dialer, eps []string, ep string) (uint64, error) {
	cli, err := d.Client(eps...)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, _, err := probe.Members(ctx, cli, eps)
	if err != nil {
		return 0, err
	}
	return ids[ep], nil
}
