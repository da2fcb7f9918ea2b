package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/haagent/haagent/base/release"
	"github.com/haagent/haagent/base/statusapi"
	"github.com/haagent/haagent/embed/etcdmember"
	lbrole "github.com/haagent/haagent/roles/lb"
	"github.com/haagent/haagent/roles/master"
	"github.com/haagent/haagent/roles/minion"
	"github.com/haagent/haagent/roles/node"
	"github.com/haagent/haagent/systemd/reconcile"
	"github.com/haagent/haagent/trust/pki"
)

func runVersion(ctx context.Context, w io.Writer, _ []string) error {
	_, err := fmt.Fprintf(w, "haagent %s (commit %s, %s, etcd %s)\n", release.Version, release.Commit, runtime.Version(), version.Version)
	return err
}

// statusCmd is `haagent status`: it reads the local agent's /status.
type statusCmd struct {
	addr, output string
}

func (s *statusCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&s.addr, "status-address", statusapi.DefaultAddress, "the local haagent's --status-address")
	fs.StringVarP(&s.output, "output", "o", "text", "text or json")
}

func (s *statusCmd) run(ctx context.Context, w io.Writer, _ []string) error {
	if s.output != "text" && s.output != "json" {
		return usagef("--output: %q is not text or json", s.output)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := statusapi.Fetch(ctx, s.addr, &raw); err != nil {
		return err
	}
	if s.output == "json" {
		_, err := w.Write(append(raw, '\n'))
		return err
	}
	var head struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return fmt.Errorf("status from %s: %w", s.addr, err)
	}
	switch head.Role {
	case "master":
		return printAs(raw, s.addr, func(st master.Status) { master.PrintStatus(w, st); printNode(w, st.Node) })
	case "lb":
		return printAs(raw, s.addr, func(doc lbrole.StatusDoc) { lbrole.PrintStatus(w, doc) })
	case "minion":
		return printAs(raw, s.addr, func(st minion.Status) { minion.PrintStatus(w, st); printNode(w, st.Node) })
	}
	_, err := w.Write(append(raw, '\n'))
	return err
}

// printAs decodes a role's status document and prints it.
func printAs[T any](raw json.RawMessage, addr string, print func(T)) error {
	var st T
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("status from %s: %w", addr, err)
	}
	print(st)
	return nil
}

// printNode prints the units and files the reconciler keeps.
func printNode(w io.Writer, ns *reconcile.Status) {
	if ns == nil {
		return
	}
	fmt.Fprintln(w)
	if !ns.Systemd {
		fmt.Fprintln(w, "units: not managed (systemd is not running here, or --systemd=off)")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "UNIT\tACTIVE\tSUB\tSTARTS BY HAAGENT\tLAST ERROR")
		for _, u := range ns.Units {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", u.Name, u.Active, u.Sub, u.Restarts, u.LastError)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "files: %d managed, %d hand edits reverted; last pass %s\n", len(ns.ManagedFile), ns.Reverted,
		ns.LastPass.Format(time.RFC3339))
	if ns.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", ns.LastError)
	}
}

// etcdClientFlags locate the local etcd member the way the master's own flags do, so
// that the HAAGENT_* environment of a master also points its subcommands at it.
type etcdClientFlags struct {
	endpoints  string
	listenAddr string
	clientPort int
	root       string
	insecure   bool
}

func (f *etcdClientFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.endpoints, "endpoints", "", "etcd client URLs (default: the local member, from --listen-address and --etcd-client-port)")
	fs.StringVar(&f.listenAddr, "listen-address", master.DefaultListenAddress, "the master's --listen-address")
	fs.IntVar(&f.clientPort, "etcd-client-port", etcdmember.DefaultClientPort, "the master's --etcd-client-port")
	fs.BoolVar(&f.insecure, "insecure", false, "the master runs --insecure (plain http)")
	fs.StringVar(&f.root, "root", master.DefaultRoot, "the master's --root, where its etcd client certificate is")
}

// config connects with the master's own etcd client certificate unless it runs
// --insecure. It reads the certificate and the CAs it trusts at each handshake, and
// checks that each member's certificate names the endpoint's host, so that a command
// that runs through a CA rotation (certs rotate-ca) keeps its connection.
func (f *etcdClientFlags) config() (clientv3.Config, error) {
	mc := master.NewConfig()
	mc.ListenAddress, mc.EtcdClientPort, mc.Insecure, mc.Root = f.listenAddr, f.clientPort, f.insecure, f.root
	ec := mc.EmbedConfig()
	var opts []grpc.DialOption
	if !f.insecure {
		tc, err := node.ClusterTLS(f.root, pki.EtcdClientCert, pki.EtcdClientKey)
		if err != nil {
			return clientv3.Config{}, fmt.Errorf("etcd client TLS: %w (is --root right? with a plain-http cluster, pass --insecure)", err)
		}
		// clientv3 applies DialOptions after its own credentials.
		opts = append(opts, grpc.WithTransportCredentials(tc.GRPC()))
	}
	eps := strings.Split(f.endpoints, ",")
	if f.endpoints == "" {
		eps = []string{ec.LocalClientURL()}
	}
	return clientv3.Config{Endpoints: eps, DialOptions: opts, DialTimeout: 3 * time.Second, Logger: zap.NewNop()}, nil
}

func (f *etcdClientFlags) client() (*clientv3.Client, error) {
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// memberCmd is `haagent member list|remove`; both reach the local member.
type memberCmd struct {
	etcd   etcdClientFlags
	output string
}

func (m *memberCmd) listFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&m.output, "output", "o", "text", "text or json")
}

func (m *memberCmd) list(ctx context.Context, w io.Writer, _ []string) error {
	if m.output != "text" && m.output != "json" {
		return usagef("--output: %q is not text or json", m.output)
	}
	cli, err := m.etcd.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cs, err := etcdmember.ClusterStatusOf(ctx, cli, "")
	if err != nil {
		return fmt.Errorf("member list via %s: %w", strings.Join(cli.Endpoints(), ","), err)
	}
	if m.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(cs.Members)
	}
	master.PrintMembers(w, cs.Members)
	return nil
}

func (m *memberCmd) remove(ctx context.Context, w io.Writer, args []string) error {
	name := args[0]
	cli, err := m.etcd.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("member list via %s: %w", strings.Join(cli.Endpoints(), ","), err)
	}
	for _, mb := range list.Members {
		if mb.Name == name || types.ID(mb.ID).String() == name {
			// etcd refuses reconfiguration until every member has been connected for a
			// few seconds (strict reconfig check); that passes on its own, so wait it out.
			for {
				_, err := cli.MemberRemove(ctx, mb.ID)
				if err == nil {
					break
				}
				if !errors.Is(err, rpctypes.ErrUnhealthy) || ctx.Err() != nil {
					return fmt.Errorf("remove member %s (%s): %w", name, types.ID(mb.ID), err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
			fmt.Fprintf(w, "removed member %s (%s)\n", name, types.ID(mb.ID))
			return nil
		}
	}
	return fmt.Errorf("remove member %s: no member has that name or ID", name)
}

// snapshotCmd is `haagent snapshot save|restore`: save reaches the local member, restore
// takes the new member's identity as the agent would.
type snapshotCmd struct {
	etcd etcdClientFlags
	mc   *master.Config // restore's flags
}

func (s *snapshotCmd) restoreFlags(fs *pflag.FlagSet) {
	s.mc = master.NewConfig()
	mc := s.mc
	fs.StringVar(&mc.DataDir, "data-dir", "", "the new data dir (must not exist yet)")
	fs.StringVar(&mc.Name, "name", "", "this member's name (default: the short hostname)")
	fs.Var(&mc.Peers, "peers", "the masters, as for the agent")
	fs.StringVar(&mc.AdvertiseAddress, "advertise-address", "", "as for the agent")
	fs.IntVar(&mc.EtcdPeerPort, "etcd-peer-port", mc.EtcdPeerPort, "as for the agent")
	fs.StringVar(&mc.ClusterToken, "cluster-token", mc.ClusterToken, "as for the agent")
}

func (s *snapshotCmd) save(ctx context.Context, w io.Writer, args []string) error {
	file := args[0]
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cfg, err := s.etcd.config()
	if err != nil {
		return err
	}
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), cfg, file); err != nil {
		return fmt.Errorf("snapshot save %s: %w", file, err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "saved snapshot %s (%s)\n", file, humanize.IBytes(uint64(fi.Size())))
	return nil
}

func (s *snapshotCmd) restore(ctx context.Context, w io.Writer, args []string) error {
	file, mc := args[0], s.mc
	if mc.DataDir == "" {
		return usagef("--data-dir: required for restore; name a directory that does not exist yet")
	}
	if _, err := os.Stat(mc.DataDir); !errors.Is(err, os.ErrNotExist) {
		return usagef("--data-dir: %s already exists; restore only into a new directory, haagent never overwrites a data dir", mc.DataDir)
	}
	if err := mc.Complete(); err != nil {
		return usageError{err}
	}
	peers := mc.PeerList()
	if _, ok := peers.ByName(mc.Name); !ok {
		return usagef("--name: %q is not in --peers (%s)", mc.Name, peers)
	}
	if err := etcdmember.RestoreInto(file, mc.EmbedConfig()); err != nil {
		return err
	}
	fmt.Fprintf(w, "restored %s into %s as member %s of %s\n", file, mc.DataDir, mc.Name, peers)
	return nil
}
